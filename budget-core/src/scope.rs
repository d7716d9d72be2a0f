//! The task scope: who is spending, with what per-task budget, carried implicitly across
//! `.await`s.
//!
//! An agent function runs inside a [`TaskScope`] (the `#[budgeted]` macro opens one; without
//! the macro, [`TaskScope::run`] does). Every LLM call made through the budget layer inside it,
//! at any depth of the call tree, is attributed to the scope's agent, task and current step,
//! reserved against the task's own limits (and its parents': a sub-agent cannot spend around
//! its parent), and recorded back into the scope. Tasks spawned from inside do not inherit the
//! scope by themselves: wrap their futures with [`TaskScope::run`] to carry it.
//!
//! At each **step boundary** (each loop iteration of a `#[budgeted]` function, or a call to
//! [`TaskScope::step_boundary`]) the scope says whether the task may go on: not when it was
//! cancelled from outside or by runaway detection, when it reached its step cap, or when its
//! budget is spent. The check reads a few atomics: no lock, no allocation.
//!
//! A scope nested (at any depth) in a scope of the *same task id* is part of that task: its
//! calls are attributed to the task, and cancelling the task reaches it through the outer
//! scope. Its own cap is still its own: it is counted under a derived id (`<task>#<n>`, unique
//! in the process), so the outer cap is not charged twice and the inner scope ending does not
//! wipe the outer one's counters.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Numbers the derived counter ids of scopes nested in a scope of their own task.
static NESTED: AtomicU64 = AtomicU64::new(1);

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::attribution::{Attribution, TaskId};
use crate::limits::{Limit, Selector, Window};
use crate::runaway::{self, Detector, RunawayConfig, RunawayKind};
use crate::{BudgetError, Money};

tokio::task_local! {
    static CURRENT: TaskScope;
}

/// A task's own budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskLimits {
    /// Tokens the task may spend in all (input + output).
    pub tokens: Option<u64>,
    /// Money the task may spend.
    pub money: Option<Money>,
    /// Steps (loop iterations) the task may take.
    pub max_steps: Option<u32>,
}

/// One running task of an agent. Cheap to clone; clones share everything.
///
/// ```
/// use budget_core::{Attribution, BudgetError, TaskId};
/// use budget_core::scope::TaskScope;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let scope = TaskScope::builder(Attribution::agent("researcher").with_task(TaskId::new("t-7")))
///     .tokens(50_000)
///     .max_steps(2)
///     .build();
/// let steps = scope.clone().run(async {
///     let here = TaskScope::current().expect("inside the scope");
///     let mut steps = 0;
///     loop {
///         match here.step_boundary() {
///             Ok(step) => steps = step,
///             Err(BudgetError::StepLimit { .. }) => break steps,
///             Err(other) => panic!("{other}"),
///         }
///     }
/// }).await;
/// assert_eq!(steps, 2);
/// assert!(TaskScope::current().is_none());
/// # });
/// ```
#[derive(Clone)]
pub struct TaskScope {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TaskScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskScope")
            .field("agent", &self.inner.attribution.agent_name())
            .field("task", self.task())
            .field("step", &self.step())
            .field("limits", &self.inner.limits)
            .field("cancelled", &self.is_cancelled())
            .finish_non_exhaustive()
    }
}

/// Work to do when a task ends.
type Finisher = Box<dyn FnOnce() + Send>;

struct Inner {
    attribution: Attribution,
    /// The id the task's own limit is counted under: the task's id, or a derived one when an
    /// enclosing scope has the same task id.
    counter_task: TaskId,
    limits: TaskLimits,
    /// The task's limit as the budget store counts it (`None` without a token or money cap).
    limit: Option<Arc<Limit>>,
    runaway: RunawayConfig,
    step: AtomicU32,
    cancel: CancellationToken,
    parent: Option<TaskScope>,
    used_tokens: AtomicU64,
    used_money: Mutex<Money>,
    detector: Mutex<Detector>,
    /// Why the task was stopped from inside (runaway), reported instead of a bare cancel.
    stopped: Mutex<Option<RunawayKind>>,
    /// Run when the last clone goes (forget the task's counters wherever it reserved), each
    /// under a key so that it is registered once.
    on_finish: Mutex<Vec<(usize, Finisher)>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for (_, finish) in self.on_finish.get_mut().drain(..) {
            finish();
        }
    }
}

/// Builds a [`TaskScope`].
#[derive(Debug)]
pub struct TaskScopeBuilder {
    attribution: Attribution,
    limits: TaskLimits,
    runaway: RunawayConfig,
    parent: Option<TaskScope>,
}

impl TaskScopeBuilder {
    /// Caps the task's tokens.
    pub fn tokens(mut self, tokens: u64) -> Self {
        self.limits.tokens = Some(tokens);
        self
    }

    /// Caps the task's money.
    pub fn money(mut self, money: Money) -> Self {
        self.limits.money = Some(money);
        self
    }

    /// Caps the task's steps.
    pub fn max_steps(mut self, steps: u32) -> Self {
        self.limits.max_steps = Some(steps);
        self
    }

    /// Sets the runaway detection (default: every signal on).
    pub fn runaway(mut self, config: RunawayConfig) -> Self {
        self.runaway = config;
        self
    }

    /// Makes the task a child of `parent`: its spend also counts against the parent's limits,
    /// and cancelling the parent cancels it.
    pub fn parent(mut self, parent: Option<TaskScope>) -> Self {
        self.parent = parent;
        self
    }

    /// Makes the task a child of the scope the caller runs in, if any.
    pub fn child_of_current(self) -> Self {
        self.parent(TaskScope::current())
    }

    /// The scope.
    pub fn build(self) -> TaskScope {
        let TaskScopeBuilder {
            attribution,
            limits,
            runaway,
            parent,
        } = self;
        let attribution = match attribution.task() {
            Some(_) => attribution,
            None => attribution.with_task(TaskId::generate()),
        };
        let task = attribution.task().cloned().unwrap_or_else(TaskId::generate);
        let mut ancestors = std::iter::successors(parent.as_ref(), |p| p.parent());
        let counter_task = if ancestors.any(|p| *p.task() == task) {
            let n = NESTED.fetch_add(1, Ordering::Relaxed);
            TaskId::new(format!("{task}#{n}"))
        } else {
            task
        };
        let limit = (limits.tokens.is_some() || limits.money.is_some()).then(|| {
            let mut limit = Limit::new(
                format!("task:{counter_task}"),
                Selector::task(counter_task.as_str()),
                Window::PerTask,
            );
            limit.cap.tokens = limits.tokens;
            limit.cap.money = limits.money;
            Arc::new(limit)
        });
        let cancel = match &parent {
            Some(p) => p.inner.cancel.child_token(),
            None => CancellationToken::new(),
        };
        TaskScope {
            inner: Arc::new(Inner {
                attribution,
                counter_task,
                limits,
                limit,
                runaway,
                step: AtomicU32::new(0),
                cancel,
                parent,
                used_tokens: AtomicU64::new(0),
                used_money: Mutex::new(Money::ZERO),
                detector: Mutex::new(Detector::default()),
                stopped: Mutex::new(None),
                on_finish: Mutex::new(Vec::new()),
            }),
        }
    }
}

impl TaskScope {
    /// A builder for a scope attributed to `attribution` (a task id is generated when it has
    /// none).
    pub fn builder(attribution: Attribution) -> TaskScopeBuilder {
        TaskScopeBuilder {
            attribution,
            limits: TaskLimits::default(),
            runaway: RunawayConfig::default(),
            parent: None,
        }
    }

    /// A scope with no limits of its own.
    pub fn new(attribution: Attribution) -> TaskScope {
        TaskScope::builder(attribution).build()
    }

    /// A child scope (a sub-agent) with no limits of its own; its spend counts toward this
    /// one's limits and its cancellation follows this one's.
    pub fn child(&self, attribution: Attribution) -> TaskScope {
        TaskScope::builder(attribution)
            .parent(Some(self.clone()))
            .build()
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
            .expect("the builder always sets a task")
    }

    /// The id the task's own limit is counted under: [`TaskScope::task`], except for a scope
    /// nested in a scope of the same task, which gets an id of its own (`<task>#<n>`).
    pub fn counter_task(&self) -> &TaskId {
        &self.inner.counter_task
    }

    /// Whether this is the outermost scope of its task id: the one that cancelling the task
    /// binds to, and whose end finishes the task. A scope nested in a scope of the same task
    /// is reached through that one.
    pub fn owns_task(&self) -> bool {
        self.inner.counter_task == *self.task()
    }

    /// The task's own limits.
    pub fn limits(&self) -> &TaskLimits {
        &self.inner.limits
    }

    /// The current step (0 before the first).
    pub fn step(&self) -> u32 {
        self.inner.step.load(Ordering::Relaxed)
    }

    /// Starts the next step and returns its number (1-based), without any check.
    pub fn next_step(&self) -> u32 {
        self.inner
            .step
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1)
    }

    /// The step boundary: may the task take another step? If so, the step starts and its
    /// number is returned; if not, why not — cancelled from outside, stopped as a runaway, at
    /// its step cap, or its budget (tokens or money) spent.
    pub fn step_boundary(&self) -> Result<u32, BudgetError> {
        self.refusal()?;
        let step = self.next_step();
        if let Some(max_steps) = self.inner.limits.max_steps
            && step > max_steps
        {
            return Err(BudgetError::StepLimit {
                task: self.task().clone(),
                max_steps,
            });
        }
        Ok(step)
    }

    /// Whether a call may be made now: `Err` when the task (or an ancestor) was cancelled or
    /// stopped as a runaway, or a task budget on the way up is spent.
    pub fn refusal(&self) -> Result<(), BudgetError> {
        if self.inner.cancel.is_cancelled() {
            return Err(self.stop_error());
        }
        let mut scope = Some(self);
        while let Some(s) = scope {
            s.spent_check()?;
            scope = s.parent();
        }
        Ok(())
    }

    fn spent_check(&self) -> Result<(), BudgetError> {
        let limits = &self.inner.limits;
        let tokens = self.inner.used_tokens.load(Ordering::Relaxed);
        let tokens_spent = limits.tokens.is_some_and(|cap| tokens >= cap);
        let money_spent = limits
            .money
            .is_some_and(|cap| *self.inner.used_money.lock() >= cap);
        if tokens_spent || money_spent {
            return Err(BudgetError::TaskBudgetSpent {
                task: self.task().clone(),
                tokens,
                money: *self.inner.used_money.lock(),
            });
        }
        Ok(())
    }

    /// Why the task was cancelled: a runaway signal it (or an ancestor) fired, or a cancel from
    /// outside.
    fn stop_error(&self) -> BudgetError {
        let mut scope = Some(self);
        while let Some(s) = scope {
            if let Some(kind) = s.inner.stopped.lock().clone() {
                return BudgetError::Runaway {
                    task: s.task().clone(),
                    kind,
                };
            }
            scope = s.parent();
        }
        BudgetError::TaskCancelled {
            task: self.task().clone(),
        }
    }

    /// The token that cancels this task (and its sub-agents).
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.inner.cancel
    }

    /// Cancels this task (and its sub-agents): the next step boundary and the next LLM call
    /// are refused.
    pub fn cancel(&self) {
        self.inner.cancel.cancel();
    }

    /// Whether this task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// The enclosing task, for a sub-agent.
    pub fn parent(&self) -> Option<&TaskScope> {
        self.inner.parent.as_ref()
    }

    /// The task's and its ancestors' limits, each with the id it is counted under
    /// ([`TaskScope::counter_task`]).
    pub fn task_limits(&self) -> Vec<(TaskId, Arc<Limit>)> {
        let mut out = Vec::new();
        let mut scope = Some(self);
        while let Some(s) = scope {
            if let Some(limit) = &s.inner.limit {
                out.push((s.counter_task().clone(), limit.clone()));
            }
            scope = s.parent();
        }
        out
    }

    /// Tokens and money this task (sub-agents included) has committed.
    pub fn used(&self) -> (u64, Money) {
        (
            self.inner.used_tokens.load(Ordering::Relaxed),
            *self.inner.used_money.lock(),
        )
    }

    /// Looks at the input of a call about to be made in the current step. Returns the runaway
    /// error (and cancels the task) when it repeats the previous steps' inputs.
    pub fn observe_input(&self, text: &str) -> Result<(), BudgetError> {
        let step = self.step();
        let found = self
            .inner
            .detector
            .lock()
            .observe_input(&self.inner.runaway, step, text);
        match found {
            Some(kind) => Err(self.stop_as_runaway(kind)),
            None => Ok(()),
        }
    }

    /// Records committed usage of a call made in this task: adds it here and to every
    /// ancestor, and runs the spike and retry-loop detectors. Called by the budget on commit.
    pub fn record(&self, tokens: u64, money: Money) {
        let step = self.step();
        let mut scope = Some(self);
        while let Some(s) = scope {
            s.inner.used_tokens.fetch_add(tokens, Ordering::Relaxed);
            *s.inner.used_money.lock() += money;
            scope = s.parent();
        }
        let config = &self.inner.runaway;
        let spike = self
            .inner
            .detector
            .lock()
            .observe_usage(config, step, tokens);
        let retry =
            runaway::observe_task_total(config, self.task(), tokens, self.inner.limits.tokens);
        if let Some(kind) = spike.or(retry) {
            self.stop_as_runaway(kind);
        }
    }

    fn stop_as_runaway(&self, kind: RunawayKind) -> BudgetError {
        tracing::warn!(
            target: "token_budget::runaway",
            agent = self.inner.attribution.agent_name(),
            task = %self.task(),
            step = self.step(),
            signal = %kind,
            "runaway agent stopped"
        );
        self.inner.stopped.lock().get_or_insert(kind.clone());
        self.inner.cancel.cancel();
        BudgetError::Runaway {
            task: self.task().clone(),
            kind,
        }
    }

    /// Whether something was registered under `key` with [`TaskScope::on_finish_once`].
    pub fn has_finisher(&self, key: usize) -> bool {
        self.inner.on_finish.lock().iter().any(|(k, _)| *k == key)
    }

    /// Runs `finish` when the last clone of this scope is dropped (the budget uses it to
    /// forget the task's counters) — unless something was already registered under `key`.
    pub fn on_finish_once(&self, key: usize, finish: impl FnOnce() + Send + 'static) {
        self.finish_once_with(key, || finish);
    }

    /// Like [`TaskScope::on_finish_once`], but `setup` (which returns the work to do at the
    /// end) runs only when nothing is registered under `key` yet, and no other caller can
    /// register under `key` meanwhile: what it sets up is undone exactly once. Returns whether
    /// `setup` ran.
    pub fn finish_once_with<F>(&self, key: usize, setup: impl FnOnce() -> F) -> bool
    where
        F: FnOnce() + Send + 'static,
    {
        let mut registered = self.inner.on_finish.lock();
        if registered.iter().any(|(k, _)| *k == key) {
            return false;
        }
        registered.push((key, Box::new(setup())));
        true
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
        parent.cancel();
        assert!(
            child.is_cancelled(),
            "cancelling a task cancels its sub-agents"
        );
        assert!(matches!(
            child.step_boundary(),
            Err(BudgetError::TaskCancelled { .. })
        ));
        assert!(TaskScope::current().is_none());
    }

    #[test]
    fn spend_rolls_up_and_stops_the_parent_too() {
        let parent = TaskScope::builder(Attribution::agent("lead"))
            .tokens(1_000)
            .build();
        let child = TaskScope::builder(Attribution::agent("helper"))
            .tokens(800)
            .parent(Some(parent.clone()))
            .build();
        assert_eq!(child.task_limits().len(), 2);
        child.record(600, Money::from_cents(1));
        assert_eq!(parent.used().0, 600);
        assert!(child.step_boundary().is_ok());
        parent.record(400, Money::ZERO);
        // The child has 200 of its own left, but its parent is spent.
        assert!(matches!(
            child.step_boundary(),
            Err(BudgetError::TaskBudgetSpent { task, .. }) if task == *parent.task()
        ));
    }

    #[test]
    fn runaway_repetition_cancels_with_its_reason() {
        let scope = TaskScope::new(Attribution::agent("looper"));
        for _ in 0..2 {
            scope.step_boundary().unwrap();
            scope.observe_input("fetch the same page again").unwrap();
        }
        scope.step_boundary().unwrap();
        let err = scope
            .observe_input("Fetch the same page again!")
            .unwrap_err();
        assert!(matches!(
            err,
            BudgetError::Runaway {
                kind: RunawayKind::Repetition { repeats: 3 },
                ..
            }
        ));
        assert!(matches!(
            scope.step_boundary(),
            Err(BudgetError::Runaway { .. })
        ));
    }

    #[test]
    fn finishing_runs_once_when_the_last_clone_goes() {
        let hits = Arc::new(AtomicU32::new(0));
        let scope = TaskScope::new(Attribution::agent("a"));
        for _ in 0..3 {
            let h = hits.clone();
            scope.on_finish_once(7, move || {
                h.fetch_add(1, Ordering::SeqCst);
            });
        }
        let clone = scope.clone();
        drop(scope);
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        drop(clone);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }
}
