//! The reader thread: totals and event ids, on a connection of its own.

use rusqlite::Connection;
use rusqlite::types::Value;
use tokio::sync::oneshot;

use super::error::sql_error;
use crate::ledger::sql::{Dialect, Folder, HOUR_NS, Param, SqlRow, TotalsSql, totals_sql};
use crate::ledger::{Dimension, GroupTotal, LedgerError, LedgerQuery};

#[derive(Debug)]
pub(super) enum ReadMsg {
    Totals(
        LedgerQuery,
        oneshot::Sender<Result<Vec<GroupTotal>, LedgerError>>,
    ),
    Ids(oneshot::Sender<Result<Vec<u64>, LedgerError>>),
}

pub(super) fn read_loop(conn: &Connection, rx: &std::sync::mpsc::Receiver<ReadMsg>, name: &str) {
    while let Ok(msg) = rx.recv() {
        match msg {
            ReadMsg::Totals(query, reply) => {
                let _ = reply.send(totals(conn, &query, name));
            }
            ReadMsg::Ids(reply) => {
                let ids = (|| {
                    let mut stmt =
                        conn.prepare_cached("SELECT id FROM usage_events ORDER BY seq")?;
                    let ids = stmt
                        .query_map([], |r| r.get::<_, i64>(0))?
                        .map(|r| r.map(|id| id as u64))
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(ids)
                })()
                .map_err(|e: rusqlite::Error| sql_error(name, "cannot read event ids", e));
                let _ = reply.send(ids);
            }
        }
    }
}

fn totals(
    conn: &Connection,
    query: &LedgerQuery,
    name: &str,
) -> Result<Vec<GroupTotal>, LedgerError> {
    let has_bucket = query
        .group_by
        .iter()
        .any(|d| matches!(d, Dimension::Bucket(_)));
    if has_bucket {
        match totals_at(conn, query, Some(HOUR_NS), name)? {
            Some(groups) => Ok(groups),
            // Some hour straddles a bucket boundary: group by the exact time instead.
            None => Ok(totals_at(conn, query, Some(1), name)?.unwrap_or_default()),
        }
    } else {
        Ok(totals_at(conn, query, None, name)?.unwrap_or_default())
    }
}

/// Runs the query with bucket times truncated to `granularity` nanoseconds. `None` when a
/// truncated time group spans two buckets (the caller retries with a finer granularity).
fn totals_at(
    conn: &Connection,
    query: &LedgerQuery,
    granularity: Option<i64>,
    name: &str,
) -> Result<Option<Vec<GroupTotal>>, LedgerError> {
    let TotalsSql {
        sql,
        params,
        group_columns,
    } = totals_sql(Dialect::Sqlite, query, granularity);
    let params = params.into_iter().map(|p| match p {
        Param::Int(i) => Value::Integer(i),
        Param::Text(t) => Value::Text(t),
    });
    let read = |e: rusqlite::Error| sql_error(name, "query failed", e);
    let mut stmt = conn.prepare(&sql).map_err(read)?;
    let mut rows = stmt
        .query(rusqlite::params_from_iter(params))
        .map_err(read)?;
    let mut folder = Folder::new(name, query, group_columns, granularity.is_some());
    while let Some(row) = rows.next().map_err(read)? {
        if !folder.add(&SqliteRow { row, name })? {
            return Ok(None);
        }
    }
    Ok(Some(folder.finish()))
}

/// A result row as the shared folding reads it.
struct SqliteRow<'a, 'r> {
    row: &'a rusqlite::Row<'r>,
    name: &'a str,
}

impl SqlRow for SqliteRow<'_, '_> {
    fn int(&self, col: usize) -> Result<Option<i64>, LedgerError> {
        self.row
            .get(col)
            .map_err(|e| sql_error(self.name, "query failed", e))
    }

    fn text(&self, col: usize) -> Result<Option<String>, LedgerError> {
        self.row
            .get(col)
            .map_err(|e| sql_error(self.name, "query failed", e))
    }
}
