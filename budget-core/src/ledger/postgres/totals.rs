//! Totals: the shared SQL run on PostgreSQL, its rows folded by the shared folder.

use tokio_postgres::types::ToSql;

use super::PostgresLedger;
use super::connection::MAX_RECONNECTS;
use super::error::pg_error;
use crate::ledger::sql::{Dialect, Folder, Param, SqlRow, TotalsSql, totals_sql};
use crate::ledger::{GroupTotal, LedgerError, LedgerQuery};

/// A parameter as tokio-postgres binds it.
fn as_sql(param: &Param) -> &(dyn ToSql + Sync) {
    match param {
        Param::Int(i) => i,
        Param::Text(t) => t,
    }
}

impl PostgresLedger {
    /// Runs the query with bucket times truncated to `granularity` nanoseconds. `None` when a
    /// truncated time group spans two buckets (the caller retries with a finer granularity).
    pub(super) async fn totals_at(
        &self,
        query: &LedgerQuery,
        granularity: Option<i64>,
    ) -> Result<Option<Vec<GroupTotal>>, LedgerError> {
        let name = self.name.as_str();
        let TotalsSql {
            sql,
            params,
            group_columns,
        } = totals_sql(Dialect::Postgres, query, granularity);
        let sql_params: Vec<&(dyn ToSql + Sync)> = params.iter().map(as_sql).collect();
        let rows = with_client!(self, "query failed", |client| client
            .query(&sql, &sql_params))?;
        let mut folder = Folder::new(name, query, group_columns, granularity.is_some());
        for row in &rows {
            if !folder.add(&PgRow { row, name })? {
                return Ok(None);
            }
        }
        Ok(Some(folder.finish()))
    }
}

/// A result row as the shared folding reads it.
struct PgRow<'a> {
    row: &'a tokio_postgres::Row,
    name: &'a str,
}

impl SqlRow for PgRow<'_> {
    fn int(&self, col: usize) -> Result<Option<i64>, LedgerError> {
        self.row
            .try_get(col)
            .map_err(|e| pg_error(self.name, "query failed", e))
    }

    fn text(&self, col: usize) -> Result<Option<String>, LedgerError> {
        self.row
            .try_get(col)
            .map_err(|e| pg_error(self.name, "query failed", e))
    }
}
