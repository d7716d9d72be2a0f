//! What a cache hit costs through the cache layer, against the bare in-process service and a
//! raw moka lookup measured in the same run.
//!
//! Run: `cargo bench -p budget-tower --bench cache_lookup`
//!
//! - `bare_service`: the inner service answering at once (no HTTP): the floor of any call.
//! - `moka_get`: one `moka::future::Cache::get` of a present key (default hasher), the cache
//!   underneath the layer.
//! - `cache_hit`: a call through `CacheLayer` served from the cache: key, lookup, attribution,
//!   the $0 `CacheHit` ledger event (pricing what it saved, settling the matching counter, one
//!   in-memory ledger write) and rebuilding the response. The request's key is precomputed
//!   (a field), so the figure is the layer's own cost, not the key function's.
//!
//! One task on a current-thread runtime; every batch gets a fresh budget (so the in-memory
//! ledger does not grow across batches).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use budget_core::conversation::{Role, Turn};
use budget_core::{Budget, Limit, Period, Selector, TokenCount, Usage, Window, count_text};
use budget_tower::cache::{CacheLayer, CacheableResponse};
use budget_tower::enforce::Cutoff;
use budget_tower::llm::ChatRequest;
use budget_tower::{ChunkStream, LlmChunk, LlmRequest, LlmResponse};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tower::{Layer, Service, ServiceExt};

#[derive(Clone)]
struct Ask {
    prompt: Arc<str>,
    key: u128,
}

impl LlmRequest for Ask {
    fn model(&self) -> &str {
        "gpt-4o-mini"
    }
    fn count_prompt(&self) -> TokenCount {
        count_text("gpt-4o-mini", &self.prompt)
    }
    fn max_output_tokens(&self) -> Option<u64> {
        Some(300)
    }
    fn set_max_output_tokens(&mut self, _: u64) {}
    fn is_stream(&self) -> bool {
        false
    }
}

impl ChatRequest for Ask {
    fn turns(&self) -> Vec<Turn> {
        vec![Turn::new(Role::User, self.prompt.to_string())]
    }
    fn set_turns(&mut self, _: &[Turn]) {}
    fn set_model(&mut self, _: &str) {}
    fn cache_key(&self) -> Option<u128> {
        Some(self.key)
    }
}

struct NoChunk;

impl LlmChunk for NoChunk {
    fn usage(&self) -> Option<Usage> {
        None
    }
    fn output_text(&self) -> String {
        String::new()
    }
    fn served_model(&self) -> Option<&str> {
        None
    }
}

#[derive(Clone)]
struct Answer {
    text: Arc<str>,
    usage: Usage,
}

impl LlmResponse for Answer {
    type Chunk = NoChunk;
    type StreamError = Cutoff;
    fn is_stream(&self) -> bool {
        false
    }
    fn usage(&self) -> Option<Usage> {
        Some(self.usage)
    }
    fn served_model(&self) -> Option<&str> {
        None
    }
    fn output_text(&self) -> String {
        self.text.to_string()
    }
    fn map_stream<F>(self, _: F) -> Self
    where
        F: FnOnce(ChunkStream<NoChunk, Cutoff>) -> ChunkStream<NoChunk, Cutoff>,
    {
        self
    }
}

impl CacheableResponse for Answer {
    type Cached = Answer;
    fn to_cached(&self) -> Option<Answer> {
        Some(self.clone())
    }
    fn from_cached(cached: &Answer, _: bool) -> Answer {
        cached.clone()
    }
}

fn provider()
-> impl Service<Ask, Response = Answer, Error = Infallible, Future: Send> + Clone + Send + 'static {
    let text: Arc<str> = Arc::from("A token is a piece of text the model reads or writes.");
    tower::service_fn(move |ask: Ask| {
        let text = text.clone();
        async move {
            Ok::<_, Infallible>(Answer {
                text,
                usage: Usage::new(ask.key as u64 % 7 + 24, 100),
            })
        }
    })
}

fn budget() -> Budget {
    Budget::builder()
        .limit(
            Limit::new(
                "global/day",
                Selector::Global,
                Window::Calendar(Period::Day),
            )
            .tokens(u64::MAX / 2),
        )
        .build()
        .expect("valid limits")
}

fn ask() -> Ask {
    Ask {
        prompt: Arc::from("What is a token?"),
        key: 0x5eed_cafe_f00d_d00d_0123_4567_89ab_cdef,
    }
}

async fn calls<S>(mut service: S, iters: u64) -> Duration
where
    S: Service<Ask, Response = Answer>,
    S::Error: std::fmt::Debug,
{
    let request = ask();
    let start = Instant::now();
    for _ in 0..iters {
        let reply = service
            .ready()
            .await
            .unwrap()
            .call(request.clone())
            .await
            .unwrap();
        std::hint::black_box(reply.usage);
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    budget_core::Encoding::warm_up();
    let mut group = c.benchmark_group("cache_lookup");
    group.throughput(Throughput::Elements(1));

    group.bench_function("bare_service", |b| {
        b.iter_custom(|iters| runtime.block_on(calls(provider(), iters)))
    });

    group.bench_function("moka_get", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let cache: moka::future::Cache<u128, Arc<Answer>> = moka::future::Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(Duration::from_secs(3_600))
                    .build();
                let key = ask().key;
                let value = Arc::new(Answer {
                    text: Arc::from("cached"),
                    usage: Usage::new(24, 100),
                });
                cache.insert(key, value).await;
                let start = Instant::now();
                for _ in 0..iters {
                    std::hint::black_box(cache.get(std::hint::black_box(&key)).await);
                }
                start.elapsed()
            })
        })
    });

    group.bench_function("cache_hit", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let budget = budget();
                let mut service = CacheLayer::new(budget.clone()).layer(provider());
                // Fill the cache: one miss.
                service.ready().await.unwrap().call(ask()).await.unwrap();
                let elapsed = calls(service, iters).await;
                assert_eq!(budget.ledger().len() as u64, iters, "every call was a hit");
                elapsed
            })
        })
    });

    // The key of a real async-openai request: canonical JSON + SHA-256, computed on every
    // call that goes through the cache (a 20-message conversation, ~1,300 prompt tokens).
    group.bench_function("openai_cache_key_20_messages", |b| {
        use async_openai::types::chat::{
            ChatCompletionRequestMessage, ChatCompletionRequestUserMessageArgs,
            CreateChatCompletionRequestArgs,
        };
        use budget_tower::llm::ChatRequest;
        let messages: Vec<ChatCompletionRequestMessage> = (0..20)
            .map(|i| {
                ChatCompletionRequestUserMessageArgs::default()
                    .content(
                        format!("Message {i}: ") + &"what did the agents spend today? ".repeat(8),
                    )
                    .build()
                    .expect("message")
                    .into()
            })
            .collect();
        let request = CreateChatCompletionRequestArgs::default()
            .model("gpt-4o")
            .messages(messages)
            .temperature(0.0)
            .build()
            .expect("request");
        b.iter(|| std::hint::black_box(request.cache_key()))
    });

    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
