//! The cost of a `#[budgeted]` step boundary (what the macro inserts at the top of every loop
//! iteration) and of entering a task scope, against a plain loop in the same run.
//!
//! Run: `cargo bench -p budget-core --bench step_boundary`

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use budget_core::scope::TaskScope;
use budget_core::{Attribution, Money, TaskId};
use criterion::{Criterion, criterion_group, criterion_main};

fn ready<F: Future>(fut: F) -> F::Output {
    match pin!(fut).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("nothing here waits"),
    }
}

fn scope() -> TaskScope {
    TaskScope::builder(Attribution::agent("bench").with_task(TaskId::new("t")))
        .tokens(50_000)
        .money(Money::from_cents(50))
        .max_steps(u32::MAX)
        .build()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("step_boundary");
    group.bench_function("plain_loop_iteration", |b| {
        let mut n = 0u64;
        b.iter(|| {
            n = black_box(n.wrapping_add(1));
        })
    });
    group.bench_function("budgeted_loop_iteration", |b| {
        let scope = scope();
        b.iter(|| black_box(scope.step_boundary().is_ok()))
    });
    group.bench_function("budgeted_loop_iteration_in_child_task", |b| {
        let parent = scope();
        let child = TaskScope::builder(Attribution::agent("child"))
            .tokens(10_000)
            .parent(Some(parent))
            .build();
        b.iter(|| black_box(child.step_boundary().is_ok()))
    });
    group.bench_function("enter_scope_and_run_empty_body", |b| {
        b.iter(|| {
            let scope = TaskScope::builder(Attribution::agent("bench"))
                .tokens(50_000)
                .child_of_current()
                .build();
            black_box(ready(scope.run(async { 1u32 })))
        })
    });
    group.bench_function("baseline_empty_async_block", |b| {
        b.iter(|| black_box(ready(async { 1u32 })))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
