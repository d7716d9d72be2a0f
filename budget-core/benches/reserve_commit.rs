//! Reserve + commit throughput of the in-memory budget, on 1 and 2 threads, against a
//! baseline measured in the same run: the bare cost of one mutex-guarded counter update and one
//! ledger push (what any accounting must do at least).
//!
//! Run: `cargo bench -p budget-core --bench reserve_commit`
//! It also prints per-operation percentiles (p50/p99) of reserve+commit measured one by one.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use budget_core::limits::Values;
use budget_core::{
    Attribution, Budget, Estimate, Limit, Money, Period, Selector, TaskId, Usage, Window,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parking_lot::Mutex;

fn ready<F: Future>(fut: F) -> F::Output {
    match pin!(fut).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("in-memory futures are ready at once"),
    }
}

/// A realistic set: a global daily cap in tokens and money, a per-agent daily cap, and a
/// per-task cap — three counters per call.
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

fn one_call(budget: &Budget, who: &Attribution) {
    let held = ready(budget.reserve(who, "gpt-4o", Estimate::new(1_200, 800))).expect("fits");
    black_box(ready(held.commit(Usage::new(1_200, 350))).expect("commits"));
}

/// The floor: one mutex-guarded counter update plus one ledger push per call.
struct Baseline {
    counter: Mutex<(u64, Money)>,
    ledger: Mutex<Vec<(u64, Money)>>,
}

impl Baseline {
    fn call(&self) {
        let mut c = self.counter.lock();
        c.0 += 1_550;
        c.1 += Money::from_nanos(6_500);
        drop(c);
        self.ledger.lock().push((1_550, Money::from_nanos(6_500)));
    }
}

fn run_threads(threads: u64, iters: u64, work: impl Fn() + Send + Sync + 'static) -> Duration {
    let work = Arc::new(work);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let work = work.clone();
            std::thread::spawn(move || {
                for _ in 0..iters / threads {
                    work();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("worker");
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("reserve_commit");
    group.throughput(Throughput::Elements(1));
    for threads in [1u64, 2] {
        group.bench_function(format!("budget/{threads}_threads"), |b| {
            b.iter_custom(|iters| {
                let budget = budget();
                let who = Attribution::agent("researcher").with_task(TaskId::new("t"));
                run_threads(threads, iters.max(threads), move || one_call(&budget, &who))
            })
        });
        group.bench_function(
            format!("baseline_mutex_counter_and_push/{threads}_threads"),
            |b| {
                b.iter_custom(|iters| {
                    let base = Arc::new(Baseline {
                        counter: Mutex::new((0, Money::ZERO)),
                        ledger: Mutex::new(Vec::new()),
                    });
                    run_threads(threads, iters.max(threads), move || base.call())
                })
            },
        );
    }
    group.finish();
    percentiles();
}

/// Times 200,000 reserve+commit pairs one by one (`Instant` costs ~20-30 ns of each sample).
fn percentiles() {
    let budget = budget();
    let who = Attribution::agent("researcher").with_task(TaskId::new("t"));
    for _ in 0..20_000 {
        one_call(&budget, &who);
    }
    let mut samples: Vec<u128> = (0..200_000)
        .map(|_| {
            let t = Instant::now();
            one_call(&budget, &who);
            t.elapsed().as_nanos()
        })
        .collect();
    samples.sort_unstable();
    let at = |q: usize| samples[samples.len() * q / 100];
    println!(
        "reserve_commit/budget/1_thread per-op latency: p50 {} ns, p90 {} ns, p99 {} ns (200000 samples)",
        at(50),
        at(90),
        at(99)
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
