//! The response cache: a repeated deterministic request is answered from memory, without a
//! provider call, and recorded in the ledger as a $0 [`EventKind::CacheHit`] that says what it
//! saved.
//!
//! ```text
//! request ─> key: ChatRequest::cache_key() (None: not deterministic ─> inner service, uncached)
//!         ─> hit (a response stored under the key, younger than the TTL)
//!              and the caller may call now (task not cancelled, not a runaway, task budget
//!              not spent, agent not paused):
//!                ─> ledger: kind CacheHit, usage 0, cost $0, saved = the original call's
//!                   tokens and their price
//!                ─> the stored response, rebuilt complete or as a stream as the request asks
//!         ─> miss ─> inner service
//!              error ─> passed through unchanged, nothing stored
//!              complete response with usage ─> stored under the key
//!              stream ─> CacheableResponse::cache_stream: stored once assembled, if the
//!                        response type can (async-openai's ChatReply can; the default
//!                        passes streams through uncached)
//! ```
//!
//! # Placement
//!
//! [`BudgetStack`](crate::stack) puts the layer outermost, **outside**
//! [`BudgetLayer`](crate::BudgetLayer): a hit then reserves nothing and reaches nothing, and the key is taken
//! from the request as the caller sent it, before the budget layer clamps its output cap. The
//! cache is shared by every agent and task: a hit is attributed (task scope, else the
//! request's own attribution) to whoever received it, never to whoever paid for the original.
//!
//! # Decisions
//!
//! - **What is cached** is what the request's key says: [`ChatRequest::cache_key`] is `None`
//!   for non-deterministic requests (for OpenAI: temperature above 0 without a seed), and those
//!   are never cached. [`CacheLayer::key_with`] replaces the key (a closure), e.g. to cache
//!   non-deterministic requests as well.
//! - **Only responses that report usage are stored**: a hit records what it saved, and that
//!   needs the original usage. A failed call is never stored.
//! - **Saved money** is the original usage priced now, by the model the provider said it
//!   served when the price table knows it, else by the requested model. A hit on a model the
//!   table cannot price at all is served, but its ledger write fails (the ledger prices every
//!   event's model): it is logged with `tracing` at warn level and the hit served anyway — it
//!   cost nothing, so no budget is at stake. Any other ledger failure is handled the same.
//! - **Errors pass through**: the layer has no error of its own. A hit the caller may not
//!   take (cancelled task, paused agent...) is not served but passed on as a miss, so that the
//!   budget layer inside refuses it with its usual [`BudgetLayerError`](crate::BudgetLayerError).
//!   The task's runaway detector sees the input of every hit: an agent looping on a cached
//!   answer is still stopped.
//! - **Concurrent identical misses** each call the provider (no single-flight); the last
//!   response stored wins.
//! - **Rate limits**: a hit never reaches a [`RateLimitLayer`](crate::RateLimitLayer) placed
//!   inside the cache. To make hits count against request and token rates, place the rate
//!   limit layer *outside* the cache (every call is then charged, hit or not — before the
//!   budget layer has clamped its output cap, so its token weight uses the request's own cap).
//!
//! # Example
//!
//! ```
//! use budget_core::{Budget, EventKind, Limit, Selector, Window};
//! use budget_tower::{BudgetLayer, CacheLayer};
//! # use std::sync::Arc;
//! # use std::sync::atomic::{AtomicU32, Ordering};
//! # use budget_tower::llm::{ChatRequest, ChunkStream, LlmChunk, LlmRequest, LlmResponse};
//! # use budget_tower::enforce::Cutoff;
//! # use budget_tower::cache::CacheableResponse;
//! # use budget_core::conversation::Turn;
//! # use budget_core::{TokenCount, Usage};
//! # #[derive(Clone)] struct Req { prompt: String, cap: Option<u64> }
//! # impl LlmRequest for Req {
//! #     fn model(&self) -> &str { "gpt-4o-mini" }
//! #     fn count_prompt(&self) -> TokenCount { budget_core::count_text("gpt-4o-mini", &self.prompt) }
//! #     fn max_output_tokens(&self) -> Option<u64> { self.cap }
//! #     fn set_max_output_tokens(&mut self, cap: u64) { self.cap = Some(cap) }
//! #     fn is_stream(&self) -> bool { false }
//! # }
//! # impl ChatRequest for Req {
//! #     fn turns(&self) -> Vec<Turn> { Vec::new() }
//! #     fn set_turns(&mut self, _: &[Turn]) {}
//! #     fn set_model(&mut self, _: &str) {}
//! #     fn cache_key(&self) -> Option<u128> { Some(self.prompt.len() as u128) }
//! # }
//! # #[derive(Clone)] struct Resp(u64, u64);
//! # #[derive(Debug)] struct NoChunk;
//! # impl LlmChunk for NoChunk { fn usage(&self) -> Option<Usage> { None } fn output_text(&self) -> String { String::new() } fn served_model(&self) -> Option<&str> { None } }
//! # impl LlmResponse for Resp {
//! #     type Chunk = NoChunk; type StreamError = Cutoff;
//! #     fn is_stream(&self) -> bool { false }
//! #     fn usage(&self) -> Option<Usage> { Some(Usage::new(self.0, self.1)) }
//! #     fn served_model(&self) -> Option<&str> { None }
//! #     fn output_text(&self) -> String { String::new() }
//! #     fn map_stream<F: FnOnce(ChunkStream<NoChunk, Cutoff>) -> ChunkStream<NoChunk, Cutoff>>(self, _: F) -> Self { self }
//! # }
//! # impl CacheableResponse for Resp {
//! #     type Cached = Resp;
//! #     fn to_cached(&self) -> Option<Resp> { Some(self.clone()) }
//! #     fn from_cached(cached: &Resp, _: bool) -> Resp { cached.clone() }
//! # }
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let budget = Budget::builder()
//!     .limit(Limit::new("all", Selector::Global, Window::PerTask).tokens(10_000))
//!     .build()
//!     .unwrap();
//! # let calls = Arc::new(AtomicU32::new(0));
//! # let counter = calls.clone();
//! // Any tower service of an LLM request type works; here a stand-in provider.
//! let provider = tower::service_fn(move |req: Req| {
//! #   counter.fetch_add(1, Ordering::Relaxed);
//!     async move {
//!         Ok::<_, std::convert::Infallible>(Resp(req.count_prompt().tokens, 20))
//!     }
//! });
//! let mut service = ServiceBuilder::new()
//!     .layer(CacheLayer::new(budget.clone()).ttl(Duration::from_secs(600)).max_entries(1_000))
//!     .layer(BudgetLayer::new(budget.clone()))
//!     .service(provider);
//!
//! let ask = || Req { prompt: "Summarise the budget report.".into(), cap: Some(200) };
//! let first = service.ready().await.unwrap().call(ask()).await.unwrap();
//! let again = service.ready().await.unwrap().call(ask()).await.unwrap(); // from the cache
//! assert_eq!((first.0, first.1), (again.0, again.1));
//! # assert_eq!(calls.load(Ordering::Relaxed), 1);
//!
//! let events = budget.ledger().events();
//! assert_eq!(events[1].kind, EventKind::CacheHit);
//! assert_eq!(events[1].cost, budget_core::Money::ZERO);
//! assert_eq!(events[1].saved.tokens, events[0].usage.total());
//! assert_eq!(events[1].saved.money, events[0].cost);
//! # });
//! ```
//!
//! [`EventKind::CacheHit`]: budget_core::EventKind::CacheHit
//! [`ChatRequest::cache_key`]: crate::llm::ChatRequest::cache_key

mod cacheable;
mod future;
mod key;
mod layer;
#[cfg(feature = "openai")]
mod openai;
mod service;
mod store;

pub use cacheable::{CacheSink, CacheableResponse};
pub use future::ResponseFuture;
pub use key::{CacheKey, DeterministicKey};
pub use layer::{CacheLayer, DEFAULT_MAX_ENTRIES, DEFAULT_TTL};
pub use service::CacheService;

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn shared_types_cross_tasks() {
        assert_send_sync::<CacheLayer>();
        assert_send_sync::<
            CacheService<
                (),
                budget_core::MemoryBudgetStore,
                budget_core::MemoryLedger,
                DeterministicKey,
            >,
        >();
        assert_send_sync::<CacheSink<String>>();
    }

    #[test]
    fn key_hasher_spreads_small_keys() {
        use std::hash::BuildHasher;
        let hash = |k: u128| store::BuildKeyHasher.hash_one(k);
        let hashes: std::collections::HashSet<u64> = (0..1_000).map(hash).collect();
        assert_eq!(hashes.len(), 1_000);
        // Small keys must not all land in the low buckets.
        assert!((0..1_000).map(hash).any(|h| h >> 60 != 0));
    }

    #[test]
    fn an_absurd_ttl_is_cut_not_a_panic() {
        let shared = store::Shared::new(std::time::Duration::MAX, 1);
        assert_eq!(shared.ttl, store::MAX_TTL);
    }
}
