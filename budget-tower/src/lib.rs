//! # budget-tower
//!
//! tower middleware that keeps LLM calls inside their token budgets: [`BudgetLayer`] counts,
//! attributes, reserves, clamps the output cap and commits actual usage around any LLM client
//! service; [`openai`] adapts async-openai's client; `local_server` is an OpenAI-compatible
//! stand-in provider for demos and tests.
#![forbid(unsafe_code)]

/// The boxed future inside every named response future.
type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

/// Declares a layer's named response future (tower's `opaque_future!`): callers name the type,
/// and what it holds (a box, for now) can change without breaking them.
macro_rules! response_future {
    ($(#[$meta:meta])* $name:ident<$($param:ident),*> => $output:ty) => {
        $(#[$meta])*
        pub struct $name<$($param),*> {
            inner: crate::BoxFuture<$output>,
        }

        impl<$($param),*> $name<$($param),*> {
            pub(crate) fn new(
                future: impl std::future::Future<Output = $output> + Send + 'static,
            ) -> Self {
                $name {
                    inner: Box::pin(future),
                }
            }
        }

        impl<$($param),*> std::fmt::Debug for $name<$($param),*> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
            }
        }

        impl<$($param),*> std::future::Future for $name<$($param),*> {
            type Output = $output;

            fn poll(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<$output> {
                self.inner.as_mut().poll(cx)
            }
        }
    };
}

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

pub mod cache;
pub mod compress;
pub mod enforce;
pub mod llm;
#[cfg(feature = "local-server")]
pub mod local_server;
pub mod note;
#[cfg(feature = "openai")]
pub mod openai;
pub mod rate_limit;
pub mod route;
pub mod stack;

pub use cache::{CacheLayer, CacheService, CacheableResponse};
pub use compress::{CompressLayer, CompressLayerError, CompressService};
pub use enforce::{BudgetLayer, BudgetLayerError, BudgetService, Cutoff};
pub use llm::{Attributed, ChunkStream, LlmChunk, LlmRequest, LlmResponse, attribution_of};
pub use rate_limit::{
    LimitKind, Policy, Rate, RateLimitError, RateLimitKey, RateLimitLayer, RateLimitService,
};
pub use route::{
    DifficultyClassifier, HeuristicClassifier, RouteControls, RouteLayer, RouteOverride,
    RouteService,
};
pub use stack::{BudgetStack, ServiceBuilderExt};
