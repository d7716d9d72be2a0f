//! The routing layer: send each chat call to the cheapest model tier that fits its difficulty,
//! step down a tier when the budget is tight, and let an operator "switch to cheaper model"
//! for one agent with one call.
//!
//! ```text
//! request ─> an override for the agent (RouteControls)?
//!              pinned      -> that model, nothing else considered
//!              cheapest    -> the cheapest tier model (by price), unless the request's own
//!                             model is already no dearer
//!         ─> not a tier model (and not route_all): sent as it is
//!         ─> difficulty: the request's own hint (ChatRequest::difficulty_hint), else the
//!            classifier (default HeuristicClassifier)
//!         ─> tier: Easy -> gpt-4o-mini, Medium -> gpt-4o, Hard -> gpt-4o (configurable)
//!         ─> pressure on the tier model >= 80% (Budget::pressure, task limits included):
//!            one step down to the next cheaper distinct tier model
//!         ─> room: a limit (task limits included) leaves no output tokens for this prompt
//!            on that model (Budget::remaining_in_scope(..).max_output_tokens == Some(0)):
//!            the next cheaper tier model that has room; none has room: sent as routed (the
//!            budget layer refuses it)
//!         ─> routed model differs from the requested one: the request's model is switched and
//!            the call runs with note::CallNote::requested_model = the requested model, so the
//!            ledger event records both
//! ```
//!
//! # Rules
//!
//! * **Tiers** map each [`Difficulty`] to a model ([`RouteLayer::tier`]); by default the seed's
//!   easy -> `gpt-4o-mini`, medium and hard -> `gpt-4o`. A tier model is the *target* of the
//!   difficulty: a request asking for `gpt-4o-mini` with a hard task goes to `gpt-4o`.
//! * **Which requests are routed.** Only requests asking for one of the tier models (or an id
//!   the price table resolves to one, such as a dated `gpt-4o-2024-08-06`): a request for a
//!   model the router does not know (another provider's, a fine-tune) is the caller's explicit
//!   choice and is sent as it is. [`RouteLayer::route_all`] routes every request. A routed
//!   model that resolves to the requested one keeps the request's own id.
//! * **Difficulty**: the request's own hint
//!   ([`ChatRequest::difficulty_hint`](crate::llm::ChatRequest::difficulty_hint)) wins; without
//!   one the [`DifficultyClassifier`] decides (see [`HeuristicClassifier`] for the default rules:
//!   long newest user input or a hard-task keyword -> hard; code or tools -> at least medium;
//!   a short plain question -> easy; otherwise medium).
//! * **"Cheaper"** always compares the models' prices from the budget's price table
//!   ([`budget_core::PriceTable::resolve`]: input + output per token at base rates), never
//!   the tier order alone; two tiers on one model count as one step; a model without a price
//!   is never chosen as a cheaper stand-in.
//! * **Budget pressure**: when [`Budget::pressure`](budget_core::Budget::pressure) for the
//!   tier model reaches [`RouteLayer::downgrade_at`] (default
//!   [`DEFAULT_DOWNGRADE_AT`] = 80%), the call goes one step down (hard -> the next cheaper
//!   model, which by default is `gpt-4o-mini`). An error reading the pressure means no
//!   downgrade.
//! * **Room fallback**: when a limit (typically a per-model one) leaves no output tokens for the
//!   prompt on the chosen model, the next cheaper tier model with room is used instead.
//! * **Overrides** ([`RouteControls`], from [`RouteLayer::controls`]): live, per agent, shared
//!   by every clone of the layer. `switch_to_cheaper(agent)` sends that agent's calls to the
//!   cheapest tier model (a request already on a model no dearer is left alone; a request for
//!   a model without a price only under `route_all`); `pin_model(agent, model)` sends them to
//!   `model` regardless of difficulty, pressure or room; `reset(agent)` goes back to routing.
//!   A model switch decided on the budget's control plane (`Budget::switch_model`, shared by
//!   every process on its log) acts the same way and wins over the layer's own override.
//!
//! The agent is the task scope's, else the request's own attribution
//! ([`attribution_of`](crate::llm::attribution_of)). Errors are the inner service's,
//! unchanged. [`BudgetStack`](crate::stack) puts the layer *outside* the budget layer, so
//! that the routed call is the one reserved, priced and recorded, with the requested model
//! noted in its ledger event. A compression layer may sit outside it (it then compresses for
//! the requested model) or inside it (for the routed model); their notes to the budget layer
//! add up either way.
//!
//! ```
//! # #[cfg(feature = "openai")]
//! # fn main() {
//! use async_openai::types::chat::{
//!     ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequest,
//!     CreateChatCompletionRequestArgs,
//! };
//! use budget_core::{Attribution, Budget};
//! use budget_tower::{Attributed, RouteLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! let budget = Budget::builder().build().unwrap();
//! let route = RouteLayer::new(budget.clone());
//! let controls = route.controls();
//! // A stand-in provider that answers with the model it was asked for. In production:
//! // `.layer(route).layer(BudgetLayer::new(budget)).service(OpenAiService::new(config))`.
//! let provider = service_fn(|req: Attributed<CreateChatCompletionRequest>| async move {
//!     Ok::<_, std::convert::Infallible>(req.request.model)
//! });
//! let service = ServiceBuilder::new().layer(route).service(provider);
//! let ask = |text: &str| {
//!     let message = ChatCompletionRequestUserMessageArgs::default()
//!         .content(text)
//!         .build()
//!         .unwrap();
//!     let request = CreateChatCompletionRequestArgs::default()
//!         .model("gpt-4o")
//!         .messages([message.into()])
//!         .build()
//!         .unwrap();
//!     Attributed::new(request, Attribution::agent("helper"))
//! };
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let easy = service.clone().oneshot(ask("What is the capital of France?")).await;
//! assert_eq!(easy.unwrap(), "gpt-4o-mini");
//! let hard = service.clone().oneshot(ask("Design a sharded rate limiter.")).await;
//! assert_eq!(hard.unwrap(), "gpt-4o");
//!
//! // "Switch to cheaper model" for the helper agent:
//! controls.switch_to_cheaper("helper");
//! let hard = service.clone().oneshot(ask("Design a sharded rate limiter.")).await;
//! assert_eq!(hard.unwrap(), "gpt-4o-mini");
//! # });
//! # }
//! # #[cfg(not(feature = "openai"))]
//! # fn main() {}
//! ```

mod classify;
mod future;
mod layer;
mod service;

pub use budget_core::conversation::Difficulty;
pub use classify::{DEFAULT_HARD_KEYWORDS, DifficultyClassifier, HeuristicClassifier};
pub use future::ResponseFuture;
pub use layer::{DEFAULT_DOWNGRADE_AT, RouteControls, RouteLayer, RouteOverride};
pub use service::RouteService;
