//! The scope a `#[budgeted]` function runs in: its agent, task, user, critical flag, limits and
//! runaway settings come from the arguments; a budgeted function called inside another is its
//! sub-task; methods work.

use budget_core::runaway::RunawayConfig;
use budget_core::scope::TaskScope;
use budget_core::{BudgetError, Money, TaskId};
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

fn here() -> TaskScope {
    TaskScope::current().expect("inside the budgeted function's scope")
}

struct Ticket {
    id: u64,
    owner: &'static str,
}

#[budgeted(
    agent = "support",
    limit = 8_000,
    cost_limit = "$0.50",
    max_steps = 12,
    task = format!("ticket-{}", ticket.id),
    user = ticket.owner,
    critical,
    crate = budget_core
)]
async fn answer(ticket: &Ticket) -> Result<TaskScope, AgentError> {
    Ok(here())
}

#[tokio::test]
async fn the_arguments_make_the_scope() {
    let ticket = Ticket {
        id: 42,
        owner: "alice",
    };
    let scope = answer(&ticket).await.unwrap();
    let who = scope.attribution();
    assert_eq!(who.agent_name(), "support");
    assert_eq!(scope.task(), &TaskId::new("ticket-42"));
    assert_eq!(who.user(), Some("alice"));
    assert!(who.is_critical());
    let limits = scope.limits();
    assert_eq!(limits.tokens, Some(8_000));
    assert_eq!(limits.money, Some(Money::from_cents(50)));
    assert_eq!(limits.max_steps, Some(12));
    assert!(scope.parent().is_none());
}

#[budgeted(agent = "plain", limit = 1_000, crate = ::budget_core)]
async fn plain() -> Result<TaskScope, AgentError> {
    Ok(here())
}

#[tokio::test]
async fn without_optional_arguments_the_scope_has_defaults_and_a_fresh_task_id() {
    let first = plain().await.unwrap();
    let second = plain().await.unwrap();
    assert_ne!(first.task(), second.task());
    assert_eq!(first.attribution().user(), None);
    assert!(!first.attribution().is_critical());
    assert_eq!(first.limits().money, None);
    assert_eq!(first.limits().max_steps, None);
}

#[budgeted(
    agent = "precise",
    limit = 1,
    cost_limit = "2.5e-06",
    crate = "budget_core"
)]
async fn precise() -> Result<TaskScope, AgentError> {
    Ok(here())
}

#[tokio::test]
async fn cost_limits_are_exact() {
    let scope = precise().await.unwrap();
    assert_eq!(
        scope.limits().money,
        Some(Money::parse_dollars("0.0000025").unwrap())
    );
}

#[budgeted(agent = "inner", limit = 500, crate = budget_core)]
async fn inner() -> Result<TaskScope, AgentError> {
    Ok(here())
}

#[budgeted(agent = "outer", limit = 5_000, task = "outer-task", crate = budget_core)]
async fn outer() -> Result<(TaskScope, TaskScope), AgentError> {
    let child = inner().await?;
    Ok((here(), child))
}

#[tokio::test]
async fn a_budgeted_fn_called_inside_another_is_its_sub_task() {
    let (outer, inner) = outer().await.unwrap();
    assert_eq!(outer.task(), &TaskId::new("outer-task"));
    let parent = inner.parent().expect("the inner task has a parent");
    assert_eq!(parent.task(), outer.task());
    assert_eq!(inner.attribution().agent_name(), "inner");
    assert_eq!(
        inner.task_limits().len(),
        2,
        "its own limit and the outer's"
    );
}

/// Repeats one input until the runaway detection stops it (or `steps` steps pass).
async fn repeat_input(steps: u32) -> Result<u32, BudgetError> {
    let scope = here();
    for _ in 0..steps {
        scope.step_boundary()?;
        scope.observe_input("fetch the same page again")?;
    }
    Ok(scope.step())
}

#[budgeted(agent = "looper", limit = 1_000, crate = budget_core)]
async fn default_runaway() -> Result<u32, AgentError> {
    Ok(repeat_input(6).await?)
}

#[budgeted(agent = "looper", limit = 1_000, runaway = false, crate = budget_core)]
async fn no_runaway() -> Result<u32, AgentError> {
    Ok(repeat_input(6).await?)
}

#[budgeted(
    agent = "looper",
    limit = 1_000,
    runaway(repeat = 5, similarity = 3, spike = 5, spike_after = 3, spike_min_tokens = 2000, retries = 3),
    crate = budget_core
)]
async fn lenient_runaway() -> Result<u32, AgentError> {
    Ok(repeat_input(6).await?)
}

#[tokio::test]
async fn runaway_settings_come_from_the_arguments() {
    assert_eq!(RunawayConfig::default().repeat_limit, 3);
    assert!(matches!(
        default_runaway().await,
        Err(AgentError::Budget(BudgetError::Runaway { .. }))
    ));
    assert_eq!(no_runaway().await.unwrap(), 6);
    let err = lenient_runaway().await.unwrap_err();
    assert!(
        matches!(&err, AgentError::Budget(BudgetError::Runaway { kind, .. })
            if kind.to_string().contains("5 consecutive steps")),
        "{err:?}"
    );
}

struct Researcher {
    name: String,
    calls: u32,
}

impl Researcher {
    #[budgeted(agent = "researcher", limit = 1_000, task = self.name, max_steps = 2, crate = budget_core)]
    async fn look(&self, topics: &[&str]) -> Result<usize, AgentError> {
        let mut looked = 0;
        for _topic in topics {
            looked += 1;
        }
        assert_eq!(here().task().as_str(), self.name);
        Ok(looked)
    }

    #[budgeted(agent = "researcher", limit = 1_000, crate = budget_core)]
    async fn note(&mut self, times: u32) -> Result<u32, AgentError> {
        while self.calls < times {
            self.calls += 1;
        }
        Ok(here().step())
    }
}

#[tokio::test]
async fn methods_with_ref_and_mut_receivers() {
    let mut r = Researcher {
        name: "r-1".into(),
        calls: 0,
    };
    assert_eq!(r.look(&["a", "b"]).await.unwrap(), 2);
    assert!(matches!(
        r.look(&["a", "b", "c"]).await,
        Err(AgentError::Budget(BudgetError::StepLimit {
            max_steps: 2,
            ..
        }))
    ));
    assert_eq!(
        r.note(4).await.unwrap(),
        4,
        "one step per iteration, none for the final check"
    );
    assert_eq!(r.calls, 4);
}
