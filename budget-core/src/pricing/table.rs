//! The price table: prices by model id, lookup of decorated ids, and the policy for unknown
//! models.

use crate::money::Money;
use crate::usage::Usage;

use super::cost::CostBreakdown;
use super::error::PriceError;
use super::names::{KEPT_PREFIXES, strip_prefix_once, strip_suffix_once};
use super::price::ModelPrice;

/// The id reported by [`ResolvedPrice::id`] and [`Priced::model_id`] when an unknown model was
/// priced at the [`UnknownModelPolicy::Fallback`] price.
pub const FALLBACK_MODEL_ID: &str = "(fallback)";

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
pub(super) struct Entry {
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
    pub(super) models: foldhash::HashMap<String, Entry>,
    unknown: UnknownModelPolicy,
}

impl PriceTable {
    /// An empty table that refuses unknown models.
    pub fn new() -> PriceTable {
        PriceTable::default()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::test_support::*;
    use proptest::prelude::*;

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

    proptest! {
        #[test]
        fn pricing_resolution_never_panics(model in "\\PC{0,40}") {
            let _ = PriceTable::builtin_ref().resolve(&model);
        }
    }
}
