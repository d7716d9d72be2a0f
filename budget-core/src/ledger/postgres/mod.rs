//! The PostgreSQL ledger: the same schema and exact money scheme as the SQLite ledger, shared by
//! many instances.

#[macro_use]
mod connection;
mod control;
mod error;
mod schema;
mod totals;
mod writes;

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio_postgres::Client;

pub use self::control::PostgresControlLog;
pub use self::schema::POSTGRES_SCHEMA_VERSION;

use self::connection::{MAX_RECONNECTS, open};
use self::error::pg_error;
use self::schema::migrate;
use self::writes::{Pending, Write};
use super::any::valid_namespace;
use super::sql::{HOUR_NS, Refusal, error};
use super::{Dimension, GroupTotal, Ledger, LedgerError, LedgerQuery, UsageEvent};
use crate::backend_error::BackendErrorKind;
use crate::redact::redact_url;

/// Events in a PostgreSQL schema: the [`Ledger`] shared by many instances.
///
/// # Storage
///
/// The tables and columns of the SQLite ledger (plus `writer` and `write_seq`, see below), in
/// one PostgreSQL schema (the *namespace* given
/// to [`PostgresLedger::connect`], created when missing; the connection's `search_path` is set
/// to it):
///
/// * One row per event in `usage_events`; tags in the side table `usage_event_tags`.
/// * The control plane's decisions in `control_log` (schema version 3), read and written by
///   [`PostgresControlLog`].
/// * Times are BIGINT nanoseconds since the Unix epoch (events outside 1677–2262 are refused).
/// * Money is stored **exactly** in two BIGINT columns, never as a float (and not as NUMERIC,
///   so both SQL ledgers share one scheme): the whole nano-dollars (`cost_nano`, floor
///   division) and the yocto-dollar remainder (`cost_rem`, in `0..10^15`). Sums are taken in SQL
///   as `SUM(cost_nano)`, `SUM(cost_rem / 10^9)` and `SUM(cost_rem % 10^9)`, cast back to BIGINT
///   (a sum beyond i64 is a [`LedgerError`], never a wrapped value) and combined in Rust as an
///   i128.
/// * The schema version is kept in the table `token_budget_schema_version`; migrations run at
///   connect, under a transaction-scoped advisory lock, so instances starting together migrate
///   once. A schema holding other tables and no version table is refused, as is a version newer
///   than this build.
///
/// # Writes
///
/// [`Ledger::record`] takes the event *when it is called* (the hand-over contract of
/// [`Ledger`]): it numbers the write and puts it on the ledger's queue, and its future sends
/// its own write and (at most 32) older ones no live future is sending, each as one `INSERT`
/// statement (a data-modifying CTE inserts the event and its tags, so an event is stored with
/// all its tags or not at all), and returns once PostgreSQL has committed its event.
/// Concurrent `record`s are pipelined on the one connection, and a long queue is sent in
/// pipelined rounds of at most 256. A write leaves the queue only once its `INSERT` is confirmed: when a
/// `record` future is dropped — unpolled, or half-way through its `INSERT` — its event stays
/// queued, and the next operation of any caller sends it (again: see below, a write sent twice
/// is stored once). [`Ledger::flush`] and every query ([`Ledger::totals`],
/// [`PostgresLedger::event_ids`]) first store the writes handed over before them, so a process
/// reads its own writes.
///
/// When a `record`'s own `INSERT` fails (the server refuses it, or cannot be reached within
/// three new connections), its event leaves the queue and the future returns the
/// [`LedgerError`]: the budget hands the event back to its caller. Bound: a write can then be
/// both stored and handed back when its commit succeeded but the reply was lost with the
/// connection (as for any client of a database), or when a concurrent `flush` or query sent
/// the same write and its copy landed after the `record`'s own failed. No operation waits for
/// another's `INSERT` (that future might never be polled again): `flush` and queries send
/// every queued write themselves. Writes whose `record` future is gone stay queued after a
/// failure, and `flush` reports it; so do queries, which answer only once the writes before
/// them are stored (a write the server keeps refusing fails them until it is accepted).
///
/// # Dropping the ledger
///
/// Dropping a ledger whose queue still holds events (their `record` futures were dropped, and
/// no operation ran since) stores them on a connection and a runtime of its own, in a thread of
/// its own — so it works inside an async runtime, outside one, and after the runtime that
/// drove the ledger has shut down. The drop blocks for up to 10 seconds; events not stored by
/// then (the server is unreachable) are named, with their count and ids, in an error log
/// (`tracing`); a thread still waiting on a server that does not answer goes on in the
/// background (its writes are stored if the server answers before the process exits). Call
/// [`Ledger::flush`] before dropping to get that error as a value instead.
///
/// # Lost connections
///
/// A connection that breaks (the server restarted, a failover, an administrator ended the
/// session) is opened again by the next operation that finds it lost, and that operation is
/// sent again on the new connection (at most three new connections per operation). A write
/// sent twice is stored once: each ledger instance draws a writer number from the schema's
/// `ledger_writers` sequence at connect and numbers its writes, and that pair is unique in
/// `usage_events` (schema version 2), so a write whose reply was lost with its connection is
/// not counted again. When the server cannot be reached, the operation fails with a
/// [`LedgerError`] naming it (the budget hands the unrecorded event back to the caller) and the
/// next operation tries again.
///
/// # Queries
///
/// [`Ledger::totals`] runs one `GROUP BY` query; calendar buckets are folded in Rust from UTC
/// hours exactly as in the SQLite ledger (regrouping by the exact time when an hour straddles a
/// bucket boundary).
pub struct PostgresLedger {
    name: String,
    namespace: String,
    /// The URL as given (with its password), to connect again.
    connect_url: String,
    /// The current connection; replaced when it is lost.
    client: Mutex<Arc<Client>>,
    /// Held while a lost connection is replaced, so that concurrent operations open one.
    reconnecting: tokio::sync::Mutex<()>,
    /// This instance's number in the schema's `ledger_writers` sequence.
    writer: i64,
    /// Writes handed over and not yet confirmed stored.
    pending: parking_lot::Mutex<Pending>,
}

impl fmt::Debug for PostgresLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresLedger")
            .field("url", &self.name)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl PostgresLedger {
    /// Connects to `url` (a `postgres://` URL or a key=value connection string) and uses the
    /// PostgreSQL schema `namespace` (lower-case letters, digits and `_`, at most 63 bytes),
    /// creating it and migrating its tables when needed.
    ///
    /// Must be called within a Tokio runtime: the connection is driven by a spawned task.
    /// Errors (never panics) when the server cannot be reached (the error names the URL), the
    /// namespace holds another application's tables, or its schema version is newer than this
    /// build.
    pub async fn connect(url: &str, namespace: &str) -> Result<PostgresLedger, LedgerError> {
        let (name, client) = connect_migrated(url, namespace).await?;
        let writer: i64 = client
            .query_one("SELECT nextval('ledger_writers')", &[])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| pg_error(&name, "cannot draw a writer number", e))?;
        Ok(PostgresLedger {
            name,
            namespace: namespace.to_owned(),
            connect_url: url.to_owned(),
            client: Mutex::new(Arc::new(client)),
            reconnecting: tokio::sync::Mutex::new(()),
            writer,
            pending: parking_lot::Mutex::new(Pending::default()),
        })
    }

    /// The URL (password hidden), as shown in errors.
    pub fn url(&self) -> &str {
        &self.name
    }

    /// The PostgreSQL schema holding the tables.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The ids of every recorded event, in recording order (after storing the events handed
    /// over before this call).
    pub async fn event_ids(&self) -> Result<Vec<u64>, LedgerError> {
        self.drain_all().await?;
        let rows = with_client!(self, "cannot read event ids", |client| client
            .query("SELECT id FROM usage_events ORDER BY seq", &[]))?;
        rows.iter()
            .map(|r| {
                r.try_get::<_, i64>(0)
                    .map(|id| id as u64)
                    .map_err(|e| pg_error(&self.name, "cannot read event ids", e))
            })
            .collect()
    }
}

/// A connection to `url` whose search path is the schema `namespace`, created or migrated to
/// this build's version; with the URL as errors name it (password hidden). A namespace that is
/// not a plain PostgreSQL identifier (it is spliced into SQL) is refused.
async fn connect_migrated(url: &str, namespace: &str) -> Result<(String, Client), LedgerError> {
    let name = redact_url(url);
    if !valid_namespace(namespace) {
        return Err(error(
            BackendErrorKind::RejectedInput,
            &name,
            format!(
                "invalid namespace {namespace:?}: use lower-case letters, digits and '_' \
                 (at most 63 bytes, not starting with a digit or pg_)"
            ),
        ));
    }
    let mut client = open(url, &name, namespace).await?;
    migrate(&mut client, &name, namespace).await?;
    Ok((name, client))
}

impl Ledger for PostgresLedger {
    fn is_durable(&self) -> bool {
        true
    }

    /// Queues the event now (see the type docs); the future stores it.
    fn record(&self, e: UsageEvent) -> impl Future<Output = Result<(), LedgerError>> + Send {
        let handed = Write::of(&e)
            .map(|w| self.hand_over(w))
            .map_err(|m| Refusal::new(error(BackendErrorKind::OutOfRange, &self.name, m), e.id));
        async move {
            let seq = handed.map_err(Refusal::into_error)?;
            self.drain(seq + 1, Some(seq)).await
        }
    }

    fn flush(&self) -> impl Future<Output = Result<(), LedgerError>> + Send {
        self.drain_all()
    }

    async fn totals(&self, query: &LedgerQuery) -> Result<Vec<GroupTotal>, LedgerError> {
        // Read your own writes, those whose `record` future was dropped included.
        self.drain_all().await?;
        let has_bucket = query
            .group_by
            .iter()
            .any(|d| matches!(d, Dimension::Bucket(_)));
        if has_bucket {
            match self.totals_at(query, Some(HOUR_NS)).await? {
                Some(groups) => Ok(groups),
                // Some hour straddles a bucket boundary: group by the exact time instead.
                None => Ok(self.totals_at(query, Some(1)).await?.unwrap_or_default()),
            }
        } else {
            Ok(self.totals_at(query, None).await?.unwrap_or_default())
        }
    }
}

#[cfg(test)]
mod fixture;
