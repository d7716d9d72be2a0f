//! The SQLite ledger: the same answers as the memory ledger, durability across restarts and
//! crashes, typed errors on bad files, group commit under concurrency, buffered mode.
#![cfg(feature = "sqlite")]

use std::io::BufRead;
use std::sync::Arc;
use std::time::Duration;

use budget_core::ledger::{
    AnyLedger, Dimension, Durability, GroupTotal, Ledger, LedgerQuery, SqliteLedger, SqliteOptions,
    UsageEvent,
};
use budget_core::{Attribution, MemoryLedger, Money, Period};

mod common;
use common::TempDb;

/// xorshift64*: reproducible random events.
mod ledger_suite;
use ledger_suite::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_answers_like_memory_and_survives_restart() {
    let db = TempDb::new("same");
    let events = random_events(0x5eed, 400);
    let memory = MemoryLedger::new();
    record_all(&memory, &events).await;
    let expected = answers(&memory).await;
    // Sanity: the queries are not trivially empty.
    assert!(expected[0][0].events == 400);
    assert!(expected.iter().filter(|a| a.len() > 3).count() > 10);

    let sqlite = SqliteLedger::open(db.path()).expect("open");
    record_all(&sqlite, &events).await;
    assert_same(&expected, &answers(&sqlite).await);
    drop(sqlite);

    let reopened = SqliteLedger::open(db.path()).expect("reopen");
    assert_same(&expected, &answers(&reopened).await);
    let mut ids = reopened.event_ids().await.expect("ids");
    ids.sort_unstable();
    assert_eq!(ids, (0..400).collect::<Vec<u64>>());
}

#[tokio::test]
async fn empty_ledger_has_no_groups() {
    let db = TempDb::new("empty");
    let sqlite = SqliteLedger::open(db.path()).expect("open");
    assert_eq!(
        sqlite
            .totals(&LedgerQuery::default())
            .await
            .expect("totals"),
        vec![]
    );
    assert_eq!(
        sqlite
            .totals(&LedgerQuery::group_by([Dimension::Bucket(Period::Day)]))
            .await
            .expect("totals"),
        vec![]
    );
}

#[test]
fn random_bytes_are_a_typed_error() {
    let db = TempDb::new("corrupt");
    let mut rng = common::Rng::new(42);
    let bytes: Vec<u8> = (0..8192).map(|_| rng.next() as u8).collect();
    std::fs::write(db.path(), bytes).expect("write");
    let err = SqliteLedger::open(db.path()).expect_err("not a database");
    assert_eq!(err.ledger(), db.path().display().to_string());
    assert!(err.message().contains("not a SQLite database"), "{err}");
}

#[test]
fn foreign_schema_is_a_typed_error() {
    let db = TempDb::new("foreign");
    {
        let conn = rusqlite::Connection::open(db.path()).expect("sqlite");
        conn.execute_batch("CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT);")
            .expect("create");
    }
    let err = SqliteLedger::open(db.path()).expect_err("foreign");
    assert!(err.message().contains("not a token-budget ledger"), "{err}");
    assert!(err.to_string().contains(&db.path().display().to_string()));
}

#[test]
fn newer_schema_version_is_a_typed_error() {
    let db = TempDb::new("newer");
    drop(SqliteLedger::open(db.path()).expect("create"));
    {
        let conn = rusqlite::Connection::open(db.path()).expect("sqlite");
        conn.execute_batch("PRAGMA user_version = 99;")
            .expect("bump");
    }
    let err = SqliteLedger::open(db.path()).expect_err("newer");
    assert!(err.message().contains("newer"), "{err}");
    assert!(err.message().contains("99"), "{err}");
}

#[test]
fn out_of_range_events_are_refused_not_stored() {
    let db = TempDb::new("range");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("rt");
    rt.block_on(async {
        let sqlite = SqliteLedger::open(db.path()).expect("open");
        let mut event = random_events(7, 1).remove(0);
        event.cost = Money::MAX;
        let err = sqlite.record(event.clone()).await.expect_err("too large");
        assert!(err.message().contains("cost"), "{err}");
        event.cost = Money::from_cents(1);
        event.usage.input = u64::MAX;
        sqlite
            .record(event.clone())
            .await
            .expect_err("too many tokens");
        event.usage.input = 1;
        sqlite
            .record(event)
            .await
            .expect("a valid event still records");
        let total = sqlite
            .totals(&LedgerQuery::default())
            .await
            .expect("totals");
        assert_eq!(total[0].events, 1);
        assert_eq!(total[0].cost, Money::from_cents(1));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_recorders_are_all_durable() {
    let db = TempDb::new("concurrent");
    let ledger = Arc::new(SqliteLedger::open(db.path()).expect("open"));
    record_concurrently(ledger.clone(), 500).await;
    let check = |total: &[GroupTotal]| assert_concurrent_totals(total, 4000);
    check(
        &ledger
            .totals(&LedgerQuery::default())
            .await
            .expect("totals"),
    );
    drop(ledger);
    let reopened = SqliteLedger::open(db.path()).expect("reopen");
    check(
        &reopened
            .totals(&LedgerQuery::default())
            .await
            .expect("totals"),
    );
    let mut ids = reopened.event_ids().await.expect("ids");
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 4000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_mode_records_on_flush_and_on_close() {
    let db = TempDb::new("buffered");
    let events = random_events(3, 300);
    let options = SqliteOptions {
        durability: Durability::Buffered {
            max_delay: Duration::from_millis(20),
        },
        ..SqliteOptions::default()
    };
    let ledger = SqliteLedger::open_with(db.path(), options).expect("open");
    record_all(&ledger, &events[..200]).await;
    ledger.flush().await.expect("flush");
    let total = ledger
        .totals(&LedgerQuery::default())
        .await
        .expect("totals");
    assert_eq!(total[0].events, 200);
    record_all(&ledger, &events[200..]).await;
    drop(ledger); // closing commits what is queued

    let memory = MemoryLedger::new();
    record_all(&memory, &events).await;
    let reopened = SqliteLedger::open(db.path()).expect("reopen");
    assert_same(&answers(&memory).await, &answers(&reopened).await);
}

const CHILD_ENV: &str = "TOKEN_BUDGET_CRASH_CHILD_DB";

/// Not a test on its own: when `CHILD_ENV` is set, this is the child process of
/// [`killed_writer_loses_no_returned_commit`], recording under load until it is killed.
#[test]
fn crash_child_writer() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async move {
        let ledger = Arc::new(SqliteLedger::open(&path).expect("open"));
        let template = random_events(11, 1).remove(0);
        let mut tasks = Vec::new();
        for t in 0..4u64 {
            let ledger = ledger.clone();
            let template = template.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let mut e = template.clone();
                    e.id = t * 1_000_000_000 + i;
                    ledger.record(e).await.expect("record");
                    println!("committed {}", t * 1_000_000_000 + i);
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

#[test]
fn killed_writer_loses_no_returned_commit() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let db = TempDb::new("crash");
    let exe = std::env::current_exe().expect("test binary");
    let mut child = std::process::Command::new(exe)
        .args([
            "--exact",
            "crash_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, db.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let mut committed = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(id) = line.strip_prefix("committed ") {
            committed.push(id.parse::<u64>().expect("id"));
            if committed.len() >= 2_000 {
                break;
            }
        }
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert!(committed.len() >= 2_000, "the child stopped early");

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("rt");
    let stored = rt.block_on(async {
        let ledger = SqliteLedger::open(db.path()).expect("reopen after crash");
        ledger.event_ids().await.expect("ids")
    });
    let stored: std::collections::HashSet<u64> = stored.into_iter().collect();
    let missing: Vec<_> = committed.iter().filter(|id| !stored.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} returned commits lost: {missing:?}",
        missing.len()
    );
}

#[tokio::test]
async fn a_failed_writer_refuses_every_later_record() {
    let db = TempDb::new("failed");
    let ledger = SqliteLedger::open(db.path()).expect("open");
    let event = random_events(5, 1).remove(0);
    let tagged = UsageEvent {
        attribution: event.attribution.clone().with_tag("team", "search"),
        ..event.clone()
    };
    ledger.record(tagged.clone()).await.expect("first record");
    {
        // Sabotage the schema from outside: the next tagged insert fails.
        let conn = rusqlite::Connection::open(db.path()).expect("sqlite");
        conn.execute_batch("DROP TABLE usage_event_tags;")
            .expect("drop");
    }
    let err = ledger.record(tagged).await.expect_err("write fails");
    assert!(err.message().contains("write failed"), "{err}");
    assert_eq!(err.ledger(), db.path().display().to_string());
    // Later records are refused too, even ones that would have fit.
    let untagged = UsageEvent {
        attribution: Attribution::agent("planner"),
        ..event
    };
    ledger.record(untagged).await.expect_err("writer failed");
    ledger.flush().await.expect_err("writer failed");
}

/// The SQLite ledgers the hand-over tests run on: durable, buffered, and durable with a queue of
/// one (so that writers outrun the writer thread and find the queue full).
fn hand_over_modes() -> Vec<(&'static str, SqliteOptions)> {
    vec![
        ("durable", SqliteOptions::default()),
        (
            "buffered",
            SqliteOptions {
                durability: Durability::Buffered {
                    max_delay: Duration::from_millis(5),
                },
                ..SqliteOptions::default()
            },
        ),
        (
            "durable, queue of one",
            SqliteOptions {
                queue_capacity: 1,
                max_batch: 8,
                ..SqliteOptions::default()
            },
        ),
    ]
}

/// The ids stored in the file at `path`, read by a new instance, sorted.
async fn ids_after_reopen(path: &std::path::Path) -> Vec<u64> {
    let reopened = SqliteLedger::open(path).expect("reopen");
    let mut ids = reopened.event_ids().await.expect("ids");
    ids.sort_unstable();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_meets_the_hand_over_contract() {
    let check = |ledger: &MemoryLedger, events: &[UsageEvent]| {
        let mut ids: Vec<u64> = ledger.events().iter().map(|e| e.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, sorted_ids(events));
    };
    let ledger = MemoryLedger::new();
    let events = unpolled_records_are_stored_once(&ledger).await;
    check(&ledger, &events);
    let ledger = MemoryLedger::new();
    let events = records_polled_once_are_stored_once(&ledger).await;
    check(&ledger, &events);
    let ledger = Arc::new(MemoryLedger::new());
    let events = cancelled_concurrent_records_are_stored_once(ledger.clone()).await;
    check(&ledger, &events);
    let ledger = MemoryLedger::new();
    let events = stalled_records_block_nothing(&ledger).await;
    check(&ledger, &events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_stalled_records_block_nothing() {
    for (mode, options) in hand_over_modes() {
        eprintln!("mode: {mode}");
        let db = TempDb::new("stalled");
        let ledger = SqliteLedger::open_with(db.path(), options).expect("open");
        let events = stalled_records_block_nothing(&ledger).await;
        drop(ledger);
        assert_eq!(
            ids_after_reopen(db.path()).await,
            sorted_ids(&events),
            "{mode}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_unpolled_records_are_stored_once() {
    for (mode, options) in hand_over_modes() {
        eprintln!("mode: {mode}");
        let db = TempDb::new("unpolled");
        let ledger = SqliteLedger::open_with(db.path(), options).expect("open");
        let events = unpolled_records_are_stored_once(&ledger).await;
        drop(ledger);
        assert_eq!(
            ids_after_reopen(db.path()).await,
            sorted_ids(&events),
            "{mode}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_records_polled_once_are_stored_once() {
    for (mode, options) in hand_over_modes() {
        eprintln!("mode: {mode}");
        let db = TempDb::new("polled-once");
        let ledger = SqliteLedger::open_with(db.path(), options).expect("open");
        let events = records_polled_once_are_stored_once(&ledger).await;
        drop(ledger);
        assert_eq!(
            ids_after_reopen(db.path()).await,
            sorted_ids(&events),
            "{mode}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_cancelled_concurrent_records_are_stored_once() {
    for (mode, options) in hand_over_modes() {
        eprintln!("mode: {mode}");
        let db = TempDb::new("cancelled");
        let ledger = Arc::new(SqliteLedger::open_with(db.path(), options).expect("open"));
        let events = cancelled_concurrent_records_are_stored_once(ledger.clone()).await;
        drop(ledger);
        assert_eq!(
            ids_after_reopen(db.path()).await,
            sorted_ids(&events),
            "{mode}"
        );
    }
}

/// Dropping the ledger right after handing events over (no `flush`, futures never polled)
/// commits them: nothing depends on a caller or a task surviving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_dropped_with_unpolled_records_commits_them() {
    for (mode, options) in hand_over_modes() {
        let db = TempDb::new("drop-unpolled");
        let ledger = SqliteLedger::open_with(db.path(), options).expect("open");
        let events = numbered_events(0xd409, 0, 50);
        for e in &events {
            drop(ledger.record(e.clone()));
        }
        drop(ledger);
        assert_eq!(
            ids_after_reopen(db.path()).await,
            sorted_ids(&events),
            "{mode}"
        );
    }
}

/// `AnyLedger` hands the event to its backend when `record` is called, not when the future is
/// first polled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_sqlite_ledger_meets_the_hand_over_contract() {
    let db = TempDb::new("any-unpolled");
    let ledger = AnyLedger::from(SqliteLedger::open(db.path()).expect("open"));
    let events = unpolled_records_are_stored_once(&ledger).await;
    drop(ledger);
    assert_eq!(ids_after_reopen(db.path()).await, sorted_ids(&events));

    let db = TempDb::new("any-cancelled");
    let ledger = Arc::new(AnyLedger::from(
        SqliteLedger::open(db.path()).expect("open"),
    ));
    let events = cancelled_concurrent_records_are_stored_once(ledger.clone()).await;
    drop(ledger);
    assert_eq!(ids_after_reopen(db.path()).await, sorted_ids(&events));
}

/// Sabotages the file from outside (its tags table dropped) once one tagged event is stored:
/// the next tagged write fails, and the ledger accepts no more.
async fn a_ledger_whose_writes_fail(db: &TempDb) -> (SqliteLedger, UsageEvent) {
    let ledger = SqliteLedger::open(db.path()).expect("open");
    let event = random_events(5, 1).remove(0);
    let tagged = UsageEvent {
        attribution: event.attribution.clone().with_tag("team", "search"),
        ..event
    };
    ledger.record(tagged.clone()).await.expect("first record");
    let conn = rusqlite::Connection::open(db.path()).expect("sqlite");
    conn.execute_batch("DROP TABLE usage_event_tags;")
        .expect("drop");
    (ledger, tagged)
}

/// A record refused at hand-over (the writer has failed) whose future is dropped unread is
/// logged, not lost without a word.
#[tokio::test]
async fn sqlite_a_refusal_nobody_reads_is_logged() {
    let db = TempDb::new("refusal-log");
    let (ledger, tagged) = a_ledger_whose_writes_fail(&db).await;
    ledger
        .record(tagged.clone())
        .await
        .expect_err("write fails");
    let captured = Captured::default();
    tracing::subscriber::with_default(captured.clone(), || {
        drop(ledger.record(UsageEvent { id: 77, ..tagged }));
    });
    let lines = captured.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("event=77") && l.contains("refused")),
        "{lines:?}"
    );
}

/// A write that fails when its `record` future is already dropped is logged (by the writer
/// thread with the count of events nobody will hear about, or by the dropped future when the
/// answer came first), not lost without a word.
#[tokio::test]
async fn sqlite_a_failed_write_nobody_awaits_is_logged() {
    let captured = Captured::default();
    // The writer thread logs: only a global subscriber sees it (the only one in this binary).
    tracing::subscriber::set_global_default(captured.clone()).expect("global subscriber");
    let db = TempDb::new("failed-log");
    let (ledger, tagged) = a_ledger_whose_writes_fail(&db).await;
    drop(ledger.record(UsageEvent { id: 88, ..tagged }));
    ledger.flush().await.expect_err("the write failed");
    let name = db.path().display().to_string();
    // The writer logs the count when the future was gone before its answer; the future logs
    // the event when it was dropped between the answer and reading it.
    let logged = || {
        captured
            .lines()
            .iter()
            .any(|l| l.contains(&name) && (l.contains("lost=1") || l.contains("event=88")))
    };
    // The writer logs after answering the flush.
    for _ in 0..500 {
        if logged() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(logged(), "{:?}", captured.lines());
}
