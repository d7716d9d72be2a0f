//! Why a call may not be made, or could not be accounted.

use std::sync::Arc;

use jiff::Timestamp;

use crate::Money;
use crate::admission::{Amount, CapKind};
use crate::attribution::TaskId;
use crate::ledger::{LedgerError, UsageEvent};
use crate::limits::{Cap, LimitError, Period};
use crate::pricing::PriceError;
use crate::store::StoreError;

/// Why a call may not be made, or could not be accounted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetError {
    /// The window's budget is spent (committed plus reserved leaves too little). It may free up:
    /// see [`Denied::retry_after`].
    #[error("budget exhausted: {0}")]
    Exhausted(Box<Denied>),
    /// The call alone is larger than the limit: it can never be made as it is.
    #[error("call can never fit: {0}")]
    ExceedsLimit(Box<Denied>),
    /// The agent is paused.
    #[error("agent {agent:?} is paused")]
    AgentPaused {
        /// The agent.
        agent: Arc<str>,
    },
    /// The task was cancelled (from outside: an alert action, an admin, a parent task).
    #[error("task {task} was cancelled")]
    TaskCancelled {
        /// The task.
        task: TaskId,
    },
    /// The task took as many steps as it may.
    #[error("task {task} reached its limit of {max_steps} steps")]
    StepLimit {
        /// The task.
        task: TaskId,
        /// Its step cap.
        max_steps: u32,
    },
    /// The task (or the parent task it runs under) has spent its own budget.
    #[error("task {task} has spent its budget ({tokens} tokens, {money})")]
    TaskBudgetSpent {
        /// The task whose budget is spent.
        task: TaskId,
        /// Tokens it committed.
        tokens: u64,
        /// Money it committed.
        money: Money,
    },
    /// Runaway detection stopped the task.
    #[error("task {task} stopped as a runaway: {kind}")]
    Runaway {
        /// The task.
        task: TaskId,
        /// Which signal fired.
        kind: crate::runaway::RunawayKind,
    },
    /// The model could not be priced.
    #[error(transparent)]
    Pricing(#[from] PriceError),
    /// The budget store failed; the call is refused (fail closed).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Usage was recorded in the ledger, but the budget store could not count it (it is
    /// unreachable; a store that retries says so in its message). The event is kept here.
    #[error("usage event {} recorded in the ledger but not counted by the budget store: {source}", event.id)]
    Unsettled {
        /// Why the store failed.
        source: StoreError,
        /// The recorded event.
        event: Box<UsageEvent>,
    },
    /// The usage was settled in the budget but the ledger did not take the event. The event is
    /// returned so that it can be recorded again: usage is never silently lost.
    #[error("usage event {} not recorded: {source}", event.id)]
    Ledger {
        /// The ledger's error.
        source: LedgerError,
        /// The event that was not recorded.
        event: Box<UsageEvent>,
    },
    /// The ledger could not answer a query (restoring window usage at start-up) or flush what
    /// it was handed ([`Budget::flush`](super::Budget::flush)).
    #[error(transparent)]
    LedgerQuery(LedgerError),
    /// The control log could not take or give a decision; nothing was decided.
    #[error("control log: {0}")]
    ControlLog(#[source] LedgerError),
    /// A limit that cannot be held (a duplicate id, ...).
    #[error(transparent)]
    InvalidLimit(#[from] LimitError),
    /// A calendar window could not be computed in the configured time zone.
    #[error("cannot compute the {period} window: {message}")]
    Window {
        /// Which period.
        period: &'static str,
        /// jiff's explanation.
        message: String,
    },
}

/// Which limit refused a call, and by how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The limit that refused.
    pub limit: Arc<str>,
    /// Its counter's scope value.
    pub scope: Arc<str>,
    /// Which cap refused.
    pub cap_kind: CapKind,
    /// The cap.
    pub cap: Cap,
    /// Committed plus reserved on the counter when it refused.
    pub in_use: Amount,
    /// What the call asked to reserve.
    pub requested: Amount,
    /// When enough budget frees up, if known (a new calendar window, rolling usage ageing out);
    /// `None` when only in-flight calls settling can free it, or never.
    pub retry_after: Option<Timestamp>,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "limit {:?} ({}) has {} tokens / {} in use of {}; the call asks for {} tokens / {}",
            self.limit,
            self.scope,
            self.in_use.tokens,
            self.in_use.money,
            CapDisplay(&self.cap),
            self.requested.tokens,
            self.requested.money,
        )?;
        if let Some(t) = self.retry_after {
            write!(f, "; frees up at {t}")?;
        }
        Ok(())
    }
}

pub(super) struct CapDisplay<'a>(pub(super) &'a Cap);

impl std::fmt::Display for CapDisplay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.0.tokens, self.0.money) {
            (Some(t), Some(m)) => write!(f, "{t} tokens / {m}"),
            (Some(t), None) => write!(f, "{t} tokens"),
            (None, Some(m)) => write!(f, "{m}"),
            (None, None) => f.write_str("no cap"),
        }
    }
}
pub(super) fn window_error(period: Period, e: jiff::Error) -> BudgetError {
    BudgetError::Window {
        period: period.as_str(),
        message: e.to_string(),
    }
}
