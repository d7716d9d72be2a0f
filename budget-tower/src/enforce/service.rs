use std::sync::Arc;
use std::task::{Context, Poll};

use budget_core::scope::TaskScope;

use crate::note::CallNote;
use budget_core::{Budget, BudgetStore, CallEstimate, Ledger, Usage, count_text};
use tower::Service;

use super::future::ResponseFuture;

use super::stream::MeteredStream;
use super::{Billed, BilledFailure, BudgetLayerError};
use crate::llm::{LlmRequest, LlmResponse, attribution_of, take_readied};

/// The service of [`BudgetLayer`](super::BudgetLayer).
#[derive(Debug)]
pub struct BudgetService<S, St: BudgetStore, L: Ledger, B = ()> {
    inner: S,
    budget: Budget<St, L>,
    default_output_cap: u64,
    billed: B,
}

impl<S: Clone, St: BudgetStore, L: Ledger, B: Clone> Clone for BudgetService<S, St, L, B> {
    fn clone(&self) -> Self {
        BudgetService {
            inner: self.inner.clone(),
            budget: self.budget.clone(),
            default_output_cap: self.default_output_cap,
            billed: self.billed.clone(),
        }
    }
}

impl<S, St: BudgetStore, L: Ledger, B> BudgetService<S, St, L, B> {
    pub(crate) fn new(inner: S, budget: Budget<St, L>, default_output_cap: u64, billed: B) -> Self {
        BudgetService {
            inner,
            budget,
            default_output_cap,
            billed,
        }
    }

    inner_service_accessors!();
}

impl<S, R, St, L, B> Service<R> for BudgetService<S, St, L, B>
where
    R: LlmRequest + Send + 'static,
    S: Service<R> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: LlmResponse,
    S::Error: Send + 'static,
    St: BudgetStore,
    L: Ledger,
    B: BilledFailure<S::Error>,
{
    type Response = S::Response;
    type Error = BudgetLayerError<S::Error>;
    type Future = ResponseFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(BudgetLayerError::Inner)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let inner = take_readied(&mut self.inner);
        ResponseFuture::new(budgeted_call(
            self.budget.clone(),
            inner,
            request,
            self.default_output_cap,
            self.billed.clone(),
        ))
    }
}

/// The output cap a call wants: its own (else the model's maximum, else the default).
fn wanted_output<St: BudgetStore, L: Ledger>(
    budget: &Budget<St, L>,
    model: &str,
    requested: Option<u64>,
    default_cap: u64,
) -> u64 {
    requested.unwrap_or_else(|| {
        budget
            .prices()
            .resolve(model)
            .ok()
            .and_then(|r| r.price.max_output_tokens)
            .unwrap_or(default_cap)
    })
}

async fn budgeted_call<S, R, St, L, B>(
    budget: Budget<St, L>,
    mut inner: S,
    mut request: R,
    default_cap: u64,
    billed: B,
) -> Result<S::Response, BudgetLayerError<S::Error>>
where
    R: LlmRequest,
    S: Service<R>,
    S::Response: LlmResponse,
    St: BudgetStore,
    L: Ledger,
    B: BilledFailure<S::Error>,
{
    let scope = TaskScope::current();
    let note = CallNote::current();
    let who = attribution_of(scope.as_ref(), &request);
    if let Some(scope) = &scope {
        scope.refusal().map_err(BudgetLayerError::Budget)?;
        if let Some(input) = request.latest_input() {
            scope
                .observe_input(&input)
                .map_err(BudgetLayerError::Budget)?;
        }
    }
    let model = request.model().to_owned();
    let prompt = request.count_prompt();
    let requested = request.max_output_tokens();
    let wanted = wanted_output(&budget, &model, requested, default_cap);
    // Clamp and reserve in one atomic step: the cap sent is what every limit allows now, for
    // every choice the call asks for.
    let call = CallEstimate::new(prompt.tokens, wanted.min(1)..=wanted).choices(request.choices());
    let mut reservation = budget
        .reserve_call(&who, scope.as_ref(), &model, call)
        .await
        .map_err(BudgetLayerError::Budget)?;
    let granted = reservation.granted_output();
    if requested != Some(granted) {
        request.set_max_output_tokens(granted);
    }
    if request.is_stream() {
        request.request_stream_usage();
    }

    // From the moment the request is handed over, the provider may bill it: if this future is
    // dropped now (a timeout outside, a client gone, a shutdown), the reservation charges the
    // most the call can cost instead of releasing it. No await separates the two lines.
    reservation.mark_sent(note.commit_details(&budget, &model, None, true));
    let response = match inner.call(request).await {
        Ok(response) => response,
        Err(error) => {
            let usage = match billed.billed(&error) {
                Billed::No => {
                    reservation.release();
                    return Err(BudgetLayerError::Inner(error));
                }
                Billed::Unknown => reservation.billed_at_most(),
                Billed::Reported(usage) => usage,
            };
            let details = note.commit_details(&budget, &model, None, true);
            if let Err(commit) = reservation.commit_with(usage, details).await {
                tracing::error!(error = %commit, "usage of a billed failure could not be recorded");
            }
            return Err(BudgetLayerError::Inner(error));
        }
    };

    if response.is_stream() {
        let details = note.commit_details(&budget, &model, None, false);
        let metered = MeteredStream::new(budget, reservation, scope, model, prompt, details);
        return Ok(response.map_stream(|stream| Box::pin(metered.wrap(stream))));
    }
    let (usage, estimated) = match response.usage() {
        Some(usage) => (usage, false),
        // No usage reported: count what came back, and say it was counted, not reported.
        None => {
            let output = count_text(&model, &response.output_text())
                .with_estimate_margin()
                .tokens;
            (Usage::new(prompt.tokens, output), true)
        }
    };
    let served = response.served_model().map(Arc::from);
    let details = note.commit_details(&budget, &model, served, estimated);
    if let Err(error) = reservation.commit_with(usage, details).await {
        // The call succeeded and was paid for: the caller gets its response. Either the
        // ledger or the store could not take the usage; the other did, and the error holds
        // the event (a store that retries, like Redis, catches up by itself).
        tracing::error!(%error, "usage of a completed LLM call could not be recorded");
    }
    Ok(response)
}
