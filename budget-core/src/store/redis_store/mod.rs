//! The shared store: budget counters in Redis, decided by server-side Lua scripts.

//!
//! One module per part: `options` (what a store may be told, and the Redis client it makes),
//! `reserve`, `settle` (settles and releases, and `flush`), `status` (usage, snapshots,
//! forgetting a task), `windows` (a window as the scripts take it), `call` (the one Lua script
//! and the calls it runs), `batch` (the batcher that sends many callers' calls in one script
//! call), `retry` (settles and releases that could not reach Redis), with `keys`, `wire` and
//! `handover` below them.

mod batch;
mod call;
mod control;
mod error;
mod handover;
mod keys;
mod options;
mod reserve;
mod retry;
mod settle;
mod status;
mod windows;
mod wire;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use redis::aio::ConnectionManager;
use tokio::sync::{Notify, mpsc};

pub(in crate::store) use self::call::{Call, Which};
pub use self::control::RedisControlLog;
pub(in crate::store) use self::keys::KeySpace;
pub use self::options::RedisStoreOptions;
pub(crate) use self::options::{
    MAX_LEASE, MAX_TASK_TTL, MAX_TIMEOUT, MIN_LEASE, MIN_TASK_TTL, MIN_TIMEOUT,
};
pub(in crate::store) use self::settle::lease_member;
pub(in crate::store) use self::wire::{clamp_tokens, money_arg};

use self::batch::{Batcher, OP_QUEUE, Pending, run_batches};
use self::handover::Tracker;
use self::options::connection;
use self::retry::{Retry, retry_settles};
use super::{BudgetStore, CounterSpec, CounterUsage, ReserveOutcome, StoreError, Ticket};
use crate::admission::{Amount, ReserveRequest};
use crate::attribution::TaskId;
use crate::backend_error::BackendErrorKind;
use crate::limits::CounterKey;
use crate::redact::redact_url;

/// How long a settle that could not reach Redis is retried before it is given up (the ledger
/// still holds its event; only the shared counters miss it). Shorter than the hour for which
/// the scripts remember settles, so a retry never counts twice.
pub const RETRY_HORIZON: Duration = Duration::from_secs(50 * 60);

/// The shared store: budget counters in Redis, decided by server-side Lua scripts.
///
/// Every instance of a service that points at the same Redis and key prefix shares one set of
/// counters, so three replicas cannot each spend the whole budget. Each operation runs inside a
/// script call, so it costs one network round trip (operations that queue while Redis is busy
/// share one call), and Redis runs scripts one at a time: a reserve checks every counter a
/// call touches and reserves on all or none, exactly as
/// [`MemoryBudgetStore`](super::MemoryBudgetStore) does under its lock (the scripts implement
/// [`admission::fit`](crate::admission::fit) and are tested against it).
///
/// - **Windows** are in the key (a day's counter is a new key the next day) and every counter
///   key carries a TTL past its window's end: no reset job, nothing to drift.
/// - **Leases**: a reservation expires after [`RedisStoreOptions::lease`]. A process that dies
///   holding reservations gives them back when they run out; a settle arriving after that
///   still commits its usage, counted as overshoot. A reserve whose reply was lost (a network
///   failure, a timeout) is given back as soon as Redis answers again: the store chose the
///   reservation's id before sending it, and finds its lease by that id.
/// - **Handed over at call time**: [`settle`](BudgetStore::settle) and
///   [`release`](BudgetStore::release) queue their operation before they return, on a queue
///   without bound, so dropping a settle's future (unpolled or half-way) loses nothing; the
///   future only reports the outcome. [`flush`](BudgetStore::flush) waits until everything
///   handed over before it has reached Redis.
/// - **Exactly once**: every settle sets a marker bit in Redis (kept an hour, longer than a
///   settle can be retried; 8 KiB per 65,536 settles), so a settle retried after a lost reply
///   is not counted twice, and a settle whose lease is long gone still counts (as overshoot). Settles and releases that fail
///   because Redis is unreachable are queued and retried in the background for up to
///   [`RETRY_HORIZON`] (at most 100,000 waiting); the ledger records the event either way.
/// - **Fail closed**: when Redis cannot be reached, `reserve` returns a [`StoreError`] naming the
///   store, so no call goes out unbudgeted. [`RedisStoreOptions::fail_open`] admits calls
///   instead (counted in [`RedisBudgetStore::failed_open`]).
/// - **Money** is integer yocto-dollars on both sides: Redis's Lua has only doubles, so the
///   scripts keep money as decimal text and compute on it in exact limbs. Token counts are
///   clamped to 2^53 − 1, far above any real budget.
///
/// All keys of a store share the hash tag `{prefix}`, so they live in one cluster slot.
///
/// Rolling windows keep a running total of their live slots, so the processes sharing one
/// should have clocks that agree to within a slot (a sixtieth of the window); a clock running
/// behind only makes the window look fuller than it is.
///
/// Cloning shares the connection.
#[derive(Clone)]
pub struct RedisBudgetStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    name: String,
    keys: KeySpace,
    options: RedisStoreOptions,
    /// Operations whose caller waits for the reply (reserves, reads), for the next batch;
    /// callers wait while it is full.
    ops: mpsc::Sender<Pending>,
    /// Operations handed over (settles, releases), for the next batch: without bound, so that
    /// handing over never waits and never fails while the store is open.
    handover: mpsc::UnboundedSender<Pending>,
    retries: mpsc::UnboundedSender<Retry>,
    shared: Arc<Shared>,
    /// Makes unreserved settle markers unique across processes.
    instance: u64,
    unreserved: AtomicU64,
    /// Numbers this instance's reservations (see [`RedisBudgetStore::reservation_id`]).
    reservations: AtomicU64,
    failed_open: AtomicU64,
}

impl std::fmt::Debug for RedisBudgetStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBudgetStore")
            .field("store", &self.inner.name)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl RedisBudgetStore {
    /// Connects with the default options. `url` is a Redis URL: `redis://host:port/db`, or
    /// `rediss://host:port/db` for TLS (rustls; the server's certificate is checked against the
    /// system's roots, or [`RedisStoreOptions::tls_roots`]).
    pub async fn connect(url: &str) -> Result<RedisBudgetStore, StoreError> {
        RedisBudgetStore::connect_with(url, RedisStoreOptions::default()).await
    }

    /// Connects with `options`. Fails, naming the store, when the URL is malformed, the prefix
    /// is not allowed, or Redis cannot be reached within the timeout.
    pub async fn connect_with(
        url: &str,
        options: RedisStoreOptions,
    ) -> Result<RedisBudgetStore, StoreError> {
        let name = format!("redis {} (prefix {})", redact_url(url), options.prefix);
        let fail = |kind, message: String| StoreError::new(kind, name.clone(), message);
        let rejected = |message| fail(BackendErrorKind::RejectedInput, message);
        let keys = KeySpace::new(&options.prefix).map_err(rejected)?;
        options.validate().map_err(rejected)?;
        let conn = connection(url, &options, &name).await?;
        let (retries, pending) = mpsc::unbounded_channel();
        let (ops, queued) = mpsc::channel(OP_QUEUE);
        let (handover, handed) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            tracker: Tracker::new(),
            retry_now: Notify::new(),
            down: AtomicBool::new(false),
        });
        tokio::spawn(run_batches(
            Batcher {
                conn: conn.clone(),
                name: name.clone(),
                requeue: handover.downgrade(),
                retries: retries.clone(),
                shared: shared.clone(),
            },
            queued,
            handed,
        ));
        let inner = Arc::new(Inner {
            conn,
            name,
            keys,
            options,
            ops,
            handover,
            retries,
            shared: shared.clone(),
            instance: instance_id(),
            unreserved: AtomicU64::new(0),
            reservations: AtomicU64::new(0),
            failed_open: AtomicU64::new(0),
        });
        tokio::spawn(retry_settles(
            inner.conn.clone(),
            inner.name.clone(),
            pending,
            shared,
        ));
        Ok(RedisBudgetStore { inner })
    }

    /// The store's name as errors give it: the URL without password, and the prefix.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// How many calls were admitted without a reservation because Redis could not be reached
    /// (only with [`RedisStoreOptions::fail_open`]).
    pub fn failed_open(&self) -> u64 {
        self.inner.failed_open.load(Ordering::Relaxed)
    }

    /// The store's key names.
    pub(in crate::store) fn keys(&self) -> &KeySpace {
        &self.inner.keys
    }

    /// How long a reservation (or an allowance's lease) holds.
    pub(in crate::store) fn lease(&self) -> Duration {
        self.inner.options.lease
    }
}

impl BudgetStore for RedisBudgetStore {
    fn reserve(
        &self,
        counters: &[CounterSpec],
        request: &ReserveRequest,
        now: Timestamp,
    ) -> impl Future<Output = Result<ReserveOutcome, StoreError>> + Send {
        self.reserve_in_redis(counters, request, now)
    }

    fn settle(
        &self,
        ticket: Ticket,
        counters: &[CounterSpec],
        actual: Amount,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<CounterUsage>, StoreError>> + Send {
        self.settle_now(ticket, counters, actual, now)
    }

    fn release(&self, ticket: Ticket) {
        self.release_in_redis(ticket);
    }

    fn usage(
        &self,
        counters: &[CounterSpec],
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<CounterUsage>, StoreError>> + Send {
        let counters: Vec<_> = counters.iter().map(|s| (s.key.clone(), s.span)).collect();
        async move { self.usage_of(&counters, now).await }
    }

    fn snapshot(
        &self,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<(CounterKey, CounterUsage)>, StoreError>> + Send {
        self.snapshot_in_redis(now)
    }

    fn forget_task(&self, task: &TaskId) {
        let store = self.clone();
        let task = task.clone();
        let now = Timestamp::now();
        self.spawn("forgetting a task", async move {
            store.forget_in_redis(task, now).await
        });
    }

    fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.flush_to_redis()
    }

    fn keeps_counters(&self) -> bool {
        true
    }
}

/// What a store shares with its batcher and its retry worker.
struct Shared {
    /// Settles and releases handed over and not yet delivered.
    tracker: Arc<Tracker>,
    /// Asks the retry worker to try again now.
    retry_now: Notify,
    /// The last attempt to reach Redis failed for want of Redis.
    down: AtomicBool,
}

pub(in crate::store) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn instance_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

#[cfg(test)]
mod fixture;
