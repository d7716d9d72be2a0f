//! Shrinking a conversation to a token target: the exact cost of each turn, then the longest
//! older turns truncated to a common cap and, as a last resort, the oldest evicted whole.

use crate::conversation::Turn;
#[cfg(doc)]
use crate::conversation::count_turns;
use crate::tokens::{Encoding, REPLY_PRIMING_TOKENS};

use super::tool_groups::ToolGroups;
use super::truncate::{cut, encoding_for};
use super::{CompressError, TRUNCATION_MARKER};

/// The tokens one turn adds to [`count_turns`]: its framing (role, name, tool calls and ids)
/// and its text.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cost {
    frame: u64,
    text: u64,
}

impl Cost {
    fn total(self) -> u64 {
        self.frame.saturating_add(self.text)
    }
}

/// Each turn's cost (the text counted once), and whether the counts are estimates.
/// `REPLY_PRIMING_TOKENS + Σ total` is exactly [`count_turns`].
pub(super) fn measure(model: &str, encoding: Encoding, turns: &[Turn]) -> (Vec<Cost>, bool) {
    let mut estimated = false;
    let costs = turns
        .iter()
        .map(|turn| {
            let (frame, frame_estimated) = frame_tokens(model, turn);
            estimated |= frame_estimated;
            Cost {
                frame,
                text: encoding.count(&turn.text),
            }
        })
        .collect();
    if turns.is_empty() {
        estimated = crate::count_chat(model, &[], None).estimated;
    }
    (costs, estimated)
}

/// The tokens a turn adds with an empty text: `count_chat` counts a message as its framing
/// plus its text's tokens.
fn frame_tokens(model: &str, turn: &Turn) -> (u64, bool) {
    let mut message = turn.as_chat_message();
    message.content = "";
    let count = crate::count_chat(model, &[message], None);
    (
        count.tokens.saturating_sub(REPLY_PRIMING_TOKENS),
        count.estimated,
    )
}

pub(super) fn total_tokens(costs: &[Cost]) -> u64 {
    costs.iter().fold(REPLY_PRIMING_TOKENS, |sum, cost| {
        sum.saturating_add(cost.total())
    })
}

/// What [`shrink_to_target`] did.
pub(super) struct Shrunk {
    pub(super) turns: Vec<Turn>,
    pub(super) tokens: u64,
    pub(super) truncated: usize,
    pub(super) evicted: usize,
}

/// Truncates (and, if `evict`, evicts) older turns until the conversation fits `target`.
pub(super) fn shrink_to_target(
    encoding: Encoding,
    turns: Vec<Turn>,
    costs: &[Cost],
    target: u64,
    keep_last: usize,
    truncate: bool,
    evict: bool,
) -> Result<Shrunk, CompressError> {
    let total = total_tokens(costs);
    if total <= target {
        return Ok(Shrunk {
            turns,
            tokens: total,
            truncated: 0,
            evicted: 0,
        });
    }
    let n = turns.len();
    let groups = ToolGroups::new(&turns);
    let tail = groups.tail_start(n, keep_last);
    let marker = encoding.count(TRUNCATION_MARKER);
    // Older, non-instruction turns may shrink; the rest is fixed.
    let shrinkable: Vec<bool> = turns
        .iter()
        .enumerate()
        .map(|(i, turn)| i < tail && !turn.role.is_instruction())
        .collect();
    // The least each shrinkable turn can cost: cut down to the marker.
    let floors: Vec<u64> = costs
        .iter()
        .zip(&shrinkable)
        .map(|(cost, &shrinkable)| match (shrinkable, truncate) {
            (true, true) => cost.total().min(cost.frame.saturating_add(marker)),
            _ => cost.total(),
        })
        .collect();
    let mut fixed = REPLY_PRIMING_TOKENS;
    let mut floor_sum = 0_u64;
    for i in 0..n {
        if shrinkable[i] {
            floor_sum = floor_sum.saturating_add(floors[i]);
        } else {
            fixed = fixed.saturating_add(costs[i].total());
        }
    }
    if fixed > target {
        return Err(CompressError::CannotFit {
            needed: fixed,
            target,
        });
    }
    let budget = target - fixed;

    // Last resort: remove the oldest turns whole until the floors fit.
    let mut keep = vec![true; n];
    let mut evicted = 0;
    if floor_sum > budget {
        if !evict {
            return Err(CompressError::CannotFit {
                needed: fixed.saturating_add(floor_sum),
                target,
            });
        }
        for i in 0..tail {
            if floor_sum <= budget {
                break;
            }
            if !shrinkable[i] || !keep[i] {
                continue;
            }
            for j in groups.unit(i) {
                if keep[j] {
                    keep[j] = false;
                    floor_sum -= floors[j];
                    evicted += 1;
                }
            }
        }
    }

    // Water-filling: the largest cap such that every live shrinkable turn cut to the cap (but
    // not below its floor) fits the budget.
    let live: Vec<usize> = (0..n).filter(|&i| keep[i] && shrinkable[i]).collect();
    let cost_at = |cap: u64| {
        live.iter().fold(0_u64, |sum, &i| {
            sum.saturating_add(floors[i].max(costs[i].total().min(cap)))
        })
    };
    let mut lo = 0; // cost_at(0) is the floor sum, within budget
    let mut hi = live.iter().map(|&i| costs[i].total()).max().unwrap_or(0);
    if cost_at(hi) <= budget {
        lo = hi;
    }
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if cost_at(mid) <= budget {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let cap = lo;

    let mut out = Vec::with_capacity(n - evicted);
    let mut tokens = fixed;
    let mut truncated = 0;
    for (i, turn) in turns.into_iter().enumerate() {
        if !keep[i] {
            continue;
        }
        let cost = costs[i];
        if !shrinkable[i] {
            out.push(turn);
            continue;
        }
        let allowed = floors[i].max(cap);
        if cost.total() <= allowed {
            tokens = tokens.saturating_add(cost.total());
            out.push(turn);
            continue;
        }
        // cost > allowed >= floor = frame + marker: the marker fits in what is left.
        let text = cut(encoding, &turn.text, allowed - cost.frame);
        let new_cost = cost.frame.saturating_add(encoding.count(&text));
        debug_assert!(new_cost <= allowed && new_cost < cost.total());
        tokens = tokens.saturating_add(new_cost);
        truncated += 1;
        out.push(Turn { text, ..turn });
    }
    if tokens > target {
        // Cannot happen: every turn is within its share and the shares fit. Never return an
        // oversized result regardless.
        return Err(CompressError::CannotFit {
            needed: tokens,
            target,
        });
    }
    Ok(Shrunk {
        turns: out,
        tokens,
        truncated,
        evicted,
    })
}

/// Truncates the longest older messages until `count_turns(model, result) <= target`.
///
/// Instruction turns and the last `keep_last` turns (grown backwards so as not to split a
/// tool-call group) are never touched; no turn is removed. The others are cut by exact token
/// count to a common cap (the longest first: every message above the cap is cut down to it):
/// a cut keeps the head of the text, at a char boundary, followed by `" [truncated]"`; a
/// message cut to nothing becomes [`TRUNCATION_MARKER`], whose tokens are counted. A tool
/// call's JSON is never cut. Every cut strictly removes tokens, and the function always
/// terminates.
///
/// Returns the input unchanged when it fits, and [`CompressError::CannotFit`] when even every
/// older message cut down to the marker is over the target (`needed` is that smallest
/// count).
pub fn truncate_to_fit(
    model: &str,
    turns: &[Turn],
    target: u64,
    keep_last: usize,
) -> Result<Vec<Turn>, CompressError> {
    let encoding = encoding_for(model);
    let (costs, _) = measure(model, encoding, turns);
    shrink_to_target(
        encoding,
        turns.to_vec(),
        &costs,
        target,
        keep_last,
        true,
        false,
    )
    .map(|shrunk| shrunk.turns)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::conversation::{Role, count_turns};
    use proptest::prelude::*;

    #[test]
    fn compress_one_word_message_terminates() {
        // The seed halved words and looped forever on a one-word message.
        for word in ["supercalifragilisticexpialidocious", "a", "", "👍", "字"] {
            let turns = vec![
                Turn::new(Role::System, "Be brief."),
                user(word),
                user("next"),
            ];
            let total = tokens(&turns);
            for target in 0..=total + 2 {
                match truncate_to_fit(MODEL, &turns, target, 1) {
                    Ok(out) => assert!(tokens(&out) <= target),
                    Err(CompressError::CannotFit { needed, target: t }) => {
                        assert_eq!(t, target);
                        assert!(needed > target);
                    }
                }
            }
        }
        // One huge word is cut, by tokens, with the marker.
        let word = "x".repeat(100_000);
        let turns = vec![user(&word), user("next")];
        let out = truncate_to_fit(MODEL, &turns, 300, 1).unwrap();
        assert!(tokens(&out) <= 300);
        assert!(tokens(&out) > 250, "uses the room it has: {}", tokens(&out));
        assert!(out[0].text.starts_with("xxx"));
        assert!(out[0].text.ends_with(" [truncated]"));
        assert_eq!(out[1], turns[1]);
    }

    #[test]
    fn compress_truncates_longest_first() {
        let turns = numbered(vec![
            user("short question about the build"),
            assistant(&"long answer ".repeat(400)),
            user(&"medium ".repeat(100)),
            assistant("ok then"),
            user("latest"),
        ]);
        let target = tokens(&turns) - 500;
        let out = truncate_to_fit(MODEL, &turns, target, 1).unwrap();
        assert!(tokens(&out) <= target);
        assert_eq!(out[0], turns[0]);
        assert!(out[1].text.ends_with(TRUNCATION_MARKER));
        assert_eq!(out[2], turns[2], "the shorter message is untouched");
        assert_eq!(out[4], turns[4]);
    }

    #[test]
    fn compress_costs_match_count_turns() {
        let turns = numbered(vec![
            Turn {
                name: Some("alice".into()),
                ..user("hello there, a message with a name")
            },
            tool_call(&["a"]),
            tool_result("a", "result"),
            Turn::new(Role::Developer, ""),
        ]);
        for model in [MODEL, "gpt-4", "claude-sonnet-4", "gpt-5"] {
            let (costs, estimated) = measure(model, encoding_for(model), &turns);
            let count = count_turns(model, &turns);
            assert_eq!(total_tokens(&costs), count.tokens, "{model}");
            assert_eq!(estimated, count.estimated, "{model}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn compress_prop_truncate_to_fit(
            turns in conversation(),
            model in model(),
            permille in 0_u64..1_100,
            keep_last in 0_usize..6,
        ) {
            let target = count_turns(model, &turns).tokens * permille / 1_000;
            match truncate_to_fit(model, &turns, target, keep_last) {
                Ok(out) => {
                    prop_assert!(count_turns(model, &out).tokens <= target);
                    prop_assert_eq!(out.len(), turns.len());
                    check_result(&turns, &out, keep_last)?;
                    for (new, old) in out.iter().zip(&turns) {
                        if new != old {
                            let new_count = count_turns(model, std::slice::from_ref(new)).tokens;
                            let old_count = count_turns(model, std::slice::from_ref(old)).tokens;
                            prop_assert!(new_count < old_count);
                        }
                    }
                }
                Err(CompressError::CannotFit { needed, .. }) => prop_assert!(needed > target),
            }
        }
    }
}
