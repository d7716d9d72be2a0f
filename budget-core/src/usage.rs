//! Token usage, kept apart by how it is priced.
//!
//! # The convention
//!
//! [`Usage`] follows OpenAI's nesting, whatever provider reported it:
//!
//! - `input` is **every** prompt token, *including* `cached_input` (read from a prompt cache) and
//!   `cache_write` (written to one). Anthropic reports the three apart; its parser adds them up.
//! - `output` is every generated token, *including* `reasoning`.
//!
//! So `input + output` is the total, and the disjoint, separately priced parts are
//! `input − cached_input − cache_write` (plain input), `cached_input`, `cache_write`,
//! `output − reasoning` (plain output) and `reasoning`. Counting a cached token both as input and
//! as cached input is a known bug in peer tools; [`Usage::uncached_input`] is the one place the
//! subtraction happens.
//!
//! # Aggregation rules
//!
//! - Across calls, usage is **summed** ([`Usage::accumulate`], saturating).
//! - Inside one stream, providers send *cumulative* counters: take the running **maximum**
//!   ([`Usage::merge_cumulative`]), never the sum.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Tokens of one call (or a sum of calls), split by price class. See the module docs for the
/// nesting convention.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Usage {
    /// All prompt tokens, cached and cache-write tokens included.
    pub input: u64,
    /// Prompt tokens read from the provider's prompt cache (a subset of `input`).
    pub cached_input: u64,
    /// Prompt tokens written to the provider's prompt cache (a subset of `input`).
    pub cache_write: u64,
    /// All generated tokens, reasoning included.
    pub output: u64,
    /// Hidden reasoning tokens (a subset of `output`).
    pub reasoning: u64,
}

/// Why a usage object could not be read. Names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// The text is not JSON at all.
    #[error("usage is not valid JSON: {0}")]
    Json(String),
    /// The value is not a JSON object.
    #[error("usage must be a JSON object, found {found}")]
    NotAnObject {
        /// The JSON type found instead.
        found: &'static str,
    },
    /// A required field is absent (or null).
    #[error("usage field `{field}` is missing")]
    Missing {
        /// Dotted path of the field.
        field: &'static str,
    },
    /// A field holds something other than a non-negative integer.
    #[error("usage field `{field}` must be a non-negative integer, found {found}")]
    NotACount {
        /// Dotted path of the field.
        field: &'static str,
        /// What was there, as JSON text.
        found: String,
    },
    /// The parts do not nest (e.g. more cached tokens than prompt tokens).
    #[error("usage is inconsistent: {0}")]
    Inconsistent(String),
}

impl Usage {
    /// A call that read `input` prompt tokens and generated `output` tokens, with no cache or
    /// reasoning detail.
    pub const fn new(input: u64, output: u64) -> Usage {
        Usage {
            input,
            cached_input: 0,
            cache_write: 0,
            output,
            reasoning: 0,
        }
    }

    /// The same usage with `cached_input` prompt tokens read from the provider's cache (a
    /// part of `input`, as OpenAI's `prompt_tokens_details.cached_tokens` is).
    ///
    /// ```
    /// # use budget_core::Usage;
    /// let u = Usage::new(120, 40).with_cached_input(64).with_reasoning(12);
    /// assert_eq!((u.uncached_input(), u.visible_output()), (56, 28));
    /// assert!(u.validate().is_ok());
    /// ```
    pub const fn with_cached_input(self, cached_input: u64) -> Usage {
        Usage {
            cached_input,
            ..self
        }
    }

    /// The same usage with `cache_write` prompt tokens written to the provider's cache (a part
    /// of `input`: give `input` as the sum of plain, cached and cache-write tokens).
    pub const fn with_cache_write(self, cache_write: u64) -> Usage {
        Usage {
            cache_write,
            ..self
        }
    }

    /// The same usage with `reasoning` hidden reasoning tokens (a part of `output`).
    pub const fn with_reasoning(self, reasoning: u64) -> Usage {
        Usage { reasoning, ..self }
    }

    /// `input + output`, saturating.
    pub const fn total(&self) -> u64 {
        self.input.saturating_add(self.output)
    }

    /// Prompt tokens billed at the plain input price: `input − cached_input − cache_write`.
    pub const fn uncached_input(&self) -> u64 {
        self.input
            .saturating_sub(self.cached_input)
            .saturating_sub(self.cache_write)
    }

    /// Output tokens that are not reasoning.
    pub const fn visible_output(&self) -> u64 {
        self.output.saturating_sub(self.reasoning)
    }

    /// Adds another call's usage (saturating): the rule across calls.
    pub fn accumulate(&mut self, other: &Usage) {
        self.combine(other, u64::saturating_add);
    }

    /// Merges a later cumulative report from the *same* stream: each field's running maximum.
    pub fn merge_cumulative(&mut self, later: &Usage) {
        self.combine(later, u64::max);
    }

    /// Applies `f` field by field. The exhaustive destructuring makes a new field a compile
    /// error here instead of a silently dropped count.
    fn combine(&mut self, other: &Usage, f: impl Fn(u64, u64) -> u64) {
        let Usage {
            input,
            cached_input,
            cache_write,
            output,
            reasoning,
        } = *other;
        self.input = f(self.input, input);
        self.cached_input = f(self.cached_input, cached_input);
        self.cache_write = f(self.cache_write, cache_write);
        self.output = f(self.output, output);
        self.reasoning = f(self.reasoning, reasoning);
    }

    /// Checks that the parts nest: `cached_input + cache_write ≤ input`, `reasoning ≤ output`.
    pub fn validate(&self) -> Result<(), UsageError> {
        if self.cached_input.saturating_add(self.cache_write) > self.input {
            return Err(UsageError::Inconsistent(format!(
                "cached ({}) + cache-write ({}) prompt tokens exceed all prompt tokens ({})",
                self.cached_input, self.cache_write, self.input
            )));
        }
        if self.reasoning > self.output {
            return Err(UsageError::Inconsistent(format!(
                "reasoning tokens ({}) exceed output tokens ({})",
                self.reasoning, self.output
            )));
        }
        Ok(())
    }

    /// Reads an OpenAI Chat Completions `usage` object:
    /// `prompt_tokens`, `completion_tokens`, `prompt_tokens_details.cached_tokens`,
    /// `completion_tokens_details.reasoning_tokens`. Details are optional; counts are required.
    ///
    /// ```
    /// # use budget_core::Usage;
    /// let u = Usage::from_openai_json(r#"{"prompt_tokens":120,"completion_tokens":40,
    ///   "total_tokens":160,"prompt_tokens_details":{"cached_tokens":64},
    ///   "completion_tokens_details":{"reasoning_tokens":12}}"#).unwrap();
    /// assert_eq!((u.input, u.cached_input, u.output, u.reasoning), (120, 64, 40, 12));
    /// assert_eq!(u.uncached_input(), 56); // cached tokens are not billed twice
    /// ```
    pub fn from_openai_json(text: &str) -> Result<Usage, UsageError> {
        Usage::from_openai_value(&parse_json(text)?)
    }

    /// [`Usage::from_openai_json`] on an already parsed value.
    pub fn from_openai_value(value: &Value) -> Result<Usage, UsageError> {
        let obj = as_object(value)?;
        let usage = Usage {
            input: required(obj, "prompt_tokens")?,
            cached_input: nested(obj, "prompt_tokens_details", "cached_tokens")?,
            cache_write: 0,
            output: required(obj, "completion_tokens")?,
            reasoning: nested(obj, "completion_tokens_details", "reasoning_tokens")?,
        };
        if let Some(total) = optional(obj, "total_tokens", "total_tokens")?
            && total != usage.total()
        {
            return Err(UsageError::Inconsistent(format!(
                "total_tokens ({total}) is not prompt_tokens + completion_tokens ({})",
                usage.total()
            )));
        }
        usage.validate()?;
        Ok(usage)
    }

    /// Reads an Anthropic Messages `usage` object: `input_tokens` (which *excludes* cache reads
    /// and writes), `cache_read_input_tokens`, `cache_creation_input_tokens`, `output_tokens`.
    ///
    /// ```
    /// # use budget_core::Usage;
    /// let u = Usage::from_anthropic_json(r#"{"input_tokens":50,"cache_creation_input_tokens":1000,
    ///   "cache_read_input_tokens":6000,"output_tokens":300}"#).unwrap();
    /// assert_eq!(u.input, 7050); // Anthropic's three input counts are disjoint
    /// assert_eq!((u.cached_input, u.cache_write, u.uncached_input()), (6000, 1000, 50));
    /// ```
    pub fn from_anthropic_json(text: &str) -> Result<Usage, UsageError> {
        Usage::from_anthropic_value(&parse_json(text)?)
    }

    /// [`Usage::from_anthropic_json`] on an already parsed value.
    pub fn from_anthropic_value(value: &Value) -> Result<Usage, UsageError> {
        let obj = as_object(value)?;
        let plain = required(obj, "input_tokens")?;
        let cached_input =
            optional(obj, "cache_read_input_tokens", "cache_read_input_tokens")?.unwrap_or(0);
        let cache_write = optional(
            obj,
            "cache_creation_input_tokens",
            "cache_creation_input_tokens",
        )?
        .unwrap_or(0);
        let input = plain
            .checked_add(cached_input)
            .and_then(|v| v.checked_add(cache_write))
            .ok_or_else(|| UsageError::Inconsistent("input token counts overflow".into()))?;
        Ok(Usage {
            input,
            cached_input,
            cache_write,
            output: required(obj, "output_tokens")?,
            reasoning: 0,
        })
    }
}

fn parse_json(text: &str) -> Result<Value, UsageError> {
    serde_json::from_str(text).map_err(|e| UsageError::Json(e.to_string()))
}

fn as_object(value: &Value) -> Result<&serde_json::Map<String, Value>, UsageError> {
    value.as_object().ok_or(UsageError::NotAnObject {
        found: json_type(value),
    })
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn count(value: &Value, field: &'static str) -> Result<u64, UsageError> {
    value.as_u64().ok_or_else(|| UsageError::NotACount {
        field,
        found: value.to_string(),
    })
}

fn required(obj: &serde_json::Map<String, Value>, key: &'static str) -> Result<u64, UsageError> {
    optional(obj, key, key)?.ok_or(UsageError::Missing { field: key })
}

fn optional(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<Option<u64>, UsageError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => count(v, field).map(Some),
    }
}

/// A count inside an optional details object; absent or null at either level reads as 0.
fn nested(
    obj: &serde_json::Map<String, Value>,
    outer: &'static str,
    inner: &'static str,
) -> Result<u64, UsageError> {
    let field = match (outer, inner) {
        ("prompt_tokens_details", "cached_tokens") => "prompt_tokens_details.cached_tokens",
        ("completion_tokens_details", "reasoning_tokens") => {
            "completion_tokens_details.reasoning_tokens"
        }
        _ => outer,
    };
    match obj.get(outer) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Object(details)) => Ok(optional(details, inner, field)?.unwrap_or(0)),
        Some(other) => Err(UsageError::NotACount {
            field,
            found: other.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OPENAI: &str = r#"{"prompt_tokens":120,"completion_tokens":40,"total_tokens":160,
        "prompt_tokens_details":{"cached_tokens":64,"audio_tokens":0},
        "completion_tokens_details":{"reasoning_tokens":12,"audio_tokens":0,
        "accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}"#;

    #[test]
    fn openai_usage_nests_cached_and_reasoning() {
        let u = Usage::from_openai_json(OPENAI).unwrap();
        assert_eq!(
            u,
            Usage {
                input: 120,
                cached_input: 64,
                cache_write: 0,
                output: 40,
                reasoning: 12
            }
        );
        // The peer bug: billing 120 input + 64 cached = 184 prompt tokens. We bill 56 + 64.
        assert_eq!(u.uncached_input() + u.cached_input, 120);
        assert_eq!(u.visible_output() + u.reasoning, 40);
        assert_eq!(u.total(), 160);
    }

    #[test]
    fn openai_details_are_optional() {
        let u = Usage::from_openai_json(
            r#"{"prompt_tokens":3,"completion_tokens":4,"prompt_tokens_details":null}"#,
        )
        .unwrap();
        assert_eq!(u, Usage::new(3, 4));
    }

    #[test]
    fn anthropic_usage_adds_disjoint_input_counts() {
        let u = Usage::from_anthropic_json(
            r#"{"input_tokens":50,"cache_creation_input_tokens":1000,"cache_read_input_tokens":6000,"output_tokens":300}"#,
        )
        .unwrap();
        assert_eq!(u.input, 7050);
        assert_eq!(u.uncached_input(), 50);
        assert_eq!(u.total(), 7350);
        u.validate().unwrap();
    }

    #[test]
    fn malformed_usage_names_the_field() {
        let cases: [(&str, UsageError); 6] = [
            (
                r#"{"completion_tokens":1}"#,
                UsageError::Missing {
                    field: "prompt_tokens",
                },
            ),
            (
                r#"{"prompt_tokens":-1,"completion_tokens":1}"#,
                UsageError::NotACount {
                    field: "prompt_tokens",
                    found: "-1".into(),
                },
            ),
            (
                r#"{"prompt_tokens":1.5,"completion_tokens":1}"#,
                UsageError::NotACount {
                    field: "prompt_tokens",
                    found: "1.5".into(),
                },
            ),
            (
                r#"{"prompt_tokens":1,"completion_tokens":"2"}"#,
                UsageError::NotACount {
                    field: "completion_tokens",
                    found: "\"2\"".into(),
                },
            ),
            (
                r#"{"prompt_tokens":1,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":true}}"#,
                UsageError::NotACount {
                    field: "prompt_tokens_details.cached_tokens",
                    found: "true".into(),
                },
            ),
            (r#"[1,2]"#, UsageError::NotAnObject { found: "an array" }),
        ];
        for (text, expected) in cases {
            assert_eq!(Usage::from_openai_json(text), Err(expected), "{text}");
        }
        assert!(matches!(
            Usage::from_openai_json("{"),
            Err(UsageError::Json(_))
        ));
        assert!(matches!(
            Usage::from_openai_json(
                r#"{"prompt_tokens":10,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":11}}"#
            ),
            Err(UsageError::Inconsistent(_))
        ));
        assert!(matches!(
            Usage::from_openai_json(
                r#"{"prompt_tokens":10,"completion_tokens":1,"total_tokens":12}"#
            ),
            Err(UsageError::Inconsistent(_))
        ));
        assert!(matches!(
            Usage::from_anthropic_json(r#"{"input_tokens":1,"output_tokens":null}"#),
            Err(UsageError::Missing {
                field: "output_tokens"
            })
        ));
    }

    #[test]
    fn accumulating_adds_and_streams_take_the_maximum() {
        // The seed sketch overwrote usage per call; it must add up.
        let mut total = Usage::default();
        total.accumulate(&Usage::new(10, 5));
        total.accumulate(&Usage::new(7, 3));
        assert_eq!(total, Usage::new(17, 8));

        // Inside one stream, Anthropic's message_delta output counts are cumulative.
        let mut stream = Usage::new(50, 0);
        stream.merge_cumulative(&Usage::new(0, 12));
        stream.merge_cumulative(&Usage::new(0, 30));
        stream.merge_cumulative(&Usage::new(0, 30));
        assert_eq!(stream, Usage::new(50, 30));

        let mut big = Usage::new(u64::MAX, 1);
        big.accumulate(&Usage::new(1, 1));
        assert_eq!(big.input, u64::MAX);
    }

    #[test]
    fn builder_sets_the_nested_counts() {
        let u = Usage::new(7050, 300)
            .with_cached_input(6000)
            .with_cache_write(1000)
            .with_reasoning(20);
        assert_eq!(
            u,
            Usage {
                input: 7050,
                cached_input: 6000,
                cache_write: 1000,
                output: 300,
                reasoning: 20
            }
        );
        assert_eq!(u.uncached_input(), 50);
        // The builder does not check nesting; `validate` does.
        assert!(Usage::new(1, 0).with_cached_input(2).validate().is_err());
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_json_never_panics(text in "\\PC{0,64}") {
            let _ = Usage::from_openai_json(&text);
            let _ = Usage::from_anthropic_json(&text);
        }

        #[test]
        fn priced_parts_partition_the_total(
            uncached in 0u64..1 << 40, cached in 0u64..1 << 40, write in 0u64..1 << 40,
            visible in 0u64..1 << 40, reasoning in 0u64..1 << 40,
        ) {
            let u = Usage {
                input: uncached + cached + write,
                cached_input: cached,
                cache_write: write,
                output: visible + reasoning,
                reasoning,
            };
            prop_assert!(u.validate().is_ok());
            prop_assert_eq!(
                u.uncached_input() + u.cached_input + u.cache_write + u.visible_output() + u.reasoning,
                u.total()
            );
        }
    }
}
