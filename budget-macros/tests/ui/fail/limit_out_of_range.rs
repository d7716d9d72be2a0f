use budget_core::BudgetError;
use budget_macros::budgeted;

#[budgeted(agent = "a", limit = 10, max_steps = 5_000_000_000, crate = budget_core)]
async fn f() -> Result<(), BudgetError> {
    Ok(())
}

fn main() {}
