//! The PostgreSQL ledger: the same schema and exact money scheme as the SQLite ledger, shared by
//! many instances.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

use super::any::valid_namespace;
use super::sql::{
    Dialect, EventRow, Folder, HOUR_NS, Param, Refusal, SqlRow, TotalsSql, error, totals_sql,
};
use super::{Dimension, GroupTotal, Ledger, LedgerError, LedgerQuery, UsageEvent};
use crate::redact::redact_url;

/// The table holding the schema version, in the ledger's PostgreSQL schema.
const VERSION_TABLE: &str = "token_budget_schema_version";

/// Migrations, in order: `MIGRATIONS[i]` brings a schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
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
CREATE INDEX usage_events_at      ON usage_events(at_ns);
CREATE INDEX usage_events_id      ON usage_events(id);
CREATE INDEX usage_events_agent   ON usage_events(agent, at_ns);
CREATE INDEX usage_events_task    ON usage_events(task, at_ns);
CREATE INDEX usage_events_user    ON usage_events(user_name, at_ns);
CREATE INDEX usage_events_model   ON usage_events(model, at_ns);
CREATE INDEX usage_events_kind    ON usage_events(kind, at_ns);
CREATE INDEX usage_event_tags_kv  ON usage_event_tags(tag_key, tag_value);
",
    r"
ALTER TABLE usage_events ADD COLUMN writer BIGINT, ADD COLUMN write_seq BIGINT;
CREATE UNIQUE INDEX usage_events_write ON usage_events(writer, write_seq);
CREATE SEQUENCE ledger_writers;
",
];

/// The schema version this build writes and reads.
pub const POSTGRES_SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// One statement inserts the event and its tags (a data-modifying CTE): atomic, one round trip.
/// A write sent again (its connection was lost before the reply) inserts nothing: its
/// `(writer, write_seq)` is already there.
const INSERT: &str = "WITH ev AS (INSERT INTO usage_events (id, at_ns, agent, task, step, \
    user_name, session, critical, model, requested_model, input, cached_input, cache_write, \
    output, reasoning, cost_nano, cost_rem, estimated, kind, saved_tokens, saved_nano, saved_rem, \
    writer, write_seq) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, \
    $20, $21, $22, $25, $26) ON CONFLICT (writer, write_seq) DO NOTHING RETURNING seq) \
    INSERT INTO usage_event_tags (seq, tag_key, tag_value) \
    SELECT ev.seq, t.k, t.v FROM ev, unnest($23::text[], $24::text[]) AS t(k, v)";

/// Runs `$op` (an expression using the connection `$client`) on the ledger's current
/// connection; when that connection turns out to be lost, opens a new one and runs `$op` again
/// on it. (A macro rather than a function taking an async closure: the futures must stay
/// `Send`, which async closures cannot yet promise.)
macro_rules! with_client {
    ($ledger:expr, $what:expr, |$client:ident| $op:expr) => {{
        let ledger = $ledger;
        let mut $client = ledger.client();
        let mut reconnects = 0;
        loop {
            match $op.await {
                Err(e) if reconnects < MAX_RECONNECTS && ledger.lost(&$client, &e) => {
                    reconnects += 1;
                    $client = ledger.reconnect(&$client).await?;
                }
                result => break result.map_err(|e| pg_error(&ledger.name, $what, &e)),
            }
        }
    }};
}

/// How many times one operation opens a new connection after losing one: a server that keeps
/// ending sessions gets an error rather than an endless loop.
const MAX_RECONNECTS: u32 = 3;

/// How long dropping a ledger that still holds unstored events waits for them to be stored.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most `INSERT`s one drain has in flight at once (pipelined on the connection): a long
/// queue is sent in rounds of this size.
const PIPELINE: usize = 256;

/// The most writes of dropped `record` futures that one `record` sends besides its own, so that
/// a backlog slows no single caller much (`flush` and queries send all of it).
const ORPHANS_PER_RECORD: usize = 32;

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

/// The writes a ledger holds and their numbering.
#[derive(Debug, Default)]
struct Pending {
    /// The next write's `write_seq`.
    next_seq: i64,
    /// Unstored writes by `write_seq`.
    writes: BTreeMap<i64, Queued>,
}

/// One unstored write.
#[derive(Debug)]
struct Queued {
    write: Arc<Write>,
    /// How many live futures have an `INSERT` of it in flight (each releases it when it ends
    /// or is dropped). Only a `record` looking for writes nobody sends reads it: no one ever
    /// waits for another future's `INSERT`, which might never be polled again.
    senders: u32,
}

/// One event's row, numbered (`write_seq`) when it is handed over.
#[derive(Debug)]
struct Write {
    write_seq: i64,
    row: EventRow,
}

impl Write {
    /// The columns of `e` (numbered later, at hand-over); an error names what does not fit.
    fn of(e: &UsageEvent) -> Result<Write, String> {
        Ok(Write {
            write_seq: 0,
            row: EventRow::of(e)?,
        })
    }
}

/// Sends `w` on `client` as writer `writer`'s write.
async fn insert_on(client: &Client, w: &Write, writer: i64) -> Result<u64, tokio_postgres::Error> {
    let r = &w.row;
    let agent: &str = &r.agent;
    let task: Option<&str> = r.task.as_deref();
    let user: Option<&str> = r.user.as_deref();
    let session: Option<&str> = r.session.as_deref();
    let model: &str = &r.model;
    let requested_model: Option<&str> = r.requested_model.as_deref();
    let (tag_keys, tag_values): (Vec<&str>, Vec<&str>) =
        r.tags.iter().map(|(k, v)| (&**k, &**v)).unzip();
    let params: [&(dyn ToSql + Sync); 26] = [
        &r.id,
        &r.at_ns,
        &agent,
        &task,
        &r.step,
        &user,
        &session,
        &r.critical,
        &model,
        &requested_model,
        &r.usage[0],
        &r.usage[1],
        &r.usage[2],
        &r.usage[3],
        &r.usage[4],
        &r.cost.0,
        &r.cost.1,
        &r.estimated,
        &r.kind,
        &r.saved_tokens,
        &r.saved.0,
        &r.saved.1,
        &tag_keys,
        &tag_values,
        &writer,
        &w.write_seq,
    ];
    client.execute(INSERT, &params).await
}

/// Runs the futures concurrently (on one connection their requests are pipelined); their
/// outputs, in order.
async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(v) => *output = Some(v),
                    Poll::Pending => waiting = true,
                }
            }
        }
        if waiting {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// The writes one drain is sending. Dropped — also with the drain's future, half-way through
/// its `INSERT`s — it releases those not stored: they stay queued for the next drain.
struct Claim<'a> {
    ledger: &'a PostgresLedger,
    seqs: Vec<i64>,
}

impl Claim<'_> {
    /// `seq` leaves the queue: stored, or handed back to its caller.
    fn remove(&mut self, seq: i64) {
        self.ledger.pending.lock().writes.remove(&seq);
        self.seqs.retain(|s| *s != seq);
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut pending = self.ledger.pending.lock();
        for seq in &self.seqs {
            if let Some(queued) = pending.writes.get_mut(seq) {
                queued.senders = queued.senders.saturating_sub(1);
            }
        }
    }
}

impl fmt::Debug for PostgresLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresLedger")
            .field("url", &self.name)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

fn pg_error(name: &str, what: &str, e: &tokio_postgres::Error) -> LedgerError {
    match e.as_db_error() {
        Some(db) => error(
            name,
            format!("{what}: {} ({})", db.message(), db.code().code()),
        ),
        None => error(name, format!("{what}: {e}")),
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
        let name = redact_url(url);
        if !valid_namespace(namespace) {
            return Err(error(
                &name,
                format!(
                    "invalid namespace {namespace:?}: use lower-case letters, digits and '_' \
                     (at most 63 bytes, not starting with a digit or pg_)"
                ),
            ));
        }
        let mut client = open(url, &name, namespace).await?;
        migrate(&mut client, &name, namespace).await?;
        let writer: i64 = client
            .query_one("SELECT nextval('ledger_writers')", &[])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| pg_error(&name, "cannot draw a writer number", &e))?;
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

    /// Numbers `write` and queues it; its `write_seq`.
    fn hand_over(&self, mut write: Write) -> i64 {
        let mut pending = self.pending.lock();
        let seq = pending.next_seq;
        pending.next_seq += 1;
        write.write_seq = seq;
        pending.writes.insert(
            seq,
            Queued {
                write: Arc::new(write),
                senders: 0,
            },
        );
        seq
    }

    /// Stores the queued writes numbered below `upto`, without ever waiting for another
    /// future's `INSERT` (a write sent twice is stored once).
    ///
    /// For a `record` (`mine` is its write): sends its own write and (up to
    /// [`ORPHANS_PER_RECORD`]) older ones no live future is sending, and returns its own write's outcome; when its own `INSERT` fails and
    /// the write was not stored meanwhile, the write leaves the queue (the error hands it
    /// back), while the others' failures leave them queued. Otherwise (`flush`, queries):
    /// sends every write below `upto`; the failed ones stay queued and the first failure is
    /// returned.
    async fn drain(&self, upto: i64, mine: Option<i64>) -> Result<(), LedgerError> {
        let batch: Vec<Arc<Write>> = {
            let mut pending = self.pending.lock();
            let mut orphans = 0;
            pending
                .writes
                .range_mut(..upto)
                .filter(|(seq, queued)| match mine {
                    None => true,
                    Some(m) if m == **seq => true,
                    Some(_) => {
                        let take = queued.senders == 0 && orphans < ORPHANS_PER_RECORD;
                        orphans += usize::from(take);
                        take
                    }
                })
                .map(|(_, queued)| {
                    queued.senders += 1;
                    queued.write.clone()
                })
                .collect()
        };
        if batch.is_empty() {
            // A record's own write is gone only once stored.
            return Ok(());
        }
        let mut claim = Claim {
            ledger: self,
            seqs: batch.iter().map(|w| w.write_seq).collect(),
        };
        let mut results = Vec::with_capacity(batch.len());
        for round in batch.chunks(PIPELINE) {
            results.extend(join_all(round.iter().map(|w| self.insert(w))).await);
        }
        let mut own = Ok(());
        let mut failure = None;
        let mut failed = 0_usize;
        for (w, result) in batch.iter().zip(results) {
            let seq = w.write_seq;
            match result {
                Ok(()) => claim.remove(seq),
                Err(e) if mine == Some(seq) => {
                    // Unless another future stored it meanwhile, it is handed back through
                    // the error: never stored later.
                    if self.pending.lock().writes.contains_key(&seq) {
                        claim.remove(seq);
                        own = Err(e);
                    }
                }
                Err(e) => {
                    failed += 1;
                    failure.get_or_insert(e);
                }
            }
        }
        drop(claim);
        match (mine, failure) {
            (Some(_), _) | (None, None) => own,
            (None, Some(e)) => Err(error(
                &self.name,
                format!(
                    "{failed} usage events stay queued, not yet stored: {}",
                    e.message
                ),
            )),
        }
    }

    /// Sends one queued write (again, after a lost connection).
    async fn insert(&self, w: &Write) -> Result<(), LedgerError> {
        let writer = self.writer;
        with_client!(self, "write failed", |client| insert_on(&client, w, writer))?;
        Ok(())
    }

    /// A drain of every write handed over so far.
    fn drain_all(&self) -> impl Future<Output = Result<(), LedgerError>> + Send + '_ {
        let upto = self.pending.lock().next_seq;
        self.drain(upto, None)
    }

    /// The current connection.
    fn client(&self) -> Arc<Client> {
        self.client
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Whether `error` on `client` means the connection is lost (rather than the statement
    /// refused).
    fn lost(&self, client: &Client, error: &tokio_postgres::Error) -> bool {
        // SQLSTATE class 08 is a connection exception, 57P01..57P03 the server ending the
        // session (shutdown, crash, an administrator); the client may not have noticed yet.
        let ended_by_server = error.code().is_some_and(|code| {
            let code = code.code();
            code.starts_with("08") || code.starts_with("57P")
        });
        let lost = error.is_closed() || client.is_closed() || ended_by_server;
        if lost {
            tracing::warn!(ledger = %self.name, %error, "PostgreSQL connection lost; reconnecting");
        }
        lost
    }

    /// A connection in place of `lost` (opened here, or by a concurrent operation).
    async fn reconnect(&self, lost: &Arc<Client>) -> Result<Arc<Client>, LedgerError> {
        let _one_at_a_time = self.reconnecting.lock().await;
        let current = self.client();
        if !Arc::ptr_eq(&current, lost) && !current.is_closed() {
            return Ok(current);
        }
        let client = open(&self.connect_url, &self.name, &self.namespace).await?;
        let client = Arc::new(client);
        *self
            .client
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = client.clone();
        Ok(client)
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
                    .map_err(|e| pg_error(&self.name, "cannot read event ids", &e))
            })
            .collect()
    }
}

/// Opens a connection, driven by a spawned task.
/// The session's `search_path` is the ledger's namespace from the start (a connection
/// option), so a new connection needs no statement before it can be used.
async fn open(url: &str, name: &str, ns: &str) -> Result<Client, LedgerError> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| pg_error(name, &format!("invalid URL {name}"), &e))?;
    let options = match config.get_options() {
        Some(given) => format!("{given} -c search_path={ns}"),
        None => format!("-c search_path={ns}"),
    };
    config.options(options);
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| pg_error(name, &format!("cannot connect to {name}"), &e))?;
    let conn_name = name.to_owned();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::error!(ledger = conn_name, error = %e, "PostgreSQL connection failed");
        }
    });
    Ok(client)
}

async fn migrate(client: &mut Client, name: &str, ns: &str) -> Result<(), LedgerError> {
    let fail = |what: &str| {
        let what = what.to_owned();
        move |e: tokio_postgres::Error| pg_error(name, &what, &e)
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
        move |e: tokio_postgres::Error| pg_error(name, &what, &e)
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
    if version > POSTGRES_SCHEMA_VERSION {
        return Err(error(
            name,
            format!(
                "the ledger's schema version {version} (schema {ns}) is newer than this build \
                 supports ({POSTGRES_SCHEMA_VERSION}); upgrade token-budget to open it"
            ),
        ));
    }
    if version < 0 {
        return Err(error(name, format!("invalid schema version {version}")));
    }
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

impl Ledger for PostgresLedger {
    fn is_durable(&self) -> bool {
        true
    }

    /// Queues the event now (see the type docs); the future stores it.
    fn record(&self, e: UsageEvent) -> impl Future<Output = Result<(), LedgerError>> + Send {
        let handed = Write::of(&e)
            .map(|w| self.hand_over(w))
            .map_err(|m| Refusal::new(error(&self.name, m), e.id));
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

impl Drop for PostgresLedger {
    /// Stores what is still queued, on a connection and a runtime of its own (see the type
    /// docs); what cannot be stored within 10 seconds is named in an error log.
    fn drop(&mut self) {
        let writes: Vec<Arc<Write>> = std::mem::take(&mut self.pending.get_mut().writes)
            .into_values()
            .map(|q| q.write)
            .collect();
        if writes.is_empty() {
            return;
        }
        let ids: Vec<i64> = writes.iter().map(|w| w.row.id).collect();
        let (url, name, ns, writer) = (
            self.connect_url.clone(),
            self.name.clone(),
            self.namespace.clone(),
            self.writer,
        );
        let (done, outcome) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("postgres-ledger-close".into())
            .spawn(move || {
                let _ = done.send(store_on_close(&url, &name, &ns, writer, &writes));
            });
        let lost = match spawned {
            Err(e) => Err((
                ids.len(),
                format!("cannot start a thread to store them: {e}"),
            )),
            Ok(_) => outcome.recv_timeout(CLOSE_TIMEOUT).unwrap_or_else(|_| {
                Err((
                    ids.len(),
                    format!(
                        "not stored within {CLOSE_TIMEOUT:?}; still being tried in the \
                         background until the process exits"
                    ),
                ))
            }),
        };
        if let Err((lost, reason)) = lost {
            tracing::error!(
                ledger = %self.name,
                lost,
                queued = ids.len(),
                ids = ?ids,
                "usage events handed over to a PostgreSQL ledger dropped before storing them: \
                 {reason}"
            );
        }
    }
}

/// Stores `writes` as writer `writer`'s, on a new connection driven by a runtime of its own.
/// How many were not stored, and why.
fn store_on_close(
    url: &str,
    name: &str,
    ns: &str,
    writer: i64,
    writes: &[Arc<Write>],
) -> Result<(), (usize, String)> {
    let all = writes.len();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| (all, format!("cannot start a runtime: {e}")))?;
    runtime.block_on(async {
        let client = open(url, name, ns).await.map_err(|e| (all, e.message))?;
        let mut results = Vec::with_capacity(writes.len());
        for round in writes.chunks(PIPELINE) {
            results.extend(join_all(round.iter().map(|w| insert_on(&client, w, writer))).await);
        }
        let failed = results.iter().filter(|r| r.is_err()).count();
        match results.into_iter().find_map(Result::err) {
            None => Ok(()),
            Some(e) => Err((failed, pg_error(name, "write failed", &e).message)),
        }
    })
}

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
    async fn totals_at(
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
            .map_err(|e| pg_error(self.name, "query failed", &e))
    }

    fn text(&self, col: usize) -> Result<Option<String>, LedgerError> {
        self.row
            .try_get(col)
            .map_err(|e| pg_error(self.name, "query failed", &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attribution, Money, Usage};

    /// `DATABASE_URL` and a fresh schema name, or `None` after saying the test is skipped.
    fn database(test: &str) -> Option<(String, String)> {
        let Ok(url) = std::env::var("DATABASE_URL") else {
            eprintln!("skipped: DATABASE_URL not set");
            return None;
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Some((url, format!("tb_{test}_{}_{nanos}", std::process::id())))
    }

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

    fn an_event() -> UsageEvent {
        UsageEvent {
            id: 7,
            at: jiff::Timestamp::from_second(1_780_000_000).unwrap(),
            attribution: Attribution::agent("writer").with_tag("team", "core"),
            model: "gpt-4o".into(),
            requested_model: None,
            usage: Usage::new(100, 20),
            cost: Money::from_cents(3),
            estimated: false,
            kind: super::super::EventKind::Call,
            saved: Default::default(),
        }
    }

    /// A write sent again under the same writer number (as after a connection lost between
    /// the commit and its reply) is stored once, tags included.
    #[tokio::test]
    async fn a_write_sent_twice_is_stored_once() {
        let Some((url, ns)) = database("twice") else {
            return;
        };
        let ledger = PostgresLedger::connect(&url, &ns).await.expect("connect");
        let event = an_event();
        let stored = async || {
            let client = ledger.client();
            let events: i64 = client
                .query_one("SELECT count(*) FROM usage_events", &[])
                .await
                .unwrap()
                .get(0);
            let tags: i64 = client
                .query_one("SELECT count(*) FROM usage_event_tags", &[])
                .await
                .unwrap()
                .get(0);
            (events, tags)
        };
        ledger.record(event.clone()).await.expect("first send");
        ledger.pending.lock().next_seq = 0;
        ledger
            .record(event.clone())
            .await
            .expect("the same write again");
        let once = stored().await;
        ledger
            .record(event)
            .await
            .expect("a new write of the same event");
        let twice = stored().await;
        ledger
            .client()
            .batch_execute(&format!("DROP SCHEMA {ns} CASCADE"))
            .await
            .expect("drop the test schema");
        assert_eq!(once, (1, 1), "the repeated write was stored again");
        assert_eq!(twice, (2, 2), "a new write is not mistaken for a repeat");
    }
}
