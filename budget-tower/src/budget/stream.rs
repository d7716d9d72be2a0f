//! Metering a streamed response as it arrives.
//!
//! Output tokens are counted chunk by chunk (each delta with the model's tokenizer; counting
//! pieces apart can only over-count a merge, never under-count). When the provider streams more
//! than the call was granted, or the task is cancelled or its agent paused meanwhile, the
//! stream is ended at once with a [`Cutoff`] error and what was consumed is committed. When the
//! stream ends normally, the provider's final usage report (OpenAI's `include_usage` chunk)
//! settles the count exactly; without one, the counted usage is committed, flagged estimated.
//! A stream the consumer drops half-way is committed the same way, never released: the
//! provider billed what it sent.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Waker};

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
        granted: u64,
        details: CommitDetails,
    ) -> Self {
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
                        meter.settle(true).await;
                        Some((Err(E::from(cutoff)), None))
                    }
                },
                Some(Err(error)) => {
                    meter.settle(true).await;
                    Some((Err(error), None))
                }
                None => {
                    meter.settle(false).await;
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
                .saturating_add(count_text(&self.model, &text).tokens);
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

    /// What to commit: the provider's report when the stream completed with one, else what
    /// was counted (flagged estimated).
    fn final_usage(&self, cut: bool) -> (Usage, bool) {
        match self.reported {
            Some(reported) if !cut => (reported, false),
            _ => (Usage::new(self.prompt.tokens, self.counted), true),
        }
    }

    fn commit_future(&mut self, cut: bool) -> Option<impl Future<Output = ()> + Send + 'static> {
        let reservation = self.reservation.take()?;
        let (usage, estimated) = self.final_usage(cut);
        let details = CommitDetails {
            served_model: self.served.clone(),
            estimated,
            ..self.details.clone()
        };
        Some(async move {
            if let Err(error) = reservation.commit_with(usage, details).await {
                tracing::error!(%error, "usage of a streamed LLM call could not be recorded");
            }
        })
    }

    async fn settle(&mut self, cut: bool) {
        if let Some(commit) = self.commit_future(cut) {
            commit.await;
        }
    }
}

impl<St: BudgetStore, L: Ledger> Drop for MeteredStream<St, L> {
    /// The consumer dropped the stream before its end: commit what was consumed.
    fn drop(&mut self) {
        let Some(commit) = self.commit_future(true) else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(commit);
            }
            Err(_) => {
                // No runtime to finish on: in-memory budgets complete at once.
                let mut commit = std::pin::pin!(commit);
                let _ = commit
                    .as_mut()
                    .poll(&mut Context::from_waker(Waker::noop()));
            }
        }
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
