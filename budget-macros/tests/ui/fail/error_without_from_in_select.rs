use budget_macros::budgeted;

#[derive(Debug)]
struct MyError;

#[budgeted(agent = "a", limit = 10, crate = budget_core)]
async fn f() -> Result<(), MyError> {
    tokio::select! {
        () = std::future::ready(()) => {
            for _ in 0..3 {}
        }
    }
    Ok(())
}

fn main() {}
