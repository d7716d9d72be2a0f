//! The layers in the one order they work in, as one builder step.
//!
//! ```text
//! caller
//!   ─> cache       a hit reserves nothing and reaches nothing; keyed on the request as sent
//!   ─> route       picks the model, so the routed call is the one reserved and priced
//!   ─> compress    shortens the prompt (its summary call goes through the budget too)
//!   ─> budget      counts, reserves, clamps the output cap, commits what was billed
//!   ─> rate limit  weighs the call by the cap the budget granted; a refused call costs no rate
//!   ─> provider
//! ```
//!
//! [`BudgetStack`] holds the budget layer and whichever of the others you give it, and builds
//! them in that order however its methods are called; a layer not given is not there (tower's
//! `Identity`). [`ServiceBuilderExt::budget_stack`] puts it in a `ServiceBuilder`, where other
//! middleware composes with it as usual: `tower::timeout` and `tower::retry` go outside it (a
//! timed-out call is charged as possibly billed; each retry is reserved on its own), a
//! `concurrency_limit` inside it.
//!
//! The layers' own documentation says what each placement buys; the one exception to this
//! order is a rate limit that must count cache hits too, which goes outside the stack instead
//! (every call is then charged, hit or not).
//!
//! ```
//! use budget_core::{Budget, Limit, Selector, Window};
//! use budget_tower::stack::{BudgetStack, ServiceBuilderExt};
//! use budget_tower::RateLimitLayer;
//! # use budget_tower::llm::{ChunkStream, LlmChunk, LlmRequest, LlmResponse};
//! # use budget_tower::enforce::Cutoff;
//! # use budget_core::{TokenCount, Usage};
//! # #[derive(Clone)] struct Req { prompt: String, cap: Option<u64> }
//! # impl LlmRequest for Req {
//! #     fn model(&self) -> &str { "gpt-4o-mini" }
//! #     fn count_prompt(&self) -> TokenCount { budget_core::count_text("gpt-4o-mini", &self.prompt) }
//! #     fn max_output_tokens(&self) -> Option<u64> { self.cap }
//! #     fn set_max_output_tokens(&mut self, cap: u64) { self.cap = Some(cap) }
//! #     fn is_stream(&self) -> bool { false }
//! # }
//! # struct Resp(u64, u64);
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
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let budget = Budget::builder()
//!     .limit(Limit::new("all", Selector::Global, Window::PerTask).tokens(1_000))
//!     .build()
//!     .unwrap();
//! let provider = tower::service_fn(|req: Req| async move {
//!     Ok::<_, std::convert::Infallible>(Resp(req.count_prompt().tokens, req.cap.unwrap().min(20)))
//! });
//! let mut service = ServiceBuilder::new()
//!     .budget_stack(
//!         // `.cache(..)`, `.route(..)` and `.compress(..)` add the others, each in its place.
//!         BudgetStack::new(&budget).rate_limit(RateLimitLayer::new().default_agent_rpm(600)),
//!     )
//!     .service(provider);
//! let reply = service.ready().await.unwrap()
//!     .call(Req { prompt: "Summarise the budget report.".into(), cap: Some(200) })
//!     .await
//!     .unwrap();
//! assert_eq!(reply.1, 20);
//! # });
//! ```

use budget_core::Budget;
use budget_core::ledger::Ledger;
use budget_core::store::BudgetStore;
use tower::layer::util::{Identity, Stack};
use tower::{Layer, ServiceBuilder};

use crate::enforce::BudgetLayer;

/// The budget layer and the layers around it, built in their one working order (see the
/// [module documentation](self)). Each type parameter is a layer, or [`Identity`] when not
/// given.
#[derive(Debug, Clone)]
pub struct BudgetStack<B, Cache = Identity, Route = Identity, Compress = Identity, Rate = Identity>
{
    budget: B,
    cache: Cache,
    route: Route,
    compress: Compress,
    rate_limit: Rate,
}

impl<St: BudgetStore, L: Ledger> BudgetStack<BudgetLayer<St, L>> {
    /// A stack of the budget layer for `budget` alone.
    pub fn new(budget: &Budget<St, L>) -> Self {
        BudgetStack::with_budget_layer(BudgetLayer::new(budget.clone()))
    }
}

impl<B> BudgetStack<B> {
    /// A stack around a budget layer configured apart (its output cap, its
    /// [`BilledFailure`](crate::enforce::BilledFailure)).
    pub fn with_budget_layer(budget: B) -> Self {
        BudgetStack {
            budget,
            cache: Identity::new(),
            route: Identity::new(),
            compress: Identity::new(),
            rate_limit: Identity::new(),
        }
    }
}

impl<B, Cache, Route, Compress, Rate> BudgetStack<B, Cache, Route, Compress, Rate> {
    /// Answers from a cache first ([`CacheLayer`](crate::CacheLayer)); outermost.
    pub fn cache<C>(self, cache: C) -> BudgetStack<B, C, Route, Compress, Rate> {
        BudgetStack {
            budget: self.budget,
            cache,
            route: self.route,
            compress: self.compress,
            rate_limit: self.rate_limit,
        }
    }

    /// Routes each call to a model ([`RouteLayer`](crate::RouteLayer)); inside the cache.
    pub fn route<R>(self, route: R) -> BudgetStack<B, Cache, R, Compress, Rate> {
        BudgetStack {
            budget: self.budget,
            cache: self.cache,
            route,
            compress: self.compress,
            rate_limit: self.rate_limit,
        }
    }

    /// Compresses prompts ([`CompressLayer`](crate::CompressLayer)); inside the router, outside
    /// the budget layer.
    pub fn compress<Z>(self, compress: Z) -> BudgetStack<B, Cache, Route, Z, Rate> {
        BudgetStack {
            budget: self.budget,
            cache: self.cache,
            route: self.route,
            compress,
            rate_limit: self.rate_limit,
        }
    }

    /// Limits request and token rates ([`RateLimitLayer`](crate::RateLimitLayer)); innermost,
    /// next to the provider.
    pub fn rate_limit<R>(self, rate_limit: R) -> BudgetStack<B, Cache, Route, Compress, R> {
        BudgetStack {
            budget: self.budget,
            cache: self.cache,
            route: self.route,
            compress: self.compress,
            rate_limit,
        }
    }
}

impl<S, B, Cache, Route, Compress, Rate> Layer<S> for BudgetStack<B, Cache, Route, Compress, Rate>
where
    Rate: Layer<S>,
    B: Layer<Rate::Service>,
    Compress: Layer<B::Service>,
    Route: Layer<Compress::Service>,
    Cache: Layer<Route::Service>,
{
    type Service = Cache::Service;

    fn layer(&self, provider: S) -> Self::Service {
        let limited = self.rate_limit.layer(provider);
        let budgeted = self.budget.layer(limited);
        let compressed = self.compress.layer(budgeted);
        let routed = self.route.layer(compressed);
        self.cache.layer(routed)
    }
}

/// [`BudgetStack`] as a `ServiceBuilder` step, as tower-http's `ServiceBuilderExt` adds its
/// layers.
// The signatures spell out `ServiceBuilder::layer`'s own return type for this stack.
#[allow(clippy::type_complexity)]
pub trait ServiceBuilderExt<L>: Sized {
    /// Adds the budget stack: everything added before it runs outside it, everything after it
    /// (and the service) inside it.
    fn budget_stack<B, Cache, Route, Compress, Rate>(
        self,
        stack: BudgetStack<B, Cache, Route, Compress, Rate>,
    ) -> ServiceBuilder<Stack<BudgetStack<B, Cache, Route, Compress, Rate>, L>>;
}

#[allow(clippy::type_complexity)]
impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn budget_stack<B, Cache, Route, Compress, Rate>(
        self,
        stack: BudgetStack<B, Cache, Route, Compress, Rate>,
    ) -> ServiceBuilder<Stack<BudgetStack<B, Cache, Route, Compress, Rate>, L>> {
        self.layer(stack)
    }
}
