use super::future::ResponseFuture;
use std::sync::Arc;
use std::task::{Context, Poll};

use budget_core::compress::{self, CompressConfig, CompressError};
use budget_core::conversation::{Role, Turn, count_turns};
use budget_core::scope::TaskScope;

use crate::note::CallNote;
use budget_core::{
    Attribution, Budget, BudgetStore, EventKind, Ledger, PriceTable, Usage, count_text,
};
use tower::{Service, ServiceExt};

use super::error::CompressLayerError;
use super::layer::Settings;
use crate::llm::{ChatRequest, LlmResponse, attribution_of, take_readied};

/// The service of [`CompressLayer`](super::CompressLayer).
#[derive(Debug)]
pub struct CompressService<S, St: BudgetStore, L: Ledger> {
    inner: S,
    budget: Budget<St, L>,
    settings: Arc<Settings>,
}

impl<S: Clone, St: BudgetStore, L: Ledger> Clone for CompressService<S, St, L> {
    fn clone(&self) -> Self {
        CompressService {
            inner: self.inner.clone(),
            budget: self.budget.clone(),
            settings: self.settings.clone(),
        }
    }
}

impl<S, St: BudgetStore, L: Ledger> CompressService<S, St, L> {
    pub(super) fn new(inner: S, budget: Budget<St, L>, settings: Arc<Settings>) -> Self {
        CompressService {
            inner,
            budget,
            settings,
        }
    }

    inner_service_accessors!();
}

impl<S, R, St, L> Service<R> for CompressService<S, St, L>
where
    R: ChatRequest + Clone + Send + 'static,
    S: Service<R> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: LlmResponse,
    S::Error: Send + 'static,
    St: BudgetStore,
    L: Ledger,
{
    type Response = S::Response;
    type Error = CompressLayerError<S::Error>;
    type Future = ResponseFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(CompressLayerError::Inner)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let inner = take_readied(&mut self.inner);
        ResponseFuture::new(compressed_call(
            self.budget.clone(),
            self.settings.clone(),
            inner,
            request,
        ))
    }
}

/// The prompt-token target for this call, if it must shrink at all.
async fn target_for<St: BudgetStore, L: Ledger>(
    budget: &Budget<St, L>,
    config: &CompressConfig,
    who: &Attribution,
    scope: Option<&TaskScope>,
    model: &str,
    prompt: u64,
) -> Option<u64> {
    // An unknown model or a failing store: no compression; the budget layer will say why.
    let pressure = budget.pressure(who, scope, model).await.ok().flatten();
    let by_pressure = pressure.and_then(|p| config.target_for(p));
    let window = budget
        .prices()
        .resolve(model)
        .ok()
        .and_then(|r| r.price.max_input_tokens);
    let target = match (by_pressure, window) {
        (Some(t), Some(w)) => Some(t.min(w)),
        (t, w) => t.or(w),
    };
    target.filter(|t| prompt > *t)
}

/// Replaces the older turns with a summary written by `summary_model` through `inner`, when
/// that saves more than it costs: the side call's worst case at the summary model's prices
/// against the prompt tokens it removes from this call at the call's model prices. Any
/// failure leaves the turns as they were.
async fn summarise<S, R>(
    inner: S,
    mut side: R,
    prices: Arc<PriceTable>,
    summary_model: &str,
    config: &CompressConfig,
    turns: Vec<Turn>,
) -> Vec<Turn>
where
    R: ChatRequest,
    S: Service<R>,
    S::Response: LlmResponse,
{
    let Some(span) = compress::summarisable_span(&turns, config.keep_last) else {
        return turns;
    };
    let span_tokens = count_turns(side.model(), &turns[span.clone()]).tokens;
    let prompt = compress::summary_prompt(&turns, span.clone(), config.summary_max_tokens);
    let prompt_tokens = count_text(summary_model, &prompt).tokens;
    let cost = prices.resolve(summary_model).map(|r| {
        r.price
            .max_cost_of(prompt_tokens, config.summary_max_tokens)
    });
    let saves = prices.resolve(side.model()).map(|r| {
        let removed = span_tokens.saturating_sub(config.summary_max_tokens);
        r.price.cost(&Usage::new(removed, 0))
    });
    match (cost, saves) {
        (Ok(cost), Ok(saves)) if cost < saves => {}
        _ => return turns,
    }
    side.set_model(summary_model);
    side.set_stream(false);
    side.set_turns(&[Turn::new(Role::User, prompt)]);
    side.set_max_output_tokens(config.summary_max_tokens);
    let note = CallNote {
        kind: Some(EventKind::Summary),
        ..CallNote::default()
    };
    let reply = note.run(inner.oneshot(side)).await;
    match reply {
        Ok(response) if !response.is_stream() => {
            // The cap was asked for; a provider that ignores it does not get to grow the prompt.
            let summary = compress::truncate_text(
                summary_model,
                &response.output_text(),
                config.summary_max_tokens,
            );
            if summary.trim().is_empty() {
                turns
            } else {
                compress::replace_with_summary(&turns, span, &summary)
            }
        }
        _ => turns,
    }
}

async fn compressed_call<S, R, St, L>(
    budget: Budget<St, L>,
    settings: Arc<Settings>,
    mut inner: S,
    mut request: R,
) -> Result<S::Response, CompressLayerError<S::Error>>
where
    R: ChatRequest + Clone,
    S: Service<R> + Clone,
    S::Response: LlmResponse,
    St: BudgetStore,
    L: Ledger,
{
    let scope = TaskScope::current();
    let who = attribution_of(scope.as_ref(), &request);
    let config = settings.for_agent(who.agent_name()).clone();
    let before = request.count_prompt().tokens;
    let model = request.model().to_owned();
    let Some(target) = target_for(&budget, &config, &who, scope.as_ref(), &model, before).await
    else {
        return inner.call(request).await.map_err(CompressLayerError::Inner);
    };
    let mut turns = request.turns();
    if config.drop_low_signal {
        turns = compress::drop_low_signal_turns(&turns, config.keep_last);
    }
    if let Some(summary_model) = settings.summary_model.as_deref()
        && config.summarise
        && count_turns(&model, &turns).tokens > target
    {
        let side = request.clone();
        let prices = budget.prices();
        turns = summarise(inner.clone(), side, prices, summary_model, &config, turns).await;
    }
    let compressed = match compress::compress(&model, &turns, target, &config) {
        Ok(compressed) => compressed,
        Err(CompressError::CannotFit { needed, target }) => {
            return Err(CompressLayerError::CannotFit { needed, target });
        }
    };
    request.set_turns(&compressed.turns);
    let after = request.count_prompt().tokens;
    let note = CallNote {
        saved_input_tokens: before.saturating_sub(after),
        ..CallNote::default()
    };
    note.run(inner.call(request))
        .await
        .map_err(CompressLayerError::Inner)
}
