use budget_core::BudgetError;
use budget_macros::budgeted;

#[budgeted(agent = "a", limit = 10, crate = budget_core)]
fn f() -> Result<(), BudgetError> {
    Ok(())
}

fn main() {}
