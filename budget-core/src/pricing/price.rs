//! Money per token: a model's base prices, its prompt-size tiers, and the unit prices that
//! apply to one request once the tier is chosen.

use crate::money::{Money, MoneyParseError};

use super::error::{FieldProblem, PriceError, quote};

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

/// The price per token of each class that applies to one request, after tier selection
/// ([`ModelPrice::unit_prices_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitPrices {
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

    /// The former name of [`ModelPrice::unit_prices_for`].
    #[deprecated(note = "renamed `ModelPrice::unit_prices_for`")]
    #[doc(hidden)]
    pub fn rates_for(&self, prompt_tokens: u64) -> UnitPrices {
        self.unit_prices_for(prompt_tokens)
    }

    /// The unit prices for a request with `prompt_tokens` prompt tokens: the base rates,
    /// overridden by every tier whose threshold the prompt passes, lowest first (so the highest
    /// tier passed wins, and a rate it leaves out comes from the next lower one).
    pub fn unit_prices_for(&self, prompt_tokens: u64) -> UnitPrices {
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
        UnitPrices {
            input,
            cached_input: cached.unwrap_or(input),
            cache_write: write.unwrap_or(input),
            output,
            reasoning: self.reasoning,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::PriceTable;
    use crate::pricing::test_support::*;
    use crate::usage::Usage;

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
        let r = price.unit_prices_for(100_000);
        assert_eq!((r.input, r.output), (dollars("1e-06"), dollars("2e-06")));
        let r = price.unit_prices_for(200_000);
        assert_eq!((r.input, r.output), (dollars("3e-06"), dollars("4e-06")));
        // The 256k tier sets only input; output stays at the 128k tier's rate.
        let r = price.unit_prices_for(300_000);
        assert_eq!((r.input, r.output), (dollars("5e-06"), dollars("4e-06")));
        assert_eq!(r.cached_input, r.input);
        assert_eq!(
            price.unit_prices_for(2_000_000).cached_input,
            dollars("1e-07")
        );
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
        assert_eq!(price.unit_prices_for(200_001).input, per_million("2.5"));
        assert_eq!(
            price.unit_prices_for(200_001).cached_input,
            per_million("0.125")
        );
    }
}
