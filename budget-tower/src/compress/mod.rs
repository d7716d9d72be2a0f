//! The compression layer: shrink a conversation before it is sent, when the budget is under
//! pressure or the model's context window is too small.
//!
//! ```text
//! request ─> pressure: the highest % used of every hard limit that applies (task included)
//!         ─> target: the policy's target for that pressure (default: > 90% -> 2,000 prompt
//!            tokens, > 70% -> 4,000), and at most the model's input window
//!         ─> prompt already fits: sent as it is
//!         ─> 1. drop low-signal turns (greetings, acknowledgements; never questions)
//!            2. summarise older turns with a cheap model, through the inner service — so the
//!               summary call is budgeted and recorded with kind `summary` — unless it would
//!               cost more than it saves, or fails (then skipped)
//!            3. truncate the longest messages by real token counts
//!         ─> still too big: CompressLayerError::CannotFit, nothing sent
//!         ─> sent, with the prompt tokens it removed noted for the ledger (`saved`)
//! ```
//!
//! The system prompt and the last turns are kept verbatim, and an assistant's tool calls stay
//! together with their results (see [`budget_core::compress`]). [`BudgetStack`](crate::stack) puts
//! the layer *outside* the budget layer, so that both the summary call and the
//! compressed call are reserved and recorded.

mod error;
mod future;
mod layer;
mod service;

pub use error::CompressLayerError;
pub use future::ResponseFuture;
pub use layer::CompressLayer;
pub use service::CompressService;
