//! The PostgreSQL ledger: the same answers as the memory ledger (the comparison suite of
//! `ledger_sqlite.rs`), a typed error when the server is unreachable, concurrent recorders.
//!
//! Needs `DATABASE_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`); without it each test
//! prints "skipped: DATABASE_URL not set" and passes. Every test works in its own PostgreSQL
//! schema, dropped at the end (also when the test panics).
#![cfg(feature = "postgres")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use budget_core::ledger::{
    Dimension, EventKind, GroupTotal, KeyPart, Ledger, LedgerQuery, PostgresLedger, RankBy,
    UsageEvent,
};
use budget_core::{Amount, Attribution, MemoryLedger, Money, Period, TaskId, Usage};
use jiff::Timestamp;
use jiff::tz::TimeZone;

fn database_url() -> Option<String> {
    let url = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty());
    if url.is_none() {
        println!("skipped: DATABASE_URL not set");
    }
    url
}

/// A PostgreSQL schema for one test: a unique name, dropped (with its tables) on drop.
struct TempSchema {
    url: String,
    name: String,
}

impl TempSchema {
    fn new(url: &str, test: &str) -> TempSchema {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        TempSchema {
            url: url.to_owned(),
            name: format!(
                "tb_{test}_{}_{}_{}",
                std::process::id(),
                nanos % 1_000_000_000_000,
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }
}

impl Drop for TempSchema {
    fn drop(&mut self) {
        let url = self.url.clone();
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        // Its own thread and runtime: drop may run inside (or outside) an async test.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt");
            rt.block_on(async {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                {
                    let driver = tokio::spawn(conn);
                    let _ = client.batch_execute(&sql).await;
                    drop(client);
                    let _ = driver.await;
                }
            });
        })
        .join();
    }
}

/// xorshift64*: reproducible random events.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

fn base_time() -> Timestamp {
    // Just before the 2026 US DST change (2026-03-08), spanning a month boundary.
    "2026-02-20T00:00:00Z".parse().expect("valid timestamp")
}

fn random_events(seed: u64, n: usize) -> Vec<UsageEvent> {
    let mut rng = Rng(seed | 1);
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

fn queries() -> Vec<LedgerQuery> {
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
async fn answers<L: Ledger>(ledger: &L) -> Vec<Vec<GroupTotal>> {
    let mut out = Vec::new();
    for q in queries() {
        out.push(ledger.totals(&q).await.expect("totals"));
    }
    let by_agent = LedgerQuery::group_by([Dimension::Agent, Dimension::Model]);
    out.push(ledger.top(&by_agent, RankBy::Cost, 3).await.expect("top"));
    out.push(ledger.top(&by_agent, RankBy::Tokens, 5).await.expect("top"));
    out
}

fn assert_same(expected: &[Vec<GroupTotal>], got: &[Vec<GroupTotal>]) {
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

async fn record_all<L: Ledger>(ledger: &L, events: &[UsageEvent]) {
    for e in events {
        ledger.record(e.clone()).await.expect("record");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_answers_like_memory_and_survives_reconnect() {
    let Some(url) = database_url() else { return };
    let schema = TempSchema::new(&url, "same");
    let events = random_events(0x5eed, 400);
    let memory = MemoryLedger::new();
    record_all(&memory, &events).await;
    let expected = answers(&memory).await;
    // Sanity: the queries are not trivially empty.
    assert!(expected[0][0].events == 400);
    assert!(expected.iter().filter(|a| a.len() > 3).count() > 10);

    let pg = PostgresLedger::connect(&url, &schema.name)
        .await
        .expect("connect");
    record_all(&pg, &events).await;
    assert_same(&expected, &answers(&pg).await);
    drop(pg);

    let reconnected = PostgresLedger::connect(&url, &schema.name)
        .await
        .expect("reconnect");
    assert_same(&expected, &answers(&reconnected).await);
    let mut ids = reconnected.event_ids().await.expect("ids");
    ids.sort_unstable();
    assert_eq!(ids, (0..400).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_ledger_has_no_groups() {
    let Some(url) = database_url() else { return };
    let schema = TempSchema::new(&url, "empty");
    let pg = PostgresLedger::connect(&url, &schema.name)
        .await
        .expect("connect");
    assert_eq!(
        pg.totals(&LedgerQuery::default()).await.expect("totals"),
        vec![]
    );
    assert_eq!(
        pg.totals(&LedgerQuery::group_by([Dimension::Bucket(Period::Day)]))
            .await
            .expect("totals"),
        vec![]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_a_typed_error_naming_the_url() {
    // Port 1: nothing listens there; no DATABASE_URL needed.
    let url = "postgres://postgres@127.0.0.1:1/test";
    let err = PostgresLedger::connect(url, "tb_refused")
        .await
        .expect_err("nothing listens on port 1");
    assert_eq!(err.ledger, url);
    assert!(err.message.contains(url), "{err}");
    assert!(err.to_string().contains(url), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_namespace_is_a_typed_error() {
    let err = PostgresLedger::connect("postgres://postgres@127.0.0.1:1/test", "x; DROP TABLE y")
        .await
        .expect_err("invalid namespace");
    assert!(err.message.contains("invalid namespace"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_and_newer_schemas_are_typed_errors() {
    let Some(url) = database_url() else { return };
    let foreign = TempSchema::new(&url, "foreign");
    let newer = TempSchema::new(&url, "newer");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {0}; CREATE TABLE {0}.accounts (id BIGINT PRIMARY KEY, name TEXT);",
            foreign.name
        ))
        .await
        .expect("foreign schema");
    let err = PostgresLedger::connect(&url, &foreign.name)
        .await
        .expect_err("foreign");
    assert!(err.message.contains("not a token-budget ledger"), "{err}");

    drop(
        PostgresLedger::connect(&url, &newer.name)
            .await
            .expect("create"),
    );
    client
        .batch_execute(&format!(
            "UPDATE {}.token_budget_schema_version SET version = 99",
            newer.name
        ))
        .await
        .expect("bump");
    let err = PostgresLedger::connect(&url, &newer.name)
        .await
        .expect_err("newer");
    assert!(err.message.contains("newer"), "{err}");
    assert!(err.message.contains("99"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_events_are_refused_not_stored() {
    let Some(url) = database_url() else { return };
    let schema = TempSchema::new(&url, "range");
    let pg = PostgresLedger::connect(&url, &schema.name)
        .await
        .expect("connect");
    let mut event = random_events(7, 1).remove(0);
    event.cost = Money::MAX;
    let err = pg.record(event.clone()).await.expect_err("too large");
    assert!(err.message.contains("cost"), "{err}");
    event.cost = Money::from_cents(1);
    event.usage.input = u64::MAX;
    pg.record(event.clone()).await.expect_err("too many tokens");
    event.usage.input = 1;
    pg.record(event).await.expect("a valid event still records");
    let total = pg.totals(&LedgerQuery::default()).await.expect("totals");
    assert_eq!(total[0].events, 1);
    assert_eq!(total[0].cost, Money::from_cents(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_recorders_are_all_stored() {
    let Some(url) = database_url() else { return };
    let schema = TempSchema::new(&url, "concurrent");
    let ledger = Arc::new(
        PostgresLedger::connect(&url, &schema.name)
            .await
            .expect("connect"),
    );
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
            for i in 0..200u64 {
                let mut e = template.clone();
                e.id = t * 1_000 + i;
                e.cost = Money::from_units(1_000_000_000_000_000_001); // a nano-dollar and a yocto
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
    let check = |total: &[GroupTotal]| {
        assert_eq!(total.len(), 1);
        assert_eq!(total[0].events, 1600);
        assert_eq!(total[0].usage.total(), 6_400);
        assert_eq!(
            total[0].cost,
            Money::from_units(1600 * 1_000_000_000_000_000_001)
        );
    };
    check(
        &ledger
            .totals(&LedgerQuery::default())
            .await
            .expect("totals"),
    );
    check(
        &ledger
            .totals(&LedgerQuery::group_by([Dimension::Tag("team".into())]))
            .await
            .expect("totals"),
    );
    // A second instance (its own connection) sees the same events.
    let other = PostgresLedger::connect(&url, &schema.name)
        .await
        .expect("second instance");
    check(&other.totals(&LedgerQuery::default()).await.expect("totals"));
    let mut ids = other.event_ids().await.expect("ids");
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 1600);
}
