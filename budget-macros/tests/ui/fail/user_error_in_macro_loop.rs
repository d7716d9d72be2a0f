//! A mistake inside a loop that the attribute instrumented in a macro is reported at the
//! user's own tokens, on both paths: the token walk (`select!`) and the parsed one (`vec!`).
use budget_core::BudgetError;
use budget_macros::budgeted;

#[budgeted(agent = "a", limit = 10, crate = budget_core)]
async fn f() -> Result<(), BudgetError> {
    tokio::select! {
        () = std::future::ready(()) => {
            for _ in 0..3 {
                let walked: u32 = "not a number";
            }
        }
    }
    let _ = vec![loop {
        let parsed: u32 = "not a number";
        break 1;
    }];
    Ok(())
}

fn main() {}
