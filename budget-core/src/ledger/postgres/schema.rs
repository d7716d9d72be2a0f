//! The ledger's tables in its PostgreSQL schema, their version, and the migrations that bring
//! an older schema up to date.

use tokio_postgres::Client;

use super::error::pg_error;
use crate::backend_error::BackendErrorKind;
use crate::ledger::LedgerError;
use crate::ledger::sql::{check_schema_version, error, event_indexes};

/// The table holding the schema version, in the ledger's PostgreSQL schema.
pub(super) const VERSION_TABLE: &str = "token_budget_schema_version";

/// Migrations, in order: `MIGRATIONS[i]` brings a schema from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    concat!(
        r"
CREATE TABLE usage_events (
    seq             BIGSERIAL PRIMARY KEY,
    id              BIGINT  NOT NULL,
    at_ns           BIGINT  NOT NULL,
    agent           TEXT    NOT NULL,
    task            TEXT,
    step            BIGINT,
    user_name       TEXT,
    session         TEXT,
    critical        BOOLEAN NOT NULL,
    model           TEXT    NOT NULL,
    requested_model TEXT,
    input           BIGINT  NOT NULL,
    cached_input    BIGINT  NOT NULL,
    cache_write     BIGINT  NOT NULL,
    output          BIGINT  NOT NULL,
    reasoning       BIGINT  NOT NULL,
    cost_nano       BIGINT  NOT NULL,
    cost_rem        BIGINT  NOT NULL,
    estimated       BOOLEAN NOT NULL,
    kind            TEXT    NOT NULL,
    saved_tokens    BIGINT  NOT NULL,
    saved_nano      BIGINT  NOT NULL,
    saved_rem       BIGINT  NOT NULL
);
CREATE TABLE usage_event_tags (
    seq       BIGINT NOT NULL REFERENCES usage_events(seq),
    tag_key   TEXT   NOT NULL,
    tag_value TEXT   NOT NULL,
    PRIMARY KEY (seq, tag_key)
);
",
        event_indexes!()
    ),
    r"
ALTER TABLE usage_events ADD COLUMN writer BIGINT, ADD COLUMN write_seq BIGINT;
CREATE UNIQUE INDEX usage_events_write ON usage_events(writer, write_seq);
CREATE SEQUENCE ledger_writers;
",
    // 3: the control plane's log (see `control_plane`), beside the events it governs.
    r"
CREATE TABLE control_log (
    seq      BIGINT PRIMARY KEY,
    at_ns    BIGINT NOT NULL,
    target   TEXT   NOT NULL,
    actor    TEXT   NOT NULL,
    change   TEXT   NOT NULL,
    replaced TEXT
);
CREATE INDEX control_log_target ON control_log(target, seq);
",
];

/// The schema version this build writes and reads.
pub const POSTGRES_SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub(super) async fn migrate(client: &mut Client, name: &str, ns: &str) -> Result<(), LedgerError> {
    let fail = |what: &str| {
        let what = what.to_owned();
        move |e: tokio_postgres::Error| pg_error(name, &what, e)
    };
    let tx = client
        .transaction()
        .await
        .map_err(fail("cannot start a migration"))?;
    match migrate_in(&tx, name, ns).await {
        Ok(()) => tx.commit().await.map_err(fail("migration failed"))?,
        Err(e) => {
            // Release the locks now, not whenever the connection task next runs.
            let _ = tx.rollback().await;
            return Err(e);
        }
    }
    client
        .batch_execute(&format!("SET search_path TO {ns}"))
        .await
        .map_err(fail("cannot set the search path"))?;
    Ok(())
}

async fn migrate_in(
    tx: &tokio_postgres::Transaction<'_>,
    name: &str,
    ns: &str,
) -> Result<(), LedgerError> {
    let fail = |what: &str| {
        let what = what.to_owned();
        move |e: tokio_postgres::Error| pg_error(name, &what, e)
    };
    // Serialise instances migrating the same namespace.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('token-budget-ledger:' || $1::text))",
        &[&ns],
    )
    .await
    .map_err(fail("cannot take the migration lock"))?;
    let tables: i64 = tx
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
            &[&ns],
        )
        .await
        .and_then(|r| r.try_get(0))
        .map_err(fail("cannot read the schema"))?;
    let has_version: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
             WHERE table_schema = $1 AND table_name = $2)",
            &[&ns, &VERSION_TABLE],
        )
        .await
        .and_then(|r| r.try_get(0))
        .map_err(fail("cannot read the schema"))?;
    if tables > 0 && !has_version {
        return Err(error(
            BackendErrorKind::Corrupt,
            name,
            format!(
                "not a token-budget ledger: schema {ns} holds {tables} other tables and no \
                 {VERSION_TABLE} table"
            ),
        ));
    }
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {ns}; SET LOCAL search_path TO {ns}; \
         CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version BIGINT NOT NULL);"
    ))
    .await
    .map_err(fail("cannot create the schema"))?;
    let version: i64 = tx
        .query_one(
            &format!("SELECT COALESCE(MAX(version), 0) FROM {VERSION_TABLE}"),
            &[],
        )
        .await
        .and_then(|r| r.try_get(0))
        .map_err(fail("cannot read the schema version"))?;
    check_schema_version(
        name,
        version,
        POSTGRES_SCHEMA_VERSION,
        &format!(" (schema {ns})"),
    )?;
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let to = from as i64 + 1;
        tx.batch_execute(sql)
            .await
            .map_err(fail(&format!("migration to schema version {to} failed")))?;
    }
    if version < POSTGRES_SCHEMA_VERSION {
        tx.batch_execute(&format!(
            "DELETE FROM {VERSION_TABLE}; \
             INSERT INTO {VERSION_TABLE} (version) VALUES ({POSTGRES_SCHEMA_VERSION});"
        ))
        .await
        .map_err(fail("cannot record the schema version"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio_postgres::NoTls;

    use super::super::PostgresLedger;
    use super::super::fixture::{an_event, database};
    use super::*;
    use crate::ledger::{Ledger, UsageEvent};

    /// A ledger written by the first schema version opens under this build: its events stay,
    /// and new writes carry writer numbers.
    #[tokio::test]
    async fn a_version_1_ledger_is_migrated() {
        let Some((url, ns)) = database("v1") else {
            return;
        };
        let (admin, conn) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
        tokio::spawn(conn);
        admin
            .batch_execute(&format!(
                "CREATE SCHEMA {ns}; SET search_path TO {ns}; {} \
                 CREATE TABLE {VERSION_TABLE} (version BIGINT NOT NULL); \
                 INSERT INTO {VERSION_TABLE} VALUES (1); \
                 INSERT INTO usage_events (id, at_ns, agent, critical, model, input, \
                 cached_input, cache_write, output, reasoning, cost_nano, cost_rem, estimated, \
                 kind, saved_tokens, saved_nano, saved_rem) \
                 VALUES (1, 0, 'old', false, 'gpt-4o', 10, 0, 0, 5, 0, 7, 0, false, 'call', 0, 0, 0);",
                MIGRATIONS[0]
            ))
            .await
            .expect("a version-1 schema");
        let opened = PostgresLedger::connect(&url, &ns).await;
        let after = async || {
            let ledger = opened.as_ref().expect("opens");
            ledger
                .record(UsageEvent {
                    id: 2,
                    ..an_event()
                })
                .await
                .expect("records");
            let version: i64 = admin
                .query_one(&format!("SELECT version FROM {ns}.{VERSION_TABLE}"), &[])
                .await
                .unwrap()
                .get(0);
            (version, ledger.event_ids().await.expect("ids"))
        };
        let result = after().await;
        admin
            .batch_execute(&format!("DROP SCHEMA {ns} CASCADE"))
            .await
            .expect("drop the test schema");
        assert_eq!(result, (POSTGRES_SCHEMA_VERSION, vec![1, 2]));
    }
}
