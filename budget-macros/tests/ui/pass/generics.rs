//! Generics, a `where` clause, lifetimes, `impl Trait` arguments and patterns in arguments.
#![deny(warnings)]

use std::fmt::Display;

use budget_core::BudgetError;
use budget_macros::budgeted;

#[derive(Debug)]
enum AgentError {
    Budget(BudgetError),
}

impl From<BudgetError> for AgentError {
    fn from(e: BudgetError) -> AgentError {
        AgentError::Budget(e)
    }
}

#[budgeted(agent = "joiner", limit = 1_000, crate = budget_core)]
async fn join<'a, T, I>(items: I, sep: &'a str) -> Result<String, AgentError>
where
    I: IntoIterator<Item = T>,
    T: Display,
{
    let mut out = String::new();
    for item in items {
        if !out.is_empty() {
            out.push_str(sep);
        }
        out.push_str(&item.to_string());
    }
    Ok(out)
}

#[budgeted(agent = "summer", limit = 1_000, crate = budget_core)]
async fn sum(
    values: impl Iterator<Item = u32>,
    (scale, offset): (u32, u32),
) -> Result<u32, AgentError> {
    let mut total = offset;
    for v in values {
        total += v * scale;
    }
    Ok(total)
}

#[budgeted(agent = "borrower", limit = 1_000, crate = budget_core)]
async fn first<'a>(words: &'a [&'a str]) -> Result<&'a str, AgentError> {
    Ok(words.first().copied().unwrap_or_default())
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(join([1, 2, 3], ", ").await.unwrap(), "1, 2, 3");
        assert_eq!(sum([1, 2].into_iter(), (10, 1)).await.unwrap(), 31);
        assert_eq!(first(&["a", "b"]).await.unwrap(), "a");
        if let Err(AgentError::Budget(e)) = join(Vec::<u8>::new(), "").await {
            panic!("{e}");
        }
    });
}
