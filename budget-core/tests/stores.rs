//! The budget-store suite on every store (memory, and Redis when `REDIS_URL` is set), then what
//! only a shared store must show: leases, outages, many instances and many processes on one
//! Redis, and scripts that decide exactly as the in-memory store does.

mod common;
mod store_suite;

use std::sync::Arc;
use std::time::Duration;

use budget_core::admission::{Amount, ReserveRequest};
use budget_core::limits::CounterKey;
use budget_core::store::{
    AllowanceOptions, AllowanceStore, AnyBudgetStore, BudgetStore, CounterSpec, CounterUsage,
    MemoryBudgetStore, RedisBudgetStore, RedisStoreOptions, ReserveOutcome, Ticket,
};
use budget_core::{
    Attribution, Budget, BudgetError, Estimate, MemoryLedger, Money, Period, Usage, Window,
};
use common::Rng;
use jiff::{SignedDuration, Timestamp};
use store_suite::{at, eventually, limit, reserve, spec, tokens, usage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// `REDIS_URL`, or `None` after saying plainly that the test is skipped.
fn redis_url(test: &str) -> Option<String> {
    let url = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("SKIPPED {test}: REDIS_URL is not set (CI sets it)");
    }
    url
}

/// A key prefix no other test (or test run) uses.
fn unique_prefix(test: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("tb-test:{test}:{}-{nanos}-{n}", std::process::id())
}

/// A Redis store under a fresh prefix; its keys are deleted when the guard drops.
struct RedisUnderTest {
    url: String,
    prefix: String,
}

impl RedisUnderTest {
    fn new(test: &str) -> Option<RedisUnderTest> {
        Some(RedisUnderTest {
            url: redis_url(test)?,
            prefix: unique_prefix(test),
        })
    }

    fn options(&self) -> RedisStoreOptions {
        RedisStoreOptions::new().prefix(self.prefix.clone())
    }

    async fn store(&self) -> RedisBudgetStore {
        RedisBudgetStore::connect_with(&self.url, self.options())
            .await
            .expect("connect to REDIS_URL")
    }

    /// A store that reaches this Redis through a [`Proxy`] (to play outages), giving up on an
    /// answer after `timeout`.
    async fn behind_proxy(&self, timeout: Duration) -> (Proxy, RedisBudgetStore) {
        let proxy = Proxy::start(&self.url).await;
        let store = RedisBudgetStore::connect_with(&proxy.url, self.options().timeout(timeout))
            .await
            .expect("connect through the proxy");
        (proxy, store)
    }
}

impl Drop for RedisUnderTest {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let pattern = format!("{{{}}}:*", self.prefix);
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}

macro_rules! on_every_store {
    ($($case:ident),* $(,)?) => {
        mod on_memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::store_suite::$case(budget_core::store::MemoryBudgetStore::new()).await;
                }
            )*
        }
        mod on_redis {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(redis) = super::RedisUnderTest::new(stringify!($case)) else {
                        return;
                    };
                    super::store_suite::$case(redis.store().await).await;
                }
            )*
        }
    };
}

on_every_store!(
    all_or_nothing,
    settle_refunds_and_records_overshoot,
    elastic_grants_with_exact_money,
    rolling_windows_age_out,
    rolling_windows_never_release_usage_early,
    changing_a_rolling_duration_keeps_the_usage,
    calendar_windows_roll_over,
    forgetting_a_task_drops_its_counters,
    settles_are_handed_over_at_call_time,
);

/// The same contract through the store a URL chooses (its dispatch must not defer a settle).
#[tokio::test]
async fn any_store_hands_settles_over_at_call_time() {
    store_suite::settles_are_handed_over_at_call_time(
        AnyBudgetStore::open("memory:").await.unwrap(),
    )
    .await;
    for (test, extra) in [
        ("any-handover", ""),
        ("any-handover-allowance", "&allowance=true"),
    ] {
        let Some(redis) = RedisUnderTest::new(test) else {
            return;
        };
        let sep = if redis.url.contains('?') { '&' } else { '?' };
        let url = format!("{}{sep}prefix={}{extra}", redis.url, redis.prefix);
        let store = AnyBudgetStore::open(&url).await.unwrap();
        store_suite::settles_are_handed_over_at_call_time(store).await;
    }
}

/// An allowance store meets the same contract: a settle dropped unpolled is counted locally
/// at once, and `flush` reports it to Redis.
#[tokio::test]
async fn allowance_settles_are_handed_over_at_call_time() {
    let Some(redis) = RedisUnderTest::new("allowance-handover") else {
        return;
    };
    let store = AllowanceStore::new(
        redis.store().await,
        AllowanceOptions::new().sync_every(Duration::from_secs(3_600)),
    );
    store_suite::settles_are_handed_over_at_call_time(store.clone()).await;
    let direct = redis.store().await;
    let now = at("2026-03-10T12:00:00Z");
    let daily = Arc::new(limit("daily", Window::Calendar(Period::Day)).tokens(1_000));
    let specs = [spec(&daily, None, now)];
    assert_eq!(
        usage(&direct, &specs, now).await[0].committed,
        tokens(255),
        "flush reported every settle to Redis"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_concurrent_reservers_never_exceed_the_cap() {
    store_suite::concurrent_reservers_never_exceed_the_cap(Arc::new(MemoryBudgetStore::new()), 64)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_concurrent_reservers_never_exceed_the_cap() {
    let Some(redis) = RedisUnderTest::new("concurrent") else {
        return;
    };
    store_suite::concurrent_reservers_never_exceed_the_cap(redis.store().await, 64).await;
}

/// Random operations on a memory store and a Redis store side by side: every outcome and every
/// counter must be identical (ticket ids aside). The scripts re-implement admission in Lua, with
/// money in decimal limbs; this holds them to the Rust original.
#[tokio::test]
async fn redis_decides_exactly_as_memory_does() {
    let Some(redis) = RedisUnderTest::new("differential") else {
        return;
    };
    // Leases longer than the run: the memory store has none.
    let shared = RedisBudgetStore::connect_with(
        &redis.url,
        redis.options().lease(Duration::from_secs(30 * 24 * 3600)),
    )
    .await
    .unwrap();
    let memory = MemoryBudgetStore::new();
    let price = Money::per_million_tokens("2.5").unwrap();
    let limits = [
        Arc::new(limit("task", Window::PerTask).tokens(60_000)),
        Arc::new(
            limit("day", Window::Calendar(Period::Day))
                .money(Money::from_units(2_000_000_000_000_000_000_000_000_000_001)),
        ),
        Arc::new(
            limit("hour", Window::Rolling(SignedDuration::from_mins(60)))
                .tokens(150_000)
                .money(price.saturating_mul_tokens(120_000)),
        ),
        Arc::new(
            limit("week-soft", Window::Calendar(Period::Week))
                .tokens(1_000)
                .soft(),
        ),
    ];
    for seed in 1..=4u64 {
        let mut rng = Rng::new(seed);
        // Each seed starts where time is later than every earlier one: a rolling window's running
        // total assumes its clock does not go back by more than a slot.
        let mut now = at("2026-06-30T22:00:00Z") + SignedDuration::from_hours(48 * seed as i64);
        let mut held: Vec<(Ticket, Ticket)> = Vec::new();
        let (mut granted, mut refused, mut settled) = (0, 0, 0);
        let specs_at = |now: Timestamp, task: &str| -> Vec<CounterSpec> {
            limits
                .iter()
                .map(|l| spec(l, matches!(l.window, Window::PerTask).then_some(task), now))
                .collect()
        };
        for step in 0..400 {
            let task = format!("s{seed}-t{}", rng.below(3));
            let specs = specs_at(now, &task);
            match rng.below(20) {
                0 | 19 => now += SignedDuration::from_secs(rng.below(1_800) as i64),
                1..=11 => {
                    let request = ReserveRequest {
                        base: Amount::new(
                            rng.below(3_000),
                            price.saturating_mul_tokens(rng.below(3_000)),
                        ),
                        per_unit: Amount::new(
                            rng.below(2),
                            price.saturating_mul_tokens(rng.below(4)),
                        ),
                        min_units: rng.below(50),
                        max_units: rng.below(4_000),
                    };
                    let a = memory.reserve(&specs, &request, now).await.unwrap();
                    let b = shared.reserve(&specs, &request, now).await.unwrap();
                    match (a, b) {
                        (ReserveOutcome::Reserved(a), ReserveOutcome::Reserved(b)) => {
                            assert_eq!(
                                (a.units(), a.amount(), a.keys()),
                                (b.units(), b.amount(), b.keys()),
                                "seed {seed} step {step}"
                            );
                            held.push((a, b));
                            granted += 1;
                        }
                        (ReserveOutcome::Denied(a), ReserveOutcome::Denied(b)) => {
                            assert_eq!(a, b, "seed {seed} step {step}");
                            refused += 1;
                        }
                        (a, b) => panic!("seed {seed} step {step}: memory {a:?}, redis {b:?}"),
                    }
                }
                12..=17 if !held.is_empty() => {
                    let (a, b) = held.swap_remove(rng.below(held.len() as u64) as usize);
                    let scale = rng.below(150);
                    let actual = Amount::new(
                        a.amount().tokens * scale / 100,
                        Money::from_units(a.amount().money.units() * i128::from(scale) / 100 + 1),
                    );
                    let specs = specs_at(
                        now,
                        a.keys()
                            .iter()
                            .find_map(|k| k.task.as_ref())
                            .map_or("none", |t| t.as_str()),
                    );
                    let ua = memory.settle(a, &specs, actual, now).await.unwrap();
                    let ub = shared.settle(b, &specs, actual, now).await.unwrap();
                    assert_eq!(ua, ub, "seed {seed} step {step}");
                    settled += 1;
                }
                18 if !held.is_empty() => {
                    // Releases, then settles, handed over back to back: they reach Redis in
                    // one batch (the batcher takes what queued while this task ran), where a
                    // release loads a counter before a settle commits to it.
                    let n = 1 + rng.below(held.len().min(4) as u64) as usize;
                    let mut releases = Vec::new();
                    let mut settles = Vec::new();
                    for _ in 0..n {
                        let pair = held.swap_remove(rng.below(held.len() as u64) as usize);
                        if rng.below(2) == 0 {
                            releases.push(pair);
                            continue;
                        }
                        let scale = rng.below(150);
                        let a = &pair.0;
                        let actual = Amount::new(
                            a.amount().tokens * scale / 100,
                            Money::from_units(
                                a.amount().money.units() * i128::from(scale) / 100 + 1,
                            ),
                        );
                        let specs = specs_at(
                            now,
                            a.keys()
                                .iter()
                                .find_map(|k| k.task.as_ref())
                                .map_or("none", |t| t.as_str()),
                        );
                        settles.push((pair, specs, actual));
                    }
                    for (a, b) in releases {
                        memory.release(a);
                        shared.release(b);
                    }
                    let mut pending = Vec::new();
                    for ((a, b), specs, actual) in &mut settles {
                        let a = std::mem::replace(a, Ticket::unreserved());
                        let b = std::mem::replace(b, Ticket::unreserved());
                        let ua = memory.settle(a, specs, *actual, now).await.unwrap();
                        pending.push((ua, shared.settle(b, specs, *actual, now)));
                        settled += 1;
                    }
                    for (ua, ub) in pending {
                        assert_eq!(ua, ub.await.unwrap(), "seed {seed} step {step} (batch)");
                    }
                    // Redis releases in the background; let it land before comparing again.
                    assert!(
                        eventually(200, Duration::from_millis(10), async || {
                            in_use(&memory, now).await == in_use(&shared, now).await
                        })
                        .await,
                        "seed {seed} step {step}: the release never landed"
                    );
                }
                _ => {
                    let ua = memory.usage(&specs, now).await.unwrap();
                    let ub = shared.usage(&specs, now).await.unwrap();
                    assert_eq!(ua, ub, "seed {seed} step {step}");
                }
            }
        }
        eprintln!("seed {seed}: {granted} granted, {refused} refused, {settled} settled");
        assert!(
            granted > 40 && refused > 20 && settled > 40,
            "seed {seed}: {granted} granted, {refused} refused, {settled} settled"
        );
        for (a, b) in held.drain(..) {
            memory.release(a);
            shared.release(b);
        }
        let same = async || in_use(&memory, now).await == in_use(&shared, now).await;
        if !eventually(200, Duration::from_millis(10), same).await {
            assert_eq!(
                in_use(&memory, now).await,
                in_use(&shared, now).await,
                "seed {seed}: snapshots"
            );
        }
    }
}

/// The counters a store reports as in use. Memory keeps a rolling counter's slot state after
/// its usage aged out; what both stores must agree on is what is in use.
async fn in_use(store: &impl BudgetStore, now: Timestamp) -> Vec<(CounterKey, CounterUsage)> {
    let mut snapshot = store.snapshot(now).await.unwrap();
    snapshot.retain(|(_, u)| *u != CounterUsage::default());
    snapshot
}

/// A process that dies holding a reservation gives it back when its lease runs out; a settle
/// that arrives after that still counts its usage, as overshoot, and nothing is taken twice.
#[tokio::test]
async fn expired_leases_give_reservations_back() {
    let Some(redis) = RedisUnderTest::new("leases") else {
        return;
    };
    let store =
        RedisBudgetStore::connect_with(&redis.url, redis.options().lease(Duration::from_secs(60)))
            .await
            .unwrap();
    let daily = Arc::new(limit("daily", Window::Calendar(Period::Day)).tokens(100));
    let t0 = at("2026-02-02T10:00:00Z");
    let specs = [spec(&daily, None, t0)];
    let dead = reserve(&store, &specs, ReserveRequest::fixed(tokens(70)), t0)
        .await
        .unwrap();
    let late = reserve(&store, &specs, ReserveRequest::fixed(tokens(30)), t0)
        .await
        .unwrap();
    assert!(
        reserve(&store, &specs, ReserveRequest::fixed(tokens(1)), t0)
            .await
            .is_err()
    );
    std::mem::forget(dead); // its process "died": never settled, never released
    let t1 = t0 + SignedDuration::from_secs(61);
    let u = usage(&store, &specs, t1).await[0];
    assert_eq!(
        (u.reserved, u.in_flight),
        (tokens(0), 0),
        "both leases ran out"
    );
    let after = store.settle(late, &specs, tokens(25), t1).await.unwrap();
    assert_eq!(after[0].committed, tokens(25));
    assert_eq!(
        after[0].admitted,
        tokens(0),
        "its reservation had lapsed: overshoot"
    );
    assert_eq!(after[0].reserved, tokens(0), "not given back twice");
    reserve(&store, &specs, ReserveRequest::fixed(tokens(75)), t1)
        .await
        .unwrap();
}

/// Callers that give up on a reserve (a timeout drops the future) do not leave reservations
/// behind: the batcher releases what was reserved for a caller that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_reserves_are_released() {
    let Some(redis) = RedisUnderTest::new("abandoned") else {
        return;
    };
    let store = redis.store().await;
    let daily = Arc::new(limit("daily", Window::Calendar(Period::Day)).tokens(1_000_000));
    let now = Timestamp::now();
    let specs = Arc::new([spec(&daily, None, now)]);
    let mut abandoned = 0;
    for round in 0..50u64 {
        let mut calls = Vec::new();
        for _ in 0..32 {
            let (store, specs) = (store.clone(), specs.clone());
            calls.push(tokio::spawn(async move {
                let request = ReserveRequest::fixed(tokens(10));
                tokio::time::timeout(
                    Duration::from_micros(50 + round * 20),
                    store.reserve(&specs[..], &request, now),
                )
                .await
            }));
        }
        for call in calls {
            match call.await.unwrap() {
                Ok(outcome) => match outcome.unwrap() {
                    ReserveOutcome::Reserved(ticket) => store.release(ticket),
                    ReserveOutcome::Denied(d) => panic!("{d:?}"),
                },
                Err(_elapsed) => abandoned += 1,
            }
        }
    }
    assert!(abandoned > 0, "no caller gave up; the test proved nothing");
    let released = async || {
        let u = usage(&store, &specs[..], now).await[0];
        u.reserved == tokens(0) && u.in_flight == 0
    };
    assert!(
        eventually(100, Duration::from_millis(20), released).await,
        "{abandoned} abandoned reserves left {:?}",
        usage(&store, &specs[..], now).await[0]
    );
}

/// Unreachable Redis at start: a typed error naming the store, with no password in it.
#[tokio::test]
async fn unreachable_redis_is_a_typed_error_naming_the_store() {
    let port = free_port().await;
    let url = format!("redis://user:hunter2@127.0.0.1:{port}/0");
    let options = RedisStoreOptions::new().timeout(Duration::from_millis(500));
    let error = RedisBudgetStore::connect_with(&url, options)
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    let bad = RedisBudgetStore::connect("http://nope").await.unwrap_err();
    assert!(bad.to_string().contains("not a Redis URL"), "{bad}");
    let prefix = RedisBudgetStore::connect_with(&url, RedisStoreOptions::new().prefix("a{b}"))
        .await
        .unwrap_err();
    assert!(prefix.to_string().contains("prefix"), "{prefix}");
}

/// Redis goes away mid-run: reserves fail closed with a typed error (or, opted in, admit
/// without a budget); a settle made meanwhile is retried and lands exactly once when Redis is
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_mid_run_fails_closed_and_loses_no_settle() {
    let Some(redis) = RedisUnderTest::new("outage") else {
        return;
    };
    let proxy = Proxy::start(&redis.url).await;
    let options = redis.options().timeout(Duration::from_millis(300));
    let closed = RedisBudgetStore::connect_with(&proxy.url, options.clone())
        .await
        .unwrap();
    let open = RedisBudgetStore::connect_with(&proxy.url, options.fail_open(true))
        .await
        .unwrap();
    let direct = redis.store().await;
    let daily = Arc::new(limit("daily", Window::Calendar(Period::Day)).tokens(1_000));
    let now = Timestamp::now();
    let specs = [spec(&daily, None, now)];
    let ticket = reserve(&closed, &specs, ReserveRequest::fixed(tokens(100)), now)
        .await
        .unwrap();

    proxy.cut();
    // Let the proxy drop its connections first: a request already on its way when Redis
    // vanishes may run with its reply lost (its reservation then waits for its lease).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let error = closed
        .reserve(&specs, &ReserveRequest::fixed(tokens(1)), now)
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("redis redis://127.0.0.1"),
        "{error}"
    );
    match open
        .reserve(&specs, &ReserveRequest::fixed(tokens(5)), now)
        .await
        .unwrap()
    {
        ReserveOutcome::Reserved(t) => {
            assert!(t.keys().is_empty(), "admitted without a reservation")
        }
        other => panic!("fail-open admits: {other:?}"),
    }
    assert_eq!(open.failed_open(), 1);
    let error = closed
        .settle(ticket, &specs, tokens(80), now)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("queued for retry"), "{error}");
    let before = usage(&direct, &specs, now).await[0];
    assert_eq!(
        before.committed,
        tokens(0),
        "not applied while Redis was unreachable"
    );

    proxy.restore();
    let landed = async || usage(&direct, &specs, now).await[0].committed == tokens(80);
    assert!(
        eventually(100, Duration::from_millis(100), landed).await,
        "the queued settle never landed"
    );
    let u = usage(&direct, &specs, now).await[0];
    assert_eq!(
        (u.admitted, u.reserved, u.in_flight),
        (tokens(80), tokens(0), 0)
    );
    // Let another retry round pass: still counted once.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(usage(&direct, &specs, now).await[0].committed, tokens(80));
    reserve(&closed, &specs, ReserveRequest::fixed(tokens(920)), now)
        .await
        .unwrap();
}

/// A whole budget on Redis: when Redis goes away between reserve and commit, the commit still
/// lands in the ledger, the error says the store is behind, and the retried settle catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_on_redis_never_drops_usage_in_an_outage() {
    let Some(redis) = RedisUnderTest::new("budget-outage") else {
        return;
    };
    let (proxy, store) = redis.behind_proxy(Duration::from_millis(300)).await;
    let budget = Budget::builder()
        .limits([limit("agents/day", Window::Calendar(Period::Day)).tokens(50_000)])
        .store(store.clone())
        .ledger(MemoryLedger::new())
        .build()
        .unwrap();
    let who = Attribution::agent("researcher");
    let held = budget
        .reserve(&who, "gpt-4o", Estimate::new(1_000, 500))
        .await
        .unwrap();
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let error = held.commit(Usage::new(1_000, 420)).await.unwrap_err();
    let BudgetError::Unsettled { event, source } = error else {
        panic!("expected Unsettled, got {error:?}");
    };
    assert!(source.to_string().contains("queued for retry"), "{source}");
    assert_eq!(
        budget.ledger().events(),
        vec![*event],
        "the ledger has the event"
    );
    let refused = budget
        .reserve(&who, "gpt-4o", Estimate::new(10, 10))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, BudgetError::Store(_)),
        "fail closed: {refused:?}"
    );
    proxy.restore();
    // (The first queries after the restore may still find the connection being reopened.)
    let caught_up = async || {
        budget
            .status()
            .await
            .is_ok_and(|status| status.iter().any(|s| s.usage.committed.tokens == 1_420))
    };
    assert!(
        eventually(100, Duration::from_millis(100), caught_up).await,
        "the store never caught up with the ledger"
    );
}

/// Several store instances, each with its own connection, share one Redis budget under
/// concurrent load: the cap holds across all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_instances_share_one_hard_limit() {
    let Some(redis) = RedisUnderTest::new("instances") else {
        return;
    };
    let now = Timestamp::now();
    let cap = 20_000;
    let daily = Arc::new(limit("fleet", Window::Calendar(Period::Day)).tokens(cap));
    let specs = Arc::new([spec(&daily, None, now)]);
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(redis.store().await);
    }
    let total = spend_on(&stores, &specs, now, cap).await;
    let u = usage(&redis.store().await, &specs[..], now).await[0];
    assert_eq!(u.committed.tokens, total);
    assert!(total <= cap, "{total} > {cap}");
    assert!(total > cap * 3 / 4, "contended to the end: {total}");
}

/// Sixteen workers per store each make 60 random reserve+settle rounds on `specs` (one counter
/// capped at `cap`; refused rounds included); returns what they committed in all.
async fn spend_on<S: BudgetStore + Clone + Send + Sync + 'static>(
    stores: &[S],
    specs: &Arc<[CounterSpec; 1]>,
    now: Timestamp,
    cap: u64,
) -> u64 {
    let mut handles = Vec::new();
    for (instance, store) in (0u64..).zip(stores) {
        for worker in 0..16u64 {
            let (store, specs) = (store.clone(), specs.clone());
            handles.push(tokio::spawn(async move {
                let seed = instance * 100 + worker + 1;
                store_suite::spend_randomly(&store, &specs[..], now, cap, seed, 60, 200).await
            }));
        }
    }
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    total
}

/// Local allowances: four processes' worth of `AllowanceStore`s (each on its own connection)
/// admit calls locally against one Redis budget; the cap holds, and once they close, Redis
/// holds exactly what they committed and no allowance is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowances_share_one_hard_limit_and_report_everything() {
    let Some(redis) = RedisUnderTest::new("allowances") else {
        return;
    };
    let now = Timestamp::now();
    let cap = 20_000;
    let daily = Arc::new(limit("fleet", Window::Calendar(Period::Day)).tokens(cap));
    let specs = Arc::new([spec(&daily, None, now)]);
    let options = AllowanceOptions::new().chunk(Amount::new(2_000, Money::from_dollars(1)));
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(AllowanceStore::new(redis.store().await, options.clone()));
    }
    let total = spend_on(&stores, &specs, now, cap).await;
    assert!(total <= cap, "{total} > {cap}");
    assert!(total > cap / 2, "contended to the end: {total}");
    for store in &stores {
        store.close().await.unwrap();
    }
    let u = usage(&redis.store().await, &specs[..], now).await[0];
    assert_eq!(u.committed.tokens, total, "every commit reached Redis once");
    assert_eq!(
        (u.reserved, u.in_flight),
        (tokens(0), 0),
        "no allowance left"
    );
}

/// Redis goes away under an allowance store: calls go on against the allowance it holds, a
/// call that needs more fails closed, and once Redis is back every commit reaches it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowances_ride_out_an_outage_and_lose_no_usage() {
    let Some(redis) = RedisUnderTest::new("allowance-outage") else {
        return;
    };
    // A long timeout: replies are held back on purpose, and must still arrive.
    let (proxy, shared) = redis.behind_proxy(Duration::from_secs(10)).await;
    let store = AllowanceStore::new(
        shared,
        AllowanceOptions::new().chunk(Amount::new(1_000, Money::from_dollars(1))),
    );
    let now = Timestamp::now();
    let daily = Arc::new(limit("daily", Window::Calendar(Period::Day)).tokens(1_000_000));
    let specs = [spec(&daily, None, now)];
    let mut committed = 0;
    let mut spend = async |n: u64| -> Result<(), budget_core::store::StoreError> {
        match store
            .reserve(&specs, &ReserveRequest::fixed(tokens(n)), now)
            .await?
        {
            ReserveOutcome::Reserved(t) => {
                store.settle(t, &specs, tokens(n), now).await?;
                committed += n;
                Ok(())
            }
            ReserveOutcome::Denied(d) => panic!("{d:?}"),
        }
    };
    spend(100).await.unwrap(); // takes an allowance of 100 + 1,000
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..5 {
        spend(100)
            .await
            .expect("admitted against the allowance held");
    }
    let error = spend(5_000).await.unwrap_err();
    assert!(error.to_string().contains("grant"), "{error}");
    assert!(store.sync().await.is_err(), "Redis is unreachable");
    proxy.restore();
    // The connection comes back on its own; until it has, closing fails and is tried again.
    let closed = async || store.close().await.is_ok();
    assert!(
        eventually(50, Duration::from_millis(100), closed).await,
        "the allowance store could not close after Redis came back"
    );
    let u = usage(&redis.store().await, &specs, now).await[0];
    assert_eq!(
        u.committed.tokens, committed,
        "every commit reached Redis once"
    );
    assert_eq!((u.reserved, u.in_flight), (tokens(0), 0));
}

/// While a grant that shrinks an allowance is on its way (closing, here), calls are not admitted
/// against the larger allowance about to go: the lease in Redis always covers every call in
/// flight in the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shrinking_allowance_admits_nothing_beyond_its_new_lease() {
    let Some(redis) = RedisUnderTest::new("allowance-shrink") else {
        return;
    };
    // A long timeout: replies are held back on purpose, and must still arrive.
    let (proxy, shared) = redis.behind_proxy(Duration::from_secs(10)).await;
    let store = AllowanceStore::new(
        shared,
        AllowanceOptions::new()
            .chunk(Amount::new(1_000, Money::ZERO))
            .sync_every(Duration::from_secs(3_600))
            .idle_after(Duration::from_secs(3_600)),
    );
    let direct = redis.store().await;
    let daily = Arc::new(limit("daily", Window::Calendar(Period::Day)).tokens(100_000));
    let now = Timestamp::now();
    let specs = [spec(&daily, None, now)];
    let first = reserve(&store, &specs, ReserveRequest::fixed(tokens(100)), now)
        .await
        .unwrap();
    assert!(
        usage(&direct, &specs, now).await[0].reserved.tokens > 1_000,
        "the first call took an allowance beyond itself"
    );

    proxy.hold_replies(true);
    let closing = tokio::spawn({
        let store = store.clone();
        async move { store.close().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The allowance held here still has room, but it is being cut to the first call.
    let second = tokio::spawn({
        let (store, specs) = (store.clone(), specs.clone());
        async move { reserve(&store, &specs, ReserveRequest::fixed(tokens(50)), now).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.hold_replies(false);
    closing.await.unwrap().expect("closed");
    let second = second.await.unwrap().expect("admitted after a top-up");

    let in_redis = usage(&direct, &specs, now).await[0].reserved;
    assert!(
        in_redis.tokens >= 150,
        "both calls in flight (150 tokens) must be covered in Redis, which holds {in_redis:?}"
    );
    store.release(first);
    store.release(second);
    store.close().await.unwrap();
    assert_eq!(usage(&direct, &specs, now).await[0].reserved, tokens(0));
}

/// Per-task counters never leave the process, and an allowance store refuses at a task's
/// limit as any store does.
#[tokio::test]
async fn allowance_task_counters_stay_local() {
    let Some(redis) = RedisUnderTest::new("allowance-tasks") else {
        return;
    };
    let store = AllowanceStore::new(redis.store().await, AllowanceOptions::new());
    let now = Timestamp::now();
    let per_task = Arc::new(limit("per-task", Window::PerTask).tokens(100));
    let daily = Arc::new(limit("daily", Window::Calendar(Period::Day)).tokens(1_000_000));
    let specs = [spec(&per_task, Some("t1"), now), spec(&daily, None, now)];
    let ticket = reserve(&store, &specs, ReserveRequest::fixed(tokens(80)), now)
        .await
        .unwrap();
    let denied = reserve(&store, &specs, ReserveRequest::fixed(tokens(30)), now)
        .await
        .unwrap_err();
    assert_eq!(denied.counter, 0, "the task's own limit refused");
    let after = store.settle(ticket, &specs, tokens(70), now).await.unwrap();
    assert_eq!(after[0].committed, tokens(70));
    assert_eq!(after[1].committed, tokens(70));
    store.close().await.unwrap();
    let names: Vec<String> = {
        let client = ::redis::Client::open(redis.url.as_str()).unwrap();
        let mut conn = client.get_connection().unwrap();
        ::redis::cmd("KEYS")
            .arg(format!("{{{}}}:c:*", redis.prefix))
            .query(&mut conn)
            .unwrap()
    };
    assert!(
        names.iter().all(|n| !n.contains("per-task")),
        "no per-task key in Redis: {names:?}"
    );
    assert_eq!(
        usage(&redis.store().await, &specs[1..], now).await[0].committed,
        tokens(70)
    );
}

const CHILD_ENV: &str = "TOKEN_BUDGET_STORE_CHILD";

/// Not a test on its own: with `CHILD_ENV` set (`url prefix cap`), this is one of the processes
/// of [`separate_processes_share_one_hard_limit`]; it prints what it committed.
#[test]
fn store_child_process() {
    let Ok(args) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = args.split(' ');
    let (url, prefix, cap, seed) = (
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().parse::<u64>().unwrap(),
        parts.next().unwrap().parse::<u64>().unwrap(),
    );
    let allowance = parts.next() == Some("allowance");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let total = rt.block_on(async move {
        let redis = RedisBudgetStore::connect_with(&url, RedisStoreOptions::new().prefix(prefix))
            .await
            .unwrap();
        let store = if allowance {
            AnyBudgetStore::Allowance(AllowanceStore::new(
                redis,
                AllowanceOptions::new().chunk(Amount::new(1_000, Money::from_dollars(1))),
            ))
        } else {
            AnyBudgetStore::Redis(redis)
        };
        let store = Arc::new(store);
        let now = at("2026-09-09T09:09:09Z");
        let daily = Arc::new(limit("procs", Window::Calendar(Period::Day)).tokens(cap));
        let specs = Arc::new([spec(&daily, None, now)]);
        let mut handles = Vec::new();
        for worker in 0..8 {
            let (store, specs) = (store.clone(), specs.clone());
            handles.push(tokio::spawn(async move {
                let seed = seed * 1000 + worker;
                store_suite::spend_randomly(&store, &specs[..], now, cap, seed, 80, 120).await
            }));
        }
        let mut total = 0;
        for h in handles {
            total += h.await.unwrap();
        }
        store.close().await.unwrap();
        total
    });
    println!("committed {total}");
}

/// Separate OS processes, each with its own connections, on one Redis budget.
#[test]
fn separate_processes_share_one_hard_limit() {
    processes_share_one_hard_limit("processes", "exact");
}

/// The same with local allowances: each process admits against what it holds.
#[test]
fn separate_processes_with_allowances_share_one_hard_limit() {
    processes_share_one_hard_limit("processes-allowance", "allowance");
}

fn processes_share_one_hard_limit(test: &str, mode: &str) {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let Some(redis) = RedisUnderTest::new(test) else {
        return;
    };
    let cap = 12_000;
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..4)
        .map(|seed| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "store_child_process",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(
                    CHILD_ENV,
                    format!("{} {} {cap} {seed} {mode}", redis.url, redis.prefix),
                )
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut total = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "child failed: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        total += text
            .lines()
            .find_map(|l| l.split("committed ").nth(1))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("child said nothing: {text}"));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let committed = rt.block_on(async {
        let store = redis.store().await;
        let now = at("2026-09-09T09:09:09Z");
        let daily = Arc::new(limit("procs", Window::Calendar(Period::Day)).tokens(cap));
        usage(&store, &[spec(&daily, None, now)], now).await[0]
    });
    assert_eq!(
        committed.committed.tokens, total,
        "every process's commits, once"
    );
    assert!(total <= cap, "{total} > {cap}");
    assert!(total > cap / 2, "the processes really contended: {total}");
    assert_eq!(committed.reserved, tokens(0));
}

async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// A TCP proxy in front of Redis that can cut every connection and refuse new ones, to play an
/// outage without stopping the shared server.
struct Proxy {
    url: String,
    up: Arc<tokio::sync::watch::Sender<bool>>,
    /// While set, what Redis answers is dropped on the way back (requests still arrive).
    muted: Arc<std::sync::atomic::AtomicBool>,
    /// While set, what Redis answers is held back, and delivered when it is cleared.
    held: Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    async fn start(redis_url: &str) -> Proxy {
        let target = redis_url
            .split_once("://")
            .map(|(_, rest)| {
                rest.split('/')
                    .next()
                    .unwrap()
                    .rsplit('@')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}/", listener.local_addr().unwrap());
        let (up, _) = tokio::sync::watch::channel(true);
        let up = Arc::new(up);
        let accept_up = up.clone();
        let muted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let accept_muted = muted.clone();
        let held = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let accept_held = held.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !*accept_up.borrow() {
                    let _ = client.shutdown().await;
                    continue;
                }
                let mut state = accept_up.subscribe();
                let target = target.clone();
                let muted = accept_muted.clone();
                let held = accept_held.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_server, mut to_server) = server.into_split();
                    let replies = async {
                        let mut buffer = vec![0u8; 16 * 1024];
                        let mut held_back = Vec::new();
                        loop {
                            tokio::select! {
                                read = from_server.read(&mut buffer) => {
                                    let n = read?;
                                    if n == 0 {
                                        return Ok::<_, std::io::Error>(());
                                    }
                                    if !muted.load(std::sync::atomic::Ordering::SeqCst) {
                                        held_back.extend_from_slice(&buffer[..n]);
                                    }
                                }
                                // Look again soon whether held replies may go.
                                () = tokio::time::sleep(Duration::from_millis(5)),
                                    if !held_back.is_empty() => {}
                            }
                            if !held.load(std::sync::atomic::Ordering::SeqCst)
                                && !held_back.is_empty()
                            {
                                to_client.write_all(&held_back).await?;
                                held_back.clear();
                            }
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy(&mut from_client, &mut to_server) => {}
                        _ = replies => {}
                        _ = state.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Proxy {
            url,
            up,
            muted,
            held,
        }
    }

    /// Holds back (or, with `false`, delivers) what Redis answers: a slow link.
    fn hold_replies(&self, held: bool) {
        self.held.store(held, std::sync::atomic::Ordering::SeqCst);
    }

    /// Drops (or, with `false`, passes again) what Redis answers.
    fn mute_replies(&self, muted: bool) {
        self.muted.store(muted, std::sync::atomic::Ordering::SeqCst);
    }

    fn cut(&self) {
        self.up.send_replace(false);
    }

    fn restore(&self) {
        self.up.send_replace(true);
    }
}

/// A Redis that only speaks TLS, started here with certificates from a private CA made for it
/// (needs the `redis-server` and `openssl` programs; without them the test says it skipped).
struct TlsRedis {
    server: std::process::Child,
    dir: std::path::PathBuf,
    port: u16,
}

impl TlsRedis {
    async fn start() -> Option<TlsRedis> {
        let dir = std::env::temp_dir().join(common::unique_name("tb", "tls"));
        std::fs::create_dir_all(&dir).unwrap();
        let openssl = |args: &[&str]| {
            std::process::Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .is_ok_and(|out| out.status.success())
        };
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        let made = openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=token-budget test CA",
        ]) && openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]) && openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
        if !made {
            eprintln!("skipped: the openssl program is missing or failed");
            let _ = std::fs::remove_dir_all(&dir);
            return None;
        }
        let port = free_port().await;
        let server = std::process::Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args([
                "--tls-cert-file",
                "server.pem",
                "--tls-key-file",
                "server.key",
            ])
            .args(["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .current_dir(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let Ok(server) = server else {
            eprintln!("skipped: no redis-server program to start a TLS Redis");
            let _ = std::fs::remove_dir_all(&dir);
            return None;
        };
        let redis = TlsRedis { server, dir, port };
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Some(redis);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("skipped: redis-server did not listen for TLS (built without TLS?)");
        None
    }

    fn url(&self, query: &str) -> String {
        format!("rediss://127.0.0.1:{}/0?{query}", self.port)
    }

    fn ca(&self) -> String {
        self.dir.join("ca.pem").display().to_string()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `rediss://`: with the private CA trusted (`tls_ca=`), the store works over TLS as over
/// plain TCP; without it the server's certificate is refused; a wrong `tls_ca` is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_redis_with_a_private_ca() {
    let Some(redis) = TlsRedis::start().await else {
        return;
    };
    let store = AnyBudgetStore::open(&redis.url(&format!("prefix=tls&tls_ca={}", redis.ca())))
        .await
        .expect("TLS with the private CA trusted");
    let daily = Arc::new(limit("daily", Window::Calendar(Period::Day)).tokens(1_000));
    let now = Timestamp::now();
    let specs = [spec(&daily, None, now)];
    let ticket = reserve(&store, &specs, ReserveRequest::fixed(tokens(600)), now)
        .await
        .unwrap();
    let denied = store
        .reserve(&specs, &ReserveRequest::fixed(tokens(600)), now)
        .await
        .unwrap();
    assert!(matches!(denied, ReserveOutcome::Denied(_)), "{denied:?}");
    let settled = store
        .settle(ticket, &specs, tokens(250), now)
        .await
        .unwrap();
    assert_eq!(settled[0].committed, tokens(250));
    assert_eq!(usage(&store, &specs, now).await[0].reserved, tokens(0));

    let untrusted = AnyBudgetStore::open(&redis.url("prefix=tls&timeout_ms=1000"))
        .await
        .expect_err("a private CA is not among the system's roots");
    assert!(untrusted.message().contains("connect"), "{untrusted}");
    assert!(
        untrusted.store().starts_with("rediss://127.0.0.1"),
        "{untrusted}"
    );

    let missing = redis.dir.join("no-such.pem").display().to_string();
    let error = AnyBudgetStore::open(&redis.url(&format!("tls_ca={missing}")))
        .await
        .expect_err("no such file");
    assert!(error.to_string().contains("no-such.pem"), "{error}");
    let not_pem = redis.dir.join("san.ext").display().to_string();
    let error = AnyBudgetStore::open(&redis.url(&format!("tls_ca={not_pem}")))
        .await
        .expect_err("not a certificate");
    assert!(error.to_string().contains("no PEM certificate"), "{error}");
}

/// A reserve whose reply is lost (the request reaches Redis and runs, the answer never comes
/// back: the caller gets an error) is given back as soon as Redis can be reached again, not
/// held until its lease (15 minutes by default) runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserve_whose_reply_was_lost_is_given_back() {
    let Some(redis) = RedisUnderTest::new("lost-reply") else {
        return;
    };
    let (proxy, store) = redis.behind_proxy(Duration::from_millis(300)).await;
    let direct = redis.store().await;
    let daily = Arc::new(limit("daily", Window::Calendar(Period::Day)).tokens(1_000));
    let now = Timestamp::now();
    let specs = [spec(&daily, None, now)];
    proxy.mute_replies(true);
    let error = store
        .reserve(&specs, &ReserveRequest::fixed(tokens(400)), now)
        .await
        .expect_err("no answer comes back");
    assert!(error.message().contains("reserve"), "{error}");
    // The request went out before the caller gave up; on a loaded machine Redis may run it
    // a moment after that.
    let ran = async || usage(&direct, &specs, now).await[0].reserved == tokens(400);
    assert!(
        eventually(100, Duration::from_millis(20), ran).await,
        "the reserve ran in Redis: {:?}",
        usage(&direct, &specs, now).await[0]
    );
    // The connection fails (as a reset after the request went out would): drop it, and let
    // the store connect again.
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.mute_replies(false);
    proxy.restore();

    let given_back = async || usage(&direct, &specs, now).await[0] == CounterUsage::default();
    assert!(
        eventually(100, Duration::from_millis(50), given_back).await,
        "the lost reserve was not given back: {:?}",
        usage(&direct, &specs, now).await[0]
    );
    let whole_budget = async || {
        store
            .reserve(&specs, &ReserveRequest::fixed(tokens(1_000)), now)
            .await
            .is_ok_and(|outcome| matches!(outcome, ReserveOutcome::Reserved(_)))
    };
    assert!(eventually(50, Duration::from_millis(50), whole_budget).await);
}

/// A settle that arrives more than its lease and an hour late finds its lease gone for good
/// (another call purged it, and expired leases are only remembered for an hour): its usage
/// still counts, as overshoot.
#[tokio::test]
async fn a_settle_later_than_its_lease_and_an_hour_still_counts() {
    let Some(redis) = RedisUnderTest::new("very-late-settle") else {
        return;
    };
    let store =
        RedisBudgetStore::connect_with(&redis.url, redis.options().lease(Duration::from_secs(60)))
            .await
            .unwrap();
    let daily = Arc::new(limit("daily", Window::Calendar(Period::Day)).tokens(100));
    let t0 = at("2026-02-02T10:00:00Z");
    let specs = [spec(&daily, None, t0)];
    let late = reserve(&store, &specs, ReserveRequest::fixed(tokens(70)), t0)
        .await
        .unwrap();
    let t1 = t0 + SignedDuration::from_secs(60 + 3_600 + 5);
    // Reading the counter purges the lapsed lease, and forgets it: it ran out over an hour ago.
    let u = usage(&store, &specs, t1).await[0];
    assert_eq!(
        (u.reserved, u.in_flight),
        (tokens(0), 0),
        "the lease ran out"
    );
    let after = store.settle(late, &specs, tokens(25), t1).await.unwrap();
    assert_eq!(
        (after[0].committed, after[0].admitted),
        (tokens(25), tokens(0)),
        "a very late settle still counts, as overshoot"
    );
    assert_eq!(usage(&store, &specs, t1).await[0].committed, tokens(25));
}

/// `flush` waits for what was handed over, settles queued for retry included: with Redis
/// down it answers with an error within the store's timeout instead of hanging, and once
/// Redis is back it returns only when the retried settle has landed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_waits_for_queued_settles_and_fails_while_redis_is_down() {
    let Some(redis) = RedisUnderTest::new("flush") else {
        return;
    };
    let timeout = Duration::from_millis(300);
    let (proxy, store) = redis.behind_proxy(timeout).await;
    let direct = redis.store().await;
    let daily = Arc::new(limit("daily", Window::Calendar(Period::Day)).tokens(1_000));
    let now = Timestamp::now();
    let specs = [spec(&daily, None, now)];
    let ticket = reserve(&store, &specs, ReserveRequest::fixed(tokens(100)), now)
        .await
        .unwrap();
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(store.settle(ticket, &specs, tokens(80), now));

    let started = std::time::Instant::now();
    let down = tokio::time::timeout(Duration::from_secs(10), store.flush())
        .await
        .expect("flush gave up in time");
    let took = started.elapsed();
    eprintln!("flush with Redis down answered in {took:?} (timeout {timeout:?})");
    let error = down.expect_err("Redis is down: the settle has not reached it");
    assert!(error.to_string().contains("flush"), "{error}");
    assert!(took < timeout * 4, "flush took {took:?}");
    assert_eq!(usage(&direct, &specs, now).await[0].committed, tokens(0));

    proxy.restore();
    let flushed = async || store.flush().await.is_ok();
    assert!(
        eventually(20, Duration::from_millis(100), flushed).await,
        "flush kept failing after Redis came back"
    );
    let u = usage(&direct, &specs, now).await[0];
    assert_eq!(
        (u.committed, u.admitted, u.reserved, u.in_flight),
        (tokens(80), tokens(80), tokens(0), 0),
        "flush returned before the queued settle landed"
    );
}

/// A settle the store cannot express (a rolling window too narrow for the scripts' numbers)
/// fails with an error naming the store, and still gives its reservation back.
#[tokio::test]
async fn a_settle_that_cannot_be_sent_gives_its_reservation_back() {
    let Some(redis) = RedisUnderTest::new("unsendable-settle") else {
        return;
    };
    let store = redis.store().await;
    let daily = Arc::new(limit("daily", Window::Calendar(Period::Day)).tokens(1_000));
    let now = Timestamp::now();
    let specs = [spec(&daily, None, now)];
    let ticket = reserve(&store, &specs, ReserveRequest::fixed(tokens(100)), now)
        .await
        .unwrap();
    let mut narrow = specs[0].clone();
    narrow.span = budget_core::limits::WindowSpan::Rolling {
        slot_nanos: 1,
        slot: i64::MAX / 2,
    };
    let error = store
        .settle(ticket, &[narrow], tokens(50), now)
        .await
        .expect_err("too narrow for Redis's numbers");
    assert!(error.to_string().contains("rolling window"), "{error}");
    let given_back = async || usage(&store, &specs, now).await[0] == CounterUsage::default();
    assert!(
        eventually(100, Duration::from_millis(20), given_back).await,
        "the reservation was kept: {:?}",
        usage(&store, &specs, now).await[0]
    );
}
