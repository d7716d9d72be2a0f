//! # budget-tower
//!
//! tower middleware that keeps LLM calls inside their token budgets: [`BudgetLayer`] counts,
//! attributes, reserves, clamps the output cap and commits actual usage around any LLM client
//! service; [`openai`] adapts async-openai's client; `local_server` is an OpenAI-compatible
//! stand-in provider for demos and tests.
#![forbid(unsafe_code)]

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
