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

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::value::RawValue;

use crate::money::{Money, MoneyParseError};
use crate::usage::Usage;

/// The id reported by [`ResolvedPrice::id`] and [`Priced::model_id`] when an unknown model was
/// priced at the [`UnknownModelPolicy::Fallback`] price.
pub const FALLBACK_MODEL_ID: &str = "(fallback)";

/// The embedded built-in price file (LiteLLM format).
const BUILTIN_JSON: &str = include_str!("../data/prices.json");

static BUILTIN: LazyLock<PriceTable> =
    LazyLock::new(|| PriceTable::from_litellm_json(BUILTIN_JSON).unwrap_or_default());

/// LiteLLM modes whose entries are loaded.
const PRICED_MODES: [&str; 3] = ["chat", "completion", "responses"];

/// How much of an offending value an error message quotes.
const QUOTE_LIMIT: usize = 48;

/// How many field names [`PriceError::NoUsablePrice`] lists.
pub const FIELDS_LISTED: usize = 16;

/// The environment variable that names a LiteLLM-format price file ([`PriceTable::from_env`]).
pub const PRICES_ENV: &str = "TOKEN_BUDGET_PRICES";

/// What is wrong with one field of a price entry (or with a per-million price text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldProblem {
    /// Not a decimal number (a word, a boolean, an object…).
    #[error("expected a decimal number, found {found}")]
    NotANumber {
        /// The offending JSON text (shortened).
        found: String,
    },
    /// A price below zero.
    #[error("price must not be negative, found {found}")]
    Negative {
        /// The offending text.
        found: String,
    },
    /// A number that [`Money`] cannot hold exactly (too precise, out of range).
    #[error(transparent)]
    Unrepresentable(MoneyParseError),
    /// Not a JSON string (`mode`, `litellm_provider`, `alias_of`).
    #[error("expected a string, found {found}")]
    NotAString {
        /// The offending JSON text (shortened).
        found: String,
    },
    /// Not a non-negative integer (`max_input_tokens`, `max_output_tokens`, `max_tokens`).
    #[error("expected a non-negative integer, found {found}")]
    NotACount {
        /// The offending JSON text (shortened).
        found: String,
    },
}

/// Why a price could not be loaded, built or found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    /// The price file is not valid JSON.
    #[error("price file is not valid JSON: {0}")]
    Json(String),
    /// The price file's top level is not a JSON object keyed by model id.
    #[error("price file must be a JSON object keyed by model id, found {found}")]
    NotAnObject {
        /// The JSON type found instead.
        found: &'static str,
    },
    /// A model's entry is not a JSON object.
    #[error("price entry `{model}` must be a JSON object, found {found}")]
    EntryNotAnObject {
        /// The model key.
        model: String,
        /// The JSON type found instead.
        found: &'static str,
    },
    /// A field of a model's entry is malformed.
    #[error("price entry `{model}`, field `{field}`: {problem}")]
    InvalidField {
        /// The model key.
        model: String,
        /// The field name.
        field: String,
        /// What is wrong with it.
        problem: FieldProblem,
    },
    /// A per-million price text given to a constructor is malformed.
    #[error("invalid per-million price {text:?}: {problem}")]
    InvalidPrice {
        /// The text given.
        text: String,
        /// What is wrong with it.
        problem: FieldProblem,
    },
    /// An entry that should be priced per token has no usable per-token price: a misspelled
    /// price field, or only one of the input and output prices. (Entries LiteLLM lists without
    /// any price, or prices in other units, are skipped instead: see the module docs.)
    #[error(
        "price entry `{model}` has no usable price: it needs both `input_cost_per_token` and \
         `output_cost_per_token`; fields seen: {}",
        fields.join(", ")
    )]
    NoUsablePrice {
        /// The model key.
        model: String,
        /// The entry's field names, sorted (at most [`FIELDS_LISTED`], then `…`).
        fields: Vec<String>,
    },
    /// The price file has model entries, but not one of them has a per-token price.
    #[error("price file has {entries} model entries but no per-token price in any of them")]
    NoPrices {
        /// How many model entries the file has (`_…` keys and `sample_spec` not counted).
        entries: usize,
    },
    /// The price file could not be read.
    #[error("cannot read price file {}: {message}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What the operating system said.
        message: String,
    },
    /// The price file was read but is not a valid price file.
    #[error("price file {}: {source}", path.display())]
    InFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        source: Box<PriceError>,
    },
    /// No price is known for the model and the table's policy is
    /// [`UnknownModelPolicy::Error`].
    #[error("no price known for model `{model}`")]
    UnknownModel {
        /// The model id as requested.
        model: String,
    },
}

/// Rates that replace a [`ModelPrice`]'s base rates once the prompt has more than
/// `above_input_tokens` tokens. A rate left `None` keeps the rate of the next lower tier passed
/// (or the base rate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceTier {
    /// The tier applies when `usage.input > above_input_tokens` (LiteLLM's `_above_200k_tokens`
    /// is `200_000`).
    pub above_input_tokens: u64,
    /// Plain input per token.
    pub input: Option<Money>,
    /// Output per token.
    pub output: Option<Money>,
    /// Cached (cache-read) input per token.
    pub cached_input: Option<Money>,
    /// Cache-write input per token.
    pub cache_write: Option<Money>,
}

impl PriceTier {
    /// A tier above `above_input_tokens` prompt tokens with input and output prices per
    /// million tokens as decimal dollar text.
    pub fn per_million(
        above_input_tokens: u64,
        input: &str,
        output: &str,
    ) -> Result<PriceTier, PriceError> {
        Ok(PriceTier {
            above_input_tokens,
            input: Some(per_million_price(input)?),
            output: Some(per_million_price(output)?),
            cached_input: None,
            cache_write: None,
        })
    }
}

/// The per-token rates that apply to one request, after tier selection
/// ([`ModelPrice::rates_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    /// Plain input.
    pub input: Money,
    /// Cached input (the input rate when the model has no cache-read price).
    pub cached_input: Money,
    /// Cache writes (the input rate when the model has no cache-write price).
    pub cache_write: Money,
    /// Output (all output, when `reasoning` is `None`).
    pub output: Money,
    /// Reasoning output, when the model prices it apart.
    pub reasoning: Option<Money>,
}

/// The cost of one [`Usage`], split by price class ([`ModelPrice::cost_breakdown`]).
///
/// The parts are disjoint and add up exactly to [`ModelPrice::cost`] ([`CostBreakdown::total`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CostBreakdown {
    /// Plain (uncached) prompt tokens.
    pub input: Money,
    /// Prompt tokens read from the provider's cache.
    pub cached_input: Money,
    /// Prompt tokens written to the provider's cache.
    pub cache_write: Money,
    /// Visible output (output that is not reasoning).
    pub output: Money,
    /// Reasoning tokens, at the reasoning rate when the model has one, else at the output rate.
    pub reasoning: Money,
}

impl CostBreakdown {
    /// The sum of the parts, saturating at [`Money::MAX`]: what [`ModelPrice::cost`] returns.
    pub fn total(&self) -> Money {
        let CostBreakdown {
            input,
            cached_input,
            cache_write,
            output,
            reasoning,
        } = *self;
        input + cached_input + cache_write + output + reasoning
    }
}

/// What one model costs, per token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPrice {
    /// Plain (uncached) input per token.
    pub input: Money,
    /// Output per token.
    pub output: Money,
    /// Cached (cache-read) input per token; `None` bills cached tokens as plain input.
    pub cached_input: Option<Money>,
    /// Cache-write input per token; `None` bills cache writes as plain input.
    pub cache_write: Option<Money>,
    /// Reasoning output per token; `None` bills reasoning as ordinary output.
    pub reasoning: Option<Money>,
    /// Prompt-size tiers, sorted by ascending threshold.
    pub tiers: Vec<PriceTier>,
    /// The model's context limit for the prompt, if published.
    pub max_input_tokens: Option<u64>,
    /// The model's output limit, if published.
    pub max_output_tokens: Option<u64>,
    /// LiteLLM's `litellm_provider`, if given.
    pub provider: Option<String>,
}

impl ModelPrice {
    /// A price with only per-token input and output rates.
    pub const fn per_token(input: Money, output: Money) -> ModelPrice {
        ModelPrice {
            input,
            output,
            cached_input: None,
            cache_write: None,
            reasoning: None,
            tiers: Vec::new(),
            max_input_tokens: None,
            max_output_tokens: None,
            provider: None,
        }
    }

    /// A price from input and output dollars per million tokens: `per_million("2.50", "10.00")`
    /// is GPT-4o. Exact; rejects negative or unrepresentable prices.
    pub fn per_million(input: &str, output: &str) -> Result<ModelPrice, PriceError> {
        Ok(ModelPrice::per_token(
            per_million_price(input)?,
            per_million_price(output)?,
        ))
    }

    /// Sets the cached-input price, in dollars per million tokens.
    pub fn with_cached_per_million(mut self, price: &str) -> Result<ModelPrice, PriceError> {
        self.cached_input = Some(per_million_price(price)?);
        Ok(self)
    }

    /// Sets the cache-write price, in dollars per million tokens.
    pub fn with_cache_write_per_million(mut self, price: &str) -> Result<ModelPrice, PriceError> {
        self.cache_write = Some(per_million_price(price)?);
        Ok(self)
    }

    /// Sets the reasoning-output price, in dollars per million tokens.
    pub fn with_reasoning_per_million(mut self, price: &str) -> Result<ModelPrice, PriceError> {
        self.reasoning = Some(per_million_price(price)?);
        Ok(self)
    }

    /// Adds a tier (replacing one with the same threshold), keeping tiers sorted.
    pub fn with_tier(mut self, tier: PriceTier) -> ModelPrice {
        self.tiers
            .retain(|t| t.above_input_tokens != tier.above_input_tokens);
        self.tiers.push(tier);
        self.tiers.sort_by_key(|t| t.above_input_tokens);
        self
    }

    /// Sets the published context and output limits.
    pub fn with_max_tokens(mut self, input: Option<u64>, output: Option<u64>) -> ModelPrice {
        self.max_input_tokens = input;
        self.max_output_tokens = output;
        self
    }

    /// Sets the provider name.
    pub fn with_provider(mut self, provider: impl Into<String>) -> ModelPrice {
        self.provider = Some(provider.into());
        self
    }

    /// The rates for a request with `prompt_tokens` prompt tokens: the base rates, overridden
    /// by every tier whose threshold the prompt passes, lowest first (so the highest tier
    /// passed wins, and a rate it leaves out comes from the next lower one).
    pub fn rates_for(&self, prompt_tokens: u64) -> Rates {
        let (mut input, mut output) = (self.input, self.output);
        let (mut cached, mut write) = (self.cached_input, self.cache_write);
        for tier in self
            .tiers
            .iter()
            .filter(|t| prompt_tokens > t.above_input_tokens)
        {
            input = tier.input.unwrap_or(input);
            output = tier.output.unwrap_or(output);
            cached = tier.cached_input.or(cached);
            write = tier.cache_write.or(write);
        }
        Rates {
            input,
            cached_input: cached.unwrap_or(input),
            cache_write: write.unwrap_or(input),
            output,
            reasoning: self.reasoning,
        }
    }

    /// The exact cost of `usage`, saturating at [`Money::MAX`]:
    /// uncached input × input + cached × cached rate + cache writes × write rate + output
    /// (visible output × output + reasoning × reasoning rate, when a reasoning rate exists).
    /// The tier is chosen by `usage.input`. The same as [`ModelPrice::cost_breakdown`]'s total.
    pub fn cost(&self, usage: &Usage) -> Money {
        self.cost_breakdown(usage).total()
    }

    /// The cost of `usage` split into its input, cached-input, cache-write, output and
    /// reasoning parts, which add up exactly to [`ModelPrice::cost`].
    ///
    /// ```
    /// use budget_core::{Money, PriceTable, Usage};
    ///
    /// let gpt4o = PriceTable::builtin_ref().resolve("gpt-4o").unwrap().price;
    /// let usage = Usage::new(120, 40).with_cached_input(64).with_reasoning(12);
    /// let parts = gpt4o.cost_breakdown(&usage);
    /// assert_eq!(parts.cached_input.to_string(), "$0.00008"); // 64 × $1.25 / 1M
    /// assert_eq!(parts.reasoning.to_string(), "$0.00012"); // 12 × $10 / 1M
    /// assert_eq!(parts.total(), gpt4o.cost(&usage));
    /// ```
    pub fn cost_breakdown(&self, usage: &Usage) -> CostBreakdown {
        let r = self.rates_for(usage.input);
        // Without a reasoning rate, reasoning is output: never bill more reasoning tokens
        // than there were output tokens, even for inconsistent usage.
        let (visible, reasoning, reasoning_rate) = match r.reasoning {
            Some(rate) => (usage.visible_output(), usage.reasoning, rate),
            None => {
                let reasoning = usage.reasoning.min(usage.output);
                (usage.output - reasoning, reasoning, r.output)
            }
        };
        CostBreakdown {
            input: r.input.saturating_mul_tokens(usage.uncached_input()),
            cached_input: r.cached_input.saturating_mul_tokens(usage.cached_input),
            cache_write: r.cache_write.saturating_mul_tokens(usage.cache_write),
            output: r.output.saturating_mul_tokens(visible),
            reasoning: reasoning_rate.saturating_mul_tokens(reasoning),
        }
    }

    /// The most a call can cost with a `prompt_tokens` prompt and at most `max_output` output
    /// tokens, for reservations: the tier is chosen by `prompt_tokens`, every prompt token is
    /// billed at the highest of that tier's input, cached and cache-write rates, every output
    /// token at the higher of the output and reasoning rates. Saturating.
    pub fn max_cost_of(&self, prompt_tokens: u64, max_output: u64) -> Money {
        let r = self.rates_for(prompt_tokens);
        let input = r.input.max(r.cached_input).max(r.cache_write);
        let output = r.output.max(r.reasoning.unwrap_or(r.output));
        input.saturating_mul_tokens(prompt_tokens) + output.saturating_mul_tokens(max_output)
    }
}

/// What a [`PriceTable`] does with a model it has no price for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // one per table; boxing would only complicate the API
pub enum UnknownModelPolicy {
    /// Refuse: [`PriceError::UnknownModel`]. The default.
    #[default]
    Error,
    /// Price unknown models at this declared price (reported with `fallback: true`). Choose a
    /// conservative (expensive) price: a fallback is what an unknown model is charged.
    Fallback(ModelPrice),
}

/// A model id resolved against a [`PriceTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedPrice<'a> {
    /// The table id that matched (the alias target for `alias_of` entries), or
    /// [`FALLBACK_MODEL_ID`].
    pub id: &'a str,
    /// Its price.
    pub price: &'a ModelPrice,
    /// `true` when the model is unknown and the fallback price applies.
    pub fallback: bool,
}

/// The priced cost of one usage ([`PriceTable::cost`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    /// The exact cost.
    pub cost: Money,
    /// The table id the model resolved to, or [`FALLBACK_MODEL_ID`].
    pub model_id: String,
    /// `true` when the fallback price was used.
    pub fallback: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    id: String,
    price: ModelPrice,
}

/// Prices by model id, with resolution of decorated ids (see the module docs) and a policy for
/// unknown models. Lookups are case-insensitive.
///
/// ```
/// use budget_core::{PriceTable, Usage};
///
/// let prices = PriceTable::builtin_ref();
/// let priced = prices.cost("openai/gpt-4o-2024-08-06", &Usage::new(1_000_000, 0)).unwrap();
/// assert_eq!(priced.model_id, "gpt-4o");
/// assert_eq!(format!("{:.2}", priced.cost), "$2.50");
/// assert!(prices.resolve("no-such-model").is_err()); // never $0
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceTable {
    /// Keyed by lower-cased id.
    models: foldhash::HashMap<String, Entry>,
    unknown: UnknownModelPolicy,
}

impl PriceTable {
    /// An empty table that refuses unknown models.
    pub fn new() -> PriceTable {
        PriceTable::default()
    }

    /// A copy of the built-in table (`data/prices.json`, extracted from LiteLLM 1.110.2),
    /// parsed once on first use. The copy can be extended ([`PriceTable::insert`],
    /// [`PriceTable::merge_from`]); use [`PriceTable::builtin_ref`] to share it without copying.
    pub fn builtin() -> PriceTable {
        BUILTIN.clone()
    }

    /// The shared built-in table. The embedded file is checked by the test suite; were it ever
    /// unreadable, this table would be empty and refuse every model, never price one at $0.
    pub fn builtin_ref() -> &'static PriceTable {
        &BUILTIN
    }

    /// Loads a LiteLLM `model_prices_and_context_window.json` document (see the module docs
    /// for what is loaded, skipped and refused). Never panics.
    pub fn from_litellm_json(text: &str) -> Result<PriceTable, PriceError> {
        let top: &RawValue =
            serde_json::from_str(text).map_err(|e| PriceError::Json(e.to_string()))?;
        let found = json_type(top);
        if found != "an object" {
            return Err(PriceError::NotAnObject { found });
        }
        let entries: BTreeMap<String, &RawValue> =
            serde_json::from_str(top.get()).map_err(|e| PriceError::Json(e.to_string()))?;
        let mut table = PriceTable::new();
        let mut aliases = BTreeMap::new();
        let mut model_entries = 0;
        for (key, raw) in &entries {
            if key.starts_with('_') || key == "sample_spec" {
                continue;
            }
            model_entries += 1;
            match parse_entry(key, raw)? {
                Parsed::Price(price) => {
                    table.insert(key.as_str(), *price);
                }
                Parsed::Alias(target) => {
                    aliases.insert(key.to_lowercase(), target.to_lowercase());
                }
                Parsed::Skip => {}
            }
        }
        for (alias, target) in &aliases {
            let mut next = target;
            // Follow alias chains a bounded number of hops (cycles end here too).
            for _ in 0..8 {
                if let Some(entry) = table.models.get(next) {
                    let entry = entry.clone();
                    table.models.entry(alias.clone()).or_insert(entry);
                    break;
                }
                match aliases.get(next) {
                    Some(further) => next = further,
                    None => break,
                }
            }
        }
        // A file of entries none of which is priced is a mistake (a field misnamed throughout,
        // the wrong file), not an empty price list: every model would then be unknown.
        if table.is_empty() && model_entries > 0 {
            return Err(PriceError::NoPrices {
                entries: model_entries,
            });
        }
        Ok(table)
    }

    /// Loads a LiteLLM-format price file ([`PriceTable::from_litellm_json`]); errors name the
    /// file.
    pub fn from_litellm_file(path: impl AsRef<std::path::Path>) -> Result<PriceTable, PriceError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| PriceError::Io {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        PriceTable::from_litellm_json(&text).map_err(|e| PriceError::InFile {
            path: path.to_owned(),
            source: Box::new(e),
        })
    }

    /// The built-in table, with the prices of the LiteLLM-format file named by
    /// `TOKEN_BUDGET_PRICES` ([`PRICES_ENV`]) merged over it (the file wins for the ids it
    /// has). Unset or empty: the built-in table alone. A file that cannot be read or is not a
    /// valid price file is an error naming it, never a silently smaller table.
    pub fn from_env() -> Result<PriceTable, PriceError> {
        PriceTable::builtin_with_file(std::env::var_os(PRICES_ENV).filter(|v| !v.is_empty()))
    }

    /// The built-in table with the prices of the LiteLLM-format file at `path` merged over
    /// it, or the built-in table alone for `None`: what [`PriceTable::from_env`] does with the
    /// variable's value.
    pub fn builtin_with_file(
        path: Option<impl AsRef<std::path::Path>>,
    ) -> Result<PriceTable, PriceError> {
        let mut table = PriceTable::builtin();
        if let Some(path) = path {
            table.merge_from(PriceTable::from_litellm_file(path)?);
        }
        Ok(table)
    }

    /// Sets the policy for models the table does not know.
    pub fn with_unknown_model(mut self, policy: UnknownModelPolicy) -> PriceTable {
        self.unknown = policy;
        self
    }

    /// The policy for models the table does not know.
    pub fn unknown_model_policy(&self) -> &UnknownModelPolicy {
        &self.unknown
    }

    /// Adds or replaces the price of `id`; returns the price it replaced.
    pub fn insert(&mut self, id: impl Into<String>, price: ModelPrice) -> Option<ModelPrice> {
        let id = id.into();
        self.models
            .insert(id.to_lowercase(), Entry { id, price })
            .map(|old| old.price)
    }

    /// Adds every price of `other`, which overrides this table's price for the same id. This
    /// table's unknown-model policy is kept.
    pub fn merge_from(&mut self, other: PriceTable) {
        self.models.extend(other.models);
    }

    /// The price stored under exactly `id` (case-insensitive), without resolution.
    pub fn get(&self, id: &str) -> Option<&ModelPrice> {
        self.models.get(&id.to_lowercase()).map(|e| &e.price)
    }

    /// The number of ids (aliases included).
    pub fn len(&self) -> usize {
        self.models.len()
    }

    /// `true` when the table has no prices.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// Every `(lower-cased id, price)`, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ModelPrice)> {
        self.models.iter().map(|(k, e)| (k.as_str(), &e.price))
    }

    /// Resolves `model` (see the module docs): the most specific known id, else the fallback
    /// price under [`UnknownModelPolicy::Fallback`], else [`PriceError::UnknownModel`].
    pub fn resolve(&self, model: &str) -> Result<ResolvedPrice<'_>, PriceError> {
        if let Some(entry) = self.lookup(model) {
            return Ok(ResolvedPrice {
                id: &entry.id,
                price: &entry.price,
                fallback: false,
            });
        }
        match &self.unknown {
            UnknownModelPolicy::Error => Err(PriceError::UnknownModel {
                model: model.to_owned(),
            }),
            UnknownModelPolicy::Fallback(price) => Ok(ResolvedPrice {
                id: FALLBACK_MODEL_ID,
                price,
                fallback: true,
            }),
        }
    }

    /// The exact cost of `usage` on `model`.
    pub fn cost(&self, model: &str, usage: &Usage) -> Result<Priced, PriceError> {
        let resolved = self.resolve(model)?;
        Ok(resolved.priced(resolved.price.cost(usage)))
    }

    /// The cost of `usage` on `model`, split by price class
    /// ([`ModelPrice::cost_breakdown`]); the parts add up exactly to [`PriceTable::cost`].
    pub fn cost_breakdown(&self, model: &str, usage: &Usage) -> Result<CostBreakdown, PriceError> {
        Ok(self.resolve(model)?.price.cost_breakdown(usage))
    }

    /// The most a call to `model` can cost ([`ModelPrice::max_cost_of`]), for reservations.
    pub fn max_cost(
        &self,
        model: &str,
        prompt_tokens: u64,
        max_output: u64,
    ) -> Result<Priced, PriceError> {
        let resolved = self.resolve(model)?;
        Ok(resolved.priced(resolved.price.max_cost_of(prompt_tokens, max_output)))
    }

    fn lookup(&self, model: &str) -> Option<&Entry> {
        // The common case, a canonical id as the table spells it, costs no allocation.
        if let Some(entry) = self.models.get(model) {
            return Some(entry);
        }
        let mut name = model.trim().to_lowercase();
        loop {
            // Suffixes first, with the provider prefix kept: `gemini/gemini-2.5-pro-001` is
            // AI Studio's `gemini/gemini-2.5-pro`, not Vertex's bare `gemini-2.5-pro`.
            let mut candidate = name.clone();
            loop {
                if let Some(entry) = self.models.get(&candidate) {
                    return Some(entry);
                }
                // Every step shortens the name or removes a '.', so this ends.
                match strip_suffix_once(&candidate) {
                    Some(shorter) => candidate = shorter,
                    None => break,
                }
            }
            if KEPT_PREFIXES.iter().any(|p| name.starts_with(p)) {
                return None;
            }
            name = strip_prefix_once(&name)?;
        }
    }
}

impl ResolvedPrice<'_> {
    fn priced(&self, cost: Money) -> Priced {
        Priced {
            cost,
            model_id: self.id.to_owned(),
            fallback: self.fallback,
        }
    }
}

/// One decoration removed from a lower-cased model id, or `None` when there is none left.
pub(crate) fn strip_once(name: &str) -> Option<String> {
    // Prefix first: the order model families are derived in (`limits::model_family`).
    strip_prefix_once(name).or_else(|| strip_suffix_once(name))
}

/// Provider prefixes that are never dropped: their ids are priced apart from the bare ids of
/// the same models (Google AI Studio's `gemini/…` against Vertex AI's `gemini-…`), so an id
/// the table lacks under its prefix is unknown, never priced as the other provider's.
const KEPT_PREFIXES: [&str; 1] = ["gemini/"];

/// A lower-cased model id without its first provider (`openai/`) or vendor (`us.`,
/// `anthropic.`) prefix, or `None` when it has none.
fn strip_prefix_once(name: &str) -> Option<String> {
    if let Some((_, rest)) = name.split_once('/') {
        return Some(rest.to_owned());
    }
    if let Some((vendor, rest)) = name.split_once('.') {
        if !vendor.is_empty() && vendor.bytes().all(|b| b.is_ascii_lowercase()) {
            return Some(rest.to_owned());
        }
    }
    None
}

/// One trailing decoration (a date, a version, `@…`, `-latest`…) removed from a lower-cased
/// model id, which may still carry its provider prefix; `None` when there is none left.
fn strip_suffix_once(name: &str) -> Option<String> {
    // The decorations below are matched on the model part, after any provider prefix.
    let model = name.rsplit_once('/').map_or(name, |(_, m)| m);
    let prefix = &name[..name.len() - model.len()];
    let keep = |base: &str| Some(format!("{prefix}{base}"));
    let name = model;
    if let Some((base, _)) = name.rsplit_once('@') {
        return keep(base);
    }
    if let Some(base) = strip_suffix_shape(name, "-v#:#") {
        return keep(base);
    }
    if let Some(base) = name.strip_suffix("-latest") {
        return keep(base);
    }
    if let Some(base) = strip_date(name) {
        return keep(base);
    }
    if name.starts_with("claude") {
        if let Some(base) = strip_suffix_shape(name, "-v#") {
            return keep(base);
        }
        if name.contains('.') {
            return keep(&name.replace('.', "-"));
        }
    }
    if name.starts_with("gemini") {
        if let Some(base) = strip_suffix_shape(name, "-ddd") {
            return keep(base);
        }
    }
    None
}

/// `name` without a `-YYYY-MM-DD` or `-YYYYMMDD` suffix (year 20xx).
fn strip_date(name: &str) -> Option<&str> {
    strip_suffix_shape(name, "-20dd-dd-dd").or_else(|| strip_suffix_shape(name, "-20dddddd"))
}

/// Strips a suffix of the given shape: `d` is one ASCII digit, `#` one or more digits, any
/// other byte itself. The remaining base must not be empty.
fn strip_suffix_shape<'a>(name: &'a str, shape: &str) -> Option<&'a str> {
    let bytes = name.as_bytes();
    let mut end = bytes.len();
    for &s in shape.as_bytes().iter().rev() {
        match s {
            b'd' => {
                end = end.checked_sub(1)?;
                if !bytes[end].is_ascii_digit() {
                    return None;
                }
            }
            b'#' => {
                let digits = bytes[..end]
                    .iter()
                    .rev()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                if digits == 0 {
                    return None;
                }
                end -= digits;
            }
            other => {
                end = end.checked_sub(1)?;
                if bytes[end] != other {
                    return None;
                }
            }
        }
    }
    // The shape is ASCII, so `end` is a char boundary.
    (end > 0).then(|| name.get(..end)).flatten()
}

enum Parsed {
    Price(Box<ModelPrice>),
    Alias(String),
    Skip,
}

/// Which rate a LiteLLM `…_above_<N>k_tokens` field sets.
#[derive(Clone, Copy)]
enum TierRate {
    Input,
    Output,
    Cached,
    Write,
}

const TIER_BASES: [(&str, TierRate); 4] = [
    ("input_cost_per_token", TierRate::Input),
    ("output_cost_per_token", TierRate::Output),
    ("cache_read_input_token_cost", TierRate::Cached),
    ("cache_creation_input_token_cost", TierRate::Write),
];

/// `(rate, threshold in tokens)` for a field named `<base>_above_<N>k_tokens` (or `…m_tokens`).
fn tier_field(field: &str) -> Option<(TierRate, u64)> {
    for (base, rate) in TIER_BASES {
        let Some(rest) = field
            .strip_prefix(base)
            .and_then(|r| r.strip_prefix("_above_"))
        else {
            continue;
        };
        let (digits, scale) = if let Some(n) = rest.strip_suffix("k_tokens") {
            (n, 1_000u64)
        } else if let Some(n) = rest.strip_suffix("m_tokens") {
            (n, 1_000_000)
        } else {
            return None;
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        return digits
            .parse::<u64>()
            .ok()?
            .checked_mul(scale)
            .map(|t| (rate, t));
    }
    None
}

/// What a field of a price entry is, as far as deciding whether an unpriced entry is a
/// mistake goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CostField {
    /// Not about money (`mode`, `max_tokens`, `supports_vision`, …).
    NotACost,
    /// A per-token price LiteLLM publishes (any modality, tier or service level).
    Token,
    /// A price in another unit: per second, character, image, pixel, query, request, page…
    OtherUnit,
    /// Names a cost or price, but no field LiteLLM publishes: most likely misspelled.
    Unknown,
}

/// Per-token price fields LiteLLM publishes, before tier and service-level suffixes.
const TOKEN_COST_FIELDS: &[&str] = &[
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "explicit_cache_read_input_token_cost",
    "output_cost_per_reasoning_token",
    "input_cost_per_audio_token",
    "output_cost_per_audio_token",
    "cache_read_input_audio_token_cost",
    "cache_creation_input_audio_token_cost",
    "input_cost_per_image_token",
    "output_cost_per_image_token",
    "cache_read_input_image_token_cost",
    "input_cost_per_video_token",
    "output_cost_per_video_token",
    "input_dbu_cost_per_token",
    "output_dbu_cost_per_token",
    "citation_cost_per_token",
    "computer_use_input_cost_per_1k_tokens",
    "computer_use_output_cost_per_1k_tokens",
];

/// The units, after `cost_per_`, of LiteLLM's prices that are not per token.
const OTHER_COST_UNITS: &[&str] = &[
    "second",
    "character",
    "image",
    "pixel",
    "query",
    "request",
    "session",
    "page",
    "text_message",
    "credit",
    "unit",
    "video_per_second",
    "audio_per_second",
    "1k_calls",
    "gb_per_day",
];

/// Service levels and tiers LiteLLM appends to a price field's name.
const COST_SUFFIXES: &[&str] = &[
    "_priority",
    "_flex",
    "_batches",
    "_ultrafast",
    "_decisions",
    "_balanced",
    "_cache_hit",
];

fn cost_field(field: &str) -> CostField {
    if !field.contains("cost") && !field.contains("price") {
        return CostField::NotACost;
    }
    let mut base = field;
    loop {
        if let Some(rest) = COST_SUFFIXES.iter().find_map(|s| base.strip_suffix(s)) {
            base = rest;
            continue;
        }
        // `_above_200k_tokens`, `_above_1hr`, `_above_8s_interval`.
        if let Some((rest, tier)) = base.rsplit_once("_above_")
            && tier.starts_with(|c: char| c.is_ascii_digit())
        {
            base = rest;
            continue;
        }
        break;
    }
    if TOKEN_COST_FIELDS.contains(&base) {
        return CostField::Token;
    }
    let unit = base.split_once("cost_per_").map(|(_, unit)| unit);
    if unit.is_some_and(|u| {
        OTHER_COST_UNITS.iter().any(|known| {
            u.strip_prefix(known)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('_'))
                && !u.ends_with("_token")
        })
    }) {
        return CostField::OtherUnit;
    }
    CostField::Unknown
}

fn parse_entry(key: &str, raw: &RawValue) -> Result<Parsed, PriceError> {
    let found = json_type(raw);
    if found != "an object" {
        return Err(PriceError::EntryNotAnObject {
            model: key.to_owned(),
            found,
        });
    }
    let fields: BTreeMap<String, &RawValue> =
        serde_json::from_str(raw.get()).map_err(|e| PriceError::Json(e.to_string()))?;
    let invalid = |field: &str, problem: FieldProblem| PriceError::InvalidField {
        model: key.to_owned(),
        field: field.to_owned(),
        problem,
    };
    let string = |field: &str| -> Result<Option<String>, PriceError> {
        fields
            .get(field)
            .map_or(Ok(None), |v| string_value(v))
            .map_err(|p| invalid(field, p))
    };
    let price = |field: &str| -> Result<Option<Money>, PriceError> {
        fields
            .get(field)
            .map_or(Ok(None), |v| price_value(v))
            .map_err(|p| invalid(field, p))
    };
    let count = |field: &str| -> Result<Option<u64>, PriceError> {
        fields
            .get(field)
            .map_or(Ok(None), |v| count_value(v))
            .map_err(|p| invalid(field, p))
    };

    if let Some(mode) = string("mode")? {
        if !PRICED_MODES.contains(&mode.as_str()) {
            return Ok(Parsed::Skip);
        }
    }
    let (input, output) = (
        price("input_cost_per_token")?,
        price("output_cost_per_token")?,
    );
    let (Some(input), Some(output)) = (input, output) else {
        if let Some(target) = string("alias_of")? {
            return Ok(Parsed::Alias(target));
        }
        let kinds: Vec<CostField> = fields.keys().map(|f| cost_field(f)).collect();
        let misnamed = kinds.contains(&CostField::Unknown);
        let other_unit = kinds.contains(&CostField::OtherUnit);
        let half = input.is_some() || output.is_some();
        if misnamed || (half && !other_unit) {
            let mut names: Vec<String> = fields.keys().take(FIELDS_LISTED).cloned().collect();
            if fields.len() > FIELDS_LISTED {
                names.push("…".to_owned());
            }
            return Err(PriceError::NoUsablePrice {
                model: key.to_owned(),
                fields: names,
            });
        }
        // No price at all (LiteLLM lists routers and subscription-billed ids), a price in
        // another unit (per second, per character, per image…) or for a service tier only.
        return Ok(Parsed::Skip);
    };
    let mut tiers: BTreeMap<u64, PriceTier> = BTreeMap::new();
    for field in fields.keys() {
        let Some((rate, threshold)) = tier_field(field) else {
            continue;
        };
        let Some(value) = price(field)? else {
            continue;
        };
        let tier = tiers.entry(threshold).or_insert(PriceTier {
            above_input_tokens: threshold,
            input: None,
            output: None,
            cached_input: None,
            cache_write: None,
        });
        let slot = match rate {
            TierRate::Input => &mut tier.input,
            TierRate::Output => &mut tier.output,
            TierRate::Cached => &mut tier.cached_input,
            TierRate::Write => &mut tier.cache_write,
        };
        *slot = Some(value);
    }
    let max_output_tokens = count("max_output_tokens")?;
    let max_tokens = count("max_tokens")?;
    Ok(Parsed::Price(Box::new(ModelPrice {
        input,
        output,
        cached_input: price("cache_read_input_token_cost")?,
        cache_write: price("cache_creation_input_token_cost")?,
        reasoning: price("output_cost_per_reasoning_token")?,
        tiers: tiers.into_values().collect(),
        max_input_tokens: count("max_input_tokens")?,
        max_output_tokens: max_output_tokens.or(max_tokens),
        provider: string("litellm_provider")?,
    })))
}

/// The JSON type of a raw value, as an error message phrase.
fn json_type(raw: &RawValue) -> &'static str {
    match raw.get().trim_start().bytes().next() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// The raw JSON text, shortened for an error message.
fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_LIMIT) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// A price: a JSON number (or a string holding one), `null` meaning absent.
fn price_value(raw: &RawValue) -> Result<Option<Money>, FieldProblem> {
    let text = raw.get().trim();
    let not_a_number = || FieldProblem::NotANumber { found: quote(text) };
    let number = match json_type(raw) {
        "null" => return Ok(None),
        "a number" => text.to_owned(),
        "a string" => serde_json::from_str::<String>(text).map_err(|_| not_a_number())?,
        _ => return Err(not_a_number()),
    };
    let numeric = |b: u8| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-');
    if !number.bytes().all(numeric) {
        return Err(not_a_number());
    }
    let money = Money::parse_dollars(&number).map_err(|e| match e {
        MoneyParseError::Empty | MoneyParseError::UnexpectedChar { .. } => not_a_number(),
        other => FieldProblem::Unrepresentable(other),
    })?;
    if money.is_negative() {
        return Err(FieldProblem::Negative { found: quote(text) });
    }
    Ok(Some(money))
}

/// A JSON string, `null` meaning absent.
fn string_value(raw: &RawValue) -> Result<Option<String>, FieldProblem> {
    let not_a_string = || FieldProblem::NotAString {
        found: quote(raw.get()),
    };
    match json_type(raw) {
        "null" => Ok(None),
        "a string" => serde_json::from_str(raw.get())
            .map(Some)
            .map_err(|_| not_a_string()),
        _ => Err(not_a_string()),
    }
}

/// A non-negative integer, `null` meaning absent.
fn count_value(raw: &RawValue) -> Result<Option<u64>, FieldProblem> {
    let text = raw.get().trim();
    if text == "null" {
        return Ok(None);
    }
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FieldProblem::NotACount { found: quote(text) });
    }
    text.parse()
        .map(Some)
        .map_err(|_| FieldProblem::NotACount { found: quote(text) })
}

/// A per-token price from dollars per million tokens.
fn per_million_price(text: &str) -> Result<Money, PriceError> {
    let invalid = |problem| PriceError::InvalidPrice {
        text: text.to_owned(),
        problem,
    };
    let price = Money::per_million_tokens(text).map_err(|e| {
        invalid(match e {
            MoneyParseError::Empty | MoneyParseError::UnexpectedChar { .. } => {
                FieldProblem::NotANumber { found: quote(text) }
            }
            other => FieldProblem::Unrepresentable(other),
        })
    })?;
    if price.is_negative() {
        return Err(invalid(FieldProblem::Negative { found: quote(text) }));
    }
    Ok(price)
}

// Prices are shared across tasks and threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PriceTable>();
    assert_send_sync::<ModelPrice>();
    assert_send_sync::<PriceTier>();
    assert_send_sync::<Rates>();
    assert_send_sync::<CostBreakdown>();
    assert_send_sync::<UnknownModelPolicy>();
    assert_send_sync::<ResolvedPrice<'static>>();
    assert_send_sync::<Priced>();
    assert_send_sync::<PriceError>();
};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dollars(text: &str) -> Money {
        Money::parse_dollars(text).unwrap()
    }

    fn per_million(text: &str) -> Money {
        Money::per_million_tokens(text).unwrap()
    }

    fn builtin(model: &str) -> ResolvedPrice<'static> {
        PriceTable::builtin_ref().resolve(model).unwrap()
    }

    fn load_err(text: &str) -> PriceError {
        PriceTable::from_litellm_json(text).unwrap_err()
    }

    fn field_problem(text: &str) -> (String, String, FieldProblem) {
        match load_err(text) {
            PriceError::InvalidField {
                model,
                field,
                problem,
            } => (model, field, problem),
            other => panic!("expected InvalidField, got {other:?}"),
        }
    }

    #[test]
    fn pricing_builtin_has_the_seed_prices() {
        let table = PriceTable::builtin_ref();
        assert!(table.len() >= 40, "{} entries", table.len());
        for (model, input, output) in [
            ("gpt-4o", "2.50", "10.00"),
            ("claude-3-5-sonnet", "3.00", "15.00"),
            ("gpt-4o-mini", "0.15", "0.60"),
            ("claude-3-haiku", "0.25", "1.25"),
        ] {
            let r = builtin(model);
            assert_eq!((r.id, r.fallback), (model, false));
            assert_eq!(r.price.input, per_million(input), "{model} input");
            assert_eq!(r.price.output, per_million(output), "{model} output");
        }
        assert_eq!(
            builtin("gpt-4o").price.cached_input,
            Some(per_million("1.25"))
        );
        assert_eq!(builtin("gpt-4o").price.provider.as_deref(), Some("openai"));
    }

    #[test]
    fn pricing_builtin_never_prices_a_model_at_zero() {
        for (id, price) in PriceTable::builtin_ref().iter() {
            assert!(
                price.input > Money::ZERO && price.output > Money::ZERO,
                "{id}"
            );
        }
        // A fresh copy equals the shared table.
        assert_eq!(&PriceTable::builtin(), PriceTable::builtin_ref());
    }

    #[test]
    fn pricing_resolves_dated_prefixed_and_aliased_ids() {
        let cases = [
            ("gpt-4o", "gpt-4o"),
            ("GPT-4o", "gpt-4o"),
            ("gpt-4o-2024-08-06", "gpt-4o"),
            ("openai/gpt-4o", "gpt-4o"),
            ("openrouter/openai/gpt-4o-2024-11-20", "gpt-4o"),
            ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
            ("gpt-4.1-2025-04-14", "gpt-4.1"),
            ("o3-mini-2025-01-31", "o3-mini"),
            ("anthropic/claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
            ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
            ("claude-3-haiku-20240307", "claude-3-haiku"),
            ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
            ("claude-opus-4-1-20250805", "claude-opus-4-1"),
            (
                "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
                "claude-3-5-sonnet",
            ),
            (
                "bedrock/anthropic.claude-sonnet-4-20250514-v1:0",
                "claude-sonnet-4",
            ),
            ("vertex_ai/claude-3-haiku@20240307", "claude-3-haiku"),
            (
                "vertex_ai/claude-3-5-sonnet-v2@20241022",
                "claude-3-5-sonnet",
            ),
            ("claude-3.5-sonnet", "claude-3-5-sonnet"),
            // AI Studio and Vertex AI are priced apart, as in LiteLLM's file.
            ("gemini/gemini-2.5-pro", "gemini/gemini-2.5-pro"),
            ("gemini/gemini-2.5-flash-001", "gemini/gemini-2.5-flash"),
            (
                "openrouter/gemini/gemini-3.8-flash",
                "gemini/gemini-3.8-flash",
            ),
            ("vertex_ai/gemini-2.5-pro", "gemini-2.5-pro"),
            ("gemini-2.0-flash-001", "gemini-2.0-flash"),
            ("gpt-4", "gpt-4"),
            ("openai/gpt-4-0613", "gpt-4-0613"),
            ("deepseek/deepseek-chat", "deepseek-chat"),
            ("deepseek-reasoner", "deepseek-reasoner"),
            // `alias_of` entries report their target.
            ("claude-sonnet-latest", "claude-sonnet-5-5"),
        ];
        for (model, id) in cases {
            assert_eq!(builtin(model).id, id, "{model}");
        }
        // A dated snapshot priced differently keeps its own entry.
        let old = builtin("gpt-4o-2024-05-13");
        assert_eq!(old.id, "gpt-4o-2024-05-13");
        assert_eq!(old.price.input, per_million("5.00"));
    }

    #[test]
    fn pricing_strip_once_removes_one_decoration_prefix_first() {
        let steps = |id: &str| {
            let mut out = vec![id.to_owned()];
            while let Some(next) = strip_once(out.last().unwrap()) {
                out.push(next);
            }
            out
        };
        assert_eq!(
            steps("openai/gpt-4o-2024-08-06"),
            ["openai/gpt-4o-2024-08-06", "gpt-4o-2024-08-06", "gpt-4o"]
        );
        assert_eq!(
            steps("us.anthropic.claude-3.5-sonnet-v2:0"),
            [
                "us.anthropic.claude-3.5-sonnet-v2:0",
                "anthropic.claude-3.5-sonnet-v2:0",
                "claude-3.5-sonnet-v2:0",
                "claude-3.5-sonnet",
                "claude-3-5-sonnet"
            ]
        );
    }

    #[test]
    fn pricing_unknown_model_is_an_error_unless_a_fallback_is_declared() {
        let table = PriceTable::builtin();
        // A `gemini/` id the table lacks is unknown, not priced as Vertex's bare id.
        for model in [
            "gpt-7-ultra",
            "gpt-4o-mini-foo",
            "",
            "openai/",
            "claude",
            "gemini/gemini-2.0-flash",
        ] {
            assert_eq!(
                table.resolve(model).unwrap_err(),
                PriceError::UnknownModel {
                    model: model.to_owned()
                },
                "{model:?}"
            );
        }
        let usage = Usage::new(1000, 100);
        assert!(matches!(
            table.cost("mystery-model", &usage),
            Err(PriceError::UnknownModel { .. })
        ));

        let fallback = ModelPrice::per_million("10", "30").unwrap();
        let table = table.with_unknown_model(UnknownModelPolicy::Fallback(fallback.clone()));
        let r = table.resolve("mystery-model").unwrap();
        assert_eq!(
            (r.id, r.fallback, r.price),
            (FALLBACK_MODEL_ID, true, &fallback)
        );
        let priced = table.cost("mystery-model", &usage).unwrap();
        assert_eq!(
            priced,
            Priced {
                cost: dollars("0.013"),
                model_id: FALLBACK_MODEL_ID.to_owned(),
                fallback: true
            }
        );
        // Known models are unaffected by the policy.
        assert!(!table.cost("gpt-4o", &usage).unwrap().fallback);
    }

    #[test]
    fn pricing_openai_example_usage_on_gpt_4o() {
        // PROTOCOLS.md: 120 prompt tokens incl. 64 cached, 40 completion incl. 12 reasoning.
        let usage = Usage::from_openai_json(
            r#"{"prompt_tokens":120,"completion_tokens":40,"total_tokens":160,
            "prompt_tokens_details":{"cached_tokens":64},
            "completion_tokens_details":{"reasoning_tokens":12}}"#,
        )
        .unwrap();
        // gpt-4o has no reasoning price: reasoning is ordinary output.
        // 56 × $2.50/1M + 64 × $1.25/1M + 40 × $10/1M = $0.00014 + $0.00008 + $0.0004.
        let priced = PriceTable::builtin_ref()
            .cost("gpt-4o-2024-08-06", &usage)
            .unwrap();
        assert_eq!(priced.cost, dollars("0.00062"));
        assert_eq!(priced.model_id, "gpt-4o");
        assert!(!priced.fallback);
    }

    #[test]
    fn pricing_anthropic_cache_writes_and_reads() {
        let usage = Usage::from_anthropic_json(
            r#"{"input_tokens":50,"cache_creation_input_tokens":1000,
            "cache_read_input_tokens":6000,"output_tokens":300}"#,
        )
        .unwrap();
        // 50 × $3/1M + 1000 × $3.75/1M + 6000 × $0.30/1M + 300 × $15/1M
        // = 0.00015 + 0.00375 + 0.0018 + 0.0045
        let priced = PriceTable::builtin_ref()
            .cost("claude-3-5-sonnet-20241022", &usage)
            .unwrap();
        assert_eq!(priced.cost, dollars("0.0102"));

        // Without cache prices, cache reads and writes bill as plain input.
        let plain = ModelPrice::per_million("3", "15").unwrap();
        assert_eq!(plain.cost(&usage), dollars("0.02565")); // 7050 × $3/1M + 300 × $15/1M
    }

    #[test]
    fn pricing_breakdown_splits_the_cost_by_price_class() {
        // PROTOCOLS.md's example on gpt-4o (no reasoning rate: reasoning at the output rate).
        let usage = Usage::new(120, 40).with_cached_input(64).with_reasoning(12);
        let parts = PriceTable::builtin_ref()
            .cost_breakdown("gpt-4o-2024-08-06", &usage)
            .unwrap();
        assert_eq!(
            parts,
            CostBreakdown {
                input: dollars("0.00014"),
                cached_input: dollars("0.00008"),
                cache_write: Money::ZERO,
                output: dollars("0.00028"),
                reasoning: dollars("0.00012"),
            }
        );
        assert_eq!(parts.total(), dollars("0.00062"));
        // Anthropic's cache reads and writes on Claude 3.5 Sonnet.
        let usage = Usage::new(7050, 300)
            .with_cached_input(6000)
            .with_cache_write(1000);
        let parts = PriceTable::builtin_ref()
            .cost_breakdown("claude-3-5-sonnet", &usage)
            .unwrap();
        assert_eq!(
            (
                parts.input,
                parts.cached_input,
                parts.cache_write,
                parts.output
            ),
            (
                dollars("0.00015"),
                dollars("0.0018"),
                dollars("0.00375"),
                dollars("0.0045")
            )
        );
        assert_eq!(parts.total(), dollars("0.0102"));
        // A separate reasoning rate.
        let price = builtin("gemini-2.5-flash").price;
        let parts = price.cost_breakdown(&Usage::new(0, 10).with_reasoning(4));
        assert_eq!(
            parts.reasoning,
            price.reasoning.unwrap().saturating_mul_tokens(4)
        );
        assert!(matches!(
            PriceTable::builtin_ref().cost_breakdown("no-such-model", &usage),
            Err(PriceError::UnknownModel { .. })
        ));
    }

    #[test]
    fn pricing_reasoning_price_applies_to_reasoning_tokens_only() {
        let price = ModelPrice::per_million("1", "2")
            .unwrap()
            .with_reasoning_per_million("4")
            .unwrap();
        let usage = Usage {
            input: 0,
            cached_input: 0,
            cache_write: 0,
            output: 10,
            reasoning: 3,
        };
        // 7 × $2/1M + 3 × $4/1M
        assert_eq!(price.cost(&usage), dollars("0.000026"));
        assert_eq!(price.max_cost_of(0, 10), dollars("0.00004"));
    }

    #[test]
    fn pricing_gemini_2_5_pro_switches_tier_above_200k() {
        let price = builtin("gemini-2.5-pro").price;
        assert_eq!(price.tiers.len(), 1);
        assert_eq!(price.tiers[0].above_input_tokens, 200_000);
        // At the threshold: base rates, 200k × $1.25/1M + 1000 × $10/1M.
        assert_eq!(price.cost(&Usage::new(200_000, 1000)), dollars("0.26"));
        // One token more: the whole request at $2.50/1M in and $15/1M out.
        assert_eq!(price.cost(&Usage::new(200_001, 1000)), dollars("0.5150025"));
        // Cached tokens move tier too: 150k plain × $2.50 + 100k cached × $0.25.
        let cached = Usage {
            input: 250_000,
            cached_input: 100_000,
            cache_write: 0,
            output: 0,
            reasoning: 0,
        };
        assert_eq!(price.cost(&cached), dollars("0.4"));
        // Reservations pick the tier by prompt size.
        assert_eq!(price.max_cost_of(100, 10), dollars("0.000225"));
        assert_eq!(price.max_cost_of(300_000, 10), dollars("0.75015"));
    }

    #[test]
    fn pricing_tiers_parse_any_threshold_and_the_highest_passed_wins() {
        let table = PriceTable::from_litellm_json(
            r#"{"m": {"mode": "chat", "input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06,
                "input_cost_per_token_above_128k_tokens": 3e-06,
                "output_cost_per_token_above_128k_tokens": 4e-06,
                "input_cost_per_token_above_256k_tokens": 5e-06,
                "input_cost_per_token_above_256k_tokens_priority": "ignored",
                "cache_creation_input_token_cost_above_1hr": "ignored too",
                "cache_read_input_token_cost_above_1m_tokens": 1e-07}}"#,
        )
        .unwrap();
        let price = table.get("M").unwrap();
        let thresholds: Vec<u64> = price.tiers.iter().map(|t| t.above_input_tokens).collect();
        assert_eq!(thresholds, [128_000, 256_000, 1_000_000]);
        let r = price.rates_for(100_000);
        assert_eq!((r.input, r.output), (dollars("1e-06"), dollars("2e-06")));
        let r = price.rates_for(200_000);
        assert_eq!((r.input, r.output), (dollars("3e-06"), dollars("4e-06")));
        // The 256k tier sets only input; output stays at the 128k tier's rate.
        let r = price.rates_for(300_000);
        assert_eq!((r.input, r.output), (dollars("5e-06"), dollars("4e-06")));
        assert_eq!(r.cached_input, r.input);
        assert_eq!(price.rates_for(2_000_000).cached_input, dollars("1e-07"));
    }

    #[test]
    fn pricing_max_cost_takes_the_worst_input_rate() {
        // Claude cache writes cost more than plain input: a reservation assumes them.
        let price = builtin("claude-3-5-sonnet").price;
        // 1000 × $3.75/1M + 500 × $15/1M
        assert_eq!(price.max_cost_of(1000, 500), dollars("0.01125"));
        let gpt = builtin("gpt-4o").price;
        assert_eq!(gpt.max_cost_of(1000, 500), dollars("0.0075"));
        let priced = PriceTable::builtin_ref()
            .max_cost("openai/gpt-4o", 1000, 500)
            .unwrap();
        assert_eq!(
            (priced.cost, priced.model_id.as_str()),
            (dollars("0.0075"), "gpt-4o")
        );
    }

    #[test]
    fn pricing_costs_saturate() {
        let price = builtin("o1-pro").price;
        let huge = Usage::new(u64::MAX, u64::MAX);
        assert_eq!(price.cost(&huge), Money::MAX);
        assert_eq!(price.max_cost_of(u64::MAX, u64::MAX), Money::MAX);
        // Inconsistent usage (more cached than prompt tokens) still prices without panicking.
        let odd = Usage {
            input: 1,
            cached_input: 5,
            cache_write: 7,
            output: 1,
            reasoning: 9,
        };
        let _ = price.cost(&odd);
    }

    #[test]
    fn pricing_per_million_stays_exact() {
        let price = ModelPrice::per_million("0.0375", "0.15").unwrap();
        assert_eq!(price.input, dollars("3.75e-08"));
        assert_eq!(price.input.units(), 37_500_000_000_000_000);
        assert_eq!(price.cost(&Usage::new(1_000_000, 0)), dollars("0.0375"));
        assert_eq!(price.cost(&Usage::new(1, 0)), dollars("0.0000000375"));
        let table = PriceTable::from_litellm_json(
            r#"{"cheap": {"input_cost_per_token": 3.75e-08, "output_cost_per_token": "1.5e-07"}}"#,
        )
        .unwrap();
        assert_eq!(table.get("cheap"), Some(&price));

        for bad in ["abc", "-1", "", "1e-30"] {
            assert!(
                matches!(
                    ModelPrice::per_million(bad, "1"),
                    Err(PriceError::InvalidPrice { .. })
                ),
                "{bad:?}"
            );
        }
        let tier = PriceTier::per_million(200_000, "2.5", "15").unwrap();
        let price = ModelPrice::per_million("1.25", "10")
            .unwrap()
            .with_cached_per_million("0.125")
            .unwrap()
            .with_cache_write_per_million("1.5")
            .unwrap()
            .with_tier(tier)
            .with_max_tokens(Some(1_048_576), Some(65_535))
            .with_provider("gemini");
        assert_eq!(price.rates_for(200_001).input, per_million("2.5"));
        assert_eq!(price.rates_for(200_001).cached_input, per_million("0.125"));
    }

    #[test]
    fn pricing_table_insert_and_merge_override() {
        let mut table = PriceTable::new();
        assert!(table.is_empty());
        let a = ModelPrice::per_million("1", "2").unwrap();
        let b = ModelPrice::per_million("3", "4").unwrap();
        assert_eq!(table.insert("My-Model", a.clone()), None);
        assert_eq!(table.resolve("my-model").unwrap().id, "My-Model");
        assert_eq!(table.resolve("acme/MY-MODEL-20250101").unwrap().price, &a);

        let mut overrides = PriceTable::new();
        overrides.insert("my-model", b.clone());
        overrides.insert("other", a.clone());
        let mut merged = PriceTable::builtin();
        let before = merged.len();
        merged.merge_from(table);
        merged.merge_from(overrides);
        assert_eq!(merged.len(), before + 2);
        assert_eq!(merged.get("my-model"), Some(&b));
        assert_eq!(merged.unknown_model_policy(), &UnknownModelPolicy::Error);
        // Overriding a built-in price.
        let mut custom = PriceTable::builtin();
        custom.insert("gpt-4o", b.clone());
        assert_eq!(
            custom.resolve("openai/gpt-4o-2024-08-06").unwrap().price,
            &b
        );
    }

    #[test]
    fn pricing_loader_skips_what_it_does_not_price() {
        let table = PriceTable::from_litellm_json(
            r#"{
              "_meta": {"source": "test"},
              "sample_spec": {"max_input_tokens": "max input tokens", "input_cost_per_token": 0.0,
                              "output_cost_per_token": 0.0, "mode": "one of: chat, embedding"},
              "embedder": {"mode": "embedding", "input_cost_per_token": "bogus", "output_cost_per_token": 0},
              "image": {"mode": "image_generation", "output_cost_per_image": 0.04},
              "router": {"mode": "chat", "litellm_provider": "fireworks_ai", "max_tokens": 8192},
              "per-second": {"mode": "chat", "input_cost_per_second": 0.0001, "output_cost_per_second": 0.0001},
              "video-in": {"mode": "chat", "input_cost_per_video_per_second": 1e-05, "output_cost_per_token": 7.5e-06},
              "priority-only": {"mode": "chat", "input_cost_per_token_priority": 1e-06,
                                "output_cost_per_token_priority": 2e-06,
                                "cache_read_input_token_cost_above_200k_tokens_priority": 1e-07},
              "tts": {"input_cost_per_character": 3e-05, "litellm_provider": "deepgram"},
              "no-mode": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06, "max_tokens": 4096},
              "comp": {"mode": "completion", "input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06,
                       "max_input_tokens": 8000, "max_output_tokens": 1000, "max_tokens": 4096,
                       "litellm_provider": "text-completion-openai"},
              "latest": {"alias_of": "comp"},
              "chain": {"alias_of": "latest"},
              "dangling": {"alias_of": "embedder"},
              "loop-a": {"alias_of": "loop-b"},
              "loop-b": {"alias_of": "loop-a"}
            }"#,
        )
        .unwrap();
        let mut ids: Vec<&str> = table.iter().map(|(id, _)| id).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["chain", "comp", "latest", "no-mode"]);
        assert_eq!(table.resolve("chain").unwrap().id, "comp");
        let comp = table.get("comp").unwrap();
        assert_eq!(
            (comp.max_input_tokens, comp.max_output_tokens),
            (Some(8000), Some(1000))
        );
        assert_eq!(comp.provider.as_deref(), Some("text-completion-openai"));
        assert_eq!(table.get("no-mode").unwrap().max_output_tokens, Some(4096));
        assert!(PriceTable::from_litellm_json("{}").unwrap().is_empty());
    }

    #[test]
    fn pricing_malformed_fields_name_model_and_field() {
        let entry = |field: &str, value: &str| {
            format!(
                r#"{{"ok": {{"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06}},
                   "bad-model": {{"mode": "chat", "input_cost_per_token": 1e-06,
                                  "output_cost_per_token": 2e-06, "{field}": {value}}}}}"#
            )
        };
        type Case = (&'static str, &'static str, fn(&FieldProblem) -> bool);
        let cases: [Case; 12] = [
            (
                "input_cost_per_token",
                r#""abc""#,
                |p| matches!(p, FieldProblem::NotANumber { found } if found == r#""abc""#),
            ),
            (
                "output_cost_per_token",
                "-1e-06",
                |p| matches!(p, FieldProblem::Negative { found } if found == "-1e-06"),
            ),
            (
                "cache_read_input_token_cost",
                "true",
                |p| matches!(p, FieldProblem::NotANumber { found } if found == "true"),
            ),
            ("cache_creation_input_token_cost", "1e-30", |p| {
                matches!(
                    p,
                    FieldProblem::Unrepresentable(MoneyParseError::TooPrecise { .. })
                )
            }),
            ("output_cost_per_reasoning_token", "1e400", |p| {
                matches!(
                    p,
                    FieldProblem::Unrepresentable(MoneyParseError::OutOfRange { .. })
                )
            }),
            ("input_cost_per_token_above_200k_tokens", "[1]", |p| {
                matches!(p, FieldProblem::NotANumber { .. })
            }),
            ("output_cost_per_token", r#""$5""#, |p| {
                matches!(p, FieldProblem::NotANumber { .. })
            }),
            ("max_input_tokens", "-5", |p| {
                matches!(p, FieldProblem::NotACount { .. })
            }),
            ("max_output_tokens", "1.5", |p| {
                matches!(p, FieldProblem::NotACount { .. })
            }),
            ("max_tokens", "99999999999999999999999", |p| {
                matches!(p, FieldProblem::NotACount { .. })
            }),
            ("litellm_provider", "7", |p| {
                matches!(p, FieldProblem::NotAString { .. })
            }),
            ("mode", "{}", |p| {
                matches!(p, FieldProblem::NotAString { .. })
            }),
        ];
        for (field, value, check) in cases {
            let (model, got_field, problem) = field_problem(&entry(field, value));
            assert_eq!((model.as_str(), got_field.as_str()), ("bad-model", field));
            assert!(check(&problem), "{field} = {value}: {problem:?}");
            // The message names both.
            let message = load_err(&entry(field, value)).to_string();
            assert!(
                message.contains("bad-model") && message.contains(field),
                "{message}"
            );
        }
        // A very long bad value is quoted shortly.
        let long = format!("\"{}\"", "x".repeat(10_000));
        let (_, _, problem) = field_problem(&entry("input_cost_per_token", &long));
        assert!(problem.to_string().len() < 120);
    }

    /// A misspelled price field used to load as "OK, 0 models" and leave the model unknown.
    #[test]
    fn pricing_entry_without_a_usable_price_names_its_fields() {
        let cases = [
            // Misspelled: `input_cost_per_tokens`.
            (
                r#"{"my-model": {"mode": "chat", "input_cost_per_tokens": 1e-06,
                    "output_cost_per_token": 2e-06}}"#,
                vec!["input_cost_per_tokens", "mode", "output_cost_per_token"],
            ),
            // A price field LiteLLM does not have.
            (
                r#"{"my-model": {"input_price": 1e-06, "output_price": 2e-06}}"#,
                vec!["input_price", "output_price"],
            ),
            // Half a price: the output side is missing, or null.
            (
                r#"{"my-model": {"mode": "chat", "input_cost_per_token": 1e-06}}"#,
                vec!["input_cost_per_token", "mode"],
            ),
            (
                r#"{"my-model": {"mode": "chat", "input_cost_per_token": null,
                    "output_cost_per_token": 1e-06}}"#,
                vec!["input_cost_per_token", "mode", "output_cost_per_token"],
            ),
        ];
        for (doc, fields) in cases {
            // The same mistake among good entries still fails the file.
            let doc = doc.replacen(
                '{',
                r#"{"gpt-x": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06}, "#,
                1,
            );
            let err = load_err(&doc);
            assert_eq!(
                err,
                PriceError::NoUsablePrice {
                    model: "my-model".into(),
                    fields: fields.iter().map(|f| f.to_string()).collect(),
                },
                "{doc}"
            );
            let message = err.to_string();
            assert!(
                message.contains("my-model") && fields.iter().all(|f| message.contains(f)),
                "{message}"
            );
        }
        // Many fields are listed shortly.
        let many: Vec<String> = (0..40).map(|i| format!(r#""f{i:02}": 1"#)).collect();
        let doc = format!(
            r#"{{"m": {{"input_cost_per_tokens": 1, {}}}}}"#,
            many.join(", ")
        );
        match load_err(&doc) {
            PriceError::NoUsablePrice { fields, .. } => {
                assert_eq!(fields.len(), FIELDS_LISTED + 1);
                assert_eq!(fields.last().map(String::as_str), Some("…"));
            }
            other => panic!("{other:?}"),
        }
        // A file whose entries are all unpriced is no price list.
        assert_eq!(
            load_err(r#"{"a": {"mode": "chat"}, "b": {"mode": "embedding"}, "_meta": {}}"#),
            PriceError::NoPrices { entries: 2 }
        );
    }

    #[test]
    fn pricing_cost_fields_are_classified_like_litellm_names_them() {
        use CostField::{NotACost, OtherUnit, Token, Unknown};
        for (field, kind) in [
            ("mode", NotACost),
            ("max_output_tokens", NotACost),
            ("input_cost_per_token", Token),
            (
                "cache_creation_input_token_cost_above_12hr_above_200k_tokens_flex",
                Token,
            ),
            (
                "input_cost_per_audio_token_above_128k_tokens_batches",
                Token,
            ),
            ("input_cost_per_token_cache_hit", Token),
            ("output_cost_per_image", OtherUnit),
            ("output_cost_per_image_1024", OtherUnit),
            ("output_cost_per_second_1080p", OtherUnit),
            (
                "input_cost_per_video_per_second_above_15s_interval",
                OtherUnit,
            ),
            ("search_context_cost_per_query", OtherUnit),
            ("cost_per_second", OtherUnit),
            ("annotation_cost_per_page_batches", OtherUnit),
            ("input_cost_per_tokens", Unknown),
            ("input_cost_per_toke", Unknown),
            ("output_price", Unknown),
            ("input_cost_per_imagery", Unknown),
        ] {
            assert_eq!(cost_field(field), kind, "{field}");
        }
    }

    #[test]
    fn pricing_file_and_env_loading() {
        let dir = std::env::temp_dir().join(format!("budget-prices-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.json");
        std::fs::write(
            &good,
            r#"{"gpt-4o": {"input_cost_per_token": 5e-06, "output_cost_per_token": 2e-05},
                "house-model": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06}}"#,
        )
        .unwrap();
        let table = PriceTable::builtin_with_file(Some(&good)).unwrap();
        // The file overrides the built-in price and adds its own model; the rest stays.
        assert_eq!(table.get("gpt-4o").unwrap().input, per_million("5"));
        assert_eq!(table.get("house-model").unwrap().output, per_million("2"));
        assert_eq!(table.len(), PriceTable::builtin_ref().len() + 1);
        assert_eq!(
            PriceTable::builtin_with_file(None::<&str>).unwrap(),
            PriceTable::builtin()
        );

        let bad = dir.join("bad.json");
        std::fs::write(
            &bad,
            r#"{"m": {"input_cost_per_tokn": 1, "output_cost_per_token": 1}}"#,
        )
        .unwrap();
        let err = PriceTable::builtin_with_file(Some(&bad)).unwrap_err();
        assert!(
            matches!(&err, PriceError::InFile { path, source }
                if path == &bad && matches!(**source, PriceError::NoUsablePrice { .. })),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("bad.json") && err.to_string().contains("input_cost_per_tokn")
        );
        let missing = dir.join("missing.json");
        let err = PriceTable::from_litellm_file(&missing).unwrap_err();
        assert!(
            matches!(&err, PriceError::Io { path, .. } if path == &missing),
            "{err:?}"
        );
        assert!(err.to_string().contains("missing.json"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pricing_malformed_documents_are_typed_errors() {
        assert_eq!(
            load_err("[1, 2]"),
            PriceError::NotAnObject { found: "an array" }
        );
        assert_eq!(
            load_err("\"x\""),
            PriceError::NotAnObject { found: "a string" }
        );
        assert_eq!(load_err("null"), PriceError::NotAnObject { found: "null" });
        assert_eq!(
            load_err(" 3 "),
            PriceError::NotAnObject { found: "a number" }
        );
        assert!(matches!(load_err(""), PriceError::Json(_)));
        assert!(matches!(
            load_err(r#"{"gpt-4o": {"input_cost_per_token": 2.5e-06, "output_cost"#),
            PriceError::Json(_)
        ));
        assert!(matches!(
            load_err(r#"{"a": 1} trailing"#),
            PriceError::Json(_)
        ));
        assert_eq!(
            load_err(r#"{"m": [1]}"#),
            PriceError::EntryNotAnObject {
                model: "m".into(),
                found: "an array"
            }
        );
        // Deep nesting is an error, not a stack overflow.
        let deep = format!(r#"{{"m": {}{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
        assert!(PriceTable::from_litellm_json(&deep).is_err());
    }

    const SMALL_DOC: &str = r#"{"gpt-x": {"mode": "chat", "input_cost_per_token": 2.5e-06,
        "output_cost_per_token": 1e-05, "cache_read_input_token_cost": 1.25e-06,
        "input_cost_per_token_above_200k_tokens": 5e-06, "max_input_tokens": 128000,
        "litellm_provider": "openai"}, "alias": {"alias_of": "gpt-x"}, "_meta": {}}"#;

    proptest! {
        #[test]
        fn pricing_loader_never_panics_on_arbitrary_text(text in "\\PC{0,96}") {
            let _ = PriceTable::from_litellm_json(&text);
        }

        #[test]
        fn pricing_loader_never_panics_on_mutated_documents(
            edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<char>()), 1..6),
            input in 0u64..400_000, cached in 0u64..400_000, output in 0u64..10_000,
        ) {
            let mut doc: Vec<char> = SMALL_DOC.chars().collect();
            for (at, op, c) in edits {
                let i = at.index(doc.len() + 1);
                match op {
                    0 => doc.insert(i, c),
                    1 if i < doc.len() => { doc.remove(i); }
                    _ if i < doc.len() => doc[i] = c,
                    _ => doc.push(c),
                }
            }
            let doc: String = doc.into_iter().collect();
            if let Ok(table) = PriceTable::from_litellm_json(&doc) {
                let usage = Usage { input, cached_input: cached, cache_write: 0, output, reasoning: 0 };
                for model in ["gpt-x", "alias", "openai/gpt-x-2024-01-01"] {
                    if let Ok(priced) = table.cost(model, &usage) {
                        prop_assert!(!priced.cost.is_negative());
                    }
                }
            }
        }

        #[test]
        fn pricing_breakdown_adds_up_to_the_cost(
            input in any::<u64>(), cached in any::<u64>(), write in any::<u64>(),
            output in any::<u64>(), reasoning in any::<u64>(), scale in 0u32..4,
            model in prop::sample::select(vec![
                "gpt-4o", "claude-sonnet-4", "gemini-2.5-pro", "gemini-2.5-flash", "o1-pro",
            ]),
        ) {
            // Small, large and inconsistent usages alike (cached above input, reasoning
            // above output, sums that saturate).
            let shift = [0, 20, 40, 0][scale as usize];
            let usage = Usage {
                input: input >> shift,
                cached_input: cached >> shift,
                cache_write: write >> shift,
                output: output >> shift,
                reasoning: reasoning >> shift,
            };
            let price = builtin(model).price;
            // The formula `cost` had before it was itemised: the parts must not change it.
            let r = price.rates_for(usage.input);
            let mut reference = r.input.saturating_mul_tokens(usage.uncached_input())
                + r.cached_input.saturating_mul_tokens(usage.cached_input)
                + r.cache_write.saturating_mul_tokens(usage.cache_write);
            reference += match r.reasoning {
                Some(rate) => r.output.saturating_mul_tokens(usage.visible_output())
                    + rate.saturating_mul_tokens(usage.reasoning),
                None => r.output.saturating_mul_tokens(usage.output),
            };
            prop_assert_eq!(price.cost_breakdown(&usage).total(), reference);
            prop_assert_eq!(price.cost(&usage), reference);
            prop_assert_eq!(
                PriceTable::builtin_ref().cost_breakdown(model, &usage).unwrap().total(),
                PriceTable::builtin_ref().cost(model, &usage).unwrap().cost
            );
        }

        #[test]
        fn pricing_resolution_never_panics(model in "\\PC{0,40}") {
            let _ = PriceTable::builtin_ref().resolve(&model);
        }

        #[test]
        fn pricing_cost_parts_add_up(
            uncached in 0u64..1 << 30, cached in 0u64..1 << 30, write in 0u64..1 << 30,
            visible in 0u64..1 << 30, reasoning in 0u64..1 << 30,
        ) {
            let price = builtin("claude-sonnet-4-5").price;
            let usage = Usage {
                input: uncached + cached + write,
                cached_input: cached,
                cache_write: write,
                output: visible + reasoning,
                reasoning,
            };
            let parts = [
                Usage::new(uncached, 0),
                Usage { input: cached, cached_input: cached, ..Usage::default() },
                Usage { input: write, cache_write: write, ..Usage::default() },
                Usage::new(0, visible + reasoning),
            ];
            let sum: Money = parts.iter().map(|u| price.cost(u)).sum();
            prop_assert_eq!(price.cost(&usage), sum);
            prop_assert!(price.cost(&usage) <= price.max_cost_of(usage.input, usage.output));
        }
    }
}
