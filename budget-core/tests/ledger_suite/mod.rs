//! What every durable ledger is checked against: random events and the queries whose answers
//! must equal the memory ledger's. Shared by the SQLite and PostgreSQL tests (which also
//! include `tests/common`).
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use budget_core::ledger::{
    Dimension, EventKind, GroupTotal, KeyPart, Ledger, LedgerQuery, RankBy, UsageEvent,
};
use budget_core::{Amount, Attribution, Money, Period, TaskId, Usage};
use jiff::Timestamp;
use jiff::tz::TimeZone;

pub fn base_time() -> Timestamp {
    // Just before the 2026 US DST change (2026-03-08), spanning a month boundary.
    "2026-02-20T00:00:00Z".parse().expect("valid timestamp")
}

pub fn random_events(seed: u64, n: usize) -> Vec<UsageEvent> {
    let mut rng = crate::common::Rng::new(seed);
    let base = base_time();
    (0..n)
        .map(|i| {
            let mut who = Attribution::agent(rng.pick(&["planner", "coder", "reviewer", "critic"]));
            if rng.below(4) != 0 {
                who = who.with_task(TaskId::new(rng.pick(&["t-1", "t-2", "t-3"])));
            }
            if rng.below(3) != 0 {
                who = who.with_step(rng.below(5) as u32);
            }
            if rng.below(2) == 0 {
                who = who.with_user(rng.pick(&["alice", "bob"]));
            }
            if rng.below(2) == 0 {
                who = who.with_session(rng.pick(&["s-a", "s-b", "s-c"]));
            }
            if rng.below(3) != 0 {
                who = who.with_tag("team", rng.pick(&["search", "infra"]));
            }
            if rng.below(3) == 0 {
                who = who.with_tag("env", rng.pick(&["prod", "dev", "staging"]));
            }
            who = who.critical(rng.below(5) == 0);
            let input = rng.below(100_000);
            let output = rng.below(10_000);
            // Yocto precision, occasionally large, occasionally a (refund) negative.
            let mut units = i128::from(rng.next()) * i128::from(rng.below(1_000_000) + 1);
            if rng.below(20) == 0 {
                units = -units;
            }
            let saved = if rng.below(4) == 0 {
                Amount {
                    tokens: rng.below(5_000),
                    money: Money::from_units(i128::from(rng.next())),
                }
            } else {
                Amount::ZERO
            };
            let at = base
                .checked_add(jiff::SignedDuration::from_nanos(
                    (rng.below(40 * 86_400 * 1_000_000_000)) as i64,
                ))
                .expect("in range");
            UsageEvent {
                id: i as u64,
                at,
                attribution: who,
                model: rng.pick(&["gpt-4o", "gpt-4o-mini", "claude-sonnet"]).into(),
                requested_model: (rng.below(4) == 0).then(|| Arc::from("latest")),
                usage: Usage {
                    input,
                    cached_input: input / 3,
                    cache_write: input / 7,
                    output,
                    reasoning: output / 2,
                },
                cost: Money::from_units(units),
                estimated: rng.below(6) == 0,
                kind: [EventKind::Call, EventKind::CacheHit, EventKind::Summary]
                    [rng.below(3) as usize],
                saved,
            }
        })
        .collect()
}

pub fn queries() -> Vec<LedgerQuery> {
    let ny = TimeZone::get("America/New_York").expect("tzdb");
    let kolkata = TimeZone::get("Asia/Kolkata").expect("tzdb");
    let kathmandu = TimeZone::get("Asia/Kathmandu").expect("tzdb");
    let day2 = base_time() + jiff::SignedDuration::from_hours(24 * 2);
    let day20 = base_time() + jiff::SignedDuration::from_hours(24 * 20 + 7);
    let day_start = Period::Day.bounds(day20, &ny).expect("bounds").0;
    let mut out = vec![LedgerQuery::default()];
    for dim in [
        Dimension::Agent,
        Dimension::Task,
        Dimension::Step,
        Dimension::User,
        Dimension::Session,
        Dimension::Model,
        Dimension::RequestedModel,
        Dimension::Kind,
        Dimension::Tag("team".into()),
        Dimension::Tag("env".into()),
        Dimension::Tag("absent".into()),
    ] {
        out.push(LedgerQuery::group_by([dim]));
    }
    for period in [Period::Hour, Period::Day, Period::Week, Period::Month] {
        for tz in [
            TimeZone::UTC,
            ny.clone(),
            kolkata.clone(),
            kathmandu.clone(),
        ] {
            out.push(LedgerQuery::group_by([Dimension::Bucket(period)]).in_time_zone(tz));
        }
    }
    out.push(
        LedgerQuery::group_by([
            Dimension::Agent,
            Dimension::Bucket(Period::Day),
            Dimension::Tag("team".into()),
        ])
        .in_time_zone(ny.clone()),
    );
    out.push(
        LedgerQuery::group_by([
            Dimension::Bucket(Period::Week),
            Dimension::Bucket(Period::Day),
            Dimension::Kind,
        ])
        .in_time_zone(ny.clone()),
    );
    out.push(LedgerQuery::group_by([
        Dimension::Tag("team".into()),
        Dimension::Tag("env".into()),
    ]));
    out.push(
        LedgerQuery::group_by([Dimension::Model, Dimension::Step])
            .between(day2, day20)
            .filter(Dimension::Agent, KeyPart::text("coder")),
    );
    out.push(
        LedgerQuery::group_by([Dimension::User])
            .filter(Dimension::Tag("team".into()), KeyPart::text("search"))
            .filter(Dimension::Tag("env".into()), KeyPart::None)
            .filter(Dimension::Step, KeyPart::Step(2)),
    );
    out.push(
        LedgerQuery::group_by([Dimension::Task])
            .filter(Dimension::Step, KeyPart::None)
            .filter(Dimension::User, KeyPart::None)
            .filter(Dimension::Kind, KeyPart::Kind(EventKind::CacheHit)),
    );
    out.push(
        LedgerQuery::group_by([Dimension::Agent, Dimension::Bucket(Period::Hour)])
            .in_time_zone(ny.clone())
            .filter(Dimension::Bucket(Period::Day), KeyPart::Bucket(day_start)),
    );
    out.push(
        LedgerQuery::group_by([Dimension::RequestedModel, Dimension::Model])
            .filter(Dimension::RequestedModel, KeyPart::text("latest")),
    );
    out.push(
        LedgerQuery::group_by([Dimension::Model])
            .filter(Dimension::RequestedModel, KeyPart::None)
            .filter(Dimension::Kind, KeyPart::Kind(EventKind::Call)),
    );
    // A bucket filter whose value is not a bucket start matches nothing in either ledger.
    out.push(
        LedgerQuery::default()
            .in_time_zone(ny.clone())
            .filter(Dimension::Bucket(Period::Day), KeyPart::Bucket(day20)),
    );
    // Filters whose value type does not fit the dimension match nothing.
    out.push(LedgerQuery::default().filter(Dimension::Agent, KeyPart::None));
    out.push(LedgerQuery::default().filter(Dimension::Kind, KeyPart::text("call")));
    out.push(LedgerQuery::group_by([Dimension::Session]).between(day20, day2));
    out.push(LedgerQuery {
        since: Some(day2),
        ..LedgerQuery::group_by([Dimension::Bucket(Period::Day)]).in_time_zone(kathmandu)
    });
    out
}

/// Every query's answer (and two top-N answers) from any ledger.
pub async fn answers<L: Ledger>(ledger: &L) -> Vec<Vec<GroupTotal>> {
    let mut out = Vec::new();
    for q in queries() {
        out.push(ledger.totals(&q).await.expect("totals"));
    }
    let by_agent = LedgerQuery::group_by([Dimension::Agent, Dimension::Model]);
    out.push(ledger.top(&by_agent, RankBy::Cost, 3).await.expect("top"));
    out.push(ledger.top(&by_agent, RankBy::Tokens, 5).await.expect("top"));
    out
}

pub fn assert_same(expected: &[Vec<GroupTotal>], got: &[Vec<GroupTotal>]) {
    let queries = queries();
    assert_eq!(expected.len(), got.len());
    for (i, (e, g)) in expected.iter().zip(got).enumerate() {
        assert_eq!(
            e,
            g,
            "answer {i} differs (query {:?})",
            queries.get(i).map(|q| (&q.group_by, &q.filters))
        );
    }
}

pub async fn record_all<L: Ledger>(ledger: &L, events: &[UsageEvent]) {
    for e in events {
        ledger.record(e.clone()).await.expect("record");
    }
}

/// 8 tasks each recording `per_task` copies of one event (distinct ids; 3 + 1 tokens; a
/// nano-dollar and a yocto-dollar each, so any rounding shows), tagged team=search.
pub async fn record_concurrently<L: Ledger>(ledger: Arc<L>, per_task: u64) {
    let template = random_events(99, 1).remove(0);
    let template = UsageEvent {
        attribution: template.attribution.with_tag("team", "search"),
        ..template
    };
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let ledger = ledger.clone();
        let template = template.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_task {
                let mut e = template.clone();
                e.id = t * 1_000 + i;
                e.cost = CONCURRENT_EVENT_COST;
                e.usage = Usage {
                    input: 3,
                    output: 1,
                    ..Usage::default()
                };
                ledger.record(e).await.expect("record");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
}

const CONCURRENT_EVENT_COST: Money = Money::from_units(1_000_000_000_000_000_001);

/// The one group [`record_concurrently`] leaves: `events` events, exact to the yocto-dollar.
pub fn assert_concurrent_totals(total: &[GroupTotal], events: u64) {
    assert_eq!(total.len(), 1);
    assert_eq!(total[0].events, events);
    assert_eq!(total[0].usage.total(), 4 * events);
    assert_eq!(
        total[0].cost,
        Money::from_units(i128::from(events) * CONCURRENT_EVENT_COST.units())
    );
}

// The hand-over contract (`Ledger` docs): `record` takes the event when it is called, so a
// future dropped unpolled or half-way loses nothing, stores nothing twice, and `flush` waits
// for it. Each check compares the ledger's answers with a memory ledger given every event, so
// a lost event and a doubled one both show, per group and to the yocto-dollar.

/// `n` random events with ids `first..first + n`.
pub fn numbered_events(seed: u64, first: u64, n: usize) -> Vec<UsageEvent> {
    random_events(seed, n)
        .into_iter()
        .zip(first..)
        .map(|(e, id)| UsageEvent { id, ..e })
        .collect()
}

/// The answers of a memory ledger holding exactly `events`.
pub async fn memory_answers(events: &[UsageEvent]) -> Vec<Vec<GroupTotal>> {
    let memory = budget_core::MemoryLedger::new();
    record_all(&memory, events).await;
    answers(&memory).await
}

/// Polls a `record` future at most `polls` times, yielding to the runtime between polls (so
/// its I/O makes progress), then drops it. A record that finishes must have succeeded.
pub async fn poll_then_drop<F>(record: F, polls: u32)
where
    F: std::future::Future<Output = Result<(), budget_core::ledger::LedgerError>>,
{
    let mut record = std::pin::pin!(record);
    for _ in 0..polls {
        let step =
            std::future::poll_fn(|cx| std::task::Poll::Ready(record.as_mut().poll(cx))).await;
        if let std::task::Poll::Ready(result) = step {
            result.expect("record");
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// Every `record` future is dropped without being polled once; after `flush` each event is
/// stored exactly once. Returns the events.
pub async fn unpolled_records_are_stored_once<L: Ledger>(ledger: &L) -> Vec<UsageEvent> {
    let events = numbered_events(0xd20b, 0, 60);
    for e in &events {
        drop(ledger.record(e.clone()));
    }
    ledger.flush().await.expect("flush");
    assert_same(&memory_answers(&events).await, &answers(ledger).await);
    events
}

/// Every `record` future is polled exactly once (with a waker that never wakes: whatever it
/// started is abandoned) and dropped; after `flush` each event is stored exactly once.
/// Returns the events.
pub async fn records_polled_once_are_stored_once<L: Ledger>(ledger: &L) -> Vec<UsageEvent> {
    let events = numbered_events(0x0ace, 0, 200);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for e in &events {
        let mut record = std::pin::pin!(ledger.record(e.clone()));
        if let std::task::Poll::Ready(result) = record.as_mut().poll(&mut cx) {
            result.expect("record");
        }
    }
    ledger.flush().await.expect("flush");
    assert_same(&memory_answers(&events).await, &answers(ledger).await);
    events
}

/// 8 tasks record 150 events each; each `record` future is awaited, dropped unpolled, or
/// dropped after a random number of polls (cancelled while its write is in flight). After
/// `flush` the books equal a memory ledger's holding every event once. Returns the events.
pub async fn cancelled_concurrent_records_are_stored_once<L: Ledger>(
    ledger: Arc<L>,
) -> Vec<UsageEvent> {
    const TASKS: u64 = 8;
    const PER_TASK: usize = 150;
    let mut all = Vec::new();
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let events = numbered_events(0xca9c + t, t * 1_000_000, PER_TASK);
        all.extend(events.iter().cloned());
        let ledger = ledger.clone();
        handles.push(tokio::spawn(async move {
            let mut rng = crate::common::Rng::new(0x5eed ^ t);
            let mut awaited = 0;
            for e in events {
                match rng.below(4) {
                    0 => drop(ledger.record(e)),
                    1 => {
                        ledger.record(e).await.expect("record");
                        awaited += 1;
                    }
                    _ => poll_then_drop(ledger.record(e), rng.below(6) as u32 + 1).await,
                }
            }
            awaited
        }));
    }
    let mut awaited = 0;
    for h in handles {
        awaited += h.await.expect("writer task");
    }
    assert!(awaited > 0 && awaited < TASKS * PER_TASK as u64);
    ledger.flush().await.expect("flush");
    assert_same(&memory_answers(&all).await, &answers(&*ledger).await);
    all
}

/// The ids of `events`, sorted: what a ledger's stored ids must equal, each once.
pub fn sorted_ids(events: &[UsageEvent]) -> Vec<u64> {
    let mut ids: Vec<u64> = events.iter().map(|e| e.id).collect();
    ids.sort_unstable();
    ids
}

/// `record` futures polled once and then kept, never polled again (a `select!` that moved on),
/// block nothing: `flush` and queries finish and include their events. Returns the events.
pub async fn stalled_records_block_nothing<L: Ledger>(ledger: &L) -> Vec<UsageEvent> {
    let events = numbered_events(0x57a1, 0, 20);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut stalled = Vec::new();
    for e in &events {
        let mut record = Box::pin(ledger.record(e.clone()));
        if let std::task::Poll::Ready(result) = record.as_mut().poll(&mut cx) {
            result.expect("record");
        }
        stalled.push(record);
    }
    let limit = std::time::Duration::from_secs(20);
    tokio::time::timeout(limit, ledger.flush())
        .await
        .expect("flush waited for a record future that is never polled again")
        .expect("flush");
    let got = tokio::time::timeout(limit, answers(ledger))
        .await
        .expect("a query waited for a record future that is never polled again");
    assert_same(&memory_answers(&events).await, &got);
    drop(stalled);
    events
}

/// A tracing subscriber keeping the error events it sees, each as `message=... field=value ...`
/// (how tests check that a lost event is never lost without a word).
#[derive(Clone, Default)]
pub struct Captured(Arc<std::sync::Mutex<Vec<String>>>);

impl Captured {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().expect("log lock").clone()
    }
}

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

impl tracing::Subscriber for Captured {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::ERROR {
            let mut fields = Fields(String::new());
            event.record(&mut fields);
            self.0.lock().expect("log lock").push(fields.0);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
