//! The budget layer: count, attribute, reserve, clamp, call, commit.
//!
//! ```text
//! request ─> attribution: task scope, else the request's own, else "unattributed"
//!         ─> exact prompt tokens
//!         ─> output cap: the request's (else the model's maximum), clamped to what every
//!            matching limit still allows — and written into the request
//!         ─> reserve prompt + cap on every matching limit, or refuse (the provider never
//!            sees a refused call)
//!         ─> inner service        (from here the provider may bill the call)
//!              error returned    ─> released, unless the layer's BilledFailure says the
//!                                   provider billed it (then its usage, or the most the call
//!                                   can cost, is committed)
//!              future dropped    ─> a timeout outside, a client gone, a shutdown: the call
//!                                   may have been billed, so the most it can cost (prompt +
//!                                   granted output × choices) is committed, flagged estimated
//!              complete response ─> commit the reported usage (none reported: count the
//!                                   reply, commit it flagged estimated)
//!              stream ─> metered: cut when it overruns its grant or the task is stopped,
//!                        committed at its end from the provider's usage chunk
//! ```
//!
//! The layer composes with other tower middleware. Put `tower::retry` *outside* it so that each
//! attempt is reserved and accounted on its own (a retried timeout is charged once per attempt
//! that reached the provider, so retries cannot spend past a hard limit), and `tower::timeout`
//! outside it: a call that times out after it was sent is charged as billed-unknown. A timeout
//! *inside* the layer reaches it as an error of the inner service, which the layer's
//! [`BilledFailure`] classifies; the default `()` says "not billed", so give the layer one that
//! answers [`Billed::Unknown`] for the timeout's error if you put it there.
//!
//! ```
//! use std::time::Duration;
//! use budget_core::{Budget, Limit, Selector, Window};
//! use budget_tower::BudgetLayer;
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
//! // Any tower service of an LLM request type works; here a stand-in provider.
//! let provider = tower::service_fn(|req: Req| async move {
//!     Ok::<_, std::convert::Infallible>(Resp(req.count_prompt().tokens, req.cap.unwrap().min(20)))
//! });
//! let mut service = ServiceBuilder::new()
//!     .timeout(Duration::from_secs(30))         // outside: a call timed out after sending is charged
//!     .layer(BudgetLayer::new(budget.clone()))
//!     .concurrency_limit(8)                     // inside: a call gets its permit before it reserves
//!     .service(provider);
//! let reply = service.ready().await.unwrap()
//!     .call(Req { prompt: "Summarise the budget report.".into(), cap: Some(200) })
//!     .await
//!     .unwrap();
//! assert_eq!(reply.1, 20);
//! # });
//! ```

mod billed;
mod error;
mod future;
mod layer;
mod service;
mod stream;

pub use billed::{Billed, BilledFailure};
pub use error::{BudgetLayerError, Cutoff};
pub use future::ResponseFuture;
pub use layer::{BudgetLayer, DEFAULT_OUTPUT_CAP};
pub use service::BudgetService;
