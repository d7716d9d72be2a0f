//! The PostgreSQL ledger: the same answers as the memory ledger (the comparison suite of
//! `ledger_sqlite.rs`), a typed error when the server is unreachable, concurrent recorders.
//!
//! Needs `DATABASE_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`); without it each test
//! prints "skipped: DATABASE_URL not set" and passes. Every test works in its own PostgreSQL
//! schema, dropped at the end (also when the test panics).
#![cfg(feature = "postgres")]

use std::sync::Arc;

use budget_core::ledger::{AnyLedger, Dimension, GroupTotal, Ledger, LedgerQuery, PostgresLedger};
use budget_core::{MemoryLedger, Money, Period};

mod common;
use common::{TempSchema, database_url};

/// xorshift64*: reproducible random events.
mod ledger_suite;
use ledger_suite::*;

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
    assert_eq!(err.ledger(), url);
    assert!(err.message().contains(url), "{err}");
    assert!(err.to_string().contains(url), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_namespace_is_a_typed_error() {
    let err = PostgresLedger::connect("postgres://postgres@127.0.0.1:1/test", "x; DROP TABLE y")
        .await
        .expect_err("invalid namespace");
    assert!(err.message().contains("invalid namespace"), "{err}");
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
    assert!(err.message().contains("not a token-budget ledger"), "{err}");

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
    assert!(err.message().contains("newer"), "{err}");
    assert!(err.message().contains("99"), "{err}");
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
    assert!(err.message().contains("cost"), "{err}");
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
    record_concurrently(ledger.clone(), 200).await;
    let check = |total: &[GroupTotal]| assert_concurrent_totals(total, 1600);
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

/// Ends every server connection the ledger opened (found by its `application_name`); returns
/// how many were ended.
async fn terminate_backends(admin: &tokio_postgres::Client, application: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND pid <> pg_backend_pid()) AS ended",
            &[&application],
        )
        .await
        .expect("terminate")
        .get(0)
}

/// The server ends the ledger's connection (a restart, a failover, an administrator): the
/// next operations open a new one and go on, and writes in flight when it happened are stored
/// exactly once — the same books as a memory ledger given the same events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_is_reopened_and_nothing_is_stored_twice() {
    let Some(url) = database_url() else { return };
    let schema = TempSchema::new(&url, "lost");
    let separator = if url.contains('?') { '&' } else { '?' };
    let ledger_url = format!("{url}{separator}application_name={}", schema.name);
    let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let events = random_events(0x1057, 600);
    let memory = MemoryLedger::new();
    record_all(&memory, &events).await;

    let pg = Arc::new(
        PostgresLedger::connect(&ledger_url, &schema.name)
            .await
            .expect("connect"),
    );
    record_all(&*pg, &events[..100]).await;
    assert_eq!(terminate_backends(&admin, &schema.name).await, 1);
    // The first write after it finds the connection closed, reconnects and is stored.
    record_all(&*pg, &events[100..200]).await;

    // Now while writes are in flight, several times.
    let writers: Vec<_> = events[200..]
        .chunks(50)
        .map(|chunk| {
            let (pg, chunk) = (pg.clone(), chunk.to_vec());
            tokio::spawn(async move { record_all(&*pg, &chunk).await })
        })
        .collect();
    // At most three ends, so no write can lose more connections than a ledger opens again
    // for one operation.
    let mut ended = 0;
    for _ in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(15)).await;
        ended += terminate_backends(&admin, &schema.name).await;
    }
    for writer in writers {
        writer
            .await
            .expect("every write succeeds, on one connection or the next");
    }
    eprintln!("connections ended while writing: {ended}");

    let mut ids = pg.event_ids().await.expect("ids");
    ids.sort_unstable();
    assert_eq!(
        ids,
        (0..600).collect::<Vec<u64>>(),
        "each event exactly once"
    );
    assert_same(&answers(&memory).await, &answers(&*pg).await);
}

/// The ids stored in the schema, read by a new instance (its own connection), sorted.
async fn ids_from_another_instance(url: &str, schema: &str) -> Vec<u64> {
    let other = PostgresLedger::connect(url, schema)
        .await
        .expect("second instance");
    let mut ids = other.event_ids().await.expect("ids");
    ids.sort_unstable();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unpolled_records_are_stored_once() {
    let Some(url) = database_url() else { return };
    let schema = TempSchema::new(&url, "unpolled");
    let pg = PostgresLedger::connect(&url, &schema.name)
        .await
        .expect("connect");
    let events = unpolled_records_are_stored_once(&pg).await;
    assert_eq!(
        ids_from_another_instance(&url, &schema.name).await,
        sorted_ids(&events)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_records_polled_once_are_stored_once() {
    let Some(url) = database_url() else { return };
    let schema = TempSchema::new(&url, "polled_once");
    let pg = PostgresLedger::connect(&url, &schema.name)
        .await
        .expect("connect");
    let events = records_polled_once_are_stored_once(&pg).await;
    assert_eq!(
        ids_from_another_instance(&url, &schema.name).await,
        sorted_ids(&events)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_cancelled_concurrent_records_are_stored_once() {
    let Some(url) = database_url() else { return };
    let schema = TempSchema::new(&url, "cancelled");
    let pg = Arc::new(
        PostgresLedger::connect(&url, &schema.name)
            .await
            .expect("connect"),
    );
    let events = cancelled_concurrent_records_are_stored_once(pg.clone()).await;
    assert_eq!(
        ids_from_another_instance(&url, &schema.name).await,
        sorted_ids(&events)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stalled_records_block_nothing() {
    let Some(url) = database_url() else { return };
    let schema = TempSchema::new(&url, "stalled");
    let pg = PostgresLedger::connect(&url, &schema.name)
        .await
        .expect("connect");
    let events = stalled_records_block_nothing(&pg).await;
    assert_eq!(
        ids_from_another_instance(&url, &schema.name).await,
        sorted_ids(&events)
    );
}

/// A query sees every event handed over before it, without a `flush`: the reader's own
/// writes, even when their futures were dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_totals_see_unpolled_records() {
    let Some(url) = database_url() else { return };
    let schema = TempSchema::new(&url, "read_own");
    let pg = PostgresLedger::connect(&url, &schema.name)
        .await
        .expect("connect");
    let events = numbered_events(0x4ead, 0, 40);
    for e in &events {
        drop(pg.record(e.clone()));
    }
    assert_same(&memory_answers(&events).await, &answers(&pg).await);
}

/// Dropping the ledger with events handed over and never polled (no `flush`) stores them, on
/// a runtime of its own: nothing depends on a caller or a task surviving.
#[test]
fn postgres_dropped_with_unpolled_records_stores_them() {
    let Some(url) = database_url() else { return };
    let schema = TempSchema::new(&url, "drop_unpolled");
    let events = numbered_events(0xd409, 0, 50);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let pg = rt
        .block_on(PostgresLedger::connect(&url, &schema.name))
        .expect("connect");
    for e in &events {
        drop(pg.record(e.clone()));
    }
    // The runtime that drove the connection is gone before the ledger is.
    drop(rt);
    drop(pg);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    assert_eq!(
        rt.block_on(ids_from_another_instance(&url, &schema.name)),
        sorted_ids(&events)
    );
}

/// `AnyLedger` hands the event to its backend when `record` is called, not when the future is
/// first polled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_postgres_ledger_meets_the_hand_over_contract() {
    let Some(url) = database_url() else { return };
    let schema = TempSchema::new(&url, "any_unpolled");
    let ledger = AnyLedger::from(
        PostgresLedger::connect(&url, &schema.name)
            .await
            .expect("connect"),
    );
    let events = unpolled_records_are_stored_once(&ledger).await;
    assert_eq!(
        ids_from_another_instance(&url, &schema.name).await,
        sorted_ids(&events)
    );
    let schema = TempSchema::new(&url, "any_cancelled");
    let ledger = Arc::new(AnyLedger::from(
        PostgresLedger::connect(&url, &schema.name)
            .await
            .expect("connect"),
    ));
    let events = cancelled_concurrent_records_are_stored_once(ledger.clone()).await;
    assert_eq!(
        ids_from_another_instance(&url, &schema.name).await,
        sorted_ids(&events)
    );
}

/// When the server refuses a `record`'s own write, the error hands the event back and the
/// ledger never stores it later; a write whose future was dropped stays queued instead,
/// `flush` says so, and stores it once the server accepts writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_refused_write_is_handed_back_and_a_dropped_one_stays_queued() {
    let Some(url) = database_url() else { return };
    let schema = TempSchema::new(&url, "refused");
    let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let pg = PostgresLedger::connect(&url, &schema.name)
        .await
        .expect("connect");
    let events = numbered_events(0x4e5e, 0, 3);
    pg.record(events[0].clone()).await.expect("first record");
    let tags = format!("{}.usage_event_tags", schema.name);
    admin
        .batch_execute(&format!(
            "ALTER TABLE {tags} RENAME TO usage_event_tags_away"
        ))
        .await
        .expect("take the tags table away");
    let err = pg
        .record(events[1].clone())
        .await
        .expect_err("the server refuses the write");
    assert!(err.message().contains("write failed"), "{err}");
    drop(pg.record(events[2].clone()));
    let err = pg
        .flush()
        .await
        .expect_err("the dropped write is not stored yet");
    assert!(
        err.message().contains("1 usage events stay queued"),
        "{err}"
    );
    admin
        .batch_execute(&format!(
            "ALTER TABLE {}.usage_event_tags_away RENAME TO usage_event_tags",
            schema.name
        ))
        .await
        .expect("put the tags table back");
    pg.flush().await.expect("stored now");
    let mut ids = pg.event_ids().await.expect("ids");
    ids.sort_unstable();
    assert_eq!(
        ids,
        vec![0, 2],
        "the refused event was handed back, not stored"
    );
}

/// A backlog of dropped writes larger than one pipeline round: a later `record` takes some of
/// it along and returns, and `flush` stores the rest, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_backlog_of_dropped_writes_is_stored_once() {
    let Some(url) = database_url() else { return };
    let schema = TempSchema::new(&url, "backlog");
    let pg = PostgresLedger::connect(&url, &schema.name)
        .await
        .expect("connect");
    let events = numbered_events(0xb4c1, 0, 1_500);
    let (last, backlog) = events.split_last().expect("events");
    for e in backlog {
        drop(pg.record(e.clone()));
    }
    pg.record(last.clone())
        .await
        .expect("a record behind the backlog");
    pg.flush().await.expect("flush");
    assert_same(&memory_answers(&events).await, &answers(&pg).await);
    assert_eq!(
        ids_from_another_instance(&url, &schema.name).await,
        sorted_ids(&events)
    );
}

/// A TCP proxy in front of the server, which can be cut: every connection through it closed,
/// and new ones either closed at once or (a server that hangs) accepted and never answered.
struct Proxy {
    url: String,
    relays: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    /// 0: relay new connections; 1: close them; 2: hold them unanswered.
    mode: Arc<std::sync::atomic::AtomicU8>,
}

impl Proxy {
    /// A proxy to the server named in `url` (a `postgres://user@host:port/db` URL), or `None`
    /// when the URL has another form.
    async fn start(url: &str) -> Option<Proxy> {
        use std::sync::atomic::Ordering;
        let (user, rest) = url.split_once('@')?;
        let (server, path) = rest.split_once('/')?;
        let server = server.to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.ok()?;
        let addr = listener.local_addr().ok()?;
        let relays = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mode = Arc::new(std::sync::atomic::AtomicU8::new(0));
        {
            let (relays, mode) = (relays.clone(), mode.clone());
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((mut client, _)) = listener.accept().await {
                    match mode.load(Ordering::SeqCst) {
                        0 => {
                            let server = server.clone();
                            let relay = tokio::spawn(async move {
                                if let Ok(mut server) = tokio::net::TcpStream::connect(server).await
                                {
                                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server)
                                        .await;
                                }
                            });
                            relays.lock().expect("lock").push(relay.abort_handle());
                        }
                        1 => drop(client),
                        _ => held.push(client),
                    }
                }
            });
        }
        Some(Proxy {
            url: format!("{user}@{addr}/{path}"),
            relays,
            mode,
        })
    }

    /// Closes every connection through the proxy; new ones are held unanswered when `hang`,
    /// else closed at once.
    fn cut(&self, hang: bool) {
        self.mode.store(
            if hang { 2 } else { 1 },
            std::sync::atomic::Ordering::SeqCst,
        );
        for relay in self.relays.lock().expect("lock").drain(..) {
            relay.abort();
        }
    }
}

/// Drops a ledger connected through a proxy, with five writes queued, after cutting the proxy;
/// how long the drop took and the error lines it logged. Checks that nothing was stored.
fn drop_behind_a_cut_proxy(test: &str, hang: bool) -> Option<(std::time::Duration, Vec<String>)> {
    let url = database_url()?;
    let schema = TempSchema::new(&url, test);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let Some(proxy) = rt.block_on(Proxy::start(&url)) else {
        println!("skipped: DATABASE_URL is not of the form postgres://user@host:port/db");
        return None;
    };
    let pg = rt
        .block_on(PostgresLedger::connect(&proxy.url, &schema.name))
        .expect("connect through the proxy");
    for e in &numbered_events(0xdead, 0, 5) {
        drop(pg.record(e.clone()));
    }
    proxy.cut(hang);
    let captured = Captured::default();
    let started = std::time::Instant::now();
    tracing::subscriber::with_default(captured.clone(), || drop(pg));
    let waited = started.elapsed();
    assert_eq!(
        rt.block_on(ids_from_another_instance(&url, &schema.name)),
        Vec::<u64>::new()
    );
    Some((waited, captured.lines()))
}

/// Dropping a ledger whose queued writes cannot reach the server does not lose them silently:
/// an error log names how many were lost and their ids.
#[test]
fn postgres_dropped_while_the_server_is_unreachable_logs_what_it_lost() {
    let Some((waited, lines)) = drop_behind_a_cut_proxy("drop_refused", false) else {
        return;
    };
    assert!(waited < std::time::Duration::from_secs(10), "{waited:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("lost=5") && l.contains("ids=[0, 1, 2, 3, 4]")),
        "{lines:?}"
    );
}

/// Dropping a ledger whose server accepts connections and never answers waits a bounded time
/// (10 s), then logs what it could not store.
#[test]
fn postgres_dropped_while_the_server_hangs_waits_a_bounded_time() {
    let Some((waited, lines)) = drop_behind_a_cut_proxy("drop_hangs", true) else {
        return;
    };
    assert!(
        waited >= std::time::Duration::from_secs(9) && waited < std::time::Duration::from_secs(15),
        "{waited:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("lost=5") && l.contains("not stored within")),
        "{lines:?}"
    );
}
