//! The shared store: budget counters in Redis, decided by server-side Lua scripts.

mod allowance;
mod handover;
mod keys;
mod wire;

pub use allowance::{AllowanceOptions, AllowanceStore};

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script, Value};
use tokio::sync::{Notify, mpsc, oneshot};

use self::handover::{Handed, Tracker};
use self::keys::KeySpace;
use self::wire::{Reply, clamp_tokens, money_arg};
use super::{BudgetStore, CounterSpec, CounterUsage, Denial, ReserveOutcome, StoreError, Ticket};
use crate::admission::{Amount, CapKind, ReserveRequest};
use crate::attribution::TaskId;
use crate::limits::{Cap, CounterKey, ROLLING_LIVE_SLOTS, WindowSpan};
use crate::redact::redact_url;

/// How long a settle that could not reach Redis is retried before it is given up (the ledger
/// still holds its event; only the shared counters miss it). Shorter than the hour for which
/// the scripts remember settles, so a retry never counts twice.
pub const RETRY_HORIZON: Duration = Duration::from_secs(50 * 60);

/// How long a settle's marker lives after the last settle marked next to it: longer than
/// [`RETRY_HORIZON`], so that a retried settle always finds the marker its first application
/// left.
const SETTLED_MARKER_MS: u64 = 3_600_000;

/// Settle markers are bits: one bitmap key holds those of 2^16 consecutive settles of one
/// instance (8 KiB), so marking every settle costs a bit, not a key (about 130 bytes).
const MARKER_BITS: u32 = 16;

/// Settles and releases waiting to be retried, at most; beyond, an operation is given up
/// (logged; a settle's usage stays in the ledger).
const MAX_PENDING: usize = 100_000;

/// The shortest lease: a call holds its reservation at least this long.
pub(crate) const MIN_LEASE: Duration = Duration::from_secs(10);
/// The longest lease (its holder may have died: the budget stays blocked that long).
pub(crate) const MAX_LEASE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The shortest life of per-task counters after their last use.
pub(crate) const MIN_TASK_TTL: Duration = Duration::from_secs(60);
/// The longest life of per-task counters after their last use.
pub(crate) const MAX_TASK_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// The shortest timeout.
pub(crate) const MIN_TIMEOUT: Duration = Duration::from_millis(1);
/// The longest timeout.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// Counters per script call when scanning (snapshot, forget).
const SCAN_CHUNK: usize = 256;

/// How a [`RedisBudgetStore`] behaves.
#[derive(Clone)]
pub struct RedisStoreOptions {
    prefix: String,
    lease: Duration,
    task_ttl: Duration,
    timeout: Duration,
    fail_open: bool,
    /// PEM certificates to trust for `rediss://` instead of the system's roots.
    tls_roots: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisStoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStoreOptions")
            .field("prefix", &self.prefix)
            .field("lease", &self.lease)
            .field("task_ttl", &self.task_ttl)
            .field("timeout", &self.timeout)
            .field("fail_open", &self.fail_open)
            .field(
                "tls_roots",
                &self
                    .tls_roots
                    .as_ref()
                    .map(|pem| format!("{} bytes of PEM", pem.len())),
            )
            .finish()
    }
}

impl Default for RedisStoreOptions {
    fn default() -> Self {
        RedisStoreOptions {
            prefix: "token-budget".into(),
            lease: Duration::from_secs(15 * 60),
            task_ttl: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(2),
            fail_open: false,
            tls_roots: None,
        }
    }
}

impl RedisStoreOptions {
    /// The defaults: prefix `token-budget`, 15-minute leases, per-task counters kept 24 hours
    /// after their last use, 2-second timeouts, fail closed.
    pub fn new() -> RedisStoreOptions {
        RedisStoreOptions::default()
    }

    /// The key prefix (ASCII letters, digits, `_ - . :`). Stores with the same Redis and prefix
    /// share their counters; give each deployment (and each test) its own.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a reservation holds without being settled or released. Make it longer than
    /// your slowest call: a call that outlives its lease keeps running, but its reservation is
    /// given back and its usage counts as overshoot. From 10 seconds to 30 days, and longer
    /// than [`timeout`](RedisStoreOptions::timeout) ([`RedisBudgetStore::connect_with`] says
    /// otherwise).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long per-task counters live after their last use when a task is never
    /// [forgotten](BudgetStore::forget_task) (its process died). From a minute to a year.
    pub fn task_ttl(mut self, ttl: Duration) -> Self {
        self.task_ttl = ttl;
        self
    }

    /// How long to wait for Redis to connect or answer before the operation fails. From 1 ms
    /// to 10 minutes.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Admit calls when Redis cannot be reached, instead of refusing them. Off by default:
    /// with it on, an outage means calls run without a budget.
    pub fn fail_open(mut self, fail_open: bool) -> Self {
        self.fail_open = fail_open;
        self
    }

    /// For `rediss://` URLs: trust the certificate authorities in `pem` (one or more PEM
    /// certificates, e.g. a private CA's) instead of the system's root certificates. Without
    /// it, the server's certificate must chain to a root the system trusts.
    pub fn tls_roots(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_roots = Some(pem.into());
        self
    }

    /// Checks every duration against its range: a zero lease, for one, would let the next
    /// reserve purge every reservation and concurrent calls cross the cap.
    fn validate(&self) -> Result<(), String> {
        let check = |what: &str, value: Duration, min: Duration, max: Duration| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(format!(
                    "{what} {value:?} is out of range: it must be from {min:?} to {max:?}"
                ))
            }
        };
        check("lease", self.lease, MIN_LEASE, MAX_LEASE)?;
        check("task_ttl", self.task_ttl, MIN_TASK_TTL, MAX_TASK_TTL)?;
        check("timeout", self.timeout, MIN_TIMEOUT, MAX_TIMEOUT)?;
        if self.lease <= self.timeout {
            return Err(format!(
                "lease {:?} must be longer than timeout {:?}: a reservation could lapse before \
                 its reply arrives",
                self.lease, self.timeout
            ));
        }
        Ok(())
    }
}

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
        let fail = |message: String| StoreError {
            store: name.clone(),
            message,
        };
        let keys = KeySpace::new(&options.prefix).map_err(&fail)?;
        options.validate().map_err(&fail)?;
        let client = redis_client(url, options.tls_roots.as_deref()).map_err(&fail)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout))
            .set_response_timeout(Some(options.timeout))
            .set_number_of_retries(1);
        let conn = tokio::time::timeout(
            options.timeout.saturating_mul(2),
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| fail("timed out connecting".into()))?
        .map_err(|e| fail(format!("cannot connect: {e}")))?;
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

    fn error(&self, what: &str, e: impl std::fmt::Display) -> StoreError {
        StoreError {
            store: self.inner.name.clone(),
            message: format!("{what}: {e}"),
        }
    }

    fn window_args(
        &self,
        call: &mut Call,
        span: WindowSpan,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let lease_ms = millis(self.inner.options.lease);
        let (kind, slot, sn, ttl_ms, end_ms) = match span {
            WindowSpan::Task => ("t", 0, 0, millis(self.inner.options.task_ttl), 0),
            WindowSpan::Rolling { slot_nanos, slot } => {
                if slot.unsigned_abs() > wire::MAX_EXACT {
                    return Err(self.error(
                        "rolling window",
                        format!("slots of {slot_nanos} ns are too narrow for Redis's numbers"),
                    ));
                }
                let width_ms = u64::try_from(
                    i128::from(slot_nanos) * i128::from(ROLLING_LIVE_SLOTS) / 1_000_000,
                )
                .unwrap_or(u64::MAX);
                ("r", slot, slot_nanos, width_ms.saturating_add(lease_ms), 0)
            }
            WindowSpan::Calendar { end, .. } => {
                let end_ms = end.as_millisecond();
                let left = u64::try_from(end_ms.saturating_sub(now_ms)).unwrap_or(0);
                ("c", 0, 0, left.saturating_add(lease_ms), end_ms)
            }
        };
        call.arg(kind)
            .arg(slot)
            .arg(sn)
            .arg(ttl_ms.clamp(1, wire::MAX_EXACT))
            .arg(end_ms);
        Ok(())
    }

    /// Runs `call` in the next batch; gives the call back with its reply.
    async fn run(&self, call: Call) -> (Call, Result<Reply, OpError>) {
        let (reply, answer) = oneshot::channel();
        if let Err(refused) = self
            .inner
            .ops
            .send(Pending {
                call,
                reply: Some(reply),
                handed: None,
            })
            .await
        {
            return (refused.0.call, Err(OpError::closed()));
        }
        let mut awaiting = AwaitedReply {
            answer,
            ops: &self.inner.handover,
        };
        match (&mut awaiting.answer).await {
            Ok((call, result)) => (call, result.map(Reply::new)),
            Err(_) => (Call::new(Which::Usage), Err(OpError::closed())),
        }
    }

    /// The id of this instance's reservation `number`, as its leases name it: the instance's
    /// random number, then `number` in 20 digits, so that ids are unique across every process
    /// sharing the prefix and known before the reserve runs.
    fn reservation_id(&self, number: u64) -> String {
        format!("{}{number:020}", self.inner.instance)
    }

    /// Queues the release of reservation `id` on `counters`, for a reserve whose reply was lost:
    /// it runs (with the settle retries) once Redis answers, and gives nothing back when the
    /// reserve never ran.
    fn release_lost<'k>(&self, counters: impl Iterator<Item = &'k CounterKey>, id: &str) {
        let keys = &self.inner.keys;
        let mut call = Call::new(Which::ReleaseLost);
        for key in counters {
            call.key(keys.counter(key)).key(keys.leases(key));
        }
        call.arg(id);
        let retry = Retry {
            call,
            since: Instant::now(),
            _handed: Some(self.inner.shared.tracker.hand_over()),
        };
        if self.inner.retries.send(retry).is_err() {
            tracing::warn!(store = %self.inner.name, "the store is closing: a reservation whose reply was lost waits for its lease");
        }
    }

    /// Queues `call` for the next batch without waiting, counted for [`BudgetStore::flush`];
    /// returns where its reply goes. Fails only when the store's batcher has stopped.
    fn hand_over(&self, call: Call) -> Result<oneshot::Receiver<Answer>, OpError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            call,
            reply: Some(reply),
            handed: Some(self.inner.shared.tracker.hand_over()),
        };
        self.inner
            .handover
            .send(pending)
            .map_err(|_| OpError::closed())?;
        Ok(answer)
    }

    /// The settle, queued now; the future reports its outcome.
    pub(crate) fn settle_now(
        &self,
        ticket: Ticket,
        counters: &[CounterSpec],
        actual: Amount,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<CounterUsage>, StoreError>> + Send + use<> {
        let store = self.clone();
        let count = counters.len();
        let answer = match self.settle_call(&ticket, counters, actual, now.as_millisecond()) {
            Ok(call) => self
                .hand_over(call)
                .map_err(|e| self.error("settle (not handed over)", e)),
            Err(e) => {
                // A settle that cannot be expressed still gives its reservation back.
                self.release(ticket);
                Err(e)
            }
        };
        async move {
            let result = match answer?.await {
                Ok((_, result)) => result,
                Err(_) => Err(OpError::closed()),
            };
            let mut reply = match result {
                Ok(value) => Reply::new(value),
                Err(e) if e.queued => return Err(store.error("settle (queued for retry)", e)),
                Err(e) if e.unreachable => {
                    return Err(store.error(
                        "settle (the store is closing: the shared counters miss this usage)",
                        e,
                    ));
                }
                Err(e) => return Err(store.error("settle", e)),
            };
            (0..count)
                .map(|_| reply.usage())
                .collect::<Result<_, _>>()
                .map_err(|e| store.error("settle: unexpected reply", e))
        }
    }

    /// Waits until every settle and release handed over before the call has reached Redis.
    async fn flush_to_redis(&self) -> Result<(), StoreError> {
        let shared = &self.inner.shared;
        let mark = shared.tracker.mark();
        // A batch on its way answers within the timeout; give it that twice over.
        let tick = self.inner.options.timeout.saturating_mul(2);
        loop {
            // Retries wait between rounds; a flush wants them now.
            shared.retry_now.notify_one();
            let before = shared.tracker.deliveries();
            let delivered = shared.tracker.delivered_before(mark);
            if tokio::time::timeout(tick, delivered).await.is_ok() {
                return Ok(());
            }
            let left = shared.tracker.undelivered_before(mark);
            if shared.down.load(Ordering::Relaxed) {
                return Err(self.error(
                    "flush",
                    format!(
                        "Redis cannot be reached; {left} settles or releases wait for it \
                         (retried for up to {RETRY_HORIZON:?})"
                    ),
                ));
            }
            if shared.tracker.deliveries() == before {
                return Err(self.error(
                    "flush",
                    format!("nothing reached Redis in {tick:?}; {left} settles or releases wait"),
                ));
            }
        }
    }

    async fn reserve_in_redis(
        &self,
        counters: &[CounterSpec],
        request: &ReserveRequest,
        now: Timestamp,
    ) -> Result<ReserveOutcome, StoreError> {
        let hard: Vec<(usize, &CounterSpec)> = counters
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_hard())
            .collect();
        let units = request.max_units.max(request.min_units);
        if hard.is_empty() {
            return Ok(ReserveOutcome::Reserved(Ticket::new(
                0,
                request.amount(units),
                units,
                Vec::new(),
            )));
        }
        let now_ms = now.as_millisecond();
        let keys = &self.inner.keys;
        let number = self.inner.reservations.fetch_add(1, Ordering::Relaxed);
        let id = self.reservation_id(number);
        let mut call = Call::new(Which::Reserve);
        for (_, spec) in &hard {
            call.key(keys.counter(&spec.key))
                .key(keys.leases(&spec.key));
        }
        call.arg(now_ms)
            .arg(now_ms.saturating_add(
                i64::try_from(millis(self.inner.options.lease)).unwrap_or(i64::MAX),
            ))
            .arg(clamp_tokens(request.base.tokens))
            .arg(money_arg(request.base.money))
            .arg(clamp_tokens(request.per_unit.tokens))
            .arg(money_arg(request.per_unit.money))
            .arg(clamp_tokens(request.min_units))
            .arg(clamp_tokens(request.max_units));
        for (_, spec) in &hard {
            self.window_args(&mut call, spec.span, now_ms)?;
            call.cap(spec.cap());
        }
        call.arg(&id);
        let result = self.run(call).await.1;
        if result.is_err() {
            // The reserve may have run with its reply lost: give it back once Redis answers.
            self.release_lost(hard.iter().map(|(_, s)| &s.key), &id);
        }
        let mut reply = match result {
            Ok(reply) => reply,
            Err(e) if self.inner.options.fail_open && e.unreachable => {
                self.inner.failed_open.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(store = %self.inner.name, error = %e, "Redis unreachable: admitting a call without a budget (fail-open)");
                return Ok(ReserveOutcome::Reserved(Ticket::new(
                    0,
                    request.amount(units),
                    units,
                    Vec::new(),
                )));
            }
            Err(e) => return Err(self.error("reserve", e)),
        };
        let bad = |e: String| self.error("reserve: unexpected reply", e);
        if reply.int().map_err(bad)? == 1 {
            // The id slot: the script answers 0, the id being ours.
            reply.int().map_err(bad)?;
            let units = reply.u64().map_err(bad)?;
            let amount = Amount::new(reply.u64().map_err(bad)?, reply.money().map_err(bad)?);
            let keys = hard.iter().map(|(_, s)| s.key.clone()).collect();
            return Ok(ReserveOutcome::Reserved(Ticket::new(
                number, amount, units, keys,
            )));
        }
        let at = usize::try_from(reply.int().map_err(bad)?).unwrap_or(0);
        let (index, spec) = *hard
            .get(at.wrapping_sub(1))
            .ok_or_else(|| bad(format!("no counter {at}")))?;
        let never = reply.int().map_err(bad)? == 1;
        let cap_kind = match reply.int().map_err(bad)? {
            0 => CapKind::Tokens,
            _ => CapKind::Money,
        };
        let in_use = Amount::new(reply.u64().map_err(bad)?, reply.money().map_err(bad)?);
        let frees_slot = reply.int().map_err(bad)?;
        let retry_after = match (never, spec.span) {
            (true, _) => None,
            (false, WindowSpan::Calendar { end, .. }) => Some(end),
            (false, WindowSpan::Rolling { slot_nanos, .. }) if frees_slot >= 0 => {
                Timestamp::from_nanosecond(i128::from(frees_slot) * i128::from(slot_nanos)).ok()
            }
            _ => None,
        };
        Ok(ReserveOutcome::Denied(Denial {
            counter: index,
            never,
            cap_kind,
            in_use,
            retry_after,
        }))
    }

    fn settle_call(
        &self,
        ticket: &Ticket,
        counters: &[CounterSpec],
        actual: Amount,
        now_ms: i64,
    ) -> Result<Call, StoreError> {
        let keys = &self.inner.keys;
        let reserved = ticket.keys();
        let mut call = Call::new(Which::Settle);
        // The marker: bit `n mod 2^16` of bitmap `n / 2^16`, where `n` numbers this
        // instance's reservations (or its unreserved settles).
        let (kind, n, member) = if reserved.is_empty() {
            let n = self.inner.unreserved.fetch_add(1, Ordering::Relaxed);
            ('u', n, String::new())
        } else {
            let id = self.reservation_id(ticket.id());
            ('r', ticket.id(), lease_member(&id, ticket.amount()))
        };
        let instance = self.inner.instance;
        call.key(keys.settled(&format!("{kind}{instance:016x}-{}", n >> MARKER_BITS)));
        for key in reserved {
            call.key(keys.counter(key)).key(keys.leases(key));
        }
        for spec in counters {
            call.key(keys.counter(&spec.key));
        }
        call.arg(now_ms)
            .arg(member)
            .arg(clamp_tokens(ticket.amount().tokens))
            .arg(money_arg(ticket.amount().money))
            .arg(clamp_tokens(actual.tokens))
            .arg(money_arg(actual.money))
            .arg(reserved.len())
            .arg(SETTLED_MARKER_MS)
            .arg(n & ((1 << MARKER_BITS) - 1));
        for spec in counters {
            self.window_args(&mut call, spec.span, now_ms)?;
            let held = reserved
                .iter()
                .position(|k| *k == spec.key)
                .map_or(0, |i| i + 1);
            call.arg(held);
        }
        Ok(call)
    }

    async fn usage_of(
        &self,
        counters: &[(CounterKey, WindowSpan)],
        now: Timestamp,
    ) -> Result<Vec<CounterUsage>, StoreError> {
        if counters.is_empty() {
            return Ok(Vec::new());
        }
        let keys = &self.inner.keys;
        let mut call = Call::new(Which::Usage);
        call.arg(now.as_millisecond());
        for (key, span) in counters {
            call.key(keys.counter(key)).key(keys.leases(key));
            match *span {
                WindowSpan::Rolling { slot, slot_nanos } => call.arg("r").arg(slot).arg(slot_nanos),
                WindowSpan::Calendar { .. } => call.arg("c").arg(0).arg(0),
                WindowSpan::Task => call.arg("t").arg(0).arg(0),
            };
        }
        let mut reply = self.run(call).await.1.map_err(|e| self.error("usage", e))?;
        counters
            .iter()
            .map(|_| reply.usage())
            .collect::<Result<_, _>>()
            .map_err(|e| self.error("usage: unexpected reply", e))
    }

    /// Every counter hash name of this store matching `pattern`.
    async fn scan(&self, pattern: &str) -> Result<Vec<String>, RedisError> {
        let mut conn = self.inner.conn.clone();
        let mut cursor: u64 = 0;
        let mut names = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            names.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    async fn snapshot_in_redis(
        &self,
        now: Timestamp,
    ) -> Result<Vec<(CounterKey, CounterUsage)>, StoreError> {
        let names = self
            .scan(&self.inner.keys.all_counters())
            .await
            .map_err(|e| self.error("snapshot", e))?;
        let now_ms = now.as_millisecond();
        let now_nanos = i64::try_from(now.as_nanosecond()).unwrap_or(i64::MAX);
        let mut counters = Vec::with_capacity(names.len());
        for chunk in names.chunks(SCAN_CHUNK) {
            let mut pipe = redis::pipe();
            for name in chunk {
                pipe.cmd("HMGET").arg(name).arg("kind").arg("sn").arg("e");
            }
            let metas: Vec<(Option<String>, Option<i64>, Option<i64>)> = pipe
                .query_async(&mut self.inner.conn.clone())
                .await
                .map_err(|e| self.error("snapshot", e))?;
            for (name, (kind, sn, end)) in chunk.iter().zip(metas) {
                let Some(key) = self.inner.keys.parse_counter(name) else {
                    continue;
                };
                let span = match (kind.as_deref(), sn) {
                    (Some("r"), Some(sn)) if sn > 0 => WindowSpan::Rolling {
                        slot_nanos: sn,
                        slot: now_nanos.div_euclid(sn),
                    },
                    (Some("c"), _) if end.is_some_and(|e| e <= now_ms) => continue,
                    (Some("c"), _) => WindowSpan::Calendar {
                        start: now,
                        end: now,
                    },
                    (Some("t"), _) => WindowSpan::Task,
                    // Expired between the scan and the read.
                    _ => continue,
                };
                counters.push((key, span));
            }
        }
        let mut out = Vec::with_capacity(counters.len());
        for chunk in counters.chunks(SCAN_CHUNK) {
            let usages = self.usage_of(chunk, now).await?;
            out.extend(chunk.iter().map(|(k, _)| k.clone()).zip(usages));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    async fn forget_in_redis(&self, task: TaskId, now: Timestamp) -> Result<(), RedisError> {
        let names = self.scan(&self.inner.keys.task_counters(&task)).await?;
        for chunk in names.chunks(SCAN_CHUNK) {
            let mut call = Call::new(Which::Forget);
            call.arg(now.as_millisecond());
            for name in chunk {
                if let Some(leases) = self.inner.keys.leases_of(name) {
                    call.key(name.clone()).key(leases);
                }
            }
            self.run(call).await.1?;
        }
        Ok(())
    }

    fn spawn(
        &self,
        what: &'static str,
        job: impl Future<Output = Result<(), RedisError>> + Send + 'static,
    ) {
        let name = self.inner.name.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = job.await {
                        tracing::warn!(store = %name, error = %e, "{what} failed; leases and TTLs clean up");
                    }
                });
            }
            Err(_) => {
                tracing::warn!(store = %name, "{what} skipped outside a Tokio runtime; leases and TTLs clean up");
            }
        }
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
        if ticket.keys().is_empty() {
            return;
        }
        let keys = &self.inner.keys;
        let mut call = Call::new(Which::Release);
        for key in ticket.keys() {
            call.key(keys.counter(key)).key(keys.leases(key));
        }
        call.arg(lease_member(
            self.reservation_id(ticket.id()),
            ticket.amount(),
        ))
        .arg(clamp_tokens(ticket.amount().tokens))
        .arg(money_arg(ticket.amount().money));
        // Handed over without waiting: release must not block. Only a store whose batcher
        // has stopped refuses it; the lease gives the reservation back then.
        let pending = Pending {
            call,
            reply: None,
            handed: Some(self.inner.shared.tracker.hand_over()),
        };
        if self.inner.handover.send(pending).is_err() {
            tracing::warn!(store = %self.inner.name, "the store is closing; the lease will give the reservation back");
        }
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

/// Retries settles and releases that could not reach Redis, and releases of reservations
/// whose reply was lost, oldest first, until they land or pass the horizon. Ends when every
/// store handle is gone and nothing is pending.
async fn retry_settles(
    mut conn: ConnectionManager,
    name: String,
    mut incoming: mpsc::UnboundedReceiver<Retry>,
    shared: Arc<Shared>,
) {
    let mut pending: VecDeque<Retry> = VecDeque::new();
    let mut open = true;
    loop {
        if pending.is_empty() {
            match incoming.recv().await {
                Some(job) => pending.push_back(job),
                None => return,
            }
        }
        // Collect what else arrived, and give Redis a moment to come back (a flush cuts the
        // moment short).
        let wait = tokio::time::sleep(Duration::from_millis(500));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                job = incoming.recv(), if open => match job {
                    Some(job) if pending.len() < MAX_PENDING => pending.push_back(job),
                    Some(_) => tracing::error!(store = %name, "retry queue full ({MAX_PENDING}): an operation is not retried (a settle's usage is in the ledger; a reservation waits for its lease)"),
                    None => open = false,
                },
                () = shared.retry_now.notified() => break,
                () = &mut wait => break,
            }
        }
        while let Some(job) = pending.front() {
            if job.since.elapsed() > RETRY_HORIZON {
                tracing::error!(store = %name, "gave up retrying an operation after {RETRY_HORIZON:?} (a settle's usage is in the ledger; a lost reservation waits for its lease)");
                pending.pop_front();
                continue;
            }
            match job.call.run(&mut conn).await {
                Ok(_) => {
                    shared.down.store(false, Ordering::Relaxed);
                    pending.pop_front();
                }
                Err(e) if unreachable(&e) => {
                    shared.down.store(true, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    tracing::error!(store = %name, error = %e, "a retried operation failed for good");
                    pending.pop_front();
                }
            }
        }
        if !open && pending.is_empty() {
            return;
        }
    }
}

/// An operation waiting to be retried, and since when.
struct Retry {
    call: Call,
    since: Instant,
    /// Held only to be dropped: the operation counts as delivered once it lands or is given
    /// up.
    _handed: Option<Handed>,
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

/// Which operation a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Reserve,
    Settle,
    Release,
    Usage,
    Forget,
    Grant,
    ReleaseLost,
}

impl Which {
    /// Whether an attempt that could not reach Redis is retried in the background: settles
    /// and releases (their caller does not wait, and each applies once however often sent).
    fn retried(self) -> bool {
        matches!(self, Which::Settle | Which::Release | Which::ReleaseLost)
    }

    /// The operation's code in the batch script.
    fn code(self) -> &'static str {
        match self {
            Which::Reserve => "r",
            Which::Settle => "s",
            Which::Release => "l",
            Which::Usage => "u",
            Which::Forget => "f",
            Which::Grant => "g",
            Which::ReleaseLost => "x",
        }
    }
}

/// The one script: the shared prelude, each operation as a function, and the batch loop.
static BATCH: LazyLock<Script> = LazyLock::new(|| {
    let op =
        |name: &str, body: &str| format!("local function op_{name}(KEYS, ARGV)\n{body}\nend\n");
    Script::new(
        &[
            include_str!("prelude.lua").to_owned(),
            op("reserve", include_str!("reserve.lua")),
            op("settle", include_str!("settle.lua")),
            op("release", include_str!("release.lua")),
            op("usage", include_str!("usage.lua")),
            op("forget", include_str!("forget.lua")),
            op("grant", include_str!("grant.lua")),
            op("release_lost", include_str!("release_lost.lua")),
            include_str!("batch.lua").to_owned(),
        ]
        .concat(),
    )
});

/// Operations whose caller waits for the reply, queued for the batcher at most; beyond,
/// callers wait. Settles and releases are handed over on a queue without bound.
const OP_QUEUE: usize = 4096;

/// Operations per script call, at most.
const MAX_BATCH: usize = 128;

/// Batches on their way at once per store: while Redis runs one, the next is on the wire.
const BATCHES_IN_FLIGHT: usize = 2;

/// What the batcher hands back: the call (emptied when it went to the retry queue) and its
/// outcome.
type Answer = (Call, Result<Value, OpError>);

/// An operation handed to the batcher, and where its reply goes (nowhere for a release).
struct Pending {
    call: Call,
    reply: Option<oneshot::Sender<Answer>>,
    /// For a settle or release handed over: delivered once the batch ran, or once its retry
    /// landed.
    handed: Option<Handed>,
}

/// The caller's end of a queued operation. A caller can go away (its future dropped by a
/// timeout) just after the batcher handed it a reserve's reply: the batcher saw the hand-over
/// succeed, so it is the caller that must give that reservation back.
struct AwaitedReply<'a> {
    answer: oneshot::Receiver<Answer>,
    ops: &'a mpsc::UnboundedSender<Pending>,
}

impl Drop for AwaitedReply<'_> {
    fn drop(&mut self) {
        // Closing first settles the race: a reply sent after this fails to send, and the
        // batcher releases it; a reply sent before it is read here.
        self.answer.close();
        if let Ok((call, Ok(value))) = self.answer.try_recv() {
            if let Some(release) = release_for_orphan(&call, &value) {
                queue_orphan_release(self.ops, release);
            }
        }
    }
}

/// Queues the release of a reservation whose caller went away.
fn queue_orphan_release(ops: &mpsc::UnboundedSender<Pending>, release: Call) {
    let queued = ops
        .send(Pending {
            call: release,
            reply: None,
            handed: None,
        })
        .is_ok();
    if !queued {
        tracing::warn!(
            "could not queue the release of an abandoned reservation; its lease holds the \
             budget until it expires"
        );
    }
}

/// Why an operation got no reply.
#[derive(Debug, Clone)]
struct OpError {
    /// Redis could not be reached (as opposed to a script that refused).
    unreachable: bool,
    /// The operation went to the retry queue.
    queued: bool,
    message: String,
}

impl OpError {
    fn from_redis(e: &RedisError) -> OpError {
        OpError {
            unreachable: unreachable(e),
            queued: false,
            message: e.to_string(),
        }
    }

    fn closed() -> OpError {
        OpError {
            unreachable: false,
            queued: false,
            message: "the store's batcher has stopped".into(),
        }
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<OpError> for RedisError {
    fn from(e: OpError) -> RedisError {
        RedisError::from((redis::ErrorKind::Io, "batched operation failed", e.message))
    }
}

/// The Redis client for `url`, with TLS when the URL asks for it.
fn redis_client(url: &str, tls_roots: Option<&[u8]>) -> Result<redis::Client, String> {
    let not_a_url = |e: RedisError| format!("not a Redis URL: {e}");
    if !url.starts_with("rediss:") {
        return redis::Client::open(url).map_err(not_a_url);
    }
    // rustls needs a process-wide crypto provider; keep one the application installed.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let Some(pem) = tls_roots else {
        return redis::Client::open(url).map_err(not_a_url);
    };
    const CERTIFICATE: &[u8] = b"-----BEGIN CERTIFICATE-----";
    if !pem.windows(CERTIFICATE.len()).any(|w| w == CERTIFICATE) {
        return Err("the TLS roots hold no PEM certificate".into());
    }
    let certificates = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.to_vec()),
    };
    redis::Client::build_with_tls(url, certificates)
        .map_err(|e| format!("cannot use the TLS roots: {e}"))
}

/// Sends the operations of many concurrent callers to Redis together: whatever queued while
/// the previous batch ran goes in the next script call. Redis's time goes into the budget
/// decisions rather than into starting scripts, and a counter many calls share (an agent's
/// day, the fleet's hour) is read and written once per batch instead of once per call.
///
/// A reserve whose caller went away before its reply came (a dropped future) is released in
/// the next batch, so cancelled callers do not hold budget until their lease runs out.
async fn run_batches(
    batcher: Batcher,
    mut queued: mpsc::Receiver<Pending>,
    mut handed: mpsc::UnboundedReceiver<Pending>,
) {
    let batcher = Arc::new(batcher);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        // Operations handed over go first: a caller hands a settle over before it reserves
        // again, and its reserve must see the settle.
        let first = tokio::select! {
            biased;
            Some(op) = handed.recv() => op,
            Some(op) = queued.recv() => op,
            else => return,
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match handed.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        while batch.len() < MAX_BATCH {
            match queued.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let batcher = batcher.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let orphans = batcher.run_and_answer(batch).await;
            if orphans.is_empty() {
                return;
            }
            match batcher.requeue.upgrade() {
                Some(ops) => orphans
                    .into_iter()
                    .for_each(|release| queue_orphan_release(&ops, release)),
                None => tracing::warn!(
                    abandoned = orphans.len(),
                    "the store closed before abandoned reservations were released; their \
                     leases hold the budget until they expire"
                ),
            }
        });
    }
}

/// What the batcher works with.
struct Batcher {
    conn: ConnectionManager,
    name: String,
    /// Where releases of abandoned reservations go (weak: the batcher must not keep its own
    /// queue open).
    requeue: mpsc::WeakUnboundedSender<Pending>,
    retries: mpsc::UnboundedSender<Retry>,
    shared: Arc<Shared>,
}

impl Batcher {
    /// Runs one batch and hands each caller its reply; settles and releases that could not
    /// reach Redis go to the retry queue. Returns the releases of reserves whose caller is
    /// gone.
    async fn run_and_answer(&self, batch: Vec<Pending>) -> Vec<Call> {
        let calls: Vec<&Call> = batch.iter().map(|p| &p.call).collect();
        let result = run_batch(&mut self.conn.clone(), &calls).await;
        match &result {
            Ok(_) => self.shared.down.store(false, Ordering::Relaxed),
            Err(e) if unreachable(e) => self.shared.down.store(true, Ordering::Relaxed),
            Err(_) => {}
        }
        let mut replies = match result {
            Ok(values) if values.len() == batch.len() => values.into_iter().map(Ok).collect(),
            Ok(values) => {
                let e = OpError {
                    unreachable: false,
                    queued: false,
                    message: format!("{} replies for {} operations", values.len(), batch.len()),
                };
                vec![Err(e); batch.len()]
            }
            Err(e) => vec![Err(OpError::from_redis(&e)); batch.len()],
        }
        .into_iter();
        let mut orphans = Vec::new();
        for mut pending in batch {
            let mut result = replies.next().unwrap_or_else(|| Err(OpError::closed()));
            if let Err(e) = &mut result {
                let which = pending.call.script;
                if e.unreachable && which.retried() {
                    let call = std::mem::replace(&mut pending.call, Call::new(which));
                    let retry = Retry {
                        call,
                        since: Instant::now(),
                        _handed: pending.handed.take(),
                    };
                    e.queued = self.retries.send(retry).is_ok();
                } else if pending.handed.is_some() {
                    tracing::error!(store = %self.name, error = %e, "a {which:?} handed over failed for good (a settle's usage is in the ledger)");
                }
            }
            // Delivered (or given up, and said so): a flush waits no longer for it.
            drop(pending.handed.take());
            let Some(reply) = pending.reply else {
                continue;
            };
            if let Err((call, Ok(value))) = reply.send((pending.call, result)) {
                orphans.extend(release_for_orphan(&call, &value));
            }
        }
        orphans
    }
}

/// The release of a reserve that succeeded after its caller went away.
fn release_for_orphan(reserve: &Call, reply: &Value) -> Option<Call> {
    if reserve.script != Which::Reserve {
        return None;
    }
    let Value::Array(values) = reply else {
        return None;
    };
    if !matches!(values.first(), Some(Value::Int(1))) {
        return None;
    }
    let Some(Value::Int(tokens)) = values.get(3) else {
        return None;
    };
    let money = match values.get(4)? {
        Value::BulkString(text) => String::from_utf8(text.clone()).ok()?,
        _ => return None,
    };
    // The reserve's keys are (counter, leases) pairs, its last argument the reservation's id.
    let mut call = Call::new(Which::Release);
    for key in &reserve.keys {
        call.key(key.clone());
    }
    let id = reserve.args.last()?;
    call.arg(format!("{id}|{tokens}|{money}"))
        .arg(tokens)
        .arg(money);
    Some(call)
}

/// One script call running `calls` in order.
async fn run_batch(
    conn: &mut ConnectionManager,
    calls: &[&Call],
) -> Result<Vec<Value>, RedisError> {
    let mut invocation = BATCH.prepare_invoke();
    invocation.arg(calls.len());
    for call in calls {
        invocation
            .arg(call.script.code())
            .arg(call.keys.len())
            .arg(call.args.len());
        for key in &call.keys {
            invocation.key(key);
        }
        for arg in &call.args {
            invocation.arg(arg);
        }
    }
    match invocation.invoke_async(conn).await? {
        Value::Array(values) => Ok(values),
        other => Err(RedisError::from((
            redis::ErrorKind::Parse,
            "the batch script answered with no list",
            format!("{other:?}"),
        ))),
    }
}

/// A script call with owned keys and arguments, so that it can be run again.
#[derive(Debug)]
struct Call {
    script: Which,
    keys: Vec<String>,
    args: Vec<String>,
}

impl Call {
    fn new(script: Which) -> Call {
        Call {
            script,
            keys: Vec::with_capacity(8),
            args: Vec::with_capacity(24),
        }
    }

    fn key(&mut self, key: String) -> &mut Call {
        self.keys.push(key);
        self
    }

    fn arg(&mut self, arg: impl ToString) -> &mut Call {
        self.args.push(arg.to_string());
        self
    }

    /// A cap as the scripts take it: tokens, then money; `''` for an uncapped side.
    fn cap(&mut self, cap: &Cap) -> &mut Call {
        self.arg(
            cap.tokens
                .map(clamp_tokens)
                .map(|t| t.to_string())
                .unwrap_or_default(),
        )
        .arg(cap.money.map(money_arg).unwrap_or_default())
    }

    /// Runs this call alone (the settle retries, which must not wait behind a batch).
    async fn run(&self, conn: &mut ConnectionManager) -> Result<Value, RedisError> {
        run_batch(conn, &[self]).await?.pop().ok_or_else(|| {
            RedisError::from((redis::ErrorKind::Parse, "the batch script answered nothing"))
        })
    }
}

/// The lease set member of a reservation: `id|tokens|money`, exactly as the reserve script
/// wrote it.
fn lease_member(id: impl std::fmt::Display, amount: Amount) -> String {
    format!(
        "{id}|{}|{}",
        clamp_tokens(amount.tokens),
        money_arg(amount.money)
    )
}

/// Errors that mean "Redis could not be reached", as opposed to a script that refused.
fn unreachable(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

fn millis(d: Duration) -> u64 {
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
mod tests {
    use super::*;
    use crate::{Limit, Period, Selector, Window};

    /// Durations out of range are refused before anything connects (nothing listens on port
    /// 1): a zero lease would let every reserve purge every reservation.
    #[tokio::test]
    async fn options_out_of_range_are_refused_before_connecting() {
        let url = "redis://127.0.0.1:1/0";
        let cases = [
            (
                RedisStoreOptions::new().lease(Duration::ZERO),
                "lease 0ns is out of range",
            ),
            (
                RedisStoreOptions::new().lease(Duration::from_secs(9)),
                "lease 9s is out of range",
            ),
            (
                RedisStoreOptions::new().task_ttl(Duration::ZERO),
                "task_ttl 0ns is out of range",
            ),
            (
                RedisStoreOptions::new().timeout(Duration::ZERO),
                "timeout 0ns is out of range",
            ),
            (
                RedisStoreOptions::new()
                    .lease(Duration::from_secs(30))
                    .timeout(Duration::from_secs(30)),
                "lease 30s must be longer than timeout 30s",
            ),
        ];
        for (options, want) in cases {
            let error = RedisBudgetStore::connect_with(url, options)
                .await
                .expect_err(want)
                .to_string();
            assert!(error.contains(want), "{error}");
        }
    }

    /// A settle whose reply was lost is sent again by the retry queue: whether it had been
    /// applied or not, it must count once.
    #[tokio::test]
    async fn a_settle_sent_twice_counts_once() {
        let Ok(url) = std::env::var("REDIS_URL") else {
            eprintln!("SKIPPED a_settle_sent_twice_counts_once: REDIS_URL is not set");
            return;
        };
        let prefix = format!("tb-unit:twice:{}-{}", std::process::id(), instance_id());
        let store =
            RedisBudgetStore::connect_with(&url, RedisStoreOptions::new().prefix(prefix.clone()))
                .await
                .unwrap();
        let now: Timestamp = "2026-04-01T08:00:00Z".parse().unwrap();
        let limit = Arc::new(
            Limit::new("daily", Selector::Global, Window::Calendar(Period::Day)).tokens(100),
        );
        let span = limit.window.span(now, &jiff::tz::TimeZone::UTC).unwrap();
        let specs = [CounterSpec {
            key: CounterKey {
                limit: limit.id.clone(),
                scope: "*".into(),
                task: None,
                window: span.id(),
            },
            limit,
            span,
        }];
        let tokens = |n| Amount::new(n, crate::Money::ZERO);
        let ReserveOutcome::Reserved(ticket) = store
            .reserve(&specs, &ReserveRequest::fixed(tokens(50)), now)
            .await
            .unwrap()
        else {
            panic!("50 of 100 fits");
        };
        let reserved = store
            .settle_call(&ticket, &specs, tokens(40), now.as_millisecond())
            .unwrap();
        let unreserved = store
            .settle_call(
                &Ticket::unreserved(),
                &specs,
                tokens(5),
                now.as_millisecond(),
            )
            .unwrap();
        let mut conn = store.inner.conn.clone();
        for call in [&reserved, &reserved, &unreserved, &unreserved] {
            call.run(&mut conn).await.unwrap();
        }
        let usage = store.usage(&specs, now).await.unwrap()[0];
        assert_eq!(usage.committed, tokens(45));
        assert_eq!(usage.admitted, tokens(40));
        assert_eq!((usage.reserved, usage.in_flight), (tokens(0), 0));
        let names = store.scan(&format!("{{{prefix}}}:*")).await.unwrap();
        let _: () = redis::cmd("DEL")
            .arg(names)
            .query_async(&mut store.inner.conn.clone())
            .await
            .unwrap();
    }

    /// A settle arriving after its lease ran out and was forgotten (over an hour later) still
    /// counts, as overshoot; sent again (its reply lost), it still counts once.
    #[tokio::test]
    async fn a_very_late_settle_sent_twice_counts_once() {
        let Ok(url) = std::env::var("REDIS_URL") else {
            eprintln!("SKIPPED a_very_late_settle_sent_twice_counts_once: REDIS_URL is not set");
            return;
        };
        let prefix = format!("tb-unit:late:{}-{}", std::process::id(), instance_id());
        let options = RedisStoreOptions::new()
            .prefix(prefix.clone())
            .lease(Duration::from_secs(60));
        let store = RedisBudgetStore::connect_with(&url, options).await.unwrap();
        let t0: Timestamp = "2026-04-01T08:00:00Z".parse().unwrap();
        let limit = Arc::new(
            Limit::new("daily", Selector::Global, Window::Calendar(Period::Day)).tokens(100),
        );
        let span = limit.window.span(t0, &jiff::tz::TimeZone::UTC).unwrap();
        let specs = [CounterSpec {
            key: CounterKey {
                limit: limit.id.clone(),
                scope: "*".into(),
                task: None,
                window: span.id(),
            },
            limit,
            span,
        }];
        let tokens = |n| Amount::new(n, crate::Money::ZERO);
        let ReserveOutcome::Reserved(ticket) = store
            .reserve(&specs, &ReserveRequest::fixed(tokens(50)), t0)
            .await
            .unwrap()
        else {
            panic!("50 of 100 fits");
        };
        let t1 = t0 + jiff::SignedDuration::from_secs(60 + 3_600 + 1);
        // Reading purges the lease, and forgets it: it ran out over an hour before t1.
        store.usage(&specs, t1).await.unwrap();
        let late = store
            .settle_call(&ticket, &specs, tokens(40), t1.as_millisecond())
            .unwrap();
        let mut conn = store.inner.conn.clone();
        late.run(&mut conn).await.unwrap();
        late.run(&mut conn).await.unwrap();
        let usage = store.usage(&specs, t1).await.unwrap()[0];
        assert_eq!((usage.committed, usage.admitted), (tokens(40), tokens(0)));
        assert_eq!((usage.reserved, usage.in_flight), (tokens(0), 0));
        let names = store.scan(&format!("{{{prefix}}}:*")).await.unwrap();
        let _: () = redis::cmd("DEL")
            .arg(names)
            .query_async(&mut store.inner.conn.clone())
            .await
            .unwrap();
    }
}
