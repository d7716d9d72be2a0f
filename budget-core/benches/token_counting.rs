//! Token-counting throughput: our wrapper vs bpe-openai directly vs tiktoken-rs, on a 1 MiB
//! deterministic prose + code corpus, for `o200k_base` and `cl100k_base`; plus `count_chat` on
//! a 20-message conversation.
//!
//! ```text
//! cargo bench -p budget-core --bench token_counting -- --warm-up-time 1 --measurement-time 5
//! ```

use std::hint::black_box;

use budget_core::tokens::corpus::mixed_corpus;
use budget_core::tokens::{ChatMessage, Encoding, count_chat};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};

const CORPUS_BYTES: usize = 1 << 20;
const SEED: u64 = 0x5EED;

fn corpus_counting(c: &mut Criterion) {
    let corpus = mixed_corpus(CORPUS_BYTES, SEED);
    Encoding::warm_up();
    let _ = tiktoken_rs::o200k_base_singleton();
    let _ = tiktoken_rs::cl100k_base_singleton();

    type Direct = fn() -> &'static bpe_openai::Tokenizer;
    type Tiktoken = fn() -> &'static tiktoken_rs::CoreBPE;
    let encodings: [(Encoding, Direct, Tiktoken); 2] = [
        (
            Encoding::O200kBase,
            bpe_openai::o200k_base,
            tiktoken_rs::o200k_base_singleton,
        ),
        (
            Encoding::Cl100kBase,
            bpe_openai::cl100k_base,
            tiktoken_rs::cl100k_base_singleton,
        ),
    ];
    for (encoding, direct, tiktoken) in encodings {
        // The three must agree before their speeds mean anything.
        let ours = encoding.count(&corpus);
        assert_eq!(ours as usize, direct().count(corpus.as_str()));
        assert_eq!(ours as usize, tiktoken().encode_ordinary(&corpus).len());

        let mut group = c.benchmark_group(format!("count_1MiB_{}", encoding.name()));
        group.throughput(Throughput::Bytes(corpus.len() as u64));
        group.sampling_mode(SamplingMode::Flat);
        group.sample_size(20);
        group.bench_function("budget_core", |b| {
            b.iter(|| encoding.count(black_box(&corpus)))
        });
        group.bench_function("bpe_openai", |b| {
            let tokenizer = direct();
            b.iter(|| tokenizer.count(black_box(corpus.as_str())))
        });
        group.bench_function("tiktoken_rs", |b| {
            let bpe = tiktoken();
            b.iter(|| bpe.encode_ordinary(black_box(&corpus)).len())
        });
        group.finish();
    }
}

fn chat_counting(c: &mut Criterion) {
    let texts: Vec<String> = (0..20_u64)
        .map(|i| mixed_corpus(200 + 150 * (i as usize % 7), i))
        .collect();
    let mut messages = vec![ChatMessage::system(
        "You are a careful assistant that keeps budgets.",
    )];
    for (i, text) in texts.iter().enumerate().take(19) {
        messages.push(if i % 2 == 0 {
            ChatMessage::user(text)
        } else {
            ChatMessage::assistant(text)
        });
    }
    assert_eq!(messages.len(), 20);
    let bytes: usize = messages
        .iter()
        .map(|m| m.role.len() + m.content.len())
        .sum();
    Encoding::warm_up();

    let mut group = c.benchmark_group("count_chat_20_messages");
    group.throughput(Throughput::Bytes(bytes as u64));
    for model in ["gpt-4o", "gpt-4", "claude-sonnet-4-5"] {
        group.bench_function(model, |b| {
            b.iter(|| count_chat(black_box(model), black_box(&messages), None))
        });
    }
    group.finish();
}

criterion_group!(benches, corpus_counting, chat_counting);
criterion_main!(benches);
