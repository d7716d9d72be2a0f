//! The control plane's log in the ledger's file: table `control_log`, one row per decision.
//!
//! Every process on the file appends and reads through its own connection. An append runs in
//! an immediate (write-locked) transaction that reads the last decision on its target and
//! inserts the new one, so concurrent writers get gap-free sequence numbers and each record
//! names the decision it really replaced.

use std::path::Path;
use std::sync::Arc;

use jiff::Timestamp;
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::Durability;
use super::error::sql_error;
use super::schema::{connect, migrate};
use crate::backend_error::BackendErrorKind;
use crate::control_plane::codec::{NewRecord, StoredRecord, replaced, to_json};
use crate::control_plane::{Actor, AuditRecord, ControlChange, ControlLog};
use crate::ledger::LedgerError;
use crate::ledger::sql::error;

/// A [`ControlLog`] in a SQLite ledger file (created, or brought to this build's schema, on
/// open). Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct SqliteControlLog {
    name: Arc<str>,
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteControlLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteControlLog")
            .field("file", &self.name)
            .finish_non_exhaustive()
    }
}

impl SqliteControlLog {
    /// Opens the control log of the ledger file at `path` (creating the file if needed).
    ///
    /// Errors, never panics, when the file is not a SQLite database, holds another
    /// application's tables, or was written by a newer schema.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteControlLog, LedgerError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let mut conn = connect(path, &name, Durability::Durable)?;
        migrate(&mut conn, &name)?;
        Ok(SqliteControlLog {
            name: name.into(),
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// The sequence number of the last decision (0 for none): what a watcher compares.
    pub async fn last_seq(&self) -> Result<u64, LedgerError> {
        self.blocking(|conn, name| {
            conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM control_log", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|seq| u64::try_from(seq).unwrap_or(0))
            .map_err(|e| sql_error(name, "cannot read the control log", e))
        })
        .await
    }

    /// Runs `work` on the connection off the async runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection, &str) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let (conn, name) = (self.conn.clone(), self.name.clone());
        let closed = name.clone();
        tokio::task::spawn_blocking(move || work(&mut conn.lock(), &name))
            .await
            .map_err(|e| {
                error(
                    BackendErrorKind::Closed,
                    &closed,
                    format!("the control log's worker stopped: {e}"),
                )
            })?
    }
}

impl ControlLog for SqliteControlLog {
    async fn append(
        &self,
        change: ControlChange,
        by: Actor,
        at: Timestamp,
    ) -> Result<AuditRecord, LedgerError> {
        self.blocking(move |conn, name| {
            let fail = |what: &str| {
                let what = what.to_string();
                move |e| sql_error(name, &what, e)
            };
            let new = NewRecord::encode(name, &change, &by, at)?;
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(fail("cannot start a control-log write"))?;
            let last: Option<(i64, String)> = tx
                .query_row(
                    "SELECT seq, change FROM control_log WHERE target = ?1 \
                     ORDER BY seq DESC LIMIT 1",
                    params![new.target],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(fail("cannot read the control log"))?;
            let replaced = replaced(name, last.as_ref().map(|(seq, text)| (*seq, text.as_str())))?;
            let replaced_json = replaced.as_ref().map(|r| to_json(name, r)).transpose()?;
            tx.execute(
                "INSERT INTO control_log (at_ns, target, actor, change, replaced) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![new.at_ns, new.target, new.actor, new.change, replaced_json],
            )
            .map_err(fail("cannot append to the control log"))?;
            let seq = tx.last_insert_rowid();
            tx.commit()
                .map_err(fail("cannot commit a control-log write"))?;
            Ok(AuditRecord {
                seq: u64::try_from(seq).unwrap_or(0),
                at,
                by,
                change,
                replaced,
            })
        })
        .await
    }

    async fn since(&self, seq: u64) -> Result<Vec<AuditRecord>, LedgerError> {
        let after = i64::try_from(seq).unwrap_or(i64::MAX);
        self.blocking(move |conn, name| {
            let fail = |e| sql_error(name, "cannot read the control log", e);
            let mut query = conn
                .prepare_cached(
                    "SELECT seq, at_ns, actor, change, replaced FROM control_log \
                     WHERE seq > ?1 ORDER BY seq",
                )
                .map_err(fail)?;
            let rows = query
                .query_map(params![after], |r| {
                    Ok(StoredRecord {
                        seq: r.get(0)?,
                        at_ns: r.get(1)?,
                        actor: r.get(2)?,
                        change: r.get(3)?,
                        replaced: r.get(4)?,
                    })
                })
                .map_err(fail)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row.map_err(fail)?.decode(name)?);
            }
            Ok(out)
        })
        .await
    }
}
