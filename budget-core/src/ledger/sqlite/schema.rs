//! The ledger file: opened in WAL mode, recognised by its application id, and brought to this
//! build's schema version.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::Durability;
use super::error::sql_error;
use crate::backend_error::BackendErrorKind;
use crate::ledger::LedgerError;
use crate::ledger::sql::{check_schema_version, error, event_indexes};

/// `PRAGMA application_id` of a token-budget ledger file ("TBLG").
const APPLICATION_ID: i32 = 0x5442_4c47;

/// Migrations, in order: `MIGRATIONS[i]` brings a file from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    concat!(
        r"
CREATE TABLE usage_events (
    seq             INTEGER PRIMARY KEY,
    id              INTEGER NOT NULL,
    at_ns           INTEGER NOT NULL,
    agent           TEXT    NOT NULL,
    task            TEXT,
    step            INTEGER,
    user_name       TEXT,
    session         TEXT,
    critical        INTEGER NOT NULL,
    model           TEXT    NOT NULL,
    requested_model TEXT,
    input           INTEGER NOT NULL,
    cached_input    INTEGER NOT NULL,
    cache_write     INTEGER NOT NULL,
    output          INTEGER NOT NULL,
    reasoning       INTEGER NOT NULL,
    cost_nano       INTEGER NOT NULL,
    cost_rem        INTEGER NOT NULL,
    estimated       INTEGER NOT NULL,
    kind            TEXT    NOT NULL,
    saved_tokens    INTEGER NOT NULL,
    saved_nano      INTEGER NOT NULL,
    saved_rem       INTEGER NOT NULL
);
CREATE TABLE usage_event_tags (
    seq       INTEGER NOT NULL REFERENCES usage_events(seq),
    tag_key   TEXT    NOT NULL,
    tag_value TEXT    NOT NULL,
    PRIMARY KEY (seq, tag_key)
) WITHOUT ROWID;
",
        event_indexes!()
    ),
    // 2: the control plane's log (see `control_plane`), beside the events it governs.
    r"
CREATE TABLE control_log (
    seq           INTEGER PRIMARY KEY,
    at_ns         INTEGER NOT NULL,
    target        TEXT    NOT NULL,
    actor         TEXT    NOT NULL,
    change        TEXT    NOT NULL,
    replaced      TEXT
);
CREATE INDEX control_log_target ON control_log(target, seq);
",
];

/// The schema version this build writes and reads.
pub const SQLITE_SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub(super) fn connect(
    path: &Path,
    name: &str,
    durability: Durability,
) -> Result<Connection, LedgerError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql_error(name, "cannot open", e))?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(|e| sql_error(name, "cannot set the busy timeout", e))?;
    // The first read of the file: a file that is not SQLite fails here.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| sql_error(name, "cannot switch to WAL mode", e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(error(
            BackendErrorKind::Refused,
            name,
            format!("cannot switch to WAL mode (journal mode is {mode})"),
        ));
    }
    let sync = match durability {
        Durability::Durable => "FULL",
        Durability::Buffered { .. } => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON;"
    ))
    .map_err(|e| sql_error(name, "cannot set the synchronous mode", e))?;
    Ok(conn)
}

pub(super) fn migrate(conn: &mut Connection, name: &str) -> Result<(), LedgerError> {
    let pragma = |conn: &Connection, p: &str| -> Result<i64, LedgerError> {
        conn.query_row(&format!("PRAGMA {p}"), [], |r| r.get(0))
            .map_err(|e| sql_error(name, &format!("cannot read {p}"), e))
    };
    let version = pragma(conn, "user_version")?;
    let app = pragma(conn, "application_id")?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(|e| sql_error(name, "cannot read the schema", e))?;
    if app != i64::from(APPLICATION_ID) && (tables > 0 || version != 0) {
        return Err(error(
            BackendErrorKind::Corrupt,
            name,
            format!(
                "not a token-budget ledger: the database holds another schema \
                 (application_id {app:#x}, user_version {version}, {tables} schema objects)"
            ),
        ));
    }
    check_schema_version(name, version, SQLITE_SCHEMA_VERSION, "")?;
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let to = from + 1;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| sql_error(name, "cannot start a migration", e))?;
        // Another process may have migrated meanwhile.
        let now = pragma(&tx, "user_version")?;
        if now >= to as i64 {
            continue;
        }
        tx.execute_batch(sql)
            .and_then(|()| {
                tx.execute_batch(&format!(
                    "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {to};"
                ))
            })
            .and_then(|()| tx.commit())
            .map_err(|e| sql_error(name, &format!("migration to schema version {to} failed"), e))?;
    }
    Ok(())
}
