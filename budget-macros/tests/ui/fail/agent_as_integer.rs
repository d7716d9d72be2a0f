use budget_core::BudgetError;
use budget_macros::budgeted;

#[budgeted(agent = 5, limit = 10, crate = budget_core)]
async fn f() -> Result<(), BudgetError> {
    Ok(())
}

fn main() {}
