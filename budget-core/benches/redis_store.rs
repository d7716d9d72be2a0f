//! Reserve + settle throughput of the shared Redis budget store on loopback, beside the
//! in-memory store measured in the same run.
//!
//! Run: `REDIS_URL=redis://127.0.0.1:6379 cargo bench -p budget-core --bench redis_store`
//! (an optional argument keeps only the cases whose name contains it, e.g. `redis/1_instance`).
//! Without `REDIS_URL` the Redis part is skipped, saying so, and the memory baseline still runs.
//!
//! One pair = one `BudgetStore::reserve` on three hard counters + one `BudgetStore::settle` of
//! the ticket it returned. The counters are a realistic set: a per-agent daily calendar limit
//! with a money cap (8 agents), a global hourly rolling limit in tokens, and a per-task token
//! limit (one task per client). Each call reserves a 1,200-token prompt plus up to 800 output
//! tokens (elastic: at least 1) priced as gpt-4o ($2.50 / $10 per million tokens), and settles
//! 1,200 + 350 tokens. Caps are far above what a run spends; denials are counted and printed.
//! Each client computes its counters (and the time it passes to the store) once per batch.
//!
//! C client tasks (C in 1, 16, 64, 256) on a 2-worker multi-thread Tokio runtime share a fixed
//! batch of pairs; each client awaits its reserve, then its settle, then starts the next pair,
//! so at most C script calls are in flight, pipelined on the store's multiplexed connection.
//! The clients use 1 or 4 store instances (4 = four connections, as four replicas would). Each
//! case is one warm-up batch and then `RUNS` timed batches; the median, minimum and maximum
//! pairs/s are printed, with the average server time per EVALSHA (from `INFO commandstats`)
//! and the CPU used by the benchmark process and by redis-server during the timed batches.
//!
//! After each Redis case, the global counter must hold exactly the tokens of every settled pair
//! and no reservation may be left. Every case uses its own key prefix; its keys are deleted at
//! the end (SCAN + DEL on `{prefix}:*`), also when the benchmark panics.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use budget_core::admission::{Amount, ReserveRequest};
use budget_core::limits::{CounterKey, Values};
use budget_core::store::{
    AllowanceOptions, AllowanceStore, BudgetStore, CounterSpec, MemoryBudgetStore,
    RedisBudgetStore, RedisStoreOptions, ReserveOutcome,
};
use budget_core::{Attribution, Limit, Money, Period, Selector, TaskId, Window};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

/// Timed batches per case (the median is reported).
const RUNS: usize = 7;
/// Pairs per batch on Redis (about a second per batch on loopback).
const REDIS_PAIRS: u64 = 16_384;
/// Pairs per batch in memory.
const MEMORY_PAIRS: u64 = 262_144;
const CLIENTS: [u64; 4] = [1, 16, 64, 256];
const INSTANCES: [usize; 2] = [1, 4];
const AGENTS: u64 = 8;

const PROMPT_TOKENS: u64 = 1_200;
const MAX_OUTPUT_TOKENS: u64 = 800;
const USED_OUTPUT_TOKENS: u64 = 350;
/// Far above anything a run spends: nothing is denied.
const TOKEN_CAP: u64 = 1_000_000_000_000_000;
const MONEY_CAP_DOLLARS: i64 = 1_000_000_000;

/// The three limits of every call, and what one call asks for and uses.
struct Workload {
    agent_daily: Arc<Limit>,
    global_hourly: Arc<Limit>,
    per_task: Arc<Limit>,
    request: ReserveRequest,
    actual: Amount,
}

impl Workload {
    fn new() -> Workload {
        let input = Money::per_million_tokens("2.5").expect("price");
        let output = Money::per_million_tokens("10").expect("price");
        let base_money = input
            .checked_mul_tokens(PROMPT_TOKENS)
            .expect("no overflow");
        let used_money = base_money
            .checked_add(
                output
                    .checked_mul_tokens(USED_OUTPUT_TOKENS)
                    .expect("no overflow"),
            )
            .expect("no overflow");
        Workload {
            agent_daily: Arc::new(
                Limit::new(
                    "agent/day",
                    Selector::Agent(Values::Each),
                    Window::Calendar(Period::Day),
                )
                .money(Money::from_dollars(MONEY_CAP_DOLLARS)),
            ),
            global_hourly: Arc::new(
                Limit::new(
                    "global/hour",
                    Selector::Global,
                    Window::Rolling(SignedDuration::from_hours(1)),
                )
                .tokens(TOKEN_CAP),
            ),
            per_task: Arc::new(
                Limit::new("task", Selector::Agent(Values::Each), Window::PerTask)
                    .tokens(TOKEN_CAP),
            ),
            request: ReserveRequest {
                base: Amount::new(PROMPT_TOKENS, base_money),
                per_unit: Amount::new(1, output),
                min_units: 1,
                max_units: MAX_OUTPUT_TOKENS,
            },
            actual: Amount::new(PROMPT_TOKENS + USED_OUTPUT_TOKENS, used_money),
        }
    }

    /// The counters client `client` touches at `now`, as `Budget` would compute them.
    fn specs(&self, client: u64, now: Timestamp) -> Vec<CounterSpec> {
        let who = Attribution::agent(format!("agent-{}", client % AGENTS))
            .with_task(TaskId::new(format!("task-{client}")));
        let model: Arc<str> = Arc::from("gpt-4o");
        [&self.agent_daily, &self.global_hourly, &self.per_task]
            .into_iter()
            .map(|limit| {
                let span = limit.window.span(now, &TimeZone::UTC).expect("window");
                CounterSpec {
                    key: limit.counter_for(&who, &model, span).expect("matches"),
                    limit: limit.clone(),
                    span,
                }
            })
            .collect()
    }

    /// The global counter, for the end-of-case check.
    fn global_spec(&self, now: Timestamp) -> CounterSpec {
        let span = self
            .global_hourly
            .window
            .span(now, &TimeZone::UTC)
            .expect("window");
        CounterSpec {
            key: CounterKey {
                limit: self.global_hourly.id.clone(),
                scope: "*".into(),
                task: None,
                window: span.id(),
            },
            limit: self.global_hourly.clone(),
            span,
        }
    }
}

/// Runs `pairs` reserve+settle pairs over `clients` tasks, spread over `stores`; returns the
/// elapsed time and how many reservations were denied.
async fn batch<S: BudgetStore + Clone>(
    stores: &[S],
    work: &Arc<Workload>,
    clients: u64,
    pairs: u64,
) -> (Duration, u64) {
    let now = Timestamp::now();
    let per_client = pairs / clients;
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|client| {
            let store = stores[usize::try_from(client).expect("small") % stores.len()].clone();
            let work = work.clone();
            tokio::spawn(async move {
                let specs = work.specs(client, now);
                let mut denied = 0;
                for _ in 0..per_client {
                    match store.reserve(&specs, &work.request, now).await {
                        Ok(ReserveOutcome::Reserved(ticket)) => {
                            store
                                .settle(ticket, &specs, work.actual, now)
                                .await
                                .expect("settle");
                        }
                        Ok(ReserveOutcome::Denied(_)) => denied += 1,
                        Err(e) => panic!("reserve: {e}"),
                    }
                }
                denied
            })
        })
        .collect();
    let mut denied = 0;
    for handle in handles {
        denied += handle.await.expect("client task");
    }
    (start.elapsed(), denied)
}

/// What one case measured.
struct Case {
    rates: Vec<f64>,
    denied: u64,
}

/// Pairs per second of one batch. Float arithmetic is for the printed rate only; no money is
/// involved.
#[allow(clippy::float_arithmetic)]
fn rate(pairs: u64, elapsed: Duration) -> f64 {
    pairs as f64 / elapsed.as_secs_f64()
}

/// Runs one warm-up batch, then `RUNS` timed ones.
async fn measure<S: BudgetStore + Clone>(
    stores: &[S],
    work: &Arc<Workload>,
    clients: u64,
    pairs: u64,
) -> Case {
    let pairs = pairs / clients * clients;
    let (_, mut denied) = batch(stores, work, clients, pairs).await;
    let mut rates = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let (elapsed, d) = batch(stores, work, clients, pairs).await;
        denied += d;
        rates.push(rate(pairs, elapsed));
    }
    rates.sort_by(f64::total_cmp);
    Case { rates, denied }
}

fn print_case(name: &str, pairs: u64, case: &Case, extra: &str) {
    println!(
        "{name:<40} median {:>10.0} pairs/s  (min {:.0}, max {:.0}; {RUNS} runs of {pairs} pairs; denied {}){extra}",
        case.rates[case.rates.len() / 2],
        case.rates[0],
        case.rates[case.rates.len() - 1],
        case.denied,
    );
}

/// CPU seconds used so far by this process, all threads (from `/proc/self/stat`, in the
/// kernel's 100 Hz clock ticks), or `None` off Linux.
fn own_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses): state is field 3, utime 14,
    // stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// What the server reports before and after a case.
#[derive(Debug, Clone, Copy, Default)]
struct ServerStats {
    evalsha_calls: u64,
    evalsha_usec: u64,
    /// `used_cpu_sys + used_cpu_user`, seconds (text from the server, parsed for printing).
    cpu_seconds: f64,
}

fn info_field<'a>(info: &'a str, line_start: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(line_start))
        .map(str::trim)
}

/// Reads `INFO commandstats` and `INFO cpu`. Float arithmetic only sums two CPU times for
/// printing.
#[allow(clippy::float_arithmetic)]
async fn server_stats(conn: &mut redis::aio::MultiplexedConnection) -> ServerStats {
    let commands: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO commandstats");
    let cpu: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(conn)
        .await
        .expect("INFO cpu");
    let mut stats = ServerStats::default();
    if let Some(line) = info_field(&commands, "cmdstat_evalsha:") {
        for part in line.split(',') {
            match part.split_once('=') {
                Some(("calls", v)) => stats.evalsha_calls = v.parse().unwrap_or(0),
                Some(("usec", v)) => stats.evalsha_usec = v.parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let seconds = |field: &str| {
        info_field(&cpu, field)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    stats.cpu_seconds = seconds("used_cpu_sys:") + seconds("used_cpu_user:");
    stats
}

/// The server-side cost per EVALSHA and the CPU shares over a case, as printable text. Float
/// arithmetic is for these printed ratios only.
#[allow(clippy::float_arithmetic)]
fn cost_line(
    before: ServerStats,
    after: ServerStats,
    ticks: Option<u64>,
    wall: Duration,
) -> String {
    let calls = after.evalsha_calls.saturating_sub(before.evalsha_calls);
    let usec = after.evalsha_usec.saturating_sub(before.evalsha_usec);
    let wall_s = wall.as_secs_f64();
    let per_call = if calls == 0 {
        0.0
    } else {
        usec as f64 / calls as f64
    };
    let in_scripts = usec as f64 / 1e6 / wall_s * 100.0;
    let server_cpu = (after.cpu_seconds - before.cpu_seconds) / wall_s * 100.0;
    let client_cpu = ticks.map_or(String::from("?"), |t| {
        format!("{:.0}%", t as f64 / 100.0 / wall_s * 100.0)
    });
    format!(
        "\n{:<40} EVALSHA: {calls} calls, {per_call:.1} µs each in the server ({in_scripts:.0}% of wall time); CPU: redis-server {server_cpu:.0}%, bench process {client_cpu} (of 200%)",
        ""
    )
}

/// Deletes every key under `{prefix}:*` when dropped (also on panic).
struct Cleanup {
    url: String,
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let deleted = redis::Client::open(self.url.as_str())
            .and_then(|client| client.get_connection())
            .and_then(|mut conn| {
                let pattern = format!("{{{}}}:*", self.prefix);
                let mut cursor: u64 = 0;
                let mut deleted = 0u64;
                loop {
                    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query(&mut conn)?;
                    if !keys.is_empty() {
                        let n: u64 = redis::cmd("DEL").arg(&keys).query(&mut conn)?;
                        deleted += n;
                    }
                    if next == 0 {
                        return Ok(deleted);
                    }
                    cursor = next;
                }
            });
        match deleted {
            Ok(n) => println!(
                "{:<40} cleaned up: deleted {n} keys under {{{}}}:*",
                "", self.prefix
            ),
            Err(e) => eprintln!("could not delete the keys under {{{}}}:*: {e}", self.prefix),
        }
    }
}

fn redis_case_name(instances: usize, clients: u64, allowance: bool) -> String {
    let noun = if instances == 1 {
        "instance"
    } else {
        "instances"
    };
    let mode = if allowance {
        "redis-allowance"
    } else {
        "redis"
    };
    format!("{mode}/{instances}_{noun}/{clients}_clients")
}

/// Every pair, each store, in the exact mode (a script call per operation) or with local
/// allowances (`AllowanceStore`).
async fn redis_case(
    url: &str,
    run_id: &str,
    work: &Arc<Workload>,
    instances: usize,
    clients: u64,
    allowance: bool,
) {
    let name = redis_case_name(instances, clients, allowance);
    let prefix = format!(
        "tb-bench:{run_id}:{}i{instances}-c{clients}",
        if allowance { "a" } else { "" }
    );
    let _cleanup = Cleanup {
        url: url.to_owned(),
        prefix: prefix.clone(),
    };
    let mut stores = Vec::with_capacity(instances);
    for _ in 0..instances {
        stores.push(
            RedisBudgetStore::connect_with(url, RedisStoreOptions::new().prefix(prefix.clone()))
                .await
                .expect("connect to REDIS_URL"),
        );
    }
    let pairs = REDIS_PAIRS / clients * clients;
    let denied = if allowance {
        let local: Vec<_> = stores
            .iter()
            .map(|s| AllowanceStore::new(s.clone(), AllowanceOptions::new()))
            .collect();
        let denied = timed_case(url, &name, &local, work, clients, pairs).await;
        for store in &local {
            store.close().await.expect("close");
        }
        denied
    } else {
        timed_case(url, &name, &stores, work, clients, pairs).await
    };
    // Nothing lost, nothing left reserved: every settled pair is on the global counter.
    let now = Timestamp::now();
    let global = stores[0]
        .usage(&[work.global_spec(now)], now)
        .await
        .expect("usage")[0];
    let settled = (pairs * (1 + RUNS as u64) - denied) * work.actual.tokens;
    assert_eq!(global.committed.tokens, settled, "{name}: committed tokens");
    assert_eq!(global.in_flight, 0, "{name}: reservations left");
}

/// A warm-up batch and `RUNS` timed ones, printed with Redis's and this process's costs;
/// returns the denials.
async fn timed_case<S: BudgetStore + Clone>(
    url: &str,
    name: &str,
    stores: &[S],
    work: &Arc<Workload>,
    clients: u64,
    pairs: u64,
) -> u64 {
    let mut probe = redis::Client::open(url)
        .expect("REDIS_URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to REDIS_URL");
    // Warm-up (loads the scripts, creates the keys), then the timed batches.
    let (_, mut denied) = batch(stores, work, clients, pairs).await;
    let before = server_stats(&mut probe).await;
    let ticks = own_cpu_ticks();
    let start = Instant::now();
    let mut rates = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let (elapsed, d) = batch(stores, work, clients, pairs).await;
        denied += d;
        rates.push(rate(pairs, elapsed));
    }
    let wall = start.elapsed();
    let ticks = own_cpu_ticks().zip(ticks).map(|(a, b)| a.saturating_sub(b));
    let after = server_stats(&mut probe).await;
    rates.sort_by(f64::total_cmp);
    let case = Case { rates, denied };
    print_case(name, pairs, &case, &cost_line(before, after, ticks, wall));
    denied
}

fn main() -> ExitCode {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let work = Arc::new(Workload::new());
    runtime.block_on(async {
        println!(
            "reserve+settle pairs per second; 3 hard counters per call; 2 Tokio workers; {RUNS} runs per case (median, min, max)"
        );
        for clients in CLIENTS {
            let name = format!("memory/1_instance/{clients}_clients");
            if !wanted(&name) {
                continue;
            }
            let stores = [MemoryBudgetStore::new()].map(Arc::new);
            let case = measure(&stores, &work, clients, MEMORY_PAIRS).await;
            print_case(&name, MEMORY_PAIRS / clients * clients, &case, "");
        }
        let Some(url) = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) else {
            println!("SKIPPED the Redis part: REDIS_URL is not set (e.g. REDIS_URL=redis://127.0.0.1:6379)");
            return;
        };
        let run_id = format!(
            "{}-{}",
            std::process::id(),
            Timestamp::now().as_millisecond()
        );
        for allowance in [false, true] {
            for instances in INSTANCES {
                for clients in CLIENTS {
                    if wanted(&redis_case_name(instances, clients, allowance)) {
                        redis_case(&url, &run_id, &work, instances, clients, allowance).await;
                    }
                }
            }
        }
    });
    ExitCode::SUCCESS
}
