//! Context compression: a 100-turn, ~50,000-token conversation (exact, `count_turns`)
//! compressed to a 4,000-token target with `compress` (no summary call); the target from the
//! issue is < 5 ms. The baseline is counting the same conversation once with `count_turns`.
//!
//! ```text
//! cargo bench -p budget-core --bench compression -- --warm-up-time 1 --measurement-time 5
//! ```

use std::hint::black_box;

use budget_core::compress::{CompressConfig, compress};
use budget_core::conversation::{Role, Turn, count_turns};
use budget_core::tokens::Encoding;
use budget_core::tokens::corpus::mixed_corpus;
use criterion::{Criterion, criterion_group, criterion_main};

const MODEL: &str = "gpt-4o";
const TURNS: usize = 100;
const TARGET_TOKENS: u64 = 50_000;
const COMPRESSED_TO: u64 = 4_000;

/// A system prompt, then 99 turns: user and assistant prose and code of varied length, a
/// greeting or thanks now and then, and a tool call with its result every 10 turns.
fn conversation(bytes_per_turn: usize) -> Vec<Turn> {
    let mut turns = vec![Turn::new(
        Role::System,
        "You are a careful assistant. Answer precisely, cite the files you read.",
    )];
    let mut call = 0;
    while turns.len() < TURNS {
        let i = turns.len();
        // Lengths from 0.25x to 1.75x the average.
        let bytes = bytes_per_turn * (1 + (i * 3) % 7) / 4;
        let text = mixed_corpus(bytes, i as u64);
        let turn = if i % 10 == 5 && turns.len() + 2 <= TURNS {
            call += 1;
            let id = format!("call_{call}");
            turns.push(Turn {
                tool_call_ids: vec![id.clone()],
                tool_calls_json: Some(format!(
                    r#"[{{"id":"{id}","type":"function","function":{{"name":"read_file","arguments":"{{\"path\":\"src/lib.rs\"}}"}}}}]"#
                )),
                ..Turn::new(Role::Assistant, "")
            });
            Turn {
                tool_call_id: Some(id),
                ..Turn::new(Role::Tool, text)
            }
        } else if i % 13 == 0 {
            Turn::new(Role::User, "Thanks!")
        } else if i % 2 == 1 {
            Turn::new(Role::User, text)
        } else {
            Turn::new(Role::Assistant, text)
        };
        turns.push(turn);
    }
    turns
        .into_iter()
        .enumerate()
        .map(|(i, turn)| turn.from_message(i))
        .collect()
}

/// A conversation of `TURNS` turns within 1 % of `TARGET_TOKENS` (exact count).
fn calibrated() -> (Vec<Turn>, u64) {
    let mut bytes_per_turn = 2_000;
    loop {
        let turns = conversation(bytes_per_turn);
        let tokens = count_turns(MODEL, &turns).tokens;
        if tokens.abs_diff(TARGET_TOKENS) * 100 <= TARGET_TOKENS {
            return (turns, tokens);
        }
        bytes_per_turn = (bytes_per_turn as u64 * TARGET_TOKENS / tokens.max(1)) as usize;
    }
}

fn compression(c: &mut Criterion) {
    Encoding::warm_up();
    let (turns, tokens) = calibrated();
    assert_eq!(turns.len(), TURNS);
    let config = CompressConfig::default();
    let out = compress(MODEL, &turns, COMPRESSED_TO, &config).expect("fits");
    assert_eq!(out.tokens_before, tokens);
    assert_eq!(out.tokens_after, count_turns(MODEL, &out.turns).tokens);
    assert!(out.tokens_after <= COMPRESSED_TO);
    eprintln!(
        "conversation: {} turns, {} tokens -> {} tokens ({} turns; {} dropped, {} truncated, {} evicted)",
        turns.len(),
        out.tokens_before,
        out.tokens_after,
        out.turns.len(),
        out.dropped,
        out.truncated,
        out.evicted,
    );

    let mut group = c.benchmark_group(format!("compress_100_turns_{tokens}_tokens"));
    group.bench_function("count_turns_baseline", |b| {
        b.iter(|| count_turns(black_box(MODEL), black_box(&turns)))
    });
    group.bench_function("compress_to_4000", |b| {
        b.iter(|| compress(black_box(MODEL), black_box(&turns), COMPRESSED_TO, &config))
    });
    group.finish();
}

criterion_group!(benches, compression);
criterion_main!(benches);
