//! Deterministic replies whose token counts are exact.
//!
//! A reply is a sequence of words drawn from [`WORDS`] by a generator seeded from the request.
//! Only words that are **one token** in both `o200k_base` and `cl100k_base`, with and without a
//! leading space, are used (checked with the real tokenizers when first needed). The reply is
//! the first word followed by `" word"` pieces; each piece is a whole pre-tokenizer split and a
//! single token, so the reply's token count is exactly its number of pieces, for every model,
//! and streaming one piece per chunk streams exactly one token per chunk.

use std::sync::OnceLock;

use budget_core::{Encoding, count_chat, count_text};
use serde_json::{Value, json};

use super::Behavior;
use super::LocalServer;
use super::request::ChatRequest;

/// Candidate words for replies. The ones that are not single tokens everywhere are dropped.
const WORDS: &[&str] = &[
    "the", "quiet", "river", "runs", "under", "bright", "stone", "bridge", "while", "small",
    "birds", "sing", "above", "green", "fields", "and", "light", "falls", "across", "old", "roads",
    "where", "people", "walk", "home", "after", "long", "days", "of", "work", "in", "town", "near",
    "water", "trees", "grow", "tall", "wind", "soft", "sound", "over", "hills", "morning", "comes",
    "early", "with", "warm", "air", "every", "child", "new", "words", "from", "books", "that",
    "tell", "stories", "about", "ships", "sea", "stars", "night", "rain", "snow", "fire", "road",
    "house", "city", "north", "south", "east", "west", "blue", "red", "gold", "silver", "time",
    "year", "world", "music", "garden", "window", "table", "letter", "paper",
];

/// The words usable in replies: one token alone and one token after a space, in every encoding.
fn single_token_words() -> &'static [&'static str] {
    static USABLE: OnceLock<Vec<&'static str>> = OnceLock::new();
    USABLE.get_or_init(|| {
        WORDS
            .iter()
            .copied()
            .filter(|word| {
                Encoding::ALL.iter().all(|encoding| {
                    encoding.count(word) == 1 && encoding.count(&format!(" {word}")) == 1
                })
            })
            .collect()
    })
}

/// The pieces (one token each) of the deterministic reply of `tokens` tokens for `seed`.
pub(super) fn reply_pieces(seed: u64, tokens: u64) -> Vec<String> {
    let words = single_token_words();
    let mut state = seed;
    let mut pieces = Vec::new();
    for position in 0..tokens {
        let word = match u64::try_from(words.len()) {
            Ok(len) if len > 0 => {
                let pick = usize::try_from(splitmix64(&mut state) % len).unwrap_or(0);
                words.get(pick).copied().unwrap_or("the")
            }
            _ => "the",
        };
        pieces.push(if position == 0 {
            word.to_owned()
        } else {
            format!(" {word}")
        });
    }
    pieces
}

/// One step of the SplitMix64 generator.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Why the reply ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FinishReason {
    /// The reply is complete.
    Stop,
    /// The output cap cut the reply.
    Length,
}

impl FinishReason {
    /// The wire value.
    pub(super) const fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// The token counts reported for one completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct UsageReport {
    /// `count_chat` of the request.
    pub(super) prompt: u64,
    /// Cached prompt tokens (at most `prompt`).
    pub(super) cached: u64,
    /// Visible reply tokens plus reasoning tokens.
    pub(super) completion: u64,
    /// Reasoning tokens (part of `completion`).
    pub(super) reasoning: u64,
}

impl UsageReport {
    /// The `usage` object, in OpenAI's shape.
    pub(super) fn to_json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt.saturating_add(self.completion),
            "prompt_tokens_details": {"cached_tokens": self.cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        })
    }
}

/// A generated completion, ready to be sent as JSON or as SSE chunks.
#[derive(Debug, Clone)]
pub(super) struct Completion {
    /// `chatcmpl-…`.
    pub(super) id: String,
    /// Unix seconds.
    pub(super) created: u64,
    /// The model reported as served.
    pub(super) model: String,
    /// The reply of each choice (`n` of them), one token per piece; every choice has the
    /// same number of pieces.
    pub(super) choices: Vec<Vec<String>>,
    /// Why the reply ended.
    pub(super) finish_reason: FinishReason,
    /// The usage to report.
    pub(super) usage: UsageReport,
}

impl Completion {
    /// Generates the completion of `request` (the `index`-th chat request) under `config`.
    pub(super) fn generate(
        config: &LocalServer,
        request: &ChatRequest,
        behavior: Behavior,
        index: u64,
    ) -> Completion {
        let cap = match behavior {
            Behavior::IgnoreCap => None,
            _ => request.output_cap,
        };
        // Reasoning tokens count against the cap, as with OpenAI's reasoning models.
        let reasoning = cap.map_or(config.reasoning_tokens, |cap| {
            config.reasoning_tokens.min(cap)
        });
        let room = cap.map_or(u64::MAX, |cap| cap.saturating_sub(reasoning));
        let visible = config.reply_tokens.min(room);
        let finish_reason = match cap {
            Some(cap) if config.reasoning_tokens.saturating_add(config.reply_tokens) > cap => {
                FinishReason::Length
            }
            _ => FinishReason::Stop,
        };

        // Each choice is its own reply; all are as long, and each may use the whole cap.
        let choices: Vec<Vec<String>> = (0..u64::from(request.choices.max(1)))
            .map(|choice| reply_pieces(request.seed.wrapping_add(choice), visible))
            .collect();
        let visible_tokens = choices
            .iter()
            .map(|pieces| count_text(&request.model, &pieces.concat()).tokens)
            .fold(0, u64::saturating_add);
        let reasoning = reasoning.saturating_mul(choices.len() as u64);
        let prompt = count_chat(
            &request.model,
            &request.chat_messages(),
            request.tools.as_deref(),
        )
        .tokens;
        let usage = UsageReport {
            prompt,
            cached: config.cached_tokens.min(prompt),
            completion: visible_tokens.saturating_add(reasoning),
            reasoning,
        };
        Completion {
            id: format!("chatcmpl-local-{index}"),
            created: unix_now(),
            model: config.served_model_for(&request.model).to_owned(),
            choices,
            finish_reason,
            usage,
        }
    }

    /// The non-streaming response body; `usage` is left out when `with_usage` is false.
    pub(super) fn to_json(&self, with_usage: bool) -> Value {
        let mut body = json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": self.choices.iter().enumerate().map(|(index, pieces)| json!({
                "index": index,
                "message": {"role": "assistant", "content": pieces.concat(), "refusal": null},
                "logprobs": null,
                "finish_reason": self.finish_reason.as_str(),
            })).collect::<Vec<_>>(),
            "system_fingerprint": SYSTEM_FINGERPRINT,
        });
        if with_usage && let Some(object) = body.as_object_mut() {
            object.insert("usage".to_owned(), self.usage.to_json());
        }
        body
    }
}

/// The `system_fingerprint` the server reports.
pub(super) const SYSTEM_FINGERPRINT: &str = "fp_local";

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_words_survive_the_single_token_filter() {
        let usable = single_token_words();
        assert!(usable.len() * 10 >= WORDS.len() * 8, "only {usable:?}");
    }

    #[test]
    fn replies_count_exactly_in_every_encoding_and_piece_by_piece() {
        for seed in [0, 1, 42, u64::MAX] {
            for tokens in [0, 1, 2, 17, 200] {
                let pieces = reply_pieces(seed, tokens);
                assert_eq!(pieces.len() as u64, tokens);
                let text = pieces.concat();
                for encoding in Encoding::ALL {
                    assert_eq!(encoding.count(&text), tokens, "{encoding} {text:?}");
                    for piece in &pieces {
                        assert_eq!(encoding.count(piece), 1, "{encoding} {piece:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn replies_are_deterministic_and_depend_on_the_seed() {
        assert_eq!(reply_pieces(7, 30), reply_pieces(7, 30));
        assert_ne!(reply_pieces(7, 30), reply_pieces(8, 30));
        assert_eq!(reply_pieces(7, 30)[..10], reply_pieces(7, 10)[..]);
    }
}
