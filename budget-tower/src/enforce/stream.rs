//! Metering a streamed response as it arrives.
//!
//! Output tokens are counted chunk by chunk (each delta with the model's tokenizer; counting
//! pieces apart can only over-count a merge, never under-count; another vendor's model is
//! counted as an `o200k_base` approximation raised by the estimate margin, so that its stream
//! is cut early rather than late). When the provider streams more
//! than the call was granted, or the task is cancelled or its agent paused meanwhile, the
//! stream is ended at once with a [`Cutoff`] error and what was consumed is committed. Once the
//! provider's usage report (OpenAI's `include_usage` chunk) has arrived, it is what is
//! committed, however the stream ends afterwards (normally, with an error, cut or dropped):
//! it carries the real prompt size and the reasoning tokens a local count cannot see. Without
//! one, the counted usage is committed, flagged estimated. A stream the consumer drops
//! half-way is committed the same way, never released: the provider billed what it sent. That
//! commit is handed to the store and the ledger in the drop itself — no spawned task, so a
//! runtime shutting down right after cannot lose it ([`Budget::flush`] waits for it).

use std::future::Future;
use std::sync::Arc;

use budget_core::scope::TaskScope;
use budget_core::{
    Attribution, Budget, BudgetError, BudgetStore, CommitDetails, Ledger, Reservation, TokenCount,
    Usage, count_text,
};
use futures::{Stream, StreamExt};

use super::Cutoff;
use crate::llm::{ChunkStream, LlmChunk};

pub(crate) struct MeteredStream<St: BudgetStore, L: Ledger> {
    budget: Budget<St, L>,
    reservation: Option<Reservation<St, L>>,
    who: Attribution,
    scope: Option<TaskScope>,
    model: String,
    prompt: TokenCount,
    /// Output tokens the stream may carry: the output cap granted, times the choices.
    granted: u64,
    counted: u64,
    reported: Option<Usage>,
    served: Option<Arc<str>>,
    /// The ledger details decided when the call was made (kind, savings, requested model).
    details: CommitDetails,
}

impl<St: BudgetStore, L: Ledger> MeteredStream<St, L> {
    pub(crate) fn new(
        budget: Budget<St, L>,
        reservation: Reservation<St, L>,
        scope: Option<TaskScope>,
        model: String,
        prompt: TokenCount,
        details: CommitDetails,
    ) -> Self {
        // Every choice streams into the same chunks: the grant is the output cap times the
        // choices, which is what the reservation holds.
        let granted = reservation.billed_at_most().output;
        MeteredStream {
            budget,
            who: reservation.attribution().clone(),
            reservation: Some(reservation),
            scope,
            model,
            prompt,
            granted,
            counted: 0,
            reported: None,
            served: None,
            details,
        }
    }

    /// The metered stream: `inner`'s chunks, cut off and committed as the module docs say.
    pub(crate) fn wrap<C, E>(
        self,
        inner: ChunkStream<C, E>,
    ) -> impl Stream<Item = Result<C, E>> + Send + 'static
    where
        C: LlmChunk + Send + 'static,
        E: From<Cutoff> + Send + 'static,
    {
        futures::stream::unfold(Some((self, inner)), |state| async move {
            let (mut meter, mut inner) = state?;
            match inner.next().await {
                Some(Ok(chunk)) => match meter.observe(&chunk) {
                    None => Some((Ok(chunk), Some((meter, inner)))),
                    Some(cutoff) => {
                        drop(inner); // closes the connection: the provider stops generating
                        meter.settle().await;
                        Some((Err(E::from(cutoff)), None))
                    }
                },
                Some(Err(error)) => {
                    meter.settle().await;
                    Some((Err(error), None))
                }
                None => {
                    meter.settle().await;
                    None
                }
            }
        })
    }

    /// Counts a chunk; says whether the stream must be cut here.
    fn observe<C: LlmChunk>(&mut self, chunk: &C) -> Option<Cutoff> {
        if let Some(usage) = chunk.usage() {
            self.reported
                .get_or_insert_with(Usage::default)
                .merge_cumulative(&usage);
        }
        if self.served.is_none() {
            self.served = chunk.served_model().map(Arc::from);
        }
        let text = chunk.output_text();
        if !text.is_empty() {
            self.counted = self
                .counted
                .saturating_add(count_text(&self.model, &text).with_estimate_margin().tokens);
        }
        if self.counted > self.granted {
            return Some(Cutoff::OverGrant {
                granted: self.granted,
                produced: self.counted,
            });
        }
        self.stopped().map(Cutoff::Stopped)
    }

    /// Whether the task was cancelled or the agent paused since the call started.
    fn stopped(&self) -> Option<BudgetError> {
        let controls = self.budget.controls();
        let cancelled = self.scope.as_ref().is_some_and(TaskScope::is_cancelled)
            || self.who.task().is_some_and(|t| controls.is_cancelled(t));
        if cancelled {
            let task = self
                .who
                .task()
                .cloned()
                .unwrap_or_else(budget_core::TaskId::generate);
            return Some(BudgetError::TaskCancelled { task });
        }
        controls
            .is_paused(&self.who)
            .then(|| BudgetError::AgentPaused {
                agent: self.who.agent_arc().clone(),
            })
    }

    /// What to commit: the provider's report once it arrived (whatever happened after it),
    /// else what was counted (flagged estimated). A report never counts less output than was
    /// seen: a provider reporting less than it streamed is not taken at its word.
    fn final_usage(&self) -> (Usage, bool) {
        match self.reported {
            Some(reported) if reported.output >= self.counted => (reported, false),
            Some(reported) => (
                Usage {
                    output: self.counted,
                    ..reported
                },
                true,
            ),
            None => (Usage::new(self.prompt.tokens, self.counted), true),
        }
    }

    /// Hands the commit over (at once: see the module docs) and returns a future for its
    /// outcome, or `None` when it was already committed.
    fn commit(&mut self) -> Option<impl Future<Output = ()> + Send + 'static> {
        let reservation = self.reservation.take()?;
        let (usage, estimated) = self.final_usage();
        let details = CommitDetails {
            served_model: self.served.clone(),
            estimated,
            ..self.details.clone()
        };
        let committing = reservation.commit_with(usage, details);
        Some(async move {
            if let Err(error) = committing.await {
                tracing::error!(%error, "usage of a streamed LLM call could not be recorded");
            }
        })
    }

    async fn settle(&mut self) {
        if let Some(commit) = self.commit() {
            commit.await;
        }
    }
}

impl<St: BudgetStore, L: Ledger> Drop for MeteredStream<St, L> {
    /// The consumer dropped the stream before its end: commit what was consumed. Creating the
    /// commit hands it over; nobody is left to wait for its outcome.
    fn drop(&mut self) {
        drop(self.commit());
    }
}

impl<St: BudgetStore, L: Ledger> std::fmt::Debug for MeteredStream<St, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredStream")
            .field("model", &self.model)
            .field("granted", &self.granted)
            .field("counted", &self.counted)
            .finish_non_exhaustive()
    }
}
