//! What the budget layer adds to a call, against the bare in-process service measured in the
//! same run, at 1 and 64 concurrent tasks.
//!
//! Run: `cargo bench -p budget-tower --bench layer_overhead`
//!
//! The inner service answers at once (no HTTP), so the difference is the layer's own cost:
//! attribution from the task scope, exact prompt counting, clamping, reserve on three limits,
//! commit with exact pricing, one ledger event.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use budget_core::limits::Values;
use budget_core::scope::TaskScope;
use budget_core::{
    Attribution, Budget, Limit, Money, Period, Selector, TaskId, TokenCount, Usage, Window,
    count_text,
};
use budget_tower::enforce::Cutoff;
use budget_tower::{BudgetLayer, ChunkStream, LlmChunk, LlmRequest, LlmResponse};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tower::{Layer, Service, ServiceExt};

#[derive(Clone)]
struct Ask {
    prompt: Arc<str>,
    cap: Option<u64>,
}

impl LlmRequest for Ask {
    fn model(&self) -> &str {
        "gpt-4o-mini"
    }
    fn count_prompt(&self) -> TokenCount {
        count_text("gpt-4o-mini", &self.prompt)
    }
    fn max_output_tokens(&self) -> Option<u64> {
        self.cap
    }
    fn set_max_output_tokens(&mut self, cap: u64) {
        self.cap = Some(cap);
    }
    fn is_stream(&self) -> bool {
        false
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

struct Answer(Usage);

impl LlmResponse for Answer {
    type Chunk = NoChunk;
    type StreamError = Cutoff;
    fn is_stream(&self) -> bool {
        false
    }
    fn usage(&self) -> Option<Usage> {
        Some(self.0)
    }
    fn served_model(&self) -> Option<&str> {
        None
    }
    fn output_text(&self) -> String {
        String::new()
    }
    fn map_stream<F>(self, _: F) -> Self
    where
        F: FnOnce(ChunkStream<NoChunk, Cutoff>) -> ChunkStream<NoChunk, Cutoff>,
    {
        self
    }
}

fn provider()
-> impl Service<Ask, Response = Answer, Error = Infallible, Future: Send> + Clone + Send + 'static {
    tower::service_fn(|ask: Ask| async move {
        Ok::<_, Infallible>(Answer(Usage::new(24, ask.cap.unwrap_or(100).min(100))))
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
            .tokens(u64::MAX / 2)
            .money(Money::from_dollars(1_000_000_000)),
        )
        .limit(
            Limit::new(
                "agent/day",
                Selector::Agent(Values::Each),
                Window::Calendar(Period::Day),
            )
            .tokens(u64::MAX / 2),
        )
        .limit(
            Limit::new("task", Selector::Agent(Values::Each), Window::PerTask).tokens(u64::MAX / 2),
        )
        .build()
        .expect("valid limits")
}

fn ask() -> Ask {
    Ask {
        prompt: "Summarise yesterday's spend per agent and flag anything unusual.".into(),
        cap: Some(300),
    }
}

/// Runs `iters` calls split over `tasks` concurrent tasks, each inside its own task scope.
async fn run<S>(service: S, tasks: u64, iters: u64) -> Duration
where
    S: Service<Ask, Response = Answer> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
{
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let mut service = service.clone();
            let scope =
                TaskScope::new(Attribution::agent("bench").with_task(TaskId::new(format!("t{t}"))));
            tokio::spawn(scope.run(async move {
                for _ in 0..(iters / tasks).max(1) {
                    let reply = service.ready().await.unwrap().call(ask()).await.unwrap();
                    std::hint::black_box(reply.0);
                }
            }))
        })
        .collect();
    for h in handles {
        h.await.expect("bench task");
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    budget_core::Encoding::warm_up();
    let mut group = c.benchmark_group("layer_overhead");
    group.throughput(Throughput::Elements(1));
    for tasks in [1u64, 64] {
        group.bench_function(format!("bare_service/{tasks}_tasks"), |b| {
            b.iter_custom(|iters| runtime.block_on(run(provider(), tasks, iters)))
        });
        group.bench_function(format!("budget_layer/{tasks}_tasks"), |b| {
            b.iter_custom(|iters| {
                let service = BudgetLayer::new(budget()).layer(provider());
                runtime.block_on(run(service, tasks, iters))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
