//! Steps: each loop iteration of a `#[budgeted]` function is a step boundary; loops inside
//! closures and `async` blocks are not; a step cap, a cancel or a spent budget stops the
//! function at the next boundary with the budget error converted into the function's own.

use budget_core::scope::TaskScope;
use budget_core::{BudgetError, Money};
use budget_macros::budgeted;

#[derive(Debug)]
enum AgentError {
    Budget(BudgetError),
    #[allow(dead_code)]
    Tool(String),
}

impl From<BudgetError> for AgentError {
    fn from(e: BudgetError) -> AgentError {
        AgentError::Budget(e)
    }
}

fn here() -> TaskScope {
    TaskScope::current().expect("inside the budgeted function's scope")
}

#[budgeted(agent = "counter", limit = 1_000, crate = budget_core)]
async fn count_steps(n: u32) -> Result<Vec<u32>, AgentError> {
    assert_eq!(here().step(), 0, "no step before the first iteration");
    let mut seen = Vec::new();
    for _ in 0..n {
        seen.push(here().step());
    }
    let mut i = 0;
    while i < 2 {
        seen.push(here().step());
        i += 1;
    }
    loop {
        seen.push(here().step());
        if seen.len() > 5 {
            break;
        }
    }
    Ok(seen)
}

#[tokio::test]
async fn every_iteration_of_every_loop_kind_is_a_step() {
    let seen = count_steps(3).await.unwrap();
    assert_eq!(seen, vec![1, 2, 3, 4, 5, 6]);
    assert!(
        TaskScope::current().is_none(),
        "the scope ends with the function"
    );
}

#[budgeted(agent = "counter", limit = 1_000, crate = budget_core)]
async fn nested_loops() -> Result<(u32, u32), AgentError> {
    let mut inner = 0;
    'outer: for i in 0..3 {
        for j in 0..3 {
            inner += 1;
            if j == 1 {
                continue 'outer;
            }
            if i == 2 {
                break 'outer;
            }
        }
    }
    Ok((inner, here().step()))
}

#[tokio::test]
async fn nested_and_labelled_loops_are_steps_too() {
    // i = 0: outer step + 2 inner steps (j = 0, 1 → continue 'outer); i = 1: the same;
    // i = 2: outer step + 1 inner step (break 'outer).
    assert_eq!(nested_loops().await.unwrap(), (5, 3 + 2 + 2 + 1));
}

#[budgeted(agent = "counter", limit = 1_000, crate = budget_core)]
async fn loops_elsewhere() -> Result<(u32, u32), AgentError> {
    let sum = |n: u32| {
        let mut total = 0;
        for k in 0..n {
            total += k;
        }
        total
    };
    let closure_total = sum(10);
    let block_total = async {
        let mut total = 0;
        let mut k = 0;
        while k < 10 {
            total += k;
            k += 1;
        }
        total
    }
    .await;
    fn nested(n: u32) -> u32 {
        let mut total = 0;
        for k in 0..n {
            total += k;
        }
        total
    }
    assert_eq!(closure_total + block_total, 2 * nested(10));
    Ok((closure_total, here().step()))
}

#[tokio::test]
async fn loops_in_closures_async_blocks_and_nested_fns_are_not_steps() {
    assert_eq!(loops_elsewhere().await.unwrap(), (45, 0));
}

#[budgeted(agent = "capped", limit = 1_000, max_steps = 3, crate = budget_core)]
async fn runs_forever(iterations: &mut u32) -> Result<(), AgentError> {
    loop {
        *iterations += 1;
    }
}

#[tokio::test]
async fn max_steps_stops_the_function_at_the_step_after_the_last() {
    let mut iterations = 0;
    let err = runs_forever(&mut iterations).await.unwrap_err();
    assert!(
        matches!(
            err,
            AgentError::Budget(BudgetError::StepLimit { max_steps: 3, .. })
        ),
        "{err:?}"
    );
    assert_eq!(iterations, 3);
}

#[budgeted(agent = "cancelled", limit = 1_000, crate = budget_core)]
async fn cancels_itself(cancel_at: u32) -> Result<u32, AgentError> {
    let mut iterations = 0;
    loop {
        iterations += 1;
        if iterations == cancel_at {
            here().cancel();
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_cancel_stops_the_function_at_the_next_boundary() {
    let err = cancels_itself(4).await.unwrap_err();
    assert!(
        matches!(err, AgentError::Budget(BudgetError::TaskCancelled { .. })),
        "{err:?}"
    );
}

type Handle = std::sync::Arc<std::sync::Mutex<Option<TaskScope>>>;

#[budgeted(agent = "watched", limit = 1_000, crate = budget_core)]
async fn waits_for_a_cancel(handle: Handle) -> Result<(), AgentError> {
    *handle.lock().unwrap() = Some(here());
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn a_cancel_from_outside_stops_the_function() {
    let handle = Handle::default();
    let task = tokio::spawn(waits_for_a_cancel(handle.clone()));
    let scope = loop {
        if let Some(scope) = handle.lock().unwrap().clone() {
            break scope;
        }
        tokio::task::yield_now().await;
    };
    // Wait for the function to loop at least once, however slow the machine.
    while scope.step() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    scope.cancel();
    let err = task.await.unwrap().unwrap_err();
    assert!(
        matches!(err, AgentError::Budget(BudgetError::TaskCancelled { .. })),
        "{err:?}"
    );
}

#[budgeted(agent = "spender", limit = 100, crate = budget_core)]
async fn spends(per_step: u64) -> Result<(), AgentError> {
    loop {
        here().record(per_step, Money::ZERO);
    }
}

#[tokio::test]
async fn a_spent_budget_stops_the_function_at_the_next_boundary() {
    let err = spends(40).await.unwrap_err();
    assert!(
        matches!(
            err,
            AgentError::Budget(BudgetError::TaskBudgetSpent { tokens: 120, .. })
        ),
        "{err:?}"
    );
}

#[budgeted(agent = "early", limit = 1_000, crate = budget_core)]
async fn returns_early(fail: bool) -> Result<u32, AgentError> {
    for i in 0..10 {
        if i == 2 {
            if fail {
                return Err(AgentError::Tool("the tool broke".into()));
            }
            return Ok(here().step());
        }
    }
    Ok(0)
}

#[tokio::test]
async fn return_and_errors_of_the_body_are_the_function_s_own() {
    assert_eq!(returns_early(false).await.unwrap(), 3);
    assert!(matches!(
        returns_early(true).await,
        Err(AgentError::Tool(msg)) if msg == "the tool broke"
    ));
}
