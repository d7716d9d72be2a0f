//! Cancelling a `#[budgeted]` orchestrator that only delegates: every LLM call is made by its
//! `#[budgeted]` sub-agents, yet `controls().cancel_task(orchestrator)` stops its own loop at
//! the next step boundary and refuses its sub-agents' calls, whether the cancel comes after
//! some calls or before the first one.

use budget_core::scope::TaskScope;
use budget_core::{Budget, BudgetError, TaskId, Usage};
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

/// One LLM call's worth of budget, as the budget layer spends it inside the current scope.
#[budgeted(agent = "researcher", limit = 10_000, runaway = false, crate = budget_core)]
async fn researcher(budget: &Budget) -> Result<(), AgentError> {
    let here = TaskScope::current().expect("inside the sub-agent's scope");
    let held = budget.reserve_in_scope(&here, "gpt-4o", 10, 0..=0).await?;
    held.commit(Usage::new(10, 0)).await?;
    Ok(())
}

/// Delegates every step; after `cancel_after` rounds, cancels itself from outside (as an
/// admin would) by its task id. Stops by itself after 10 rounds.
#[budgeted(
    agent = "orchestrator",
    limit = 1_000_000,
    task = task,
    runaway = false,
    crate = budget_core
)]
async fn orchestrator(
    budget: &Budget,
    task: TaskId,
    cancel_after: Option<u32>,
) -> Result<u32, AgentError> {
    let mut rounds = 0;
    while rounds < 10 {
        if Some(rounds) == cancel_after {
            budget.controls().cancel_task(&task);
        }
        researcher(budget).await?;
        rounds += 1;
    }
    Ok(rounds)
}

fn cancelled(result: Result<u32, AgentError>) -> bool {
    matches!(
        result,
        Err(AgentError::Budget(BudgetError::TaskCancelled { .. }))
    )
}

#[tokio::test]
async fn cancelling_a_delegating_orchestrator_stops_it_at_the_next_step() {
    let budget = Budget::builder().build().unwrap();
    let result = orchestrator(&budget, TaskId::new("orch-macro-after"), Some(3)).await;
    assert!(cancelled(result));
    assert_eq!(
        budget.ledger().events().len(),
        3,
        "no call after the cancel"
    );
}

#[tokio::test]
async fn a_cancel_before_the_first_call_stops_the_whole_tree() {
    let budget = Budget::builder().build().unwrap();
    let task = TaskId::new("orch-macro-before");
    budget.controls().cancel_task(&task);
    let result = orchestrator(&budget, task, None).await;
    assert!(cancelled(result));
    assert!(budget.ledger().events().is_empty(), "a call was made");
}

#[tokio::test]
async fn a_finished_orchestrator_leaves_nothing_behind() {
    let budget = Budget::builder().build().unwrap();
    for i in 0..20 {
        let rounds = orchestrator(&budget, TaskId::new(format!("orch-macro-{i}")), None)
            .await
            .unwrap();
        assert_eq!(rounds, 10);
    }
    assert_eq!(budget.controls().tracked_tasks(), 0);
    let left = budget.store().snapshot_now(budget.now());
    assert!(
        left.is_empty(),
        "{} counters left, e.g. {:?}",
        left.len(),
        left[0].0
    );
}
