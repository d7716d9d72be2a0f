//! The embedded SQLite ledger: one file, WAL mode, one writer thread with group commit.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, Transaction};
use tokio::sync::oneshot;

use super::sql::{
    Dialect, EventRow, Folder, HOUR_NS, Param, Refusal, SqlRow, TotalsSql, error, totals_sql,
};
use super::{Dimension, GroupTotal, Ledger, LedgerError, LedgerQuery, UsageEvent};

/// `PRAGMA application_id` of a token-budget ledger file ("TBLG").
const APPLICATION_ID: i32 = 0x5442_4c47;

/// Migrations, in order: `MIGRATIONS[i]` brings a file from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[r"
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
CREATE INDEX usage_events_at      ON usage_events(at_ns);
CREATE INDEX usage_events_id      ON usage_events(id);
CREATE INDEX usage_events_agent   ON usage_events(agent, at_ns);
CREATE INDEX usage_events_task    ON usage_events(task, at_ns);
CREATE INDEX usage_events_user    ON usage_events(user_name, at_ns);
CREATE INDEX usage_events_model   ON usage_events(model, at_ns);
CREATE INDEX usage_events_kind    ON usage_events(kind, at_ns);
CREATE INDEX usage_event_tags_kv  ON usage_event_tags(tag_key, tag_value);
"];

/// The schema version this build writes and reads.
pub const SQLITE_SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// When a `record` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Once the event's transaction is committed with `synchronous=FULL`: a crash (even a
    /// power loss, as far as the disk honours fsync) cannot lose it.
    #[default]
    Durable,
    /// Once the event is queued (while fewer than [`SqliteOptions::queue_capacity`] events
    /// wait; beyond that, once it is committed). The writer gathers events for up to
    /// `max_delay` before a commit (`synchronous=NORMAL`): **a crash can lose the events of
    /// that window.**
    Buffered {
        /// The longest an event waits in the queue before its batch is committed.
        max_delay: Duration,
    },
}

/// How a [`SqliteLedger`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteOptions {
    /// When `record` returns.
    pub durability: Durability,
    /// How many events may wait for the writer before a buffered `record` waits
    /// (asynchronously) for its event's commit, so that writers cannot outrun the disk without
    /// bound. The event is handed over either way: a full queue never refuses or delays the
    /// hand-over itself.
    pub queue_capacity: usize,
    /// The most events committed in one transaction.
    pub max_batch: usize,
}

impl Default for SqliteOptions {
    fn default() -> SqliteOptions {
        SqliteOptions {
            durability: Durability::Durable,
            queue_capacity: 8192,
            max_batch: 1024,
        }
    }
}

type Reply = oneshot::Sender<Result<(), LedgerError>>;

#[derive(Debug)]
enum WriteMsg {
    Event(Box<EventRow>, Option<Reply>),
    Flush(Reply),
}

#[derive(Debug)]
enum ReadMsg {
    Totals(
        LedgerQuery,
        oneshot::Sender<Result<Vec<GroupTotal>, LedgerError>>,
    ),
    Ids(oneshot::Sender<Result<Vec<u64>, LedgerError>>),
}

/// Events in a SQLite file: the durable [`Ledger`].
///
/// # Storage
///
/// * One row per event in `usage_events`; tags in the side table `usage_event_tags`
///   (`seq`, `tag_key`, `tag_value`), indexed on `(tag_key, tag_value)`, so a tag can be grouped
///   or filtered on with a join instead of parsing JSON.
/// * Times are INTEGER nanoseconds since the Unix epoch (events outside 1677–2262 are refused
///   with a [`LedgerError`]).
/// * Money is stored **exactly**, never as REAL: the whole nano-dollars (`cost_nano`, an i64,
///   floor division) and the yocto-dollar remainder below one nano-dollar (`cost_rem`, in
///   `0..10^15`). Sums are taken in SQL as `SUM(cost_nano)`, `SUM(cost_rem / 10^9)` and
///   `SUM(cost_rem % 10^9)` (each fits an i64 for billions of events) and combined in Rust as an
///   i128. An event whose cost exceeds ±9.2 billion dollars is refused; a group sum beyond i64
///   is a [`LedgerError`] (SQLite's integer overflow), never a wrapped value.
/// * Token counts are u64 in the API and INTEGER (i64) here: a count above `i64::MAX` is refused.
/// * The schema version is `PRAGMA user_version`; migrations are applied in order at open, and
///   the file is marked with `PRAGMA application_id` so a foreign database is recognised.
///
/// # Writes
///
/// [`Ledger::record`] puts the event on the writer thread's queue *when it is called*
/// (the hand-over contract of [`Ledger`]): its future only waits for the answer, so dropping it
/// — unpolled, or half-way — loses nothing, and neither does dropping the ledger (closing
/// commits what is queued). The writer takes whatever is queued (up to
/// [`SqliteOptions::max_batch`]) into one transaction, commits, and then answers every waiting
/// `record`: with [`Durability::Durable`] (the default; `synchronous=FULL`) a `record` returns
/// only once its event is on disk. With [`Durability::Buffered`] `record` returns as soon as
/// the event is queued (beyond [`SqliteOptions::queue_capacity`] waiting events, once it is
/// committed) and the writer waits up to `max_delay` to gather a batch: **a crash can lose the
/// events of that window**. [`SqliteLedger::flush`] waits for every event handed over before it.
///
/// If a write fails, the writer stops accepting events: the pending `record`s and every later one
/// return a [`LedgerError`] (the budget hands the event back to its caller), nothing is dropped
/// silently: events whose `record` future is gone when their write fails are counted in an
/// error log.
///
/// Queries wait for the events handed over before them to be committed, so a process reads its
/// own writes (also those whose `record` future was dropped).
///
/// # Queries
///
/// [`Ledger::totals`] runs one `GROUP BY` query; the time range and filters are `WHERE` clauses.
/// Calendar buckets ([`Dimension::Bucket`]) are computed in Rust with the query's time zone: SQL
/// groups by the event time truncated to the UTC hour, and Rust folds the hours into hour, day,
/// week or month buckets. That is exact when every bucket boundary falls on a whole UTC hour
/// (zones whose offset is a whole number of hours). Each SQL group also reports its earliest
/// and latest event; if those fall into different buckets (a zone such as `+05:30` or
/// `+05:45`, or a historical offset), the query is run again grouped by the exact event time.
/// Queries run on a separate reader thread with its own connection; WAL lets them proceed while
/// the writer commits.
pub struct SqliteLedger {
    name: String,
    /// Unbounded, so that handing an event over never waits (see the type docs).
    writes: Option<mpsc::Sender<WriteMsg>>,
    reads: Option<mpsc::Sender<ReadMsg>>,
    failed: Arc<Mutex<Option<LedgerError>>>,
    /// Events handed over and not yet answered by the writer.
    queued: Arc<AtomicUsize>,
    queue_capacity: usize,
    durability: Durability,
    threads: Vec<JoinHandle<()>>,
}

impl fmt::Debug for SqliteLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteLedger")
            .field("path", &self.name)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

fn sql_error(name: &str, what: &str, e: &rusqlite::Error) -> LedgerError {
    if let rusqlite::Error::SqliteFailure(f, _) = e {
        if f.code == rusqlite::ErrorCode::NotADatabase {
            return error(
                name,
                format!("{what}: the file is not a SQLite database ({e})"),
            );
        }
    }
    error(name, format!("{what}: {e}"))
}

impl SqliteLedger {
    /// Opens (or creates) the ledger file at `path`, durable mode, default queue sizes.
    ///
    /// Errors (never panics) when the file is not a SQLite database, holds another
    /// application's tables, or was written by a newer version of this schema.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteLedger, LedgerError> {
        SqliteLedger::open_with(path, SqliteOptions::default())
    }

    /// Opens (or creates) the ledger file at `path` with the given options.
    pub fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<SqliteLedger, LedgerError> {
        let path = path.as_ref().to_path_buf();
        let name = path.display().to_string();
        let mut conn = connect(&path, &name, options.durability)?;
        migrate(&mut conn, &name)?;
        let reader = connect(&path, &name, options.durability)?;

        let failed = Arc::new(Mutex::new(None));
        let queued = Arc::new(AtomicUsize::new(0));
        let (wtx, wrx) = mpsc::channel();
        let writer = {
            let writer = Writer {
                name: name.clone(),
                failed: failed.clone(),
                queued: queued.clone(),
                durability: options.durability,
                max_batch: options.max_batch.max(1),
            };
            std::thread::Builder::new()
                .name("sqlite-ledger-writer".into())
                .spawn(move || writer.run(conn, &wrx))
                .map_err(|e| error(&name, format!("cannot start the writer thread: {e}")))?
        };
        let (rtx, rrx) = mpsc::channel();
        let reader = {
            let thread_name = name.clone();
            std::thread::Builder::new()
                .name("sqlite-ledger-reader".into())
                .spawn(move || read_loop(&reader, &rrx, &thread_name))
                .map_err(|e| error(&name, format!("cannot start the reader thread: {e}")))?
        };
        Ok(SqliteLedger {
            name,
            writes: Some(wtx),
            reads: Some(rtx),
            failed,
            queued,
            queue_capacity: options.queue_capacity.max(1),
            durability: options.durability,
            threads: vec![writer, reader],
        })
    }

    /// The file's path, as shown in errors.
    pub fn path(&self) -> &str {
        &self.name
    }

    /// Waits until every event handed over before this call is committed (events whose
    /// `record` future was dropped included). The flush is queued when it is called.
    ///
    /// # Errors
    ///
    /// The writer's [`LedgerError`] once a write has failed.
    pub fn flush(&self) -> impl Future<Output = Result<(), LedgerError>> + Send + '_ {
        let sent = self.send_flush();
        async move {
            sent?.await.map_err(|_| {
                self.failed_or(error(&self.name, "the writer stopped before committing"))
            })?
        }
    }

    /// The ids of every recorded event, in recording order (after the events handed over
    /// before this call are committed).
    pub async fn event_ids(&self) -> Result<Vec<u64>, LedgerError> {
        let written = self.pending_writes();
        written.await;
        let (tx, rx) = oneshot::channel();
        self.read(ReadMsg::Ids(tx))?;
        rx.await
            .map_err(|_| error(&self.name, "the reader thread stopped"))?
    }

    /// Hands `row` to the writer; the answer to wait for when the caller must wait for the
    /// commit (durable mode, or a full queue).
    fn hand_over(
        &self,
        row: Box<EventRow>,
    ) -> Result<Option<oneshot::Receiver<Result<(), LedgerError>>>, LedgerError> {
        self.check_failed()?;
        let writes = self.writes()?;
        let ahead = self.queued.fetch_add(1, Ordering::AcqRel);
        let wait = match self.durability {
            Durability::Durable => true,
            Durability::Buffered { .. } => ahead >= self.queue_capacity,
        };
        let (reply, answer) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        if writes.send(WriteMsg::Event(row, reply)).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(self.failed_or(error(&self.name, "the writer thread stopped")));
        }
        Ok(answer)
    }

    /// Queues a flush now; its answer.
    fn send_flush(&self) -> Result<oneshot::Receiver<Result<(), LedgerError>>, LedgerError> {
        self.check_failed()?;
        let (tx, rx) = oneshot::channel();
        self.writes()?
            .send(WriteMsg::Flush(tx))
            .map_err(|_| self.failed_or(error(&self.name, "the writer thread stopped")))?;
        Ok(rx)
    }

    /// Resolves once the events handed over before this call are answered by the writer
    /// (at once when none is waiting). A failed write is not this future's to report: it
    /// reaches the events' own `record`s (or the error log), and a query still answers.
    fn pending_writes(&self) -> impl Future<Output = ()> + Send + use<> {
        let flushed = (self.queued.load(Ordering::Acquire) > 0)
            .then(|| self.send_flush().ok())
            .flatten();
        async move {
            if let Some(flushed) = flushed {
                let _ = flushed.await;
            }
        }
    }

    fn writes(&self) -> Result<&mpsc::Sender<WriteMsg>, LedgerError> {
        self.writes
            .as_ref()
            .ok_or_else(|| error(&self.name, "the ledger is closed"))
    }

    fn check_failed(&self) -> Result<(), LedgerError> {
        match &*self.failed.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn failed_or(&self, fallback: LedgerError) -> LedgerError {
        self.failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or(fallback)
    }

    fn read(&self, msg: ReadMsg) -> Result<(), LedgerError> {
        self.reads
            .as_ref()
            .ok_or_else(|| error(&self.name, "the ledger is closed"))?
            .send(msg)
            .map_err(|_| error(&self.name, "the reader thread stopped"))
    }
}

impl Drop for SqliteLedger {
    /// Closes the queues and waits for the writer to commit what is queued.
    fn drop(&mut self) {
        self.writes = None;
        self.reads = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Ledger for SqliteLedger {
    fn flush(&self) -> impl Future<Output = Result<(), LedgerError>> + Send {
        SqliteLedger::flush(self)
    }

    fn is_durable(&self) -> bool {
        true
    }

    /// Hands the event to the writer now (see the type docs); the future waits for the
    /// commit in durable mode (and in buffered mode beyond the queue's capacity).
    fn record(&self, event: UsageEvent) -> impl Future<Output = Result<(), LedgerError>> + Send {
        let id = event.id;
        // The answer is guarded from here on: a future dropped unpolled drops the guard too.
        let handed = EventRow::of(&event)
            .map_err(|m| error(&self.name, m))
            .and_then(|row| self.hand_over(Box::new(row)))
            .map(|answer| {
                answer.map(|rx| Answer {
                    rx,
                    event: id,
                    ledger: &self.name,
                })
            })
            .map_err(|e| Refusal::new(e, id));
        async move {
            match handed {
                Err(refusal) => Err(refusal.into_error()),
                Ok(None) => Ok(()),
                Ok(Some(mut answer)) => (&mut answer.rx).await.map_err(|_| {
                    self.failed_or(error(&self.name, "the writer stopped before committing"))
                })?,
            }
        }
    }

    fn totals(
        &self,
        query: &LedgerQuery,
    ) -> impl Future<Output = Result<Vec<GroupTotal>, LedgerError>> + Send {
        let written = self.pending_writes();
        let query = query.clone();
        async move {
            written.await;
            let (tx, rx) = oneshot::channel();
            self.read(ReadMsg::Totals(query, tx))?;
            rx.await
                .map_err(|_| error(&self.name, "the reader thread stopped"))?
        }
    }
}

fn connect(path: &Path, name: &str, durability: Durability) -> Result<Connection, LedgerError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql_error(name, "cannot open", &e))?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(|e| sql_error(name, "cannot set the busy timeout", &e))?;
    // The first read of the file: a file that is not SQLite fails here.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| sql_error(name, "cannot switch to WAL mode", &e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(error(
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
    .map_err(|e| sql_error(name, "cannot set the synchronous mode", &e))?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, name: &str) -> Result<(), LedgerError> {
    let pragma = |conn: &Connection, p: &str| -> Result<i64, LedgerError> {
        conn.query_row(&format!("PRAGMA {p}"), [], |r| r.get(0))
            .map_err(|e| sql_error(name, &format!("cannot read {p}"), &e))
    };
    let version = pragma(conn, "user_version")?;
    let app = pragma(conn, "application_id")?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(|e| sql_error(name, "cannot read the schema", &e))?;
    if app != i64::from(APPLICATION_ID) && (tables > 0 || version != 0) {
        return Err(error(
            name,
            format!(
                "not a token-budget ledger: the database holds another schema \
                 (application_id {app:#x}, user_version {version}, {tables} schema objects)"
            ),
        ));
    }
    if version > SQLITE_SCHEMA_VERSION {
        return Err(error(
            name,
            format!(
                "the ledger's schema version {version} is newer than this build supports \
                 ({SQLITE_SCHEMA_VERSION}); upgrade token-budget to open it"
            ),
        ));
    }
    if version < 0 {
        return Err(error(name, format!("invalid schema version {version}")));
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let to = from + 1;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| sql_error(name, "cannot start a migration", &e))?;
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
            .map_err(|e| {
                sql_error(
                    name,
                    &format!("migration to schema version {to} failed"),
                    &e,
                )
            })?;
    }
    Ok(())
}

/// The writer's answer to one `record`. Dropped unread (the `record` future was cancelled), it
/// logs a failure the writer had already delivered; a failure delivered later finds nobody
/// listening and the writer logs it. Either way, never lost without a word.
struct Answer<'a> {
    rx: oneshot::Receiver<Result<(), LedgerError>>,
    event: u64,
    ledger: &'a str,
}

impl Drop for Answer<'_> {
    fn drop(&mut self) {
        // Closed first, so that no answer can arrive between this look and the drop.
        self.rx.close();
        if let Ok(Err(e)) = self.rx.try_recv() {
            tracing::error!(
                ledger = self.ledger,
                event = self.event,
                error = %e,
                "usage event could not be written; its record future was dropped before the \
                 error was read"
            );
        }
    }
}

/// The writer thread's state: it commits batches and answers the waiting `record`s.
struct Writer {
    name: String,
    failed: Arc<Mutex<Option<LedgerError>>>,
    queued: Arc<AtomicUsize>,
    durability: Durability,
    max_batch: usize,
}

impl Writer {
    /// Commits what arrives until every sender is gone and the queue is empty: dropping the
    /// ledger commits what it holds.
    fn run(&self, mut conn: Connection, rx: &mpsc::Receiver<WriteMsg>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        while let Ok(first) = rx.recv() {
            let deadline = match self.durability {
                Durability::Durable => None,
                Durability::Buffered { max_delay } => Some(Instant::now() + max_delay),
            };
            let mut flushing = matches!(first, WriteMsg::Flush(_));
            batch.push(first);
            while batch.len() < self.max_batch {
                let next = match rx.try_recv() {
                    Ok(msg) => Some(msg),
                    Err(TryRecvError::Disconnected) => None,
                    // A flush is waited for: it ends the gathering at once.
                    Err(TryRecvError::Empty) => match deadline {
                        Some(d) if !flushing => rx
                            .recv_timeout(d.saturating_duration_since(Instant::now()))
                            .ok(),
                        _ => None,
                    },
                };
                let Some(msg) = next else { break };
                flushing |= matches!(msg, WriteMsg::Flush(_));
                batch.push(msg);
            }
            self.commit(&mut conn, &mut batch);
        }
    }

    /// Writes `batch` in one transaction and answers (and empties) it.
    fn commit(&self, conn: &mut Connection, batch: &mut Vec<WriteMsg>) {
        let name = self.name.as_str();
        let known_failure = self
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let result = match known_failure {
            Some(e) => Err(e),
            None => write_batch(conn, batch).map_err(|e| {
                let e = sql_error(name, "write failed; the ledger accepts no more events", &e);
                *self.failed.lock().unwrap_or_else(PoisonError::into_inner) = Some(e.clone());
                e
            }),
        };
        let events = batch
            .iter()
            .filter(|m| matches!(m, WriteMsg::Event(..)))
            .count();
        self.queued.fetch_sub(events, Ordering::AcqRel);
        // Events that failed with no one left to tell: their `record` future was dropped (or,
        // buffered, had already returned).
        let mut untold = 0_usize;
        for msg in batch.drain(..) {
            match msg {
                WriteMsg::Event(_, reply) => {
                    let told = reply.is_some_and(|r| r.send(result.clone()).is_ok());
                    untold += usize::from(!told);
                }
                WriteMsg::Flush(reply) => {
                    let _ = reply.send(result.clone());
                }
            }
        }
        if let Err(e) = &result {
            if untold > 0 {
                tracing::error!(
                    ledger = name,
                    lost = untold,
                    error = %e,
                    "usage events could not be written, and no caller is waiting to hear it"
                );
            }
        }
    }
}

fn write_batch(conn: &mut Connection, batch: &[WriteMsg]) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    insert_all(&tx, batch)?;
    tx.commit()
}

fn insert_all(tx: &Transaction<'_>, batch: &[WriteMsg]) -> Result<(), rusqlite::Error> {
    let mut event = tx.prepare_cached(
        "INSERT INTO usage_events (id, at_ns, agent, task, step, user_name, session, critical, \
         model, requested_model, input, cached_input, cache_write, output, reasoning, cost_nano, \
         cost_rem, estimated, kind, saved_tokens, saved_nano, saved_rem) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
         ?20, ?21, ?22)",
    )?;
    let mut tag = tx.prepare_cached(
        "INSERT INTO usage_event_tags (seq, tag_key, tag_value) VALUES (?1, ?2, ?3)",
    )?;
    for msg in batch {
        let WriteMsg::Event(r, _) = msg else { continue };
        event.execute(rusqlite::params![
            r.id,
            r.at_ns,
            &*r.agent,
            r.task.as_deref(),
            r.step,
            r.user.as_deref(),
            r.session.as_deref(),
            r.critical,
            &*r.model,
            r.requested_model.as_deref(),
            r.usage[0],
            r.usage[1],
            r.usage[2],
            r.usage[3],
            r.usage[4],
            r.cost.0,
            r.cost.1,
            r.estimated,
            r.kind,
            r.saved_tokens,
            r.saved.0,
            r.saved.1,
        ])?;
        let seq = tx.last_insert_rowid();
        for (k, v) in &r.tags {
            tag.execute(rusqlite::params![seq, &**k, &**v])?;
        }
    }
    Ok(())
}

fn read_loop(conn: &Connection, rx: &std::sync::mpsc::Receiver<ReadMsg>, name: &str) {
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
                .map_err(|e: rusqlite::Error| sql_error(name, "cannot read event ids", &e));
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
    let read = |e: rusqlite::Error| sql_error(name, "query failed", &e);
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
            .map_err(|e| sql_error(self.name, "query failed", &e))
    }

    fn text(&self, col: usize) -> Result<Option<String>, LedgerError> {
        self.row
            .get(col)
            .map_err(|e| sql_error(self.name, "query failed", &e))
    }
}
