use budget_core::BudgetError;
use budget_macros::budgeted;

#[budgeted(agent = "a", limit = 10, cost_limit = "fifty cents", crate = budget_core)]
async fn f() -> Result<(), BudgetError> {
    Ok(())
}

#[budgeted(agent = "a", limit = 10, cost_limit = "0.0000000000000000000000001", crate = budget_core)]
async fn g() -> Result<(), BudgetError> {
    Ok(())
}

fn main() {}
