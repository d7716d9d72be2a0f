//! Every optional argument together.
#![deny(warnings)]

use budget_core::scope::TaskScope;
use budget_core::{BudgetError, Money};
use budget_macros::budgeted;

struct Request {
    id: u32,
    user: String,
}

#[budgeted(
    agent = "support",
    limit = 8_000,
    cost_limit = "$0.50",
    max_steps = 20,
    task = format!("req-{}", request.id),
    user = request.user,
    critical,
    runaway(repeat = 3, similarity = 3, spike = 5, spike_after = 3, spike_min_tokens = 2_000, retries = 3),
    crate = ::budget_core,
)]
async fn answer(request: &Request) -> Result<TaskScope, BudgetError> {
    Ok(TaskScope::current().unwrap())
}

#[budgeted(
    agent = "quiet",
    limit = 1u64,
    runaway = false,
    cost_limit = "2.5e-06",
    crate = "budget_core"
)]
async fn quiet() -> Result<(), BudgetError> {
    Ok(())
}

#[budgeted(agent = "defaults", limit = 0x10, runaway = true, crate = budget_core)]
async fn never() -> Result<(), BudgetError> {
    Ok(())
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let request = Request {
            id: 7,
            user: "bob".into(),
        };
        let scope = answer(&request).await.unwrap();
        assert_eq!(scope.task().as_str(), "req-7");
        assert_eq!(scope.attribution().user(), Some("bob"));
        assert!(scope.attribution().is_critical());
        assert_eq!(scope.limits().money, Some(Money::from_cents(50)));
        assert_eq!(scope.limits().max_steps, Some(20));
        quiet().await.unwrap();
        never().await.unwrap();
    });
}
