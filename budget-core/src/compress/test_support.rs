//! Turn builders, conversation strategies and the invariants every result must satisfy,
//! shared by the compression tests.

use proptest::prelude::*;

use crate::conversation::{Role, Turn, count_turns};

use super::TRUNCATION_MARKER;
use super::tool_groups::calls_tools;

pub(super) const MODEL: &str = "gpt-4o";

pub(super) fn user(text: &str) -> Turn {
    Turn::new(Role::User, text)
}

pub(super) fn assistant(text: &str) -> Turn {
    Turn::new(Role::Assistant, text)
}

pub(super) fn tool_call(ids: &[&str]) -> Turn {
    let calls: Vec<String> = ids
        .iter()
        .map(|id| {
            format!(
                r#"{{"id":"{id}","type":"function","function":{{"name":"lookup","arguments":"{{}}"}}}}"#
            )
        })
        .collect();
    Turn {
        tool_call_ids: ids.iter().map(|id| (*id).to_owned()).collect(),
        tool_calls_json: Some(format!("[{}]", calls.join(","))),
        ..assistant("")
    }
}

pub(super) fn tool_result(id: &str, text: &str) -> Turn {
    Turn {
        tool_call_id: Some(id.to_owned()),
        ..Turn::new(Role::Tool, text)
    }
}

/// Numbers turns as original messages.
pub(super) fn numbered(turns: Vec<Turn>) -> Vec<Turn> {
    turns
        .into_iter()
        .enumerate()
        .map(|(i, turn)| turn.from_message(i))
        .collect()
}

pub(super) fn tokens(turns: &[Turn]) -> u64 {
    count_turns(MODEL, turns).tokens
}

pub(super) fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just(String::new()),
        3 => "[a-zA-Z]{1,12}",
        3 => prop::sample::select(vec!["hi", "Thanks!", "ok", "got it.", "👍", "You're welcome"])
            .prop_map(str::to_owned),
        3 => "(what|how|can|is|why) [a-z ]{0,30}\\??",
        2 => "[a-z ]{0,30}\\?",
        6 => "\\PC{0,300}",
        2 => "[\u{4e00}-\u{9fff}]{1,200}",
        2 => "[\u{1F600}-\u{1F64F}\u{1F3FB}\u{200D}\u{FE0F} ]{1,60}",
        2 => "(e\u{0301}\u{0308}|a\u{0300}){1,80}",
        4 => "([a-z]{1,9} ){20,200}",
        1 => ("\\PC{1,6}", 0..3_usize).prop_map(|(seed, words)| {
            // ~100,000 characters, one word or many.
            let unit = if words == 0 { seed } else { format!("{seed} ") };
            let n = 100_000 / unit.chars().count().max(1);
            unit.repeat(n)
        }),
    ]
}

#[derive(Debug, Clone)]
pub(super) enum Segment {
    User(String),
    Assistant(String),
    System(String),
    Tools(String, Vec<String>),
}

pub(super) fn segment() -> impl Strategy<Value = Segment> {
    prop_oneof![
        6 => text().prop_map(Segment::User),
        6 => text().prop_map(Segment::Assistant),
        1 => text().prop_map(Segment::System),
        3 => (text(), prop::collection::vec(text(), 1..4))
            .prop_map(|(text, results)| Segment::Tools(text, results)),
    ]
}

pub(super) fn conversation() -> impl Strategy<Value = Vec<Turn>> {
    (
        prop::option::of(text()),
        prop::collection::vec(segment(), 0..14),
    )
        .prop_map(|(system, segments)| {
            let mut turns = Vec::new();
            if let Some(system) = system {
                turns.push(Turn::new(Role::System, system));
            }
            let mut call = 0;
            for segment in segments {
                match segment {
                    Segment::User(text) => turns.push(user(&text)),
                    Segment::Assistant(text) => turns.push(assistant(&text)),
                    Segment::System(text) => turns.push(Turn::new(Role::System, text)),
                    Segment::Tools(text, results) => {
                        let ids: Vec<String> = results
                            .iter()
                            .map(|_| {
                                call += 1;
                                format!("call_{call}")
                            })
                            .collect();
                        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                        turns.push(Turn {
                            text,
                            ..tool_call(&id_refs)
                        });
                        for (id, result) in ids.iter().zip(results) {
                            turns.push(tool_result(id, &result));
                        }
                    }
                }
            }
            numbered(turns)
        })
}

pub(super) fn model() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["gpt-4o", "gpt-4", "claude-sonnet-4"])
}

/// The invariants every result must satisfy, `input` numbered by [`numbered`].
pub(super) fn check_result(
    input: &[Turn],
    output: &[Turn],
    keep_last: usize,
) -> Result<(), TestCaseError> {
    // Order kept, every output turn stands for an input turn (or is a summary).
    let origins: Vec<usize> = output.iter().filter_map(|t| t.origin).collect();
    prop_assert!(origins.windows(2).all(|w| w[0] < w[1]));
    let present = |o: usize| origins.binary_search(&o).is_ok();
    // Instructions unchanged.
    let instructions = |turns: &[Turn]| -> Vec<Turn> {
        turns
            .iter()
            .filter(|t| t.role.is_instruction())
            .cloned()
            .collect()
    };
    prop_assert_eq!(instructions(input), instructions(output));
    // The tail verbatim.
    let k = keep_last.min(input.len());
    prop_assert!(output.len() >= k);
    prop_assert_eq!(&output[output.len() - k..], &input[input.len() - k..]);
    // Changed turns are truncations of their original.
    for turn in output {
        if let Some(o) = turn.origin {
            let original = &input[o];
            if turn != original {
                prop_assert_eq!(
                    Turn {
                        text: String::new(),
                        ..turn.clone()
                    },
                    Turn {
                        text: String::new(),
                        ..original.clone()
                    }
                );
                prop_assert!(turn.text.ends_with(TRUNCATION_MARKER));
            }
        }
    }
    // Tool groups together.
    for call in input.iter().filter(|t| calls_tools(t)) {
        let call_origin = call.origin.unwrap();
        for result in input.iter().filter(|t| {
            t.tool_call_id
                .as_ref()
                .is_some_and(|id| call.tool_call_ids.contains(id))
        }) {
            prop_assert_eq!(present(call_origin), present(result.origin.unwrap()));
        }
    }
    Ok(())
}
