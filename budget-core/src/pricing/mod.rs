//! Model prices: a LiteLLM-format price table, exact per-token costs and model-id resolution.
//!
//! # Prices
//!
//! A [`ModelPrice`] holds per-token [`Money`] for plain input, cached input (cache reads), cache
//! writes, output and (for some models) reasoning output, plus prompt-size tiers
//! ([`PriceTier`]): once a request's prompt passes a tier's threshold, the **whole** request is
//! billed at that tier's rates (the highest threshold passed wins). [`ModelPrice::cost`] prices a
//! [`Usage`] exactly and saturating; nothing here goes through `f64`.
//!
//! # Price files
//!
//! [`PriceTable::from_litellm_json`] reads LiteLLM's `model_prices_and_context_window.json`.
//! Each price is read from the *text* of its JSON number (`2.5e-06`) with
//! [`Money::parse_dollars`]. An entry of the form `{"alias_of": "other-id"}` prices like its
//! target. Skipped, as LiteLLM's own file needs: `sample_spec`, keys starting with `_`, entries
//! whose `mode` is not `chat`, `completion` or `responses`, entries with no price field at all
//! (routers, subscription-billed ids) and entries priced in other units or service tiers only
//! (per second, character, image, query…; `_priority` / `_batches` prices). An entry that has
//! neither kind of excuse and still lacks `input_cost_per_token` or `output_cost_per_token` —
//! a misspelled field such as `input_cost_per_tokens`, or half a price — is a
//! [`PriceError::NoUsablePrice`] naming the entry and the fields it has; a file with model
//! entries but no price at all is [`PriceError::NoPrices`]. A price field that is present but
//! malformed (not a number, negative, more precise than a yocto-dollar) is a
//! [`PriceError::InvalidField`] naming the model and the field.
//! [`PriceTable::builtin`] is a curated extract of LiteLLM's file, embedded in the crate;
//! [`PriceTable::from_env`] merges the file named by `TOKEN_BUDGET_PRICES` over it.
//!
//! # Resolution
//!
//! [`PriceTable::resolve`] lower-cases the requested id and looks it up; on a miss it strips one
//! decoration at a time and looks up again, so the most specific known id wins. Trailing
//! decorations go first, with the provider prefix kept; only when none is left does a prefix
//! go, and then the trailing ones are tried again:
//!
//! 1. trailing: a Vertex `@` suffix (`claude-3-haiku@20240307`), a Bedrock `-v2:0` suffix,
//!    `-latest`; a date suffix, `-2024-08-06` or `-20241022`; for Claude ids, a `-v2` suffix
//!    and dotted versions (`claude-3.5-sonnet`); for Gemini ids a `-001` version suffix;
//! 2. leading: a provider prefix before the first `/` (`openai/gpt-4o`,
//!    `openrouter/openai/gpt-4o`) or a Bedrock region/vendor prefix (`us.anthropic.claude-…`:
//!    a leading all-letters segment before a `.`).
//!
//! The `gemini/` prefix (Google AI Studio) is never dropped: LiteLLM prices AI Studio's ids
//! apart from Vertex AI's bare `gemini-…` ids, so `gemini/gemini-2.5-flash-001` resolves to
//! `gemini/gemini-2.5-flash`, and a `gemini/` id the table lacks is unknown rather than priced
//! as Vertex's.
//!
//! So `gpt-4o-2024-08-06` and `openai/gpt-4o` resolve to `gpt-4o`, while
//! `gpt-4o-2024-05-13` (priced differently) matches its own entry when the table has it.
//! A dated id that the table lacks is assumed to cost what its family id costs. Ids are never
//! matched by prefix: `gpt-4o-mini-foo` does not resolve to `gpt-4o-mini` or `gpt-4o`.
//!
//! # Unknown models
//!
//! Under the default [`UnknownModelPolicy::Error`] an unknown id is
//! [`PriceError::UnknownModel`]: a model is never silently free. With
//! [`UnknownModelPolicy::Fallback`] it is priced at the declared fallback, and the
//! [`ResolvedPrice`] / [`Priced`] says so (`fallback: true`).

mod builtin;
mod cost;
mod error;
mod litellm;
mod names;
mod price;
mod table;
#[cfg(test)]
mod test_support;

pub use builtin::PRICES_ENV;
pub use cost::CostBreakdown;
pub use error::{FIELDS_LISTED, FieldProblem, PriceError};
pub use price::{ModelPrice, PriceTier, UnitPrices};
pub use table::{FALLBACK_MODEL_ID, PriceTable, Priced, ResolvedPrice, UnknownModelPolicy};

/// The former name of [`UnitPrices`], before "rates" was left to the rate limiter.
#[deprecated(note = "renamed `pricing::UnitPrices`")]
pub type Rates = UnitPrices;

pub(crate) use names::strip_once;

#[cfg(doc)]
use crate::{money::Money, usage::Usage};

// Prices are shared across tasks and threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PriceTable>();
    assert_send_sync::<ModelPrice>();
    assert_send_sync::<PriceTier>();
    assert_send_sync::<UnitPrices>();
    assert_send_sync::<CostBreakdown>();
    assert_send_sync::<UnknownModelPolicy>();
    assert_send_sync::<ResolvedPrice<'static>>();
    assert_send_sync::<Priced>();
    assert_send_sync::<PriceError>();
};
