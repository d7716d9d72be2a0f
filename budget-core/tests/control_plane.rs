//! The control plane's log in a SQLite ledger file: shared by every connection (every process)
//! on the file, gap-free, and each record names the decision it really replaced.

mod common;

use budget_core::control_plane::{
    Actor, AuditRecord, ControlChange, ControlLog, ControlState, ModelSwitch, SqliteControlLog,
};
use budget_core::ledger::{EventKind, Ledger, LedgerQuery, SqliteLedger};
use budget_core::{
    Amount, Attribution, BackendErrorKind, Limit, Money, Period, Selector, TaskId, Usage,
    UsageEvent, Window,
};
use common::TempDb;
use jiff::Timestamp;

fn at(ts: &str) -> Timestamp {
    ts.parse().unwrap()
}

fn replay(records: &[AuditRecord]) -> ControlState {
    let mut state = ControlState::default();
    for record in records {
        assert_eq!(
            state.apply(&record.change),
            record.replaced,
            "record {} names what it replaced",
            record.seq
        );
    }
    state
}

#[tokio::test]
async fn two_connections_share_one_gap_free_log() {
    let db = TempDb::new("control-shared");
    let (one, two) = (
        SqliteControlLog::open(db.path()).unwrap(),
        SqliteControlLog::open(db.path()).unwrap(),
    );
    let day = Limit::new(
        "support/day",
        Selector::agent("support"),
        Window::Calendar(Period::Day),
    )
    .tokens(500_000);
    one.append(
        ControlChange::SetLimit { limit: day.clone() },
        Actor::operator("ana"),
        at("2026-12-06T09:00:00Z"),
    )
    .await
    .unwrap();
    let seen = two.since(0).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].by, Actor::operator("ana"));
    assert_eq!(two.last_seq().await.unwrap(), 1);

    // Writers on both connections at once, all on the same two targets.
    let mut writers = Vec::new();
    for i in 0..40u32 {
        let log = if i % 2 == 0 { one.clone() } else { two.clone() };
        writers.push(tokio::spawn(async move {
            let change = match i % 4 {
                0 => ControlChange::pause("support"),
                1 => ControlChange::resume("support"),
                2 => ControlChange::SwitchModel {
                    agent: "research".into(),
                    to: ModelSwitch::Model("gpt-4o-mini".into()),
                },
                _ => ControlChange::ResetModel {
                    agent: "research".into(),
                },
            };
            log.append(change, Actor::rule("test"), at("2026-12-06T09:01:00Z"))
                .await
                .unwrap()
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let records = one.since(0).await.unwrap();
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=41).collect::<Vec<_>>(), "no gaps, no duplicates");
    assert_eq!(two.since(0).await.unwrap(), records);
    let state = replay(&records);
    assert_eq!(state.limit("support/day"), Some(&day));
    assert_eq!(one.since(40).await.unwrap(), records[40..]);
}

#[tokio::test]
async fn the_log_survives_a_reopen_and_lives_beside_the_ledger() {
    let db = TempDb::new("control-reopen");
    let ledger = SqliteLedger::open(db.path()).unwrap();
    let log = SqliteControlLog::open(db.path()).unwrap();
    let task = TaskId::new("t-9");
    log.append(
        ControlChange::KillTask { task: task.clone() },
        Actor::rule("runaway_detected"),
        at("2026-12-06T10:00:00Z"),
    )
    .await
    .unwrap();
    let event = UsageEvent {
        id: 1,
        at: at("2026-12-06T10:00:01Z"),
        attribution: Attribution::agent("support"),
        model: "gpt-4o-mini".into(),
        requested_model: None,
        usage: Usage::new(10, 5),
        cost: Money::ZERO,
        estimated: false,
        kind: EventKind::Call,
        saved: Amount::ZERO,
    };
    ledger.record(event).await.unwrap();
    drop((ledger, log));

    let log = SqliteControlLog::open(db.path()).unwrap();
    let records = log.since(0).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].at, at("2026-12-06T10:00:00Z"));
    assert!(replay(&records).is_killed(&task));
    let ledger = SqliteLedger::open(db.path()).unwrap();
    let totals = ledger.totals(&LedgerQuery::default()).await.unwrap();
    assert_eq!(
        totals[0].usage.total(),
        15,
        "the ledger's events are intact beside the log"
    );
}

#[tokio::test]
async fn an_unreadable_record_is_a_corrupt_error_naming_it() {
    let db = TempDb::new("control-corrupt");
    let log = SqliteControlLog::open(db.path()).unwrap();
    log.append(
        ControlChange::pause("support"),
        Actor::operator("ana"),
        at("2026-12-06T10:00:00Z"),
    )
    .await
    .unwrap();
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    conn.execute("UPDATE control_log SET change = '{\"op\":\"explode\"}'", [])
        .unwrap();
    let err = log.since(0).await.unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Corrupt);
    assert!(
        err.to_string()
            .contains("control record 1: its change cannot be read"),
        "{err}"
    );
    // Appending on the same target needs the last decision: refused the same way, not guessed.
    let err = log
        .append(
            ControlChange::resume("support"),
            Actor::operator("ana"),
            at("2026-12-06T10:01:00Z"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Corrupt);
}

#[test]
fn a_file_that_is_not_a_ledger_is_refused() {
    let db = TempDb::new("control-foreign");
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    conn.execute_batch("CREATE TABLE other (x INTEGER);")
        .unwrap();
    drop(conn);
    let err = SqliteControlLog::open(db.path()).unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Corrupt);
    assert!(
        err.to_string().contains("not a token-budget ledger"),
        "{err}"
    );
}

#[tokio::test]
async fn a_ledger_file_from_before_the_control_log_is_brought_up_to_date() {
    let db = TempDb::new("control-upgrade");
    drop(SqliteLedger::open(db.path()).unwrap());
    // What a schema-1 file looks like: the same, without the control log.
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    conn.execute_batch("DROP TABLE control_log; PRAGMA user_version = 1;")
        .unwrap();
    drop(conn);

    let log = SqliteControlLog::open(db.path()).unwrap();
    log.append(
        ControlChange::pause("support"),
        Actor::operator("ana"),
        at("2026-12-06T10:00:00Z"),
    )
    .await
    .unwrap();
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, budget_core::ledger::SQLITE_SCHEMA_VERSION);
    assert_eq!(version, 2);
}
