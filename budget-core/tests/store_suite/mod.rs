//! One behaviour suite for every budget store: each function takes a fresh, empty store and
//! asserts what any store must do. `tests/stores.rs` runs it on memory and on Redis.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use budget_core::admission::{Amount, CapKind, ReserveRequest};
use budget_core::limits::CounterKey;
use budget_core::store::{BudgetStore, CounterSpec, CounterUsage, Denial, ReserveOutcome, Ticket};
use budget_core::{Limit, Money, Period, Selector, TaskId, Window};
use jiff::{SignedDuration, Timestamp, tz::TimeZone};

/// The counter `limit` uses at `now` (for `task`, if it is a per-task limit).
pub fn spec(limit: &Arc<Limit>, task: Option<&str>, now: Timestamp) -> CounterSpec {
    let span = limit.window.span(now, &TimeZone::UTC).expect("window");
    CounterSpec {
        key: CounterKey {
            limit: limit.id.clone(),
            scope: "*".into(),
            task: task.map(TaskId::new),
            window: span.id(),
        },
        limit: limit.clone(),
        span,
    }
}

pub fn at(text: &str) -> Timestamp {
    text.parse().expect("timestamp")
}

pub fn tokens(n: u64) -> Amount {
    Amount::new(n, Money::ZERO)
}

pub fn limit(id: &str, window: Window) -> Limit {
    Limit::new(id, Selector::Global, window)
}

pub async fn reserve<S: BudgetStore>(
    store: &S,
    specs: &[CounterSpec],
    request: ReserveRequest,
    now: Timestamp,
) -> Result<Ticket, Denial> {
    match store.reserve(specs, &request, now).await.expect("store") {
        ReserveOutcome::Reserved(ticket) => Ok(ticket),
        ReserveOutcome::Denied(denial) => Err(denial),
    }
}

pub async fn usage<S: BudgetStore>(
    store: &S,
    specs: &[CounterSpec],
    now: Timestamp,
) -> Vec<CounterUsage> {
    store.usage(specs, now).await.expect("store")
}

const T0: &str = "2026-03-10T12:00:00Z";

/// Reserves on every counter or on none.
pub async fn all_or_nothing<S: BudgetStore>(store: S) {
    let now = at(T0);
    let a = Arc::new(limit("a", Window::PerTask).tokens(100));
    let b = Arc::new(limit("b", Window::Calendar(Period::Day)).tokens(50));
    let both = [spec(&a, Some("t1"), now), spec(&b, None, now)];
    let t1 = reserve(&store, &both, ReserveRequest::fixed(tokens(40)), now)
        .await
        .unwrap();
    let denied = reserve(&store, &both, ReserveRequest::fixed(tokens(20)), now)
        .await
        .unwrap_err();
    assert_eq!(denied.counter, 1, "b refused");
    assert!(!denied.never);
    assert_eq!(denied.cap_kind, CapKind::Tokens);
    assert_eq!(denied.in_use, tokens(40));
    assert_eq!(
        denied.retry_after,
        Some(at("2026-03-11T00:00:00Z")),
        "the next day"
    );
    assert_eq!(
        usage(&store, &both[..1], now).await[0].reserved,
        tokens(40),
        "a untouched"
    );
    let never = reserve(&store, &both, ReserveRequest::fixed(tokens(51)), now)
        .await
        .unwrap_err();
    assert!(never.never);
    assert_eq!(never.retry_after, None);
    store.release(t1);
    settle_released(&store, &both, now).await;
}

/// Checks `check` every `every`, at most `times` times: whether it came to hold. For what a
/// store does in the background (Redis queues releases, retries settles, reconnects).
pub async fn eventually(times: u32, every: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..times {
        if check().await {
            return true;
        }
        tokio::time::sleep(every).await;
    }
    false
}

/// Release may be asynchronous (Redis queues it): wait until it shows.
async fn settle_released<S: BudgetStore>(store: &S, specs: &[CounterSpec], now: Timestamp) {
    let released = async || {
        usage(store, specs, now)
            .await
            .iter()
            .all(|u| *u == CounterUsage::default())
    };
    if !eventually(200, Duration::from_millis(10), released).await {
        panic!("release never showed: {:?}", usage(store, specs, now).await);
    }
}

/// Settling gives back the unused part and records overshoot; soft counters only count.
pub async fn settle_refunds_and_records_overshoot<S: BudgetStore>(store: S) {
    let now = at(T0);
    let hard = Arc::new(limit("hard", Window::Calendar(Period::Day)).tokens(100));
    let soft = Arc::new(
        limit("soft", Window::Calendar(Period::Day))
            .tokens(10)
            .soft(),
    );
    let specs = [spec(&hard, None, now), spec(&soft, None, now)];
    let ticket = reserve(&store, &specs, ReserveRequest::fixed(tokens(30)), now)
        .await
        .unwrap();
    assert_eq!(ticket.keys().len(), 1, "soft counters are not reserved on");
    let after = store.settle(ticket, &specs, tokens(45), now).await.unwrap();
    assert_eq!(after[0].committed, tokens(45));
    assert_eq!(after[0].admitted, tokens(30));
    assert_eq!(after[0].overshoot(), tokens(15));
    assert_eq!(after[0].reserved, tokens(0));
    assert_eq!(after[0].in_flight, 0);
    assert_eq!(
        after[1].committed,
        tokens(45),
        "soft counters count, past their cap"
    );
    assert_eq!(after[1].admitted, tokens(0));
    let ticket = reserve(&store, &specs, ReserveRequest::fixed(tokens(10)), now)
        .await
        .unwrap();
    let after = store.settle(ticket, &specs, tokens(4), now).await.unwrap();
    assert_eq!(
        after[0].committed,
        tokens(49),
        "the unused 6 were given back"
    );
    // Unreserved usage (a cache hit, a late report) only adds.
    let after = store
        .settle(Ticket::unreserved(), &specs[..1], tokens(51), now)
        .await
        .unwrap();
    assert_eq!(after[0].committed, tokens(100));
    assert!(
        reserve(&store, &specs, ReserveRequest::fixed(tokens(1)), now)
            .await
            .is_err()
    );
}

/// The most units every counter allows, with money caps far beyond 64 bits.
pub async fn elastic_grants_with_exact_money<S: BudgetStore>(store: S) {
    let now = at(T0);
    // $2,000,000,000,000 is 2e36 yocto-dollars: no 64-bit integer or double holds it exactly.
    let huge = Money::from_units(2_000_000_000_000_000_000_000_000_000_000_000_003);
    let price = Money::per_million_tokens("0.0375").unwrap(); // 37.5 nano-dollars per token
    let wide = Arc::new(limit("wide", Window::PerTask).money(huge));
    let narrow = Arc::new(
        limit("narrow", Window::PerTask)
            .tokens(600)
            .money(price.saturating_mul_tokens(450)),
    );
    let specs = [spec(&wide, Some("t"), now), spec(&narrow, Some("t"), now)];
    let request = ReserveRequest {
        base: Amount::new(100, price.saturating_mul_tokens(100)),
        per_unit: Amount::new(1, price),
        min_units: 1,
        max_units: 1_000,
    };
    let ticket = reserve(&store, &specs, request, now).await.unwrap();
    assert_eq!(
        ticket.units(),
        350,
        "money allows 450 tokens, 100 of them the base"
    );
    assert_eq!(
        ticket.amount(),
        Amount::new(450, price.saturating_mul_tokens(450))
    );
    let denial = reserve(&store, &specs, request, now).await.unwrap_err();
    assert_eq!(
        (denial.counter, denial.never, denial.cap_kind),
        (1, false, CapKind::Money)
    );
    let after = store
        .settle(ticket, &specs, Amount::new(7, Money::from_units(1)), now)
        .await
        .unwrap();
    assert_eq!(after[0].committed.money, Money::from_units(1));
    assert_eq!(
        after[0]
            .committed
            .money
            .saturating_add(Money::from_units(1)),
        Money::from_units(2),
        "one yocto-dollar is kept exactly"
    );
    let used = usage(&store, &specs[..1], now).await[0];
    assert_eq!(used.committed, Amount::new(7, Money::from_units(1)));
    // The wide cap minus one yocto-dollar still fits; one more does not.
    let exact = ReserveRequest::fixed(Amount::new(0, huge.saturating_sub(Money::from_units(1))));
    let ticket = reserve(&store, &specs[..1], exact, now).await.unwrap();
    let over = ReserveRequest::fixed(Amount::new(0, Money::from_units(1)));
    assert!(reserve(&store, &specs[..1], over, now).await.is_err());
    store.release(ticket);
}

/// Rolling windows forget old usage, and a refusal says when it frees.
pub async fn rolling_windows_age_out<S: BudgetStore>(store: S) {
    let rolling = Arc::new(limit("r", Window::Rolling(SignedDuration::from_mins(60))).tokens(100));
    let s0 = [spec(&rolling, None, at("2026-01-01T00:00:00Z"))];
    let ticket = reserve(
        &store,
        &s0,
        ReserveRequest::fixed(tokens(80)),
        at("2026-01-01T00:00:00Z"),
    )
    .await
    .unwrap();
    store
        .settle(ticket, &s0, tokens(80), at("2026-01-01T00:00:00Z"))
        .await
        .unwrap();
    let t30 = at("2026-01-01T00:30:00Z");
    let s30 = [spec(&rolling, None, t30)];
    let denied = reserve(&store, &s30, ReserveRequest::fixed(tokens(30)), t30)
        .await
        .unwrap_err();
    // The 80 sit in the 00:00 slot (one minute wide), which may hold usage from as late as
    // 00:00:59: it leaves the hour once all of it has, at 01:01.
    assert_eq!(denied.retry_after, Some(at("2026-01-01T01:01:00Z")));
    let t60 = at("2026-01-01T01:00:00Z");
    let s60 = [spec(&rolling, None, t60)];
    assert_eq!(usage(&store, &s60, t60).await[0].committed, tokens(80));
    let t61 = at("2026-01-01T01:01:00Z");
    let s61 = [spec(&rolling, None, t61)];
    assert_eq!(
        usage(&store, &s61, t61).await[0].committed,
        tokens(0),
        "aged out"
    );
    reserve(&store, &s61, ReserveRequest::fixed(tokens(100)), t61)
        .await
        .unwrap();
}

/// Usage late in a slot is still inside the window when the slot's start has left it: a
/// rolling window never lets the cap be spent twice within one true window (issue 9; before,
/// 1,000 spent at 10:00:59 could be spent again at 11:00:00).
pub async fn rolling_windows_never_release_usage_early<S: BudgetStore>(store: S) {
    let hourly = Arc::new(limit("h", Window::Rolling(SignedDuration::from_mins(60))).tokens(1_000));
    let late = at("2026-01-01T10:00:59Z");
    let s = [spec(&hourly, None, late)];
    let ticket = reserve(&store, &s, ReserveRequest::fixed(tokens(1_000)), late)
        .await
        .unwrap();
    store.settle(ticket, &s, tokens(1_000), late).await.unwrap();
    // 11:00:00 and 11:00:58 are within an hour of 10:00:59: nothing more fits.
    for now in ["2026-01-01T11:00:00Z", "2026-01-01T11:00:58Z"] {
        let now = at(now);
        let s = [spec(&hourly, None, now)];
        let denied = reserve(&store, &s, ReserveRequest::fixed(tokens(1)), now)
            .await
            .unwrap_err();
        assert_eq!(denied.in_use, tokens(1_000), "at {now}");
        assert_eq!(denied.retry_after, Some(at("2026-01-01T11:01:00Z")));
    }
    let free = at("2026-01-01T11:01:00Z");
    let s = [spec(&hourly, None, free)];
    reserve(&store, &s, ReserveRequest::fixed(tokens(1_000)), free)
        .await
        .unwrap();
}

/// A new calendar period starts from zero.
pub async fn calendar_windows_roll_over<S: BudgetStore>(store: S) {
    let daily = Arc::new(limit("daily", Window::Calendar(Period::Day)).tokens(10));
    let day1 = at("2026-05-01T23:59:59Z");
    let s1 = [spec(&daily, None, day1)];
    let ticket = reserve(&store, &s1, ReserveRequest::fixed(tokens(10)), day1)
        .await
        .unwrap();
    store.settle(ticket, &s1, tokens(10), day1).await.unwrap();
    assert!(
        reserve(&store, &s1, ReserveRequest::fixed(tokens(1)), day1)
            .await
            .is_err()
    );
    let day2 = at("2026-05-02T00:00:00Z");
    let s2 = [spec(&daily, None, day2)];
    assert_ne!(s1[0].key, s2[0].key);
    reserve(&store, &s2, ReserveRequest::fixed(tokens(10)), day2)
        .await
        .unwrap();
    let snapshot = store.snapshot(day2).await.unwrap();
    assert!(
        snapshot.iter().all(|(k, _)| *k != s1[0].key),
        "ended windows are not reported"
    );
    assert!(
        snapshot
            .iter()
            .any(|(k, u)| *k == s2[0].key && u.reserved == tokens(10))
    );
}

/// A finished task's counters go; other tasks' stay.
pub async fn forgetting_a_task_drops_its_counters<S: BudgetStore>(store: S) {
    let now = at(T0);
    let per_task = Arc::new(limit("per-task", Window::PerTask).tokens(10));
    for task in ["done", "running"] {
        let s = [spec(&per_task, Some(task), now)];
        let ticket = reserve(&store, &s, ReserveRequest::fixed(tokens(5)), now)
            .await
            .unwrap();
        store.settle(ticket, &s, tokens(5), now).await.unwrap();
    }
    store.forget_task(&TaskId::new("done"));
    let dropped = async || store.snapshot(now).await.unwrap().len() == 1;
    assert!(
        eventually(200, Duration::from_millis(10), dropped).await,
        "the finished task's counter was never dropped"
    );
    let snapshot = store.snapshot(now).await.unwrap();
    assert_eq!(snapshot[0].0.task, Some(TaskId::new("running")));
    assert_eq!(snapshot[0].1.committed, tokens(5));
}

/// One client's random load: `rounds` reserve-then-settle rounds of 5..5+`max_want` tokens,
/// each settling somewhat less than it reserved, asserting after every settle that the counter
/// stays within `cap`. Returns the tokens it committed.
pub async fn spend_randomly<S: BudgetStore>(
    store: &S,
    specs: &[CounterSpec],
    now: Timestamp,
    cap: u64,
    seed: u64,
    rounds: u32,
    max_want: u64,
) -> u64 {
    let mut rng = crate::common::Rng::new(seed);
    let mut committed = 0;
    for _ in 0..rounds {
        let want = 5 + rng.below(max_want);
        match reserve(store, specs, ReserveRequest::fixed(tokens(want)), now).await {
            Ok(ticket) => {
                let used = want - rng.below(want / 3 + 1);
                let after = store
                    .settle(ticket, specs, tokens(used), now)
                    .await
                    .unwrap();
                assert!(after[0].in_use().tokens <= cap, "{:?}", after[0]);
                committed += used;
            }
            Err(denial) => assert!(!denial.never, "{denial:?}"),
        }
    }
    committed
}

/// Many concurrent reservers on one store: the hard cap holds, and every admitted token is
/// accounted.
pub async fn concurrent_reservers_never_exceed_the_cap<S: BudgetStore + Clone>(
    store: S,
    tasks: u64,
) {
    let now = at(T0);
    let cap = 10_000;
    let daily = Arc::new(limit("shared", Window::Calendar(Period::Day)).tokens(cap));
    let specs = Arc::new([spec(&daily, None, now)]);
    let mut handles = Vec::new();
    for worker in 0..tasks {
        let (store, specs) = (store.clone(), specs.clone());
        handles.push(tokio::spawn(async move {
            spend_randomly(&store, &specs[..], now, cap, worker + 1, 40, 90).await
        }));
    }
    let mut total = 0;
    for handle in handles {
        total += handle.await.unwrap();
    }
    let after = usage(&store, &specs[..], now).await[0];
    assert_eq!(after.committed.tokens, total, "every commit counted once");
    assert!(total <= cap);
    assert!(total > cap / 2, "the budget was really contended: {total}");
    assert_eq!(after.reserved, tokens(0));
    assert_eq!(after.in_flight, 0);
}

/// A settle is handed over when `settle` is called, not when its future is polled: a future
/// dropped unpolled still commits, one dropped after a single poll commits exactly once, and
/// after `flush` the store reports what was handed over before it.
pub async fn settles_are_handed_over_at_call_time<S: BudgetStore>(store: S) {
    let now = at(T0);
    let daily = Arc::new(limit("daily", Window::Calendar(Period::Day)).tokens(1_000));
    let specs = [spec(&daily, None, now)];
    let unpolled = reserve(&store, &specs, ReserveRequest::fixed(tokens(100)), now)
        .await
        .unwrap();
    let polled_once = reserve(&store, &specs, ReserveRequest::fixed(tokens(200)), now)
        .await
        .unwrap();
    drop(store.settle(unpolled, &specs, tokens(90), now));
    // A timeout that fires at once polls the settle one time, then drops it.
    let once = tokio::time::timeout(
        Duration::ZERO,
        store.settle(polled_once, &specs, tokens(150), now),
    )
    .await;
    if let Ok(outcome) = once {
        outcome.expect("settled");
    }
    let landed = async || usage(&store, &specs, now).await[0].committed == tokens(240);
    assert!(
        eventually(300, Duration::from_millis(10), landed).await,
        "dropped settles never landed: {:?}",
        usage(&store, &specs, now).await[0]
    );
    // Give a second application time to show, were there one.
    tokio::time::sleep(Duration::from_millis(50)).await;
    store.flush().await.expect("flush");
    // (What is reserved is left out: an allowance store holds its allowance there.)
    let u = usage(&store, &specs, now).await[0];
    assert_eq!(
        (u.committed, u.admitted),
        (tokens(240), tokens(240)),
        "each dropped settle counted once, within its reservation"
    );

    let third = reserve(&store, &specs, ReserveRequest::fixed(tokens(10)), now)
        .await
        .unwrap();
    drop(store.settle(third, &specs, tokens(10), now));
    drop(store.settle(Ticket::unreserved(), &specs, tokens(5), now));
    store.flush().await.expect("flush");
    assert_eq!(
        usage(&store, &specs, now).await[0].committed,
        tokens(255),
        "flush waited for both settles"
    );
}

/// A rolling limit whose duration changes (`set_limit`) keeps what was spent in it: slot
/// numbers of the old width are not read as the new one's (issue 9, item 7; on Redis the
/// usage was read under the new numbering and could age out at once).
pub async fn changing_a_rolling_duration_keeps_the_usage<S: BudgetStore>(store: S) {
    let hour = Arc::new(limit("r", Window::Rolling(SignedDuration::from_mins(60))).tokens(1_000));
    let t0 = at("2026-01-01T10:30:00Z");
    let s = [spec(&hour, None, t0)];
    let ticket = reserve(&store, &s, ReserveRequest::fixed(tokens(900)), t0)
        .await
        .unwrap();
    store.settle(ticket, &s, tokens(900), t0).await.unwrap();
    // Shorter (slots of 10 s instead of 60 s: numbers six times larger) and longer windows.
    for (minutes, later) in [(10, "2026-01-01T10:31:00Z"), (600, "2026-01-01T10:32:00Z")] {
        let changed =
            Arc::new(limit("r", Window::Rolling(SignedDuration::from_mins(minutes))).tokens(1_000));
        let now = at(later);
        let s = [spec(&changed, None, now)];
        let denied = reserve(&store, &s, ReserveRequest::fixed(tokens(900)), now)
            .await
            .unwrap_err();
        assert_eq!(
            denied.in_use,
            tokens(900),
            "{minutes}-minute window at {now}"
        );
    }
}
