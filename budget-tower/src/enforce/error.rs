//! Errors of the budget layer.

use budget_core::BudgetError;

/// Why a budgeted call failed: the budget refused it, or the inner service failed.
#[derive(Debug, thiserror::Error)]
pub enum BudgetLayerError<E> {
    /// Refused before the request left: over budget, paused agent, cancelled task, unknown
    /// model. The provider never saw it.
    #[error("call refused by the budget: {0}")]
    Budget(#[source] BudgetError),
    /// The inner service (the provider) failed; the reservation was released.
    #[error("LLM service failed: {0}")]
    Inner(#[source] E),
}

impl<E> BudgetLayerError<E> {
    /// The budget's refusal, if that is what this is.
    pub fn as_budget(&self) -> Option<&BudgetError> {
        match self {
            BudgetLayerError::Budget(e) => Some(e),
            BudgetLayerError::Inner(_) => None,
        }
    }

    /// The inner service's error, if that is what this is.
    pub fn as_inner(&self) -> Option<&E> {
        match self {
            BudgetLayerError::Budget(_) => None,
            BudgetLayerError::Inner(e) => Some(e),
        }
    }
}

/// Why the budget layer ended a stream before the provider did. What was consumed up to that
/// point is committed to the ledger (flagged estimated).
#[derive(Debug, thiserror::Error)]
pub enum Cutoff {
    /// The provider streamed more output than the call was granted (it ignored the clamped
    /// output cap); the stream is cut at the cap.
    #[error(
        "stream cut at {granted} output tokens: the provider sent {produced} (more than the budget granted)"
    )]
    OverGrant {
        /// Output tokens the reservation granted.
        granted: u64,
        /// Output tokens counted when the stream was cut.
        produced: u64,
    },
    /// The task was cancelled or its agent paused while the stream ran.
    #[error("stream stopped: {0}")]
    Stopped(#[source] BudgetError),
}
