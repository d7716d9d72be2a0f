//! # budget-tower
//!
//! tower middleware that keeps LLM calls inside their token budgets: [`BudgetLayer`] counts,
//! attributes, reserves, clamps the output cap and commits actual usage around any LLM client
//! service; [`openai`] adapts async-openai's client; `local_server` is an OpenAI-compatible
//! stand-in provider for demos and tests.
#![forbid(unsafe_code)]

/// The boxed response future every layer's service returns for now (tower's named
/// `ResponseFuture` types are issue 10's next step).
pub(crate) type BoxFuture<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

/// `get_ref`, `get_mut` and `into_inner` for a service that wraps its inner service `S` in a
/// field named `inner`, as every tower middleware offers them.
macro_rules! inner_service_accessors {
    () => {
        /// The wrapped service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// The wrapped service, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// Consumes this service, returning the wrapped one.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}

pub mod budget;
pub mod cache;
pub mod compress;
pub mod llm;
#[cfg(feature = "local-server")]
pub mod local_server;
#[cfg(feature = "openai")]
pub mod openai;
pub mod rate_limit;
pub mod route;

pub use budget::{BudgetLayer, BudgetLayerError, BudgetService, Cutoff};
pub use cache::{CacheLayer, CacheService, CacheableResponse};
pub use compress::{CompressLayer, CompressLayerError, CompressService};
pub use llm::{Attributed, ChunkStream, LlmChunk, LlmRequest, LlmResponse, attribution_of};
pub use rate_limit::{
    LimitKind, Policy, Rate, RateLimitError, RateLimitKey, RateLimitLayer, RateLimitService,
};
pub use route::{
    DifficultyClassifier, HeuristicClassifier, RouteControls, RouteLayer, RouteOverride,
    RouteService,
};
