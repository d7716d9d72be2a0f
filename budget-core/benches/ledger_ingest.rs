//! Ingest throughput of the SQLite ledger: events recorded per second into a fresh temp file by
//! many concurrent writers (tokio tasks on a 2-worker multi-thread runtime), in durable mode
//! (`record` returns after the group commit) and buffered mode, against the in-memory ledger fed
//! the same events with the same concurrency, measured in the same run.
//!
//! Run: `cargo bench -p budget-core --bench ledger_ingest -- --warm-up-time 1 --measurement-time 5`
//!
//! Each sample opens a new ledger file in `std::env::temp_dir()`, records `iters` events split
//! evenly over the tasks, then (SQLite) waits for `flush` so every event is committed before the
//! clock stops; opening, closing and deleting the file are not timed.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use budget_core::ledger::{Durability, SqliteLedger, SqliteOptions};
use budget_core::{
    Amount, Attribution, EventKind, Ledger, MemoryLedger, Money, TaskId, Usage, UsageEvent,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jiff::Timestamp;
use tokio::runtime::Runtime;

/// Concurrent writers: each `record` in durable mode waits for its commit, so the number of
/// writers bounds the size of a group commit.
const TASKS: [u64; 2] = [64, 1024];

/// The shared strings of the generated events (a few agents, tasks and users, as in a real run).
struct Parts {
    agents: Vec<Arc<str>>,
    tasks: Vec<TaskId>,
    users: Vec<Arc<str>>,
    model: Arc<str>,
    base_ns: i128,
}

impl Parts {
    fn new() -> Parts {
        Parts {
            agents: ["researcher", "planner", "coder", "reviewer"]
                .into_iter()
                .map(Arc::from)
                .collect(),
            tasks: (0..16)
                .map(|i| TaskId::new(format!("task-{i:04}")))
                .collect(),
            users: ["alice", "bob", "carol"]
                .into_iter()
                .map(Arc::from)
                .collect(),
            model: Arc::from("gpt-4o"),
            base_ns: Timestamp::now().as_nanosecond(),
        }
    }

    /// A realistic call event: agent, task, step, user and one tag; gpt-4o usage; a cost with
    /// digits down to the yocto-dollar.
    fn event(&self, id: u64) -> UsageEvent {
        let n = id as usize;
        let attribution = Attribution::agent(self.agents[n % self.agents.len()].clone())
            .with_task(self.tasks[n % self.tasks.len()].clone())
            .with_step((id % 50) as u32)
            .with_user(self.users[n % self.users.len()].clone())
            .with_tag("env", "prod");
        let mut usage = Usage::new(1_200 + id % 500, 350 + id % 200);
        usage.cached_input = 256;
        UsageEvent {
            id,
            at: Timestamp::from_nanosecond(self.base_ns + i128::from(id) * 1_000)
                .expect("in range"),
            attribution,
            model: self.model.clone(),
            requested_model: None,
            usage,
            // $0.000006512345678901234567 + id yocto-dollars.
            cost: Money::from_units(6_512_345_678_901_234_567 + i128::from(id)),
            estimated: false,
            kind: EventKind::Call,
            saved: Amount::ZERO,
        }
    }
}

/// Records `iters` events over `tasks` concurrent tasks and waits for all of them.
async fn record_all<L: Ledger>(ledger: &Arc<L>, parts: &Arc<Parts>, tasks: u64, iters: u64) {
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let share = iters / tasks + u64::from(t < iters % tasks);
            let ledger = ledger.clone();
            let parts = parts.clone();
            tokio::spawn(async move {
                for i in 0..share {
                    let event = parts.event(i * tasks + t);
                    ledger.record(event).await.expect("records");
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("writer task");
    }
}

/// A ledger file in the temp dir, removed (with its `-wal` and `-shm`) on drop.
struct TempDb(PathBuf);

impl TempDb {
    fn new() -> TempDb {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        TempDb(std::env::temp_dir().join(format!(
            "token-budget-bench-ingest-{}-{}.db",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )))
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn sqlite_run(
    rt: &Runtime,
    parts: &Arc<Parts>,
    durability: Durability,
    tasks: u64,
    iters: u64,
) -> Duration {
    let db = TempDb::new();
    let ledger = Arc::new(
        SqliteLedger::open_with(
            &db.0,
            SqliteOptions {
                durability,
                ..SqliteOptions::default()
            },
        )
        .expect("opens"),
    );
    let elapsed = rt.block_on(async {
        let start = Instant::now();
        record_all(&ledger, parts, tasks, iters).await;
        ledger.flush().await.expect("flushes");
        start.elapsed()
    });
    drop(ledger);
    drop(db);
    elapsed
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let parts = Arc::new(Parts::new());
    let mut group = c.benchmark_group("ledger_ingest");
    group.throughput(Throughput::Elements(1));
    for tasks in TASKS {
        group.bench_function(format!("memory_baseline/{tasks}_tasks"), |b| {
            b.iter_custom(|iters| {
                let ledger = Arc::new(MemoryLedger::new());
                let elapsed = rt.block_on(async {
                    let start = Instant::now();
                    record_all(&ledger, &parts, tasks, iters).await;
                    start.elapsed()
                });
                assert_eq!(ledger.len() as u64, iters);
                elapsed
            })
        });
        group.bench_function(format!("sqlite_durable/{tasks}_tasks"), |b| {
            b.iter_custom(|iters| sqlite_run(&rt, &parts, Durability::Durable, tasks, iters))
        });
        group.bench_function(format!("sqlite_buffered_2ms/{tasks}_tasks"), |b| {
            b.iter_custom(|iters| {
                let buffered = Durability::Buffered {
                    max_delay: Duration::from_millis(2),
                };
                sqlite_run(&rt, &parts, buffered, tasks, iters)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
