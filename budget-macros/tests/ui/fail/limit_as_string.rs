use budget_core::BudgetError;
use budget_macros::budgeted;

#[budgeted(agent = "a", limit = "50k", crate = budget_core)]
async fn f() -> Result<(), BudgetError> {
    Ok(())
}

fn main() {}
