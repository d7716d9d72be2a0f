//! Cost computation: what a [`Usage`] costs at a [`ModelPrice`], exactly and saturating, split
//! by price class, and the most a call can cost (for reservations).

use crate::money::Money;
use crate::usage::Usage;

use super::price::ModelPrice;

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

impl ModelPrice {
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
        let r = self.unit_prices_for(usage.input);
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
        let r = self.unit_prices_for(prompt_tokens);
        let input = r.input.max(r.cached_input).max(r.cache_write);
        let output = r.output.max(r.reasoning.unwrap_or(r.output));
        input.saturating_mul_tokens(prompt_tokens) + output.saturating_mul_tokens(max_output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::test_support::*;
    use crate::pricing::{PriceError, PriceTable};
    use proptest::prelude::*;

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

    proptest! {
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
            let r = price.unit_prices_for(usage.input);
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
