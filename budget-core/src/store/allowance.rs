//! Shared budgets at in-process speed: each process admits calls against an allowance it holds
//! in Redis, and talks to Redis only to top it up and to report what it spent.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use parking_lot::Mutex;

use super::redis_store::{Call, Which, clamp_tokens, lease_member, millis, money_arg};
use crate::Money;
use crate::admission::{Amount, ReserveRequest, fit};
use crate::attribution::TaskId;
use crate::backend_error::BackendErrorKind;
use crate::limits::{Cap, CounterKey, WindowSpan};
use crate::store::{
    BudgetStore, CounterSpec, CounterUsage, Denial, MemoryBudgetStore, RedisBudgetStore,
    ReserveOutcome, StoreError, Ticket,
};

/// Top-ups one call may wait for before it gives up with an error.
const MAX_TOP_UPS: usize = 256;

/// How an [`AllowanceStore`] sizes and syncs its allowances.
#[derive(Debug, Clone)]
pub struct AllowanceOptions {
    chunk: Amount,
    share: u32,
    sync_every: Duration,
    idle_after: Duration,
}

impl Default for AllowanceOptions {
    fn default() -> Self {
        AllowanceOptions {
            chunk: Amount::new(200_000, Money::from_dollars(1)),
            share: 8,
            sync_every: Duration::from_millis(100),
            idle_after: Duration::from_secs(1),
        }
    }
}

impl AllowanceOptions {
    /// The defaults: top-ups of up to 200,000 tokens and $1 beyond what the waiting call
    /// needs, never more than an eighth of what a limit has left; usage reported every 100 ms;
    /// allowance unused for a second given back.
    pub fn new() -> AllowanceOptions {
        AllowanceOptions::default()
    }

    /// The most a top-up adds beyond what the waiting call needs.
    pub fn chunk(mut self, chunk: Amount) -> Self {
        self.chunk = chunk;
        self
    }

    /// A top-up never takes more than `1/share` of what a limit has left (at least 1).
    pub fn share(mut self, share: u32) -> Self {
        self.share = share.max(1);
        self
    }

    /// How often committed usage is reported to Redis (and leases renewed). A process that
    /// dies loses at most this much of its usage from the shared counters (never from the
    /// ledger).
    pub fn sync_every(mut self, every: Duration) -> Self {
        self.sync_every = every;
        self
    }

    /// Allowance unused for this long is given back for other processes.
    pub fn idle_after(mut self, idle: Duration) -> Self {
        self.idle_after = idle;
        self
    }
}

/// A budget store for many processes that admits calls locally.
///
/// [`RedisBudgetStore`] asks Redis on every call: exact, and bound by Redis's single thread
/// (about 10 k calls a second on the benchmark machine). This store instead holds, per shared
/// counter, an *allowance*: budget reserved in Redis as a lease for this process, taken in
/// chunks. Calls are admitted against the allowance under a local lock (all counters or none,
/// as everywhere); Redis is asked only when an allowance runs short (one round trip that also
/// reports what was spent) and every [`sync_every`](AllowanceOptions::sync_every) to report
/// usage. Per-task counters never leave the process (a task runs in one process).
///
/// The hard limit still holds across processes: Redis never grants more allowance than the
/// cap leaves, and a process never admits beyond its allowance. The costs, stated:
/// - near a cap a call can be refused while another process holds unused allowance, for at
///   most [`idle_after`](AllowanceOptions::idle_after) (a top-up never takes more than a
///   [`share`](AllowanceOptions::share) of what is left, so allowance stays spread);
/// - usage reaches the shared counters up to `sync_every` late, and a process that dies
///   without [`close`](AllowanceStore::close) leaves that much of its usage uncounted there
///   (the ledger has all of it); its unused allowance returns when its lease runs out;
/// - a call whose actual usage exceeds its reservation is committed in full (overshoot), as in
///   every store;
/// - a top-up or sync whose reply is lost after Redis ran it (a connection reset, a timeout):
///   the next one finds the old lease gone and reports nothing, so the usage committed here
///   between the two is missing from the shared counters (the ledger has it), and the lost
///   grant's lease holds until it expires. (Reserves on [`RedisBudgetStore`] are given back in
///   that case; grants are not yet.)
#[derive(Clone, Debug)]
pub struct AllowanceStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    redis: RedisBudgetStore,
    tasks: MemoryBudgetStore,
    options: AllowanceOptions,
    grants: Mutex<HashMap<CounterKey, Grant>>,
    /// One top-up or sync at a time, so that a lease is replaced by one operation only.
    syncing: tokio::sync::Mutex<()>,
    next_ticket: AtomicU64,
    /// The callers' clock: the last time they passed, and when. Syncs run on it too, so that a
    /// lease is dated by one clock (leases from a top-up and from a sync would otherwise
    /// disagree on what has expired when callers use an injected clock).
    clock: Mutex<Option<(Timestamp, Instant)>>,
}

/// This process's allowance on one shared counter.
#[derive(Debug)]
struct Grant {
    spec: CounterSpec,
    /// The lease in Redis: its id and amount (`granted`).
    lease: Option<u64>,
    lease_since: Instant,
    granted: Amount,
    /// Reserved by calls in flight here.
    reserved: Amount,
    /// Committed here since the last sync.
    committed: Amount,
    /// While a grant that shrinks the lease is in flight: the most calls here may hold
    /// (reserved + committed), so that nothing is admitted beyond the smaller lease to come.
    ceiling: Option<Amount>,
    /// The counter as Redis last reported it.
    remote: CounterUsage,
    last_used: Instant,
}

impl Grant {
    fn new(spec: CounterSpec) -> Grant {
        Grant {
            spec,
            lease: None,
            lease_since: Instant::now(),
            granted: Amount::ZERO,
            reserved: Amount::ZERO,
            committed: Amount::ZERO,
            ceiling: None,
            remote: CounterUsage::default(),
            last_used: Instant::now(),
        }
    }

    /// The counter as this process sees it: Redis's last word plus what is committed here
    /// and not reported yet.
    fn usage(&self) -> CounterUsage {
        self.over(self.remote)
    }

    /// `remote` (the counter as Redis reported it) with what is committed here and not
    /// reported yet moved out of the reserved allowance it was drawn from.
    fn over(&self, remote: CounterUsage) -> CounterUsage {
        CounterUsage {
            committed: remote.committed.saturating_add(self.committed),
            reserved: remote.reserved.saturating_sub(self.committed),
            ..remote
        }
    }
}

/// Lifts a [`Grant::ceiling`] when dropped.
struct LiftCeiling<'a> {
    grants: &'a Mutex<HashMap<CounterKey, Grant>>,
    key: &'a CounterKey,
}

impl Drop for LiftCeiling<'_> {
    fn drop(&mut self) {
        if let Some(g) = self.grants.lock().get_mut(self.key) {
            g.ceiling = None;
        }
    }
}

/// Why a grant did not give what was asked.
enum Granted {
    Yes,
    No(Denial),
}

impl AllowanceStore {
    /// Admits locally against allowances held in `redis`. Starts the sync timer.
    pub fn new(redis: RedisBudgetStore, options: AllowanceOptions) -> AllowanceStore {
        let inner = Arc::new(Inner {
            redis,
            tasks: MemoryBudgetStore::new(),
            options,
            grants: Mutex::new(HashMap::new()),
            syncing: tokio::sync::Mutex::new(()),
            next_ticket: AtomicU64::new(1),
            clock: Mutex::new(None),
        });
        tokio::spawn(sync_forever(Arc::downgrade(&inner)));
        AllowanceStore { inner }
    }

    /// Reports every unreported usage to Redis and gives back every allowance not backing a
    /// call in flight. Call it before the process exits.
    pub async fn close(&self) -> Result<(), StoreError> {
        self.inner.sync(true).await
    }

    /// The Redis store's name (URL without password, and prefix).
    pub fn name(&self) -> &str {
        self.inner.redis.name()
    }

    /// Reports usage to Redis now (the timer does it every `sync_every`).
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.inner.sync(false).await
    }

    /// Settles `ticket` in this process: takes it off the allowances and adds `actual` to
    /// what is committed here and not reported yet.
    pub(crate) fn settle_now(
        &self,
        ticket: Ticket,
        counters: &[CounterSpec],
        actual: Amount,
        now: Timestamp,
    ) -> Vec<CounterUsage> {
        let inner = &self.inner;
        inner.saw(now);
        let task_keys = task_keys(&ticket);
        let task_specs: Vec<CounterSpec> =
            counters.iter().filter(|s| !is_shared(s)).cloned().collect();
        let task_usage = if task_specs.is_empty() && task_keys.is_empty() {
            Vec::new()
        } else {
            let local = Ticket::new(0, ticket.amount(), ticket.units(), task_keys);
            inner.tasks.settle_now(local, &task_specs, actual, now)
        };
        let mut task_usage = task_usage.into_iter();
        let mut grants = inner.grants.lock();
        unreserve(&mut grants, &ticket);
        let mut out = Vec::with_capacity(counters.len());
        for spec in counters {
            if !is_shared(spec) {
                out.push(task_usage.next().unwrap_or_default());
                continue;
            }
            let g = grants
                .entry(spec.key.clone())
                .or_insert_with(|| Grant::new(spec.clone()));
            g.spec = spec.clone();
            g.committed = g.committed.saturating_add(actual);
            g.last_used = Instant::now();
            out.push(g.usage());
        }
        out
    }
}

async fn sync_forever(store: Weak<Inner>) {
    loop {
        let every = match store.upgrade() {
            Some(inner) => inner.options.sync_every,
            None => return,
        };
        tokio::time::sleep(every).await;
        let Some(inner) = store.upgrade() else {
            return;
        };
        if let Err(e) = inner.sync(false).await {
            tracing::warn!(error = %e, "allowance sync failed; retrying at the next tick");
        }
    }
}

impl Inner {
    /// Notes the time a caller passed.
    fn saw(&self, now: Timestamp) {
        *self.clock.lock() = Some((now, Instant::now()));
    }

    /// The callers' clock now: the last time they passed plus what has elapsed since (the
    /// system clock before any caller came).
    fn now(&self) -> Timestamp {
        match *self.clock.lock() {
            Some((then, at)) => jiff::SignedDuration::try_from(at.elapsed())
                .ok()
                .and_then(|elapsed| then.checked_add(elapsed).ok())
                .unwrap_or(then),
            None => Timestamp::now(),
        }
    }

    /// One grant operation on `key`: ends the current lease, reports `committed`, and leases
    /// `keep + need + extra`.
    async fn grant(
        &self,
        key: &CounterKey,
        need: Amount,
        shrink: bool,
        now: Timestamp,
    ) -> Result<Granted, StoreError> {
        let redis = &self.redis;
        let (call, sent) = {
            let mut grants = self.grants.lock();
            let Some(g) = grants.get_mut(key) else {
                return Ok(Granted::Yes);
            };
            let sent = g.committed;
            let keep = if shrink {
                // The new lease covers only the calls in flight now: until it is in place,
                // admit nothing beyond what is in use now (calls ending make room).
                g.ceiling = Some(g.reserved.saturating_add(sent));
                g.reserved
            } else {
                g.granted.saturating_sub(sent).max(g.reserved)
            };
            let chunk = if need.is_zero() {
                Amount::ZERO
            } else {
                self.options.chunk
            };
            let keys = redis.keys();
            let now_ms = now.as_millisecond();
            let lease_ms = i64::try_from(millis(redis.lease())).unwrap_or(i64::MAX);
            let mut call = Call::new(Which::Grant);
            call.key(keys.counter(key))
                .key(keys.leases(key))
                .key(keys.sequence());
            call.arg(now_ms)
                .arg(now_ms.saturating_add(lease_ms))
                .arg(
                    g.lease
                        .map(|id| lease_member(id, g.granted))
                        .unwrap_or_default(),
                )
                .arg(clamp_tokens(g.granted.tokens))
                .arg(money_arg(g.granted.money))
                .arg(clamp_tokens(sent.tokens))
                .arg(money_arg(sent.money))
                .arg(clamp_tokens(keep.tokens))
                .arg(money_arg(keep.money))
                .arg(clamp_tokens(need.tokens))
                .arg(money_arg(need.money))
                .arg(clamp_tokens(chunk.tokens))
                .arg(money_arg(chunk.money))
                .arg(self.options.share.max(1));
            redis.window_args(&mut call, g.spec.span, now_ms)?;
            let cap = if g.spec.is_hard() {
                *g.spec.cap()
            } else {
                Cap::default()
            };
            call.cap(&cap);
            (call, sent)
        };
        // However this ends (a reply, an error, the caller gone), the ceiling goes.
        let _lift = LiftCeiling {
            grants: &self.grants,
            key,
        };
        let mut reply = redis
            .run(call)
            .await
            .1
            .map_err(|e| redis.op_error("grant", e))?;
        let bad = |e: String| redis.unexpected("grant: unexpected reply", e);
        let refused = reply.int().map_err(bad)? == 1;
        let never = reply.int().map_err(bad)? == 1;
        let cap_kind = match reply.int().map_err(bad)? {
            0 => crate::admission::CapKind::Tokens,
            _ => crate::admission::CapKind::Money,
        };
        let id = reply.u64().map_err(bad)?;
        let granted = Amount::new(reply.u64().map_err(bad)?, reply.money().map_err(bad)?);
        let remote = reply.usage().map_err(bad)?;
        let mut grants = self.grants.lock();
        let Some(g) = grants.get_mut(key) else {
            return Ok(Granted::Yes);
        };
        g.committed = g.committed.saturating_sub(sent);
        g.lease = (id != 0).then_some(id);
        g.lease_since = Instant::now();
        g.granted = granted;
        g.remote = remote;
        if !refused {
            return Ok(Granted::Yes);
        }
        let retry_after = match (never, g.spec.span) {
            (false, WindowSpan::Calendar { end, .. }) => Some(end),
            _ => None,
        };
        Ok(Granted::No(Denial {
            counter: 0,
            never,
            cap_kind,
            in_use: remote.in_use(),
            retry_after,
        }))
    }

    /// Reports what was committed on every counter; with `closing` (or for allowances idle
    /// past `idle_after`, or windows that ended) gives back what no call in flight needs.
    async fn sync(&self, closing: bool) -> Result<(), StoreError> {
        let _one = self.syncing.lock().await;
        let now = self.now();
        let half_lease = self.redis.lease() / 2;
        let due: Vec<(CounterKey, bool)> = {
            let grants = self.grants.lock();
            grants
                .iter()
                .filter_map(|(key, g)| {
                    let ended = !g.spec.span.contains(now)
                        && !matches!(g.spec.span, WindowSpan::Rolling { .. });
                    let idle = g.last_used.elapsed() >= self.options.idle_after;
                    let shrink = closing || ended || idle;
                    let spare = g.granted != g.reserved;
                    let report = !g.committed.is_zero();
                    let renew = g.lease.is_some() && g.lease_since.elapsed() >= half_lease;
                    (report || renew || (shrink && spare)).then(|| (key.clone(), shrink))
                })
                .collect()
        };
        let mut first_error = None;
        for (key, shrink) in due {
            if let Err(e) = self.grant(&key, Amount::ZERO, shrink, now).await {
                first_error.get_or_insert(e);
            }
        }
        // Forget counters with nothing left here.
        self.grants.lock().retain(|_, g| {
            !(g.lease.is_none() && g.reserved.is_zero() && g.committed.is_zero())
                || g.last_used.elapsed() < self.options.idle_after
        });
        first_error.map_or(Ok(()), Err)
    }
}

fn is_shared(spec: &CounterSpec) -> bool {
    spec.key.task.is_none()
}

/// The ticket's per-task counters (kept in the process's own memory store).
fn task_keys(ticket: &Ticket) -> Vec<CounterKey> {
    ticket
        .keys()
        .iter()
        .filter(|k| k.task.is_some())
        .cloned()
        .collect()
}

/// Takes the ticket's amount off what calls hold of the allowances it was admitted against.
/// The caller holds the lock, so that a settle can commit in the same step.
fn unreserve(grants: &mut HashMap<CounterKey, Grant>, ticket: &Ticket) {
    for key in ticket.keys().iter().filter(|k| k.task.is_none()) {
        if let Some(g) = grants.get_mut(key) {
            g.reserved = g.reserved.saturating_sub(ticket.amount());
        }
    }
}

impl BudgetStore for AllowanceStore {
    async fn reserve(
        &self,
        counters: &[CounterSpec],
        request: &ReserveRequest,
        now: Timestamp,
    ) -> Result<ReserveOutcome, StoreError> {
        let inner = &self.inner;
        inner.saw(now);
        let hard: Vec<(usize, &CounterSpec)> = counters
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_hard())
            .collect();
        let tasks: Vec<CounterSpec> = hard
            .iter()
            .filter(|(_, s)| !is_shared(s))
            .map(|(_, s)| (*s).clone())
            .collect();
        let task_index: Vec<usize> = hard
            .iter()
            .filter(|(_, s)| !is_shared(s))
            .map(|(i, _)| *i)
            .collect();
        // Each top-up either makes room or refuses; other calls here may use the room first
        // (a call that overshoots its reservation empties an allowance at once), so a call
        // may need several.
        for _ in 0..MAX_TOP_UPS {
            let lacking = {
                let mut grants = inner.grants.lock();
                let mut units = request.max_units.max(request.min_units);
                let mut lacking = None;
                for (i, spec) in hard.iter().filter(|(_, s)| is_shared(s)) {
                    let g = grants
                        .entry(spec.key.clone())
                        .or_insert_with(|| Grant::new((*spec).clone()));
                    g.spec = (*spec).clone();
                    let allowed = g.ceiling.map_or(g.granted, |c| c.min(g.granted));
                    let cap = Cap {
                        tokens: Some(allowed.tokens),
                        money: Some(allowed.money),
                    };
                    let in_use = g.reserved.saturating_add(g.committed);
                    match fit(&cap, in_use, request) {
                        Ok(fits) => units = units.min(fits),
                        Err(_) => {
                            let need = request
                                .amount(request.min_units)
                                .saturating_add(in_use)
                                .saturating_sub(allowed);
                            lacking = Some((*i, spec.key.clone(), need));
                            break;
                        }
                    }
                }
                if lacking.is_none() {
                    let mut units = units;
                    let mut keys = Vec::with_capacity(hard.len());
                    if !tasks.is_empty() {
                        let local = ReserveRequest {
                            max_units: units,
                            ..*request
                        };
                        match inner.tasks.reserve_now(&tasks, &local, now) {
                            ReserveOutcome::Reserved(t) => {
                                units = t.units();
                                keys.extend(t.keys().iter().cloned());
                            }
                            ReserveOutcome::Denied(mut d) => {
                                d.counter = task_index[d.counter];
                                return Ok(ReserveOutcome::Denied(d));
                            }
                        }
                    }
                    let amount = request.amount(units);
                    for (_, spec) in hard.iter().filter(|(_, s)| is_shared(s)) {
                        if let Some(g) = grants.get_mut(&spec.key) {
                            g.reserved = g.reserved.saturating_add(amount);
                            g.last_used = Instant::now();
                            keys.push(spec.key.clone());
                        }
                    }
                    let id = inner.next_ticket.fetch_add(1, Ordering::Relaxed);
                    return Ok(ReserveOutcome::Reserved(Ticket::new(
                        id, amount, units, keys,
                    )));
                }
                lacking
            };
            let Some((index, key, need)) = lacking else {
                continue;
            };
            let _one = inner.syncing.lock().await;
            match inner.grant(&key, need, false, now).await? {
                Granted::Yes => {}
                Granted::No(mut denial) => {
                    denial.counter = index;
                    return Ok(ReserveOutcome::Denied(denial));
                }
            }
        }
        Err(inner.redis.error(
            BackendErrorKind::Contended,
            "allowance",
            "the allowance kept running out while topping up",
        ))
    }

    fn settle(
        &self,
        ticket: Ticket,
        counters: &[CounterSpec],
        actual: Amount,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<CounterUsage>, StoreError>> + Send {
        // Settled here and now, whether or not the future is ever polled: the usage joins what
        // the next sync (or flush) reports to Redis.
        std::future::ready(Ok(self.settle_now(ticket, counters, actual, now)))
    }

    fn release(&self, ticket: Ticket) {
        unreserve(&mut self.inner.grants.lock(), &ticket);
        let task_keys = task_keys(&ticket);
        if !task_keys.is_empty() {
            self.inner
                .tasks
                .release(Ticket::new(0, ticket.amount(), ticket.units(), task_keys));
        }
    }

    async fn usage(
        &self,
        counters: &[CounterSpec],
        now: Timestamp,
    ) -> Result<Vec<CounterUsage>, StoreError> {
        let shared: Vec<CounterSpec> = counters.iter().filter(|s| is_shared(s)).cloned().collect();
        let tasks: Vec<CounterSpec> = counters.iter().filter(|s| !is_shared(s)).cloned().collect();
        let remote = self.inner.redis.usage(&shared, now).await?;
        let mut remote = remote.into_iter();
        let mut local = self.inner.tasks.usage_now(&tasks).into_iter();
        let grants = self.inner.grants.lock();
        Ok(counters
            .iter()
            .map(|spec| {
                if !is_shared(spec) {
                    return local.next().unwrap_or_default();
                }
                let u = remote.next().unwrap_or_default();
                grants.get(&spec.key).map_or(u, |g| g.over(u))
            })
            .collect())
    }

    async fn snapshot(
        &self,
        now: Timestamp,
    ) -> Result<Vec<(CounterKey, CounterUsage)>, StoreError> {
        let mut out = self.inner.redis.snapshot(now).await?;
        {
            let grants = self.inner.grants.lock();
            for (key, u) in &mut out {
                if let Some(g) = grants.get(key) {
                    *u = g.over(*u);
                }
            }
        }
        out.extend(self.inner.tasks.snapshot_now(now));
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn forget_task(&self, task: &TaskId) {
        self.inner.tasks.forget_task(task);
    }

    /// Reports every usage settled here so far to Redis, then waits until the Redis store has
    /// delivered it (and every release) there.
    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.sync(false).await?;
        self.inner.redis.flush().await
    }

    fn keeps_counters(&self) -> bool {
        true
    }
}
