//! How long a decision takes to reach another budget on the same control log: a pause or a resume
//! made by one budget, until a second budget — its own connection to the file, polling with
//! `Budget::watch_control` — refuses or admits the agent. 200 changes per watcher interval, spread
//! over the polling period; p50, p99 and max. Baseline in the same run: the deciding budget's own
//! `decide` (append + apply), which the propagation includes.
//!
//! Run: `cargo bench -p budget-core --bench control_propagation`
//! (PostgreSQL and Redis logs are measured too when `DATABASE_URL` / `REDIS_URL` are set and
//! their logs exist in this build.)

use std::time::{Duration, Instant};

use budget_core::control_plane::{Actor, ControlLog, SqliteControlLog};
use budget_core::{Attribution, Budget};

const CHANGES: usize = 200;

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// Milliseconds with one decimal, in integers (the crate keeps floats out by lint).
fn ms(d: Duration) -> String {
    let tenths = d.as_micros() / 100;
    format!("{}.{} ms", tenths / 10, tenths % 10)
}

fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort();
    format!(
        "p50 {}, p99 {}, max {} ({} changes)",
        ms(percentile(&samples, 50)),
        ms(percentile(&samples, 99)),
        ms(*samples.last().unwrap()),
        samples.len()
    )
}

/// Runs `CHANGES` alternating pauses and resumes through `decider`, each waited for on
/// `follower`; returns (propagation, the decider's own decide).
async fn measure(decider: &Budget, follower: &Budget, every: Duration) -> (String, String) {
    let _watch = follower.watch_control(every);
    let agent = Attribution::agent("bench-agent");
    let ops = Actor::operator("bench");
    let (mut seen, mut decided) = (Vec::new(), Vec::new());
    for i in 0..CHANGES {
        // Spread the decisions over the watcher's period, as real ones fall: else each would
        // come right after a poll and wait a whole period.
        let phase = (i * 37 % 100) as u32;
        tokio::time::sleep(every * phase / 100).await;
        let pause = i % 2 == 0;
        let started = Instant::now();
        if pause {
            decider
                .pause_agent("bench-agent", ops.clone())
                .await
                .unwrap();
        } else {
            decider
                .resume_agent("bench-agent", ops.clone())
                .await
                .unwrap();
        }
        decided.push(started.elapsed());
        while follower.controls().is_paused(&agent) != pause {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "not obeyed in 10 s"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        seen.push(started.elapsed());
    }
    (summary(seen), summary(decided))
}

fn budget_on(log: impl ControlLog) -> Budget {
    Budget::builder().control_log(log).build().unwrap()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let path =
            std::env::temp_dir().join(format!("tb-bench-control-{}.sqlite", std::process::id()));
        for every in [Duration::from_millis(100), Duration::from_millis(25)] {
            let _ = std::fs::remove_file(&path);
            let decider = budget_on(SqliteControlLog::open(&path).unwrap());
            let follower = budget_on(SqliteControlLog::open(&path).unwrap());
            let (seen, decided) = measure(&decider, &follower, every).await;
            println!("control_propagation/sqlite/watch every {every:?}: {seen}");
            println!("control_propagation/sqlite/baseline: decide (append + apply): {decided}");
        }
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
        match std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
            Some(url) => postgres(&url).await,
            None => println!("control_propagation/postgres: skipped (DATABASE_URL not set)"),
        }
        match std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) {
            Some(url) => redis(&url).await,
            None => println!("control_propagation/redis: skipped (REDIS_URL not set)"),
        }
    });
}

/// The same through the PostgreSQL ledger's control log, in a schema of its own.
async fn postgres(url: &str) {
    use budget_core::control_plane::PostgresControlLog;
    let namespace = format!("tb_bench_control_{}", std::process::id());
    for every in [Duration::from_millis(100), Duration::from_millis(25)] {
        let decider = budget_on(PostgresControlLog::connect(url, &namespace).await.unwrap());
        let follower = budget_on(PostgresControlLog::connect(url, &namespace).await.unwrap());
        let (seen, decided) = measure(&decider, &follower, every).await;
        println!("control_propagation/postgres/watch every {every:?}: {seen}");
        println!("control_propagation/postgres/baseline: decide (append + apply): {decided}");
    }
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {namespace} CASCADE"))
        .await
        .unwrap();
}

/// The same through a Redis store's control log, under a prefix of its own.
async fn redis(url: &str) {
    use budget_core::control_plane::RedisControlLog;
    use budget_core::store::RedisStoreOptions;
    let prefix = format!("tb-bench-control-{}", std::process::id());
    for every in [Duration::from_millis(100), Duration::from_millis(25)] {
        let open =
            || RedisControlLog::connect_with(url, RedisStoreOptions::new().prefix(prefix.clone()));
        let decider = budget_on(open().await.unwrap());
        let follower = budget_on(open().await.unwrap());
        let (seen, decided) = measure(&decider, &follower, every).await;
        println!("control_propagation/redis/watch every {every:?}: {seen}");
        println!("control_propagation/redis/baseline: decide (append + apply): {decided}");
        // Each period starts from an empty log.
        let client = redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }
}
