#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub use budget_core::*;
pub use budget_macros::budgeted;
pub use budget_tower::{
    Attributed, BudgetLayer, BudgetLayerError, BudgetService, BudgetStack, CacheLayer,
    CacheService, CacheableResponse, ChunkStream, CompressLayer, CompressLayerError,
    CompressService, Cutoff, LlmChunk, LlmRequest, LlmResponse, RateLimitError, RateLimitLayer,
    RateLimitService, RouteControls, RouteLayer, RouteService, ServiceBuilderExt, attribution_of,
};
/// The tower layers' modules: the budget layer, the optimisation layers (cache, route, compress), the
/// LLM traits, the async-openai adapter, the rate limit layer and the local OpenAI-compatible
/// server.
pub mod layers {
    pub use budget_tower::{
        cache, compress, enforce, llm, local_server, openai, rate_limit, route, stack,
    };
}
