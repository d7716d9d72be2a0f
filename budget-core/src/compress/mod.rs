//! Context compression: the policy that shrinks a conversation to a token target.
//!
//! Pure and synchronous, over the provider-neutral [`Turn`]s of [`crate::conversation`]; no
//! tower, no I/O. The one step that needs a model call (summarising older turns) is split in
//! three pure functions so that the caller performs the call: [`summarisable_span`] picks the
//! turns, [`summary_prompt`] writes the request, [`replace_with_summary`] splices the answer in.
//!
//! # The policy
//!
//! 1. **Pick a target.** [`CompressConfig::target_for`] maps how much of a budget is used to a
//!    prompt-token target: by default above 90 % → 2,000 tokens, above 70 % → 4,000.
//! 2. **Drop low-signal turns** ([`drop_low_signal_turns`]): greetings and acknowledgements
//!    (`"hi"`, `"Thanks!"`, `"got it."`, `"👍"`), older than the last
//!    [`keep_last`](CompressConfig::keep_last) turns. Never a question, never instructions,
//!    never a tool call or a tool result.
//! 3. **Summarise** (the caller's model call, optional): the older turns
//!    ([`summarisable_span`]) are replaced by one turn of at most
//!    [`summary_max_tokens`](CompressConfig::summary_max_tokens) (cap the model's answer with
//!    [`truncate_text`]).
//! 4. **Truncate the longest** ([`truncate_to_fit`]): the longest older messages are cut, by
//!    exact token count, to a common cap (water-filling: every message above the cap is cut
//!    down to it, the others are untouched); a cut keeps the head of the text and ends with
//!    [`TRUNCATION_MARKER`].
//! 5. **Evict the oldest, last resort** ([`compress`] only, when
//!    [`evict_oldest`](CompressConfig::evict_oldest)): when even every older message cut down
//!    to the marker would not fit, the oldest older turns are removed whole (a tool call with
//!    its results) until it would.
//!
//! [`compress`] runs 2, 4 and 5; a layer that summarises runs 3 between 2 and [`compress`].
//!
//! # Guarantees
//!
//! On every input (empty, one-word, 100k-character, any unicode) every function terminates,
//! and:
//!
//! - instruction turns (system, developer) are kept unchanged, wherever they are;
//! - the last `keep_last` turns are kept verbatim. When the `keep_last` boundary falls inside
//!   a tool call's group (an assistant turn calling tools, and the tool turns answering it),
//!   the kept tail grows backwards to the start of the group;
//! - an assistant turn with tool calls and the tool turns answering its call ids are kept or
//!   removed together (an orphaned tool result is rejected by real APIs);
//! - the result fits: `count_turns(model, &result) <= target`, with the exact count of
//!   [`count_turns`], or the call fails with [`CompressError::CannotFit`] naming the numbers.
//!   A result is never silently over the target;
//! - the input is returned unchanged when it already fits.
//!
//! Turns keep their [`Turn::origin`], so the request adapter can rebuild its messages: a
//! truncated turn is its original message with a new text; a removed turn is gone; the
//! summary turn is new (`origin: None`).
//!
//! # Example
//!
//! ```
//! use budget_core::compress::{CompressConfig, compress};
//! use budget_core::conversation::{Role, Turn, count_turns};
//!
//! let mut turns = vec![Turn::new(Role::System, "You are terse.").from_message(0)];
//! for i in 1..40 {
//!     let role = if i % 2 == 1 { Role::User } else { Role::Assistant };
//!     let text = if i == 3 { "Thanks!".to_owned() } else { "lorem ipsum dolor ".repeat(60) };
//!     turns.push(Turn::new(role, text).from_message(i));
//! }
//! let config = CompressConfig::default();
//! let target = config.target_for(95).unwrap(); // 2,000 tokens
//! let out = compress("gpt-4o", &turns, target, &config).unwrap();
//! assert!(out.tokens_before > target);
//! assert!(out.tokens_after <= target);
//! assert_eq!(out.tokens_after, count_turns("gpt-4o", &out.turns).tokens);
//! assert_eq!(out.dropped, 1);
//! assert_eq!(out.turns[0], turns[0]); // the system prompt
//! assert_eq!(out.turns[out.turns.len() - 4..], turns[turns.len() - 4..]); // the last 4
//! ```

mod low_signal;
mod shrink;
mod summary;
#[cfg(test)]
mod test_support;
mod tool_groups;
mod truncate;

pub use low_signal::{drop_low_signal_turns, is_low_signal};
pub use shrink::truncate_to_fit;
pub use summary::{replace_with_summary, summarisable_span, summary_prompt};
pub use truncate::truncate_text;

use crate::conversation::Turn;
#[cfg(doc)]
use crate::conversation::count_turns;

use low_signal::low_signal_mask;
use shrink::{measure, shrink_to_target, total_tokens};
use truncate::encoding_for;

/// Appended to a truncated message's head (or standing alone for a message cut to nothing).
/// Its tokens are counted.
pub const TRUNCATION_MARKER: &str = "[truncated]";

/// The start of the text of the turn that replaces summarised turns.
pub const SUMMARY_PREFIX: &str = "Summary of the earlier conversation: ";

/// The knobs of the compression policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressConfig {
    /// The last this many turns are kept verbatim (default 4).
    pub keep_last: usize,
    /// Drop greetings and acknowledgements older than the kept tail (default `true`).
    pub drop_low_signal: bool,
    /// Whether the caller should summarise older turns with a cheap model before
    /// [`compress`] (default `true`). [`compress`] itself never summarises: it makes no model
    /// call. See [`summarisable_span`].
    pub summarise: bool,
    /// The most tokens a summary may have (default 200).
    pub summary_max_tokens: u64,
    /// Truncate the longest older messages (default `true`).
    pub truncate: bool,
    /// As a last resort, remove the oldest older turns whole when truncating every one of them
    /// down to the marker is not enough (default `true`). Without it, [`compress`] fails with
    /// [`CompressError::CannotFit`] in that case.
    pub evict_oldest: bool,
    /// `(percent used, target)`: above `percent used` of a budget, compress the prompt to
    /// `target` tokens. Default `[(90, 2_000), (70, 4_000)]`.
    pub pressure: Vec<(u32, u64)>,
}

impl Default for CompressConfig {
    fn default() -> Self {
        CompressConfig {
            keep_last: 4,
            drop_low_signal: true,
            summarise: true,
            summary_max_tokens: 200,
            truncate: true,
            evict_oldest: true,
            pressure: vec![(90, 2_000), (70, 4_000)],
        }
    }
}

impl CompressConfig {
    /// The target for a budget `percent_used` full: the tightest target whose threshold is
    /// exceeded (`percent_used > threshold`), or `None` when no threshold is.
    ///
    /// [`crate::percent_used`] rounds down, so 90.5 % reads as 90 and does not exceed 90; use
    /// [`target_for_usage`](Self::target_for_usage) for the exact ratio.
    ///
    /// ```
    /// use budget_core::compress::CompressConfig;
    ///
    /// let config = CompressConfig::default();
    /// assert_eq!(config.target_for(95), Some(2_000));
    /// assert_eq!(config.target_for(90), Some(4_000));
    /// assert_eq!(config.target_for(71), Some(4_000));
    /// assert_eq!(config.target_for(70), None);
    /// ```
    pub fn target_for(&self, percent_used: u32) -> Option<u64> {
        self.pressure
            .iter()
            .filter(|&&(threshold, _)| percent_used > threshold)
            .map(|&(_, target)| target)
            .min()
    }

    /// The target for `used` out of `cap` (tokens or money units), compared exactly:
    /// `used / cap > threshold / 100`. A zero cap with any use exceeds every threshold.
    ///
    /// ```
    /// use budget_core::compress::CompressConfig;
    ///
    /// let config = CompressConfig::default();
    /// assert_eq!(config.target_for_usage(905, 1_000), Some(2_000));
    /// assert_eq!(config.target_for_usage(900, 1_000), Some(4_000));
    /// assert_eq!(config.target_for_usage(0, 0), None);
    /// ```
    pub fn target_for_usage(&self, used: u128, cap: u128) -> Option<u64> {
        self.pressure
            .iter()
            .filter(|&&(threshold, _)| {
                used.saturating_mul(100) > u128::from(threshold).saturating_mul(cap)
            })
            .map(|&(_, target)| target)
            .min()
    }
}

/// The outcome of [`compress`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compressed {
    /// The compressed conversation.
    pub turns: Vec<Turn>,
    /// Prompt tokens of the input ([`count_turns`]).
    pub tokens_before: u64,
    /// Prompt tokens of `turns` ([`count_turns`]); at most the target.
    pub tokens_after: u64,
    /// Low-signal turns dropped (greetings, acknowledgements).
    pub dropped: usize,
    /// Turns whose text was truncated.
    pub truncated: usize,
    /// Older turns removed whole as a last resort (tool calls count with their results).
    pub evicted: usize,
    /// Whether the counts are estimates (see [`crate::TokenCount::estimated`]).
    pub estimated: bool,
}

/// Why a conversation could not be compressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompressError {
    /// Even the smallest conversation the policy may produce is over the target.
    #[error("cannot compress the conversation to {target} tokens: it needs at least {needed}")]
    CannotFit {
        /// The prompt tokens of the smallest result the policy allows: the instruction turns
        /// and the kept tail for [`compress`]; for [`truncate_to_fit`], that plus every older
        /// message cut down to the marker.
        needed: u64,
        /// The target asked for.
        target: u64,
    },
}

/// The whole policy without the summary call: drop low-signal turns, truncate the longest
/// older messages, and as a last resort evict the oldest older turns, until the conversation
/// fits `target` prompt tokens (see the [module docs](self)).
///
/// Each step runs only if the previous one was not enough; the input is returned unchanged
/// when it already fits. Fails with [`CompressError::CannotFit`] when the turns that must be
/// kept (instructions and the kept tail) are over the target on their own, or, with
/// [`truncate`](CompressConfig::truncate) or [`evict_oldest`](CompressConfig::evict_oldest)
/// off, when what remains allowed is not enough.
///
/// Each turn's text is counted once; the cost is about one [`count_turns`] of the input.
pub fn compress(
    model: &str,
    turns: &[Turn],
    target: u64,
    config: &CompressConfig,
) -> Result<Compressed, CompressError> {
    let encoding = encoding_for(model);
    let (costs, estimated) = measure(model, encoding, turns);
    let tokens_before = total_tokens(&costs);
    if tokens_before <= target {
        return Ok(Compressed {
            turns: turns.to_vec(),
            tokens_before,
            tokens_after: tokens_before,
            dropped: 0,
            truncated: 0,
            evicted: 0,
            estimated,
        });
    }
    let drop = if config.drop_low_signal {
        low_signal_mask(turns, config.keep_last)
    } else {
        vec![false; turns.len()]
    };
    let mut kept = Vec::with_capacity(turns.len());
    let mut kept_costs = Vec::with_capacity(turns.len());
    let mut dropped = 0;
    for ((turn, &cost), drop) in turns.iter().zip(&costs).zip(drop) {
        if drop {
            dropped += 1;
        } else {
            kept.push(turn.clone());
            kept_costs.push(cost);
        }
    }
    let shrunk = shrink_to_target(
        encoding,
        kept,
        &kept_costs,
        target,
        config.keep_last,
        config.truncate,
        config.evict_oldest,
    )?;
    Ok(Compressed {
        turns: shrunk.turns,
        tokens_before,
        tokens_after: shrunk.tokens,
        dropped,
        truncated: shrunk.truncated,
        evicted: shrunk.evicted,
        estimated,
    })
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::tool_groups::calls_tools;
    use super::*;
    use crate::conversation::{Role, count_turns};
    use proptest::prelude::*;

    #[test]
    fn compress_cannot_fit_names_numbers() {
        let turns = vec![
            Turn::new(Role::System, "rules ".repeat(100)),
            user(&"old ".repeat(500)),
            user(&"new ".repeat(100)),
        ];
        let kept = tokens(&[turns[0].clone(), turns[2].clone()]);
        let err = compress(
            MODEL,
            &turns,
            kept - 1,
            &CompressConfig {
                keep_last: 1,
                ..CompressConfig::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            err,
            CompressError::CannotFit {
                needed: kept,
                target: kept - 1
            }
        );
        assert!(err.to_string().contains(&kept.to_string()));
        // At exactly the kept turns' size the old turn is evicted and it fits.
        let out = compress(
            MODEL,
            &turns,
            kept,
            &CompressConfig {
                keep_last: 1,
                ..CompressConfig::default()
            },
        )
        .unwrap();
        assert_eq!(out.turns, [turns[0].clone(), turns[2].clone()]);
        assert_eq!(out.evicted, 1);
        // Truncation alone cannot go below the marker.
        assert!(matches!(
            truncate_to_fit(MODEL, &turns, kept, 1),
            Err(CompressError::CannotFit { needed, .. }) if needed > kept
        ));
    }

    #[test]
    fn compress_unchanged_when_it_fits() {
        let turns = numbered(vec![user("hi"), assistant("hello")]);
        let total = tokens(&turns);
        let out = compress(MODEL, &turns, total, &CompressConfig::default()).unwrap();
        assert_eq!(out.turns, turns);
        assert_eq!((out.tokens_before, out.tokens_after), (total, total));
        assert_eq!(truncate_to_fit(MODEL, &turns, total, 0).unwrap(), turns);
        assert_eq!(
            compress(MODEL, &[], 3, &CompressConfig::default())
                .unwrap()
                .turns,
            []
        );
    }

    #[test]
    fn compress_pressure_targets() {
        let config = CompressConfig::default();
        assert_eq!(config.target_for(100), Some(2_000));
        assert_eq!(config.target_for(91), Some(2_000));
        assert_eq!(config.target_for(0), None);
        assert_eq!(config.target_for_usage(701, 1_000), Some(4_000));
        assert_eq!(config.target_for_usage(700, 1_000), None);
        assert_eq!(config.target_for_usage(1, 0), Some(2_000));
        let none = CompressConfig {
            pressure: vec![],
            ..config
        };
        assert_eq!(none.target_for(100), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn compress_prop_fits_or_cannot_fit(
            turns in conversation(),
            model in model(),
            permille in 0_u64..1_100,
            keep_last in 0_usize..6,
        ) {
            let config = CompressConfig { keep_last, ..CompressConfig::default() };
            let before = count_turns(model, &turns).tokens;
            // Targets from nothing to a little over the whole: every step of the policy runs.
            let target = before * permille / 1_000;
            match compress(model, &turns, target, &config) {
                Ok(out) => {
                    let after = count_turns(model, &out.turns).tokens;
                    prop_assert_eq!(out.tokens_before, before);
                    prop_assert_eq!(out.tokens_after, after);
                    prop_assert!(after <= target);
                    if before <= target {
                        prop_assert_eq!(&out.turns, &turns);
                    }
                    check_result(&turns, &out.turns, keep_last)?;
                }
                Err(CompressError::CannotFit { needed, target: t }) => {
                    prop_assert_eq!(t, target);
                    prop_assert!(needed > target);
                    // Only when the turns that must be kept do not fit.
                    let k = keep_last.min(turns.len());
                    let mut kept: Vec<Turn> = turns[..turns.len() - k]
                        .iter()
                        .filter(|t| t.role.is_instruction())
                        .cloned()
                        .collect();
                    kept.extend_from_slice(&turns[turns.len() - k..]);
                    prop_assert!(needed >= count_turns(model, &kept).tokens);
                    prop_assert!(needed <= before);
                }
            }
        }

        #[test]
        fn compress_prop_drop_and_summary(turns in conversation(), keep_last in 0_usize..6) {
            let out = drop_low_signal_turns(&turns, keep_last);
            check_result(&turns, &out, keep_last)?;
            prop_assert!(out.iter().all(|t| t.origin.is_some_and(|o| turns[o] == *t)));
            for turn in &turns {
                let question = turn.text.contains('?');
                if question || turn.role == Role::Tool || turn.role.is_instruction() || calls_tools(turn) {
                    prop_assert!(out.contains(turn));
                }
            }

            if let Some(span) = summarisable_span(&turns, keep_last) {
                prop_assert!(span.len() >= 2);
                prop_assert!(span.end + keep_last.min(turns.len()) <= turns.len());
                prop_assert!(!turns[span.clone()].iter().any(|t| t.role.is_instruction()));
                let lead = turns.iter().take_while(|t| t.role.is_instruction()).count();
                prop_assert!(span.start >= lead);
                let prompt = summary_prompt(&turns, span.clone(), 200);
                prop_assert!(prompt.ends_with("</transcript>"));
                let replaced = replace_with_summary(&turns, span.clone(), "S");
                prop_assert_eq!(replaced.len(), turns.len() - span.len() + 1);
                check_result(&turns, &replaced, keep_last)?;
            }
        }
    }
}
