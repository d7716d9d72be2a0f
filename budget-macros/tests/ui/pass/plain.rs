//! The smallest budgeted function, with the default `::token_budget` path resolved through an
//! `extern crate` alias.
#![deny(warnings)]

extern crate budget_core as token_budget;

use budget_core::BudgetError;
use budget_macros::budgeted;

/// Doc comments stay on the function.
#[budgeted(agent = "researcher", limit = 50_000)]
pub async fn research(topic: &str) -> Result<String, BudgetError> {
    Ok(format!("notes on {topic}"))
}

/// No loop: the body never refers to the scope.
#[budgeted(agent = "researcher", limit = 50_000)]
async fn returns_unit() -> Result<(), BudgetError> {
    Ok(())
}

/// A `Result` alias with one argument is accepted.
type AgentResult<T> = std::result::Result<T, BudgetError>;
mod alias {
    pub type Result<T> = std::result::Result<T, budget_core::BudgetError>;
}

#[budgeted(agent = "researcher", limit = 50_000)]
async fn aliased() -> alias::Result<u32> {
    let mut n = 0;
    while n < 3 {
        n += 1;
    }
    Ok(n)
}

#[budgeted(agent = "researcher", limit = 50_000)]
async fn fully_qualified() -> ::std::result::Result<u8, BudgetError> {
    let x: AgentResult<u8> = Ok(1);
    x
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(research("rust").await.unwrap(), "notes on rust");
        returns_unit().await.unwrap();
        assert_eq!(aliased().await.unwrap(), 3);
        assert_eq!(fully_qualified().await.unwrap(), 1);
    });
}
