//! The task scope: who is spending, carried implicitly across `.await`s.
//!
//! An agent function runs inside a [`TaskScope`] (the `#[budgeted]` macro opens one; without
//! the macro, [`TaskScope::run`] does). Every LLM call made through the budget layer inside it,
//! at any depth of the call tree, is attributed to the scope's agent, task and current step,
//! without passing anything down. Tasks spawned from inside do not inherit it by themselves:
//! wrap their futures with [`TaskScope::run`] (or [`TaskScope::current`]`.run(..)`) to carry it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio_util::sync::CancellationToken;

use crate::attribution::{Attribution, TaskId};

tokio::task_local! {
    static CURRENT: TaskScope;
}

/// One running task of an agent. Cheap to clone; clones share the step counter and the
/// cancellation token.
///
/// ```
/// use budget_core::{Attribution, TaskId};
/// use budget_core::scope::TaskScope;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let scope = TaskScope::new(Attribution::agent("researcher").with_task(TaskId::new("t-7")));
/// scope.clone().run(async {
///     let here = TaskScope::current().expect("inside the scope");
///     here.next_step();
///     assert_eq!(here.attribution().step(), Some(1));
///     assert_eq!(here.attribution().task().unwrap().as_str(), "t-7");
/// }).await;
/// assert!(TaskScope::current().is_none());
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct TaskScope {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    attribution: Attribution,
    step: AtomicU32,
    cancel: CancellationToken,
    parent: Option<TaskScope>,
}

impl TaskScope {
    /// A scope for the given attribution. A task id is generated when it has none.
    pub fn new(attribution: Attribution) -> TaskScope {
        TaskScope::with_parent(attribution, CancellationToken::new(), None)
    }

    /// A child scope (a sub-agent) whose cancellation follows this one's.
    pub fn child(&self, attribution: Attribution) -> TaskScope {
        TaskScope::with_parent(
            attribution,
            self.inner.cancel.child_token(),
            Some(self.clone()),
        )
    }

    fn with_parent(
        attribution: Attribution,
        cancel: CancellationToken,
        parent: Option<TaskScope>,
    ) -> TaskScope {
        let attribution = match attribution.task() {
            Some(_) => attribution,
            None => attribution.with_task(TaskId::generate()),
        };
        TaskScope {
            inner: Arc::new(Inner {
                attribution,
                step: AtomicU32::new(0),
                cancel,
                parent,
            }),
        }
    }

    /// The scope the calling task runs in, if any.
    pub fn current() -> Option<TaskScope> {
        CURRENT.try_with(TaskScope::clone).ok()
    }

    /// Runs `fut` inside this scope.
    pub async fn run<F: Future>(self, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }

    /// The attribution of a call made now: the scope's, with the current step.
    pub fn attribution(&self) -> Attribution {
        match self.step() {
            0 => self.inner.attribution.clone(),
            step => self.inner.attribution.clone().with_step(step),
        }
    }

    /// The task's id.
    pub fn task(&self) -> &TaskId {
        self.inner
            .attribution
            .task()
            .expect("TaskScope::new always sets a task")
    }

    /// The current step (0 before the first).
    pub fn step(&self) -> u32 {
        self.inner.step.load(Ordering::Relaxed)
    }

    /// Starts the next step and returns its number (1-based).
    pub fn next_step(&self) -> u32 {
        self.inner
            .step
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1)
    }

    /// The token that cancels this task (and its children).
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.inner.cancel
    }

    /// Whether this task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// The enclosing task, for a sub-agent.
    pub fn parent(&self) -> Option<&TaskScope> {
        self.inner.parent.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scopes_nest_and_do_not_leak() {
        let parent = TaskScope::new(Attribution::agent("lead"));
        let child = parent.child(Attribution::agent("helper"));
        parent
            .clone()
            .run(async {
                assert_eq!(
                    TaskScope::current().unwrap().attribution().agent_name(),
                    "lead"
                );
                child
                    .clone()
                    .run(async {
                        let here = TaskScope::current().unwrap();
                        assert_eq!(here.attribution().agent_name(), "helper");
                        assert_eq!(here.parent().unwrap().attribution().agent_name(), "lead");
                    })
                    .await;
                assert_eq!(
                    TaskScope::current().unwrap().attribution().agent_name(),
                    "lead"
                );
            })
            .await;
        parent.cancel_token().cancel();
        assert!(
            child.is_cancelled(),
            "cancelling a task cancels its sub-agents"
        );
        assert!(TaskScope::current().is_none());
    }
}
