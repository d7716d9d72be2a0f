use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use budget_core::scope::TaskScope;
use budget_core::{
    Amount, Attribution, Budget, BudgetStore, CommitDetails, EventKind, Ledger, Money, Usage,
};
use tower::Service;

use super::future::ResponseFuture;

use super::store::{Entry, Shared};
use super::{CacheKey, CacheSink, CacheableResponse};
use crate::llm::{LlmRequest, LlmResponse, attribution_of, take_readied};

/// The service of [`CacheLayer`](super::CacheLayer).
pub struct CacheService<S, St: BudgetStore, L: Ledger, K> {
    inner: S,
    budget: Budget<St, L>,
    shared: Arc<Shared>,
    key: K,
}

impl<S: Clone, St: BudgetStore, L: Ledger, K: Clone> Clone for CacheService<S, St, L, K> {
    fn clone(&self) -> Self {
        CacheService {
            inner: self.inner.clone(),
            budget: self.budget.clone(),
            shared: self.shared.clone(),
            key: self.key.clone(),
        }
    }
}

impl<S: fmt::Debug, St: BudgetStore, L: Ledger, K> fmt::Debug for CacheService<S, St, L, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheService")
            .field("inner", &self.inner)
            .field("cache", &self.shared)
            .finish_non_exhaustive()
    }
}

impl<S, St: BudgetStore, L: Ledger, K> CacheService<S, St, L, K> {
    pub(super) fn new(inner: S, budget: Budget<St, L>, shared: Arc<Shared>, key: K) -> Self {
        CacheService {
            inner,
            budget,
            shared,
            key,
        }
    }

    inner_service_accessors!();
}

impl<S, R, St, L, K> Service<R> for CacheService<S, St, L, K>
where
    R: LlmRequest + Send + 'static,
    S: Service<R> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: CacheableResponse,
    S::Error: Send + 'static,
    St: BudgetStore,
    L: Ledger,
    K: CacheKey<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let Some(key) = self.key.key(&request) else {
            // Not cacheable: straight through, readiness and all.
            return ResponseFuture::new(self.inner.call(request));
        };
        // The readied service goes into the future (and is dropped unused on a hit); this one
        // keeps a fresh clone (tower's convention: a clone starts without readiness).
        let inner = take_readied(&mut self.inner);
        ResponseFuture::new(cached_call(
            self.budget.clone(),
            self.shared.clone(),
            inner,
            request,
            key,
        ))
    }
}

async fn cached_call<S, R, St, L>(
    budget: Budget<St, L>,
    shared: Arc<Shared>,
    mut inner: S,
    request: R,
    key: u128,
) -> Result<S::Response, S::Error>
where
    R: LlmRequest,
    S: Service<R>,
    S::Response: CacheableResponse,
    St: BudgetStore,
    L: Ledger,
{
    // A hit: something stored under the key (by a response of this type: another type's is a
    // miss), and the caller may make calls now.
    if let Some(entry) = shared.entries.get(&key).await
        && let Some(cached) = entry
            .value
            .downcast_ref::<<S::Response as CacheableResponse>::Cached>()
    {
        let scope = TaskScope::current();
        let who = attribution_of(scope.as_ref(), &request);
        if may_call(&budget, scope.as_ref(), &who, &request) {
            // Bound apart: no borrow of the request (which need not be `Sync`) is held
            // across the await, only the `&str`.
            let model = request.model();
            record_hit(&budget, &who, model, &entry).await;
            return Ok(S::Response::from_cached(cached, request.is_stream()));
        }
    }
    let response = inner.call(request).await?;
    if response.is_stream() {
        return Ok(response.cache_stream(CacheSink::new(shared, key)));
    }
    // Stored only with its usage: a later hit records what it saved.
    if let Some(usage) = response.usage()
        && let Some(cached) = response.to_cached()
    {
        shared
            .insert(key, cached, usage, response.served_model())
            .await;
    }
    Ok(response)
}

/// The gates the budget layer applies before any call, applied to a hit: a cancelled or
/// runaway task, a spent task budget, a paused agent. A hit that fails one is not served but
/// passed on, so that the budget layer inside refuses it with its own error. The runaway
/// detector sees the hit's input here (a loop served from the cache is still a loop); a miss
/// is observed by the budget layer instead, never twice.
fn may_call<St: BudgetStore, L: Ledger, R: LlmRequest>(
    budget: &Budget<St, L>,
    scope: Option<&TaskScope>,
    who: &Attribution,
    request: &R,
) -> bool {
    if let Some(scope) = scope {
        if scope.refusal().is_err() {
            return false;
        }
        if let Some(input) = request.latest_input()
            && scope.observe_input(&input).is_err()
        {
            return false;
        }
    }
    let controls = budget.controls();
    let cancelled = who.task().is_some_and(|task| controls.is_cancelled(task));
    !cancelled && !controls.is_paused(who)
}

/// Writes the hit to the ledger: no usage, $0, `saved` = the original call's tokens and what
/// they cost now (priced as the original call was: by the served model when the table knows
/// it, else by the requested one; $0 when neither can be priced). A ledger failure is logged,
/// and the hit still served: it cost nothing, so no budget is at stake.
async fn record_hit<St: BudgetStore, L: Ledger>(
    budget: &Budget<St, L>,
    who: &Attribution,
    model: &str,
    entry: &Entry,
) {
    let prices = budget.prices();
    let price = entry
        .served_model
        .as_deref()
        .and_then(|served| prices.resolve(served).ok())
        .or_else(|| prices.resolve(model).ok());
    let saved_money = price.map_or(Money::ZERO, |p| p.price.cost(&entry.usage));
    let details = CommitDetails {
        served_model: entry.served_model.clone(),
        kind: Some(EventKind::CacheHit),
        saved: Amount::new(entry.usage.total(), saved_money),
        ..CommitDetails::default()
    };
    if let Err(error) = budget.record(who, model, Usage::default(), details).await {
        tracing::warn!(%error, model, "a cache hit could not be recorded in the ledger");
    }
}
