//! The embedded SQLite ledger: one file, WAL mode, one writer thread with group commit.

mod control;
mod error;
mod reader;
mod schema;
mod writer;

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

pub use self::control::SqliteControlLog;
pub use self::schema::SQLITE_SCHEMA_VERSION;

use self::reader::{ReadMsg, read_loop};
use self::schema::{connect, migrate};
use self::writer::{Answer, WriteMsg, Writer};
use super::sql::{EventRow, Refusal, error};
use super::{GroupTotal, Ledger, LedgerError, LedgerQuery, UsageEvent};
use crate::backend_error::BackendErrorKind;

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
/// Calendar buckets ([`Dimension::Bucket`](crate::ledger::Dimension::Bucket)) are computed in Rust
/// with the query's time zone: SQL groups by the event time truncated to the UTC hour, and Rust
/// folds the hours into hour, day, week or month buckets. That is exact when every bucket boundary
/// falls on a whole UTC hour (zones whose offset is a whole number of hours). Each SQL group also
/// reports its earliest and latest event; if those fall into different buckets (a zone such as
/// `+05:30` or `+05:45`, or a historical offset), the query is run again grouped by the exact event
/// time. Queries run on a separate reader thread with its own connection; WAL lets them proceed
/// while the writer commits.
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

        let cannot_start = |thread: &str, e: std::io::Error| {
            let message = format!("cannot start the {thread} thread: {e}");
            error(BackendErrorKind::Refused, &name, message).with_source(e)
        };
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
                .map_err(|e| cannot_start("writer", e))?
        };
        let (rtx, rrx) = mpsc::channel();
        let reader = {
            let thread_name = name.clone();
            std::thread::Builder::new()
                .name("sqlite-ledger-reader".into())
                .spawn(move || read_loop(&reader, &rrx, &thread_name))
                .map_err(|e| cannot_start("reader", e))?
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
            sent?
                .await
                .map_err(|_| self.failed_or(self.closed("the writer stopped before committing")))?
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
            .map_err(|_| self.closed("the reader thread stopped"))?
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
            return Err(self.failed_or(self.closed("the writer thread stopped")));
        }
        Ok(answer)
    }

    /// Queues a flush now; its answer.
    fn send_flush(&self) -> Result<oneshot::Receiver<Result<(), LedgerError>>, LedgerError> {
        self.check_failed()?;
        let (tx, rx) = oneshot::channel();
        self.writes()?
            .send(WriteMsg::Flush(tx))
            .map_err(|_| self.failed_or(self.closed("the writer thread stopped")))?;
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

    /// The ledger, or a thread of it, has stopped: `what` says which.
    fn closed(&self, what: &str) -> LedgerError {
        error(BackendErrorKind::Closed, &self.name, what)
    }

    fn writes(&self) -> Result<&mpsc::Sender<WriteMsg>, LedgerError> {
        self.writes
            .as_ref()
            .ok_or_else(|| self.closed("the ledger is closed"))
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
            .ok_or_else(|| self.closed("the ledger is closed"))?
            .send(msg)
            .map_err(|_| self.closed("the reader thread stopped"))
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
            .map_err(|m| error(BackendErrorKind::OutOfRange, &self.name, m))
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
                    self.failed_or(self.closed("the writer stopped before committing"))
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
                .map_err(|_| self.closed("the reader thread stopped"))?
        }
    }
}
