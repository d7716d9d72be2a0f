//! The rate-limit layer: requests and tokens per minute, per agent and per model.
//!
//! ```text
//! request ─> agent: the task scope's, else the request's own attribution, else "unattributed"
//!         ─> weight: 1 request; exact prompt tokens + output cap (the request's, else the
//!            layer's default output cap) tokens
//!         ─> a limit whose burst is below the weight: NeverFits at once (nothing charged)
//!         ─> charge, in this order, each limit that applies:
//!              1. the agent's requests per minute
//!              2. the model's requests per minute
//!              3. the agent's tokens per minute
//!              4. the model's tokens per minute
//!            a limit that cannot admit the call now:
//!              Reject ─> Limited { key, kind, retry_after } at once
//!              Wait   ─> sleep until it can (bounded by max_wait, else Limited), check again
//!         ─> inner service
//! ```
//!
//! Each limit is a governor keyed limiter (GCRA): a rate per minute replenished evenly, and a
//! burst — by default the whole minute's worth — that caps how much can be spent at once and
//! so the heaviest call that can ever pass. Agents and models are configured by name, with a
//! default for every other name; an agent (or model) without its own rate of one kind gets
//! the default rate of that kind, in a bucket of its own. Model ids are matched exactly.
//!
//! # Order of the charges, and what a refusal costs
//!
//! governor checks and charges in one step and cannot give a charge back, so the limits are
//! charged one after the other and **a call refused by a later limit keeps what earlier ones
//! charged**: a call refused by a token limit after the request limits admitted it has used a
//! request slot. The order keeps that loss small and local:
//!
//! - *Requests before tokens*: a wasted request slot costs 1 unit, a wasted token charge costs
//!   the call's whole weight.
//! - *Agent before model*: a model limit is shared by every agent; a charge wasted on the
//!   caller's own limit only costs the caller.
//! - *Never* is decided before anything is charged: a call heavier than some limit's burst is
//!   refused with [`RateLimitError::NeverFits`] and leaves every limit untouched.
//!
//! Under [`Policy::Wait`] a charge is kept *for the call*: after a wait only the limit that
//! was short is checked again, so a call that ends up sent has wasted nothing. It loses its
//! earlier charges only if it gives up (its `max_wait` would be exceeded) or is dropped while
//! waiting (a timeout).
//!
//! # Placement
//!
//! [`BudgetStack`](crate::stack) puts the layer innermost, *inside*
//! [`BudgetLayer`](crate::BudgetLayer): the weight then uses the output cap the budget granted and wrote into the
//! request, and calls the budget refuses never consume rate. The budget reservation is held
//! while a call waits for its rate (and released if the wait fails or is dropped). Like the
//! budget layer, `call` moves the readied inner service into the response future, so readiness
//! acquired in `poll_ready` (a `concurrency_limit` permit) is held while the call waits.
//!
//! ```
//! use std::time::Duration;
//! use budget_core::Attribution;
//! use budget_core::scope::TaskScope;
//! use budget_tower::rate_limit::{LimitKind, Policy, Rate, RateLimitError, RateLimitLayer};
//! # use budget_tower::llm::LlmRequest;
//! # use budget_core::TokenCount;
//! # #[derive(Clone)] struct Req { prompt: String, cap: Option<u64> }
//! # impl LlmRequest for Req {
//! #     fn model(&self) -> &str { "gpt-4o-mini" }
//! #     fn count_prompt(&self) -> TokenCount { budget_core::count_text("gpt-4o-mini", &self.prompt) }
//! #     fn max_output_tokens(&self) -> Option<u64> { self.cap }
//! #     fn set_max_output_tokens(&mut self, cap: u64) { self.cap = Some(cap) }
//! #     fn is_stream(&self) -> bool { false }
//! # }
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let limits = RateLimitLayer::new()
//!     .agent_rpm("researcher", 2)
//!     .agent_tpm("researcher", Rate::per_minute(200_000).burst(20_000))
//!     .default_agent_tpm(100_000)
//!     .model_tpm("gpt-4o-mini", 30_000_000)
//!     .policy(Policy::Reject);
//! // Any tower service of an LLM request type works; here a stand-in provider.
//! let provider = tower::service_fn(|req: Req| async move {
//!     Ok::<_, std::convert::Infallible>(format!("{} tokens max", req.cap.unwrap_or(0)))
//! });
//! let mut service = ServiceBuilder::new()
//!     .timeout(Duration::from_secs(30))
//!     .layer(limits)
//!     .service(provider);
//!
//! let researcher = TaskScope::new(Attribution::agent("researcher"));
//! researcher.run(async {
//!     let ask = || Req { prompt: "Summarise the report.".into(), cap: Some(200) };
//!     service.ready().await.unwrap().call(ask()).await.unwrap();
//!     service.ready().await.unwrap().call(ask()).await.unwrap();
//!     // The third call in the same minute is over the researcher's 2 requests per minute.
//!     let refused = service.ready().await.unwrap().call(ask()).await.unwrap_err();
//!     let refused = refused.downcast::<RateLimitError<std::convert::Infallible>>().unwrap();
//!     assert!(matches!(*refused, RateLimitError::Limited { kind: LimitKind::Requests, .. }));
//!     assert!(refused.retry_after().unwrap() > Duration::ZERO);
//! }).await;
//! # });
//! ```

mod clock;
mod error;
mod future;
mod layer;
mod limiter;
mod service;

pub use clock::{BudgetClock, TokioClock};
pub use error::{LimitKind, RateLimitError, RateLimitKey};
pub use future::ResponseFuture;
pub use layer::{Policy, Rate, RateLimitLayer};
pub use service::RateLimitService;

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn shared_types_cross_tasks() {
        assert_send_sync::<RateLimitLayer>();
        assert_send_sync::<RateLimitLayer<governor::clock::FakeRelativeClock>>();
        assert_send_sync::<RateLimitLayer<governor::clock::DefaultClock>>();
        assert_send_sync::<RateLimitService<(), TokioClock>>();
        assert_send_sync::<RateLimitError<std::io::Error>>();
    }

    #[test]
    fn capacity_is_clamped_not_overflowed() {
        // 1 a minute: one unit replenishes in 60 s; a burst of u32::MAX would need
        // ~8,000 years of nanoseconds beyond u64. Lowered instead of panicking in governor.
        let rate = Rate::per_minute(1).burst(u32::MAX);
        assert!(rate.capacity() < u32::MAX);
        assert!(rate.capacity() > 70_000_000);
        assert!(rate.quota().is_some());
        assert_eq!(Rate::per_minute(u32::MAX).capacity(), u32::MAX);
        assert_eq!(Rate::per_minute(5).burst(0).capacity(), 0);
        assert!(Rate::per_minute(5).burst(0).quota().is_none());
    }
}
