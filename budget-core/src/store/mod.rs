//! Budget counters and the atomic multi-counter reservation.
//!
//! A [`BudgetStore`] keeps, per [`CounterKey`], what was committed and what is reserved. Its one
//! hard duty: [`BudgetStore::reserve`] checks *every* counter a call touches and reserves on all
//! of them or on none, atomically with respect to every other reserve, settle and release. What
//! the counters are (which limits match a call, which window is current) is decided outside, by
//! [`Budget`](crate::Budget), so a store holds no policy and a Redis store can run the same
//! decision ([`admission::decide`](crate::admission::decide)) in a server-side script.

#[cfg(feature = "redis")]
mod allowance;
mod any;
mod memory;
#[cfg(feature = "redis")]
mod redis_store;

use std::future::Future;
use std::sync::Arc;

use jiff::Timestamp;

pub use crate::backend_error::BackendErrorKind;
#[cfg(feature = "redis")]
pub use allowance::{AllowanceOptions, AllowanceStore};
#[cfg(feature = "redis")]
pub use any::redis_control_log;
pub use any::{AnyBudgetStore, STORE_ENV};
pub use memory::MemoryBudgetStore;
#[cfg(feature = "redis")]
pub use redis_store::{RETRY_HORIZON, RedisBudgetStore, RedisControlLog, RedisStoreOptions};

use crate::admission::{Amount, CapKind, ReserveRequest};
use crate::attribution::TaskId;
use crate::limits::{Cap, CounterKey, Limit, WindowSpan};

/// One counter a call touches, with what the store needs to decide on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterSpec {
    /// Which counter.
    pub key: CounterKey,
    /// The limit it counts for (its cap, enforcement and alert thresholds).
    pub limit: Arc<Limit>,
    /// The window the counter belongs to.
    pub span: WindowSpan,
}

impl CounterSpec {
    /// The limit's cap.
    pub fn cap(&self) -> &Cap {
        &self.limit.cap
    }

    /// Hard counters deny; soft ones only count.
    pub fn is_hard(&self) -> bool {
        self.limit.is_hard()
    }
}

/// Committed and reserved usage of one counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterUsage {
    /// Everything committed in the window (actual usage, overshoot included).
    pub committed: Amount,
    /// The part of `committed` that had been reserved in advance. `committed − admitted` is
    /// overshoot: calls that used more than they reserved (usage is never dropped for it).
    pub admitted: Amount,
    /// Reserved by calls in flight.
    pub reserved: Amount,
    /// How many reservations are in flight.
    pub in_flight: u32,
}

impl CounterUsage {
    /// `committed + reserved`: what admission compares with the cap.
    pub fn in_use(&self) -> Amount {
        self.committed.saturating_add(self.reserved)
    }

    /// Usage committed beyond what was reserved.
    pub fn overshoot(&self) -> Amount {
        self.committed.saturating_sub(self.admitted)
    }
}

/// One status line: what is committed (and how much of it overshot its reservation), and what
/// calls in flight hold reserved.
///
/// ```
/// use budget_core::store::CounterUsage;
/// use budget_core::{Amount, Money};
///
/// let usage = CounterUsage {
///     committed: Amount::new(1250, Money::parse_dollars("0.0031").unwrap()),
///     admitted: Amount::new(1200, Money::parse_dollars("0.003").unwrap()),
///     reserved: Amount::new(400, Money::parse_dollars("0.002").unwrap()),
///     in_flight: 2,
/// };
/// assert_eq!(
///     usage.to_string(),
///     "committed 1250 tokens / $0.0031 (overshoot 50 tokens / $0.0001), \
///      reserved 400 tokens / $0.002 by 2 calls in flight"
/// );
/// assert_eq!(
///     CounterUsage::default().to_string(),
///     "committed 0 tokens / $0.00, reserved 0 tokens / $0.00 by 0 calls in flight"
/// );
/// ```
impl std::fmt::Display for CounterUsage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Amount { tokens, money } = self.committed;
        write!(f, "committed {tokens} tokens / {money}")?;
        let overshoot = self.overshoot();
        if overshoot != Amount::ZERO {
            let Amount { tokens, money } = overshoot;
            write!(f, " (overshoot {tokens} tokens / {money})")?;
        }
        let Amount { tokens, money } = self.reserved;
        let plural = if self.in_flight == 1 { "" } else { "s" };
        write!(
            f,
            ", reserved {tokens} tokens / {money} by {} call{plural} in flight",
            self.in_flight
        )
    }
}

/// Proof of a reservation held in a store. Not `Clone`: it is settled or released once.
#[derive(Debug, PartialEq, Eq)]
pub struct Ticket {
    id: u64,
    amount: Amount,
    units: u64,
    keys: Vec<CounterKey>,
}

impl Ticket {
    /// A ticket for usage that was never reserved (a cache hit, a late report): settling it
    /// only adds.
    pub fn unreserved() -> Ticket {
        Ticket {
            id: 0,
            amount: Amount::ZERO,
            units: 0,
            keys: Vec::new(),
        }
    }

    /// A ticket as a store issues it: `amount` (for `units` units) held on `keys`.
    pub fn new(id: u64, amount: Amount, units: u64, keys: Vec<CounterKey>) -> Ticket {
        Ticket {
            id,
            amount,
            units,
            keys,
        }
    }

    /// How many units (output tokens) the reservation granted.
    pub fn units(&self) -> u64 {
        self.units
    }

    /// The store's id of the reservation (0 for [`Ticket::unreserved`]).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// How much was reserved on each counter.
    pub fn amount(&self) -> Amount {
        self.amount
    }

    /// The counters reserved on.
    pub fn keys(&self) -> &[CounterKey] {
        &self.keys
    }
}

/// Why the store refused a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Index, in the specs passed to `reserve`, of the counter that refused.
    pub counter: usize,
    /// `true` when the request exceeds the cap itself and can never fit.
    pub never: bool,
    /// Which cap refused.
    pub cap_kind: CapKind,
    /// The counter's committed + reserved at the time.
    pub in_use: Amount,
    /// When enough budget frees up, if the store can tell (a new calendar window, rolling usage
    /// ageing out). `None` when only settling reservations can free it, or never.
    pub retry_after: Option<Timestamp>,
}

crate::backend_error::backend_error! {
    /// A store that could not do its job (as opposed to a budget that said no): what
    /// [kind](StoreError::kind) of failure, which store, what went wrong, and the driver's error
    /// as its [`source`](std::error::Error::source).
    ///
    /// ```
    /// use budget_core::store::StoreError;
    /// use budget_core::BackendErrorKind;
    ///
    /// let e = StoreError::new(BackendErrorKind::Timeout, "redis 127.0.0.1 (prefix p)", "reserve: timed out");
    /// assert_eq!(e.to_string(), "budget store redis 127.0.0.1 (prefix p): reserve: timed out");
    /// assert!(e.kind().is_outage());
    /// ```
    StoreError, store, "budget store", "`memory`, `redis://…`"
}

/// The outcome of a reservation attempt.
#[derive(Debug)]
pub enum ReserveOutcome {
    /// Reserved on every counter.
    Reserved(Ticket),
    /// Reserved on none: one counter refused.
    Denied(Denial),
}

/// Atomic budget counters. See the module docs.
pub trait BudgetStore: Send + Sync + 'static {
    /// Reserves on every hard counter of `counters`, or on none: the request's base plus the
    /// most units that fit on *every* counter (at least `min_units`, at most `max_units`; see
    /// [`admission::fit`](crate::admission::fit)). Soft counters are not reserved on.
    fn reserve(
        &self,
        counters: &[CounterSpec],
        request: &ReserveRequest,
        now: Timestamp,
    ) -> impl Future<Output = Result<ReserveOutcome, StoreError>> + Send;

    /// Settles a ticket: its reservation is removed from the counters it was made on, and
    /// `actual` is committed to `counters` (the windows current *now*, which may differ from the
    /// ones reserved on). Returns each counter's usage after the commit, in `counters` order.
    ///
    /// **Handed over at call time**: the settle is taken when `settle` is called, before the
    /// future is first polled, and happens exactly once even if the future is dropped unpolled
    /// or half-way (a store that needs I/O queues it, with its retries). The future only
    /// reports the outcome. A commit relies on this to stay whole when it is cancelled.
    fn settle(
        &self,
        ticket: Ticket,
        counters: &[CounterSpec],
        actual: Amount,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<CounterUsage>, StoreError>> + Send;

    /// Gives a reservation back without committing anything. Must not fail or block: stores
    /// that need I/O queue it (and their reservations expire as a backstop).
    fn release(&self, ticket: Ticket);

    /// Current usage of the given counters, in order (zero for counters never used).
    fn usage(
        &self,
        counters: &[CounterSpec],
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<CounterUsage>, StoreError>> + Send;

    /// Every counter with usage or reservations in a current window, for status reports.
    fn snapshot(
        &self,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<(CounterKey, CounterUsage)>, StoreError>> + Send;

    /// Drops the per-task counters of a finished task.
    fn forget_task(&self, task: &TaskId);

    /// Waits until every settle and release handed over so far has reached the store (a store
    /// that queues them drains its queue). In-memory stores have nothing to wait for.
    fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        std::future::ready(Ok(()))
    }

    /// `true` when the counters outlive this process (a shared store such as Redis): nothing
    /// needs rebuilding from the ledger at start-up, and rebuilding would count usage twice.
    fn keeps_counters(&self) -> bool {
        false
    }
}

/// A shared store is a store: several budgets (or a test and a budget) can hold one.
impl<S: BudgetStore> BudgetStore for Arc<S> {
    fn reserve(
        &self,
        counters: &[CounterSpec],
        request: &ReserveRequest,
        now: Timestamp,
    ) -> impl Future<Output = Result<ReserveOutcome, StoreError>> + Send {
        (**self).reserve(counters, request, now)
    }

    fn settle(
        &self,
        ticket: Ticket,
        counters: &[CounterSpec],
        actual: Amount,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<CounterUsage>, StoreError>> + Send {
        (**self).settle(ticket, counters, actual, now)
    }

    fn release(&self, ticket: Ticket) {
        (**self).release(ticket);
    }

    fn usage(
        &self,
        counters: &[CounterSpec],
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<CounterUsage>, StoreError>> + Send {
        (**self).usage(counters, now)
    }

    fn snapshot(
        &self,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<(CounterKey, CounterUsage)>, StoreError>> + Send {
        (**self).snapshot(now)
    }

    fn forget_task(&self, task: &TaskId) {
        (**self).forget_task(task);
    }

    fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).flush()
    }

    fn keeps_counters(&self) -> bool {
        (**self).keeps_counters()
    }
}
