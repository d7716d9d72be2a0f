//! The in-memory store: one mutex around a map of counters.
//!
//! A single lock makes "all or none" trivially atomic; reserve and settle hold it for a few
//! hash lookups (well under a microsecond), which measures faster than lock-free schemes that
//! must roll back partial reservations. The lock is taken with `try_lock` first so that stress
//! tests can prove threads really collided ([`MemoryBudgetStore::contended`]).
//!
//! # When a limit's window changes
//!
//! Counters are keyed by the limit's id, so a new cap simply applies to the usage so far. A new
//! *window* (a rolling duration, a calendar period, rolling to calendar and back) is noticed
//! where it shows: a rolling counter whose slot width differs from the call's, or a counter
//! missing for a limit last seen with another window. The usage is then carried over, rounded
//! toward safety: each amount is placed at the latest instant it may have happened (the end of
//! its old slot or period, never later than now), so it stays in the new window at least as
//! long as it truly belongs there. Usage that had already left the old window, or that the
//! store no longer holds (ended calendar counters are swept), is not brought back. Reservations
//! in flight across the change are carried as if committed, and commit again when they settle:
//! the new window over-counts them until it ends, never under-counts. Per-task windows are not
//! carried (no usage of the old window belongs to one task).

use std::future::{Future, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;
use parking_lot::{Mutex, MutexGuard};

use super::{BudgetStore, CounterSpec, CounterUsage, Denial, ReserveOutcome, StoreError, Ticket};
use crate::admission::{Amount, Decision, ReserveRequest, fit};
use crate::attribution::TaskId;
use crate::limits::{CounterKey, ROLLING_LIVE_SLOTS, ROLLING_SLOTS, Window, WindowSpan};

/// Budget counters in this process's memory. Fast, exact, and gone on restart.
#[derive(Debug, Default)]
pub struct MemoryBudgetStore {
    state: Mutex<State>,
    contended: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    counters: foldhash::HashMap<CounterKey, Counter>,
    next_ticket: u64,
    ops_since_sweep: u32,
    /// The window each limit's counters were last kept in (per-task windows are not tracked:
    /// every task scope has a limit of its own), to notice a limit whose window changed.
    windows: foldhash::HashMap<Arc<str>, Window>,
}

/// Committed usage and the reserved part of it.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    committed: Amount,
    admitted: Amount,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.committed = self.committed.saturating_add(other.committed);
        self.admitted = self.admitted.saturating_add(other.admitted);
    }
}

#[derive(Debug)]
struct Counter {
    /// For task and calendar windows: everything committed. Unused for rolling windows.
    total: Tally,
    /// For rolling windows: committed usage per slot.
    ring: Option<Box<Ring>>,
    reserved: Amount,
    in_flight: u32,
    /// Calendar windows end; the counter may be dropped after that once nothing is in flight.
    ends: Option<Timestamp>,
    /// Its limit moved to another window: its usage was carried there, and it stays only
    /// until the reservations still made on it are settled.
    retired: bool,
}

#[derive(Debug)]
struct Ring {
    slot_nanos: i64,
    /// `(slot number, usage)`; slot `n` lives at index `n % ROLLING_LIVE_SLOTS`.
    slots: Vec<(i64, Tally)>,
}

impl Ring {
    fn new(slot_nanos: i64) -> Ring {
        Ring {
            slot_nanos,
            slots: vec![(i64::MIN, Tally::default()); ROLLING_LIVE_SLOTS as usize],
        }
    }

    fn live(&self, current: i64) -> impl Iterator<Item = &(i64, Tally)> {
        let oldest = current - i64::from(ROLLING_SLOTS);
        self.slots
            .iter()
            .filter(move |(n, _)| *n >= oldest && *n <= current)
    }

    fn sum(&self, current: i64) -> Tally {
        let mut t = Tally::default();
        for (_, tally) in self.live(current) {
            t.add(*tally);
        }
        t
    }

    fn add(&mut self, current: i64, tally: Tally) {
        let at = current.rem_euclid(i64::from(ROLLING_LIVE_SLOTS)) as usize;
        let slot = &mut self.slots[at];
        if slot.0 != current {
            *slot = (current, Tally::default());
        }
        slot.1.add(tally);
    }

    /// Every stored slot's usage, with the last instant (in nanoseconds) it may have
    /// happened at.
    fn entries(&self) -> impl Iterator<Item = (Option<i64>, Tally)> + '_ {
        let width = self.slot_nanos;
        self.slots
            .iter()
            .filter(|(n, _)| *n != i64::MIN)
            .map(move |&(n, tally)| {
                let last = n
                    .checked_add(1)
                    .and_then(|m| m.checked_mul(width))
                    .map(|end| end - 1);
                (last, tally)
            })
    }

    /// The same usage in slots of another width, each amount in the new slot holding the
    /// last instant it may have happened at (but not after the current slot): it never leaves
    /// the window earlier than it would have in the old slots.
    fn reslotted(&self, slot_nanos: i64, current: i64) -> Ring {
        let mut ring = Ring::new(slot_nanos);
        for (last, tally) in self.entries() {
            ring.place(current, last, tally);
        }
        ring
    }

    /// Adds usage last possibly seen at `last` (nanoseconds; `None`: now), if it is still in
    /// the window.
    fn place(&mut self, current: i64, last: Option<i64>, tally: Tally) {
        let at = last.map_or(current, |l| l.div_euclid(self.slot_nanos).min(current));
        if at >= current - i64::from(ROLLING_SLOTS) {
            self.add(at, tally);
        }
    }

    /// When enough committed usage will have aged out that `need` more fits, given that
    /// `excess` must leave the window.
    fn frees_at(&self, current: i64, excess: Amount) -> Option<Timestamp> {
        let mut live: Vec<_> = self.live(current).copied().collect();
        live.sort_unstable_by_key(|(n, _)| *n);
        let mut freed = Amount::ZERO;
        for (n, tally) in live {
            freed = freed.saturating_add(tally.committed);
            if freed.tokens >= excess.tokens && freed.money >= excess.money {
                let leaves = n
                    .checked_add(i64::from(ROLLING_LIVE_SLOTS))?
                    .checked_mul(self.slot_nanos)?;
                return Timestamp::from_nanosecond(i128::from(leaves)).ok();
            }
        }
        None
    }
}

impl Counter {
    fn new(span: WindowSpan) -> Counter {
        Counter {
            total: Tally::default(),
            ring: match span {
                WindowSpan::Rolling { slot_nanos, .. } => Some(Box::new(Ring::new(slot_nanos))),
                _ => None,
            },
            reserved: Amount::ZERO,
            in_flight: 0,
            ends: match span {
                WindowSpan::Calendar { end, .. } => Some(end),
                _ => None,
            },
            retired: false,
        }
    }

    /// Makes the counter the one of `span`. Nothing to do unless the limit's window changed
    /// (a rolling duration gives another slot width; a calendar period another end).
    fn fit_to(&mut self, span: WindowSpan) {
        self.retired = false;
        match span {
            WindowSpan::Rolling { slot_nanos, slot } => match &mut self.ring {
                Some(ring) if ring.slot_nanos == slot_nanos => {}
                Some(ring) => **ring = ring.reslotted(slot_nanos, slot),
                None => {
                    // Kept in another shape: all of it is placed now, the latest it may be.
                    let mut ring = Ring::new(slot_nanos);
                    ring.add(slot, std::mem::take(&mut self.total));
                    self.ring = Some(Box::new(ring));
                    self.ends = None;
                }
            },
            WindowSpan::Calendar { end, .. } => {
                if let Some(ring) = self.ring.take() {
                    for (_, tally) in ring.entries() {
                        self.total.add(tally);
                    }
                }
                self.ends = Some(end);
            }
            WindowSpan::Task => {}
        }
    }

    /// The usage to carry to another window, each amount with the last instant (nanoseconds)
    /// it may have happened at (`None`: up to now). In-flight reservations count as used.
    fn carried(&self) -> Vec<(Option<i64>, Tally)> {
        let mut out: Vec<_> = match &self.ring {
            Some(ring) => ring.entries().collect(),
            None => {
                let last = self
                    .ends
                    .and_then(|end| i64::try_from(end.as_nanosecond()).ok())
                    .map(|end| end - 1);
                vec![(last, self.total)]
            }
        };
        out.push((
            None,
            Tally {
                committed: self.reserved,
                admitted: self.reserved,
            },
        ));
        out
    }

    /// Adds usage carried from another window, if it falls in this one.
    fn take_in(&mut self, span: WindowSpan, last: Option<i64>, tally: Tally) {
        match (&mut self.ring, span) {
            (Some(ring), WindowSpan::Rolling { slot, .. }) => ring.place(slot, last, tally),
            (_, WindowSpan::Calendar { start, .. }) => {
                let start = i64::try_from(start.as_nanosecond()).unwrap_or(i64::MIN);
                if last.is_none_or(|l| l >= start) {
                    self.total.add(tally);
                }
            }
            _ => self.total.add(tally),
        }
    }

    fn tally(&self, span: WindowSpan) -> Tally {
        match (&self.ring, span) {
            (Some(ring), WindowSpan::Rolling { slot, .. }) => ring.sum(slot),
            _ => self.total,
        }
    }

    fn usage(&self, span: WindowSpan) -> CounterUsage {
        let tally = self.tally(span);
        CounterUsage {
            committed: tally.committed,
            admitted: tally.admitted,
            reserved: self.reserved,
            in_flight: self.in_flight,
        }
    }

    fn commit(&mut self, span: WindowSpan, tally: Tally) {
        match (&mut self.ring, span) {
            (Some(ring), WindowSpan::Rolling { slot, .. }) => ring.add(slot, tally),
            _ => self.total.add(tally),
        }
    }

    fn retry_after(
        &self,
        spec: &CounterSpec,
        in_use: Amount,
        request: Amount,
    ) -> Option<Timestamp> {
        match (spec.span, &self.ring) {
            (WindowSpan::Calendar { end, .. }, _) => Some(end),
            (WindowSpan::Rolling { slot, .. }, Some(ring)) => {
                let cap_tokens = spec.cap().tokens.unwrap_or(u64::MAX);
                let cap_money = spec.cap().money.unwrap_or(crate::Money::MAX);
                let excess = Amount {
                    tokens: in_use
                        .tokens
                        .saturating_add(request.tokens)
                        .saturating_sub(cap_tokens),
                    money: in_use
                        .money
                        .saturating_add(request.money)
                        .saturating_sub(cap_money)
                        .max(crate::Money::ZERO),
                };
                ring.frees_at(slot, excess)
            }
            _ => None,
        }
    }
}

impl MemoryBudgetStore {
    /// An empty store.
    pub fn new() -> MemoryBudgetStore {
        MemoryBudgetStore::default()
    }

    /// How many times a thread found the lock held by another and had to wait: proof, in
    /// stress tests, that operations really interleaved.
    pub fn contended(&self) -> u64 {
        self.contended.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        if let Some(guard) = self.state.try_lock() {
            return guard;
        }
        self.contended.fetch_add(1, Ordering::Relaxed);
        self.state.lock()
    }

    /// The synchronous core of [`BudgetStore::reserve`].
    pub fn reserve_now(
        &self,
        counters: &[CounterSpec],
        request: &ReserveRequest,
        now: Timestamp,
    ) -> ReserveOutcome {
        let mut state = self.lock();
        state.maybe_sweep(now);
        // Decide on every hard counter first; reserve only if all admit.
        let mut units = request.max_units.max(request.min_units);
        for (i, spec) in counters.iter().enumerate() {
            if !spec.is_hard() {
                continue;
            }
            // Written out rather than a method: the borrow checker takes the early return of
            // a found counter only inside one function body, and a second lookup costs.
            let counter = match state.counters.get_mut(&spec.key) {
                Some(counter) => {
                    counter.fit_to(spec.span);
                    Some(&*counter)
                }
                None => {
                    state.first_use(spec);
                    state.counters.get(&spec.key)
                }
            };
            let in_use = counter
                .map(|c| c.usage(spec.span).in_use())
                .unwrap_or_default();
            let (never, cap_kind) = match fit(spec.cap(), in_use, request) {
                Ok(fits) => {
                    units = units.min(fits);
                    continue;
                }
                Err(Decision::NotNow(kind)) => (false, kind),
                Err(Decision::Never(kind)) => (true, kind),
                Err(Decision::Admit) => unreachable!("fit refuses only with NotNow or Never"),
            };
            let retry_after = if never {
                None
            } else {
                counter.and_then(|c| c.retry_after(spec, in_use, request.amount(request.min_units)))
            };
            return ReserveOutcome::Denied(Denial {
                counter: i,
                never,
                cap_kind,
                in_use,
                retry_after,
            });
        }
        let amount = request.amount(units);
        let mut keys = Vec::with_capacity(counters.len());
        for spec in counters.iter().filter(|s| s.is_hard()) {
            let counter = state
                .counters
                .entry(spec.key.clone())
                .or_insert_with(|| Counter::new(spec.span));
            counter.reserved = counter.reserved.saturating_add(amount);
            counter.in_flight += 1;
            keys.push(spec.key.clone());
        }
        state.next_ticket += 1;
        ReserveOutcome::Reserved(Ticket::new(state.next_ticket, amount, units, keys))
    }

    /// The synchronous core of [`BudgetStore::settle`].
    pub fn settle_now(
        &self,
        ticket: Ticket,
        counters: &[CounterSpec],
        actual: Amount,
        _now: Timestamp,
    ) -> Vec<CounterUsage> {
        let mut state = self.lock();
        state.unreserve(&ticket);
        let mut out = Vec::with_capacity(counters.len());
        for spec in counters {
            let was_reserved = ticket.keys.contains(&spec.key);
            let counter = match state.counters.get_mut(&spec.key) {
                Some(counter) => {
                    counter.fit_to(spec.span);
                    counter
                }
                None => {
                    state.first_use(spec);
                    state
                        .counters
                        .entry(spec.key.clone())
                        .or_insert_with(|| Counter::new(spec.span))
                }
            };
            let admitted = if was_reserved {
                actual.min(ticket.amount)
            } else {
                Amount::ZERO
            };
            counter.commit(
                spec.span,
                Tally {
                    committed: actual,
                    admitted,
                },
            );
            out.push(counter.usage(spec.span));
        }
        state.ops_since_sweep += 1;
        out
    }

    /// The synchronous core of [`BudgetStore::usage`].
    pub fn usage_now(&self, counters: &[CounterSpec]) -> Vec<CounterUsage> {
        let mut state = self.lock();
        counters
            .iter()
            .map(|spec| match state.counters.get_mut(&spec.key) {
                Some(counter) => {
                    counter.fit_to(spec.span);
                    counter.usage(spec.span)
                }
                None => {
                    state.first_use(spec);
                    state
                        .counters
                        .get(&spec.key)
                        .map(|c| c.usage(spec.span))
                        .unwrap_or_default()
                }
            })
            .collect()
    }

    /// The synchronous core of [`BudgetStore::snapshot`].
    pub fn snapshot_now(&self, now: Timestamp) -> Vec<(CounterKey, CounterUsage)> {
        let state = self.lock();
        let mut out: Vec<_> = state
            .counters
            .iter()
            .filter(|(_, c)| !c.retired && c.ends.is_none_or(|end| end > now))
            .map(|(key, c)| {
                let span = match &c.ring {
                    Some(ring) => WindowSpan::Rolling {
                        slot_nanos: ring.slot_nanos,
                        slot: i64::try_from(now.as_nanosecond()).unwrap_or(i64::MAX)
                            / ring.slot_nanos,
                    },
                    None => WindowSpan::Task,
                };
                (key.clone(), c.usage(span))
            })
            .collect();
        drop(state);
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

impl State {
    /// A counter is about to be used for the first time: a new window, a new scope value, or
    /// a limit whose window changed (whose other counters then move to the new window).
    fn first_use(&mut self, spec: &CounterSpec) {
        let window = spec.limit.window;
        if window == Window::PerTask {
            // Task scopes' limits never change window; a budget limit that became per-task
            // leaves its old counters behind.
            if self.windows.remove(&spec.key.limit).is_some() {
                self.carry_over(spec);
            }
            return;
        }
        match self.windows.get(&spec.key.limit) {
            Some(known) if *known == window => {}
            Some(_) => {
                self.carry_over(spec);
                self.windows.insert(spec.key.limit.clone(), window);
            }
            None => {
                self.windows.insert(spec.key.limit.clone(), window);
            }
        }
    }

    /// Moves the usage of every counter of `spec`'s limit into the counter of the same scope
    /// in `spec`'s window. Counters with reservations in flight stay, emptied, until those
    /// settle.
    fn carry_over(&mut self, spec: &CounterSpec) {
        let old: Vec<CounterKey> = self
            .counters
            .iter()
            .filter(|(k, c)| k.limit == spec.key.limit && **k != spec.key && !c.retired)
            .map(|(k, _)| k.clone())
            .collect();
        let carries = spec.limit.window != Window::PerTask;
        for key in old {
            // Per-task usage has no time, and no usage of a window belongs to one task.
            let target = (carries && key.task.is_none()).then(|| CounterKey {
                limit: key.limit.clone(),
                scope: key.scope.clone(),
                task: None,
                window: spec.span.id(),
            });
            if target.as_ref() == Some(&key) {
                // The same counter in the new window (a rolling duration changed, or a period
                // that starts at the same instant): it keeps its reservations as they are.
                if let Some(counter) = self.counters.get_mut(&key) {
                    counter.fit_to(spec.span);
                }
                continue;
            }
            let Some(mut counter) = self.counters.remove(&key) else {
                continue;
            };
            let carried = counter.carried();
            if counter.in_flight > 0 {
                counter.total = Tally::default();
                counter.ring = None;
                counter.retired = true;
                self.counters.insert(key, counter);
            }
            let Some(target) = target else {
                continue;
            };
            let target = self
                .counters
                .entry(target)
                .or_insert_with(|| Counter::new(spec.span));
            target.fit_to(spec.span);
            for (last, tally) in carried {
                target.take_in(spec.span, last, tally);
            }
        }
    }

    fn unreserve(&mut self, ticket: &Ticket) {
        for key in &ticket.keys {
            if let Some(counter) = self.counters.get_mut(key) {
                counter.reserved = counter.reserved.saturating_sub(ticket.amount);
                counter.in_flight = counter.in_flight.saturating_sub(1);
                if counter.retired && counter.in_flight == 0 {
                    self.counters.remove(key);
                }
            }
        }
    }

    /// Drops counters of calendar windows that have ended and hold no reservation. Runs every
    /// few thousand operations so that it costs nothing per call.
    fn maybe_sweep(&mut self, now: Timestamp) {
        self.ops_since_sweep += 1;
        if self.ops_since_sweep < 4096 {
            return;
        }
        self.ops_since_sweep = 0;
        self.counters
            .retain(|_, c| c.in_flight > 0 || (!c.retired && c.ends.is_none_or(|end| end > now)));
    }
}

impl BudgetStore for MemoryBudgetStore {
    fn reserve(
        &self,
        counters: &[CounterSpec],
        request: &ReserveRequest,
        now: Timestamp,
    ) -> impl Future<Output = Result<ReserveOutcome, StoreError>> + Send {
        ready(Ok(self.reserve_now(counters, request, now)))
    }

    fn settle(
        &self,
        ticket: Ticket,
        counters: &[CounterSpec],
        actual: Amount,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<CounterUsage>, StoreError>> + Send {
        ready(Ok(self.settle_now(ticket, counters, actual, now)))
    }

    fn release(&self, ticket: Ticket) {
        if ticket.keys.is_empty() {
            return;
        }
        self.lock().unreserve(&ticket);
    }

    fn usage(
        &self,
        counters: &[CounterSpec],
        _now: Timestamp,
    ) -> impl Future<Output = Result<Vec<CounterUsage>, StoreError>> + Send {
        ready(Ok(self.usage_now(counters)))
    }

    fn snapshot(
        &self,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<(CounterKey, CounterUsage)>, StoreError>> + Send {
        ready(Ok(self.snapshot_now(now)))
    }

    fn forget_task(&self, task: &TaskId) {
        self.lock()
            .counters
            .retain(|key, c| c.in_flight > 0 || key.task.as_ref() != Some(task));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Money;
    use jiff::SignedDuration;

    fn spec(limit: &str, tokens: u64, span: WindowSpan) -> CounterSpec {
        CounterSpec {
            key: CounterKey {
                limit: limit.into(),
                scope: "*".into(),
                task: None,
                window: span.id(),
            },
            limit: std::sync::Arc::new(
                crate::Limit::new(limit, crate::Selector::Global, crate::Window::PerTask)
                    .tokens(tokens),
            ),
            span,
        }
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn reserve(
        store: &MemoryBudgetStore,
        specs: &[CounterSpec],
        tokens: u64,
    ) -> Result<Ticket, Denial> {
        match store.reserve_now(
            specs,
            &ReserveRequest::fixed(Amount::new(tokens, Money::ZERO)),
            t("2026-01-01T00:00:00Z"),
        ) {
            ReserveOutcome::Reserved(t) => Ok(t),
            ReserveOutcome::Denied(d) => Err(d),
        }
    }

    #[test]
    fn all_or_nothing_across_counters() {
        let store = MemoryBudgetStore::new();
        let a = spec("a", 100, WindowSpan::Task);
        let b = spec("b", 50, WindowSpan::Task);
        let both = [a.clone(), b];
        let t1 = reserve(&store, &both, 40).unwrap();
        let denied = reserve(&store, &both, 20).unwrap_err();
        assert_eq!(denied.counter, 1, "b refused");
        assert!(!denied.never);
        // a was not touched by the refused reservation.
        assert_eq!(
            store.usage_now(std::slice::from_ref(&a))[0].reserved.tokens,
            40
        );
        assert!(reserve(&store, &both, 51).unwrap_err().never);
        store.release(t1);
        assert_eq!(store.usage_now(&both)[0], CounterUsage::default());
        assert_eq!(store.usage_now(&both)[1].in_flight, 0);
    }

    #[test]
    fn settle_refunds_and_records_overshoot() {
        let store = MemoryBudgetStore::new();
        let a = [spec("a", 100, WindowSpan::Task)];
        let ticket = reserve(&store, &a, 30).unwrap();
        let after = store.settle_now(
            ticket,
            &a,
            Amount::new(45, Money::ZERO),
            t("2026-01-01T00:00:00Z"),
        );
        assert_eq!(after[0].committed.tokens, 45);
        assert_eq!(after[0].admitted.tokens, 30);
        assert_eq!(after[0].overshoot().tokens, 15);
        assert_eq!(after[0].reserved.tokens, 0);
        let ticket = reserve(&store, &a, 10).unwrap();
        let after = store.settle_now(
            ticket,
            &a,
            Amount::new(4, Money::ZERO),
            t("2026-01-01T00:00:00Z"),
        );
        assert_eq!(after[0].committed.tokens, 49, "the unused 6 were refunded");
    }

    #[test]
    fn rolling_windows_age_out_and_say_when() {
        let store = MemoryBudgetStore::new();
        let window = crate::limits::Window::Rolling(SignedDuration::from_mins(60));
        let span_at = |s: &str| window.span(t(s), &jiff::tz::TimeZone::UTC).unwrap();
        let at = |s: &str| spec("r", 100, span_at(s));
        let s0 = [at("2026-01-01T00:00:00Z")];
        let ticket = reserve(&store, &s0, 80).unwrap();
        store.settle_now(
            ticket,
            &s0,
            Amount::new(80, Money::ZERO),
            t("2026-01-01T00:00:00Z"),
        );
        let s30 = [at("2026-01-01T00:30:00Z")];
        let d = match store.reserve_now(
            &s30,
            &ReserveRequest::fixed(Amount::new(30, Money::ZERO)),
            t("2026-01-01T00:30:00Z"),
        ) {
            ReserveOutcome::Denied(d) => d,
            ReserveOutcome::Reserved(_) => panic!("80 + 30 > 100"),
        };
        // The 00:00 slot may hold usage from as late as 00:00:59: it leaves at 01:01.
        assert_eq!(d.retry_after, Some(t("2026-01-01T01:01:00Z")));
        let s60 = [at("2026-01-01T01:00:00Z")];
        assert_eq!(store.usage_now(&s60)[0].committed.tokens, 80, "still in");
        let s61 = [at("2026-01-01T01:01:00Z")];
        assert_eq!(store.usage_now(&s61)[0].committed.tokens, 0, "aged out");
        assert!(matches!(
            store.reserve_now(
                &s61,
                &ReserveRequest::fixed(Amount::new(100, Money::ZERO)),
                t("2026-01-01T01:01:00Z")
            ),
            ReserveOutcome::Reserved(_)
        ));
    }

    #[test]
    fn reservations_in_flight_across_a_window_change_are_carried_then_settled() {
        let store = MemoryBudgetStore::new();
        let tz = jiff::tz::TimeZone::UTC;
        let now = t("2026-01-01T10:20:00Z");
        let spec_in = |window: crate::limits::Window| CounterSpec {
            key: CounterKey {
                limit: "l".into(),
                scope: "*".into(),
                task: None,
                window: window.span(now, &tz).unwrap().id(),
            },
            limit: std::sync::Arc::new(
                crate::Limit::new("l", crate::Selector::Global, window).tokens(1_000),
            ),
            span: window.span(now, &tz).unwrap(),
        };
        let day = [spec_in(crate::limits::Window::Calendar(crate::Period::Day))];
        let hour = [spec_in(crate::limits::Window::Calendar(
            crate::Period::Hour,
        ))];
        let held = reserve(&store, &day, 300).unwrap();
        // The limit became hourly while 300 were in flight: they count in the hour.
        assert_eq!(store.usage_now(&hour)[0].in_use().tokens, 300);
        assert!(reserve(&store, &hour, 701).is_err());
        store.settle_now(held, &hour, Amount::new(200, Money::ZERO), now);
        // Counted twice until the hour ends (carried, then committed), never less; the day
        // counter that only held the reservation is gone.
        let left = store.snapshot_now(now);
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(left[0].1.committed.tokens, 500);
        assert_eq!(left[0].1.reserved.tokens, 0);
    }

    #[test]
    fn forgetting_a_task_drops_its_counters() {
        let store = MemoryBudgetStore::new();
        let mut s = spec("per-task", 10, WindowSpan::Task);
        s.key.task = Some(TaskId::new("t"));
        let ticket = reserve(&store, std::slice::from_ref(&s), 5).unwrap();
        store.settle_now(
            ticket,
            std::slice::from_ref(&s),
            Amount::new(5, Money::ZERO),
            t("2026-01-01T00:00:00Z"),
        );
        store.forget_task(&TaskId::new("t"));
        assert!(store.snapshot_now(t("2026-01-01T00:00:00Z")).is_empty());
    }
}

#[cfg(test)]
mod elastic {
    use super::*;
    use crate::Money;

    #[test]
    fn grants_the_most_units_every_counter_allows() {
        let store = MemoryBudgetStore::new();
        let spec = |id: &str, tokens: u64| CounterSpec {
            key: CounterKey {
                limit: id.into(),
                scope: "*".into(),
                task: None,
                window: 0,
            },
            limit: std::sync::Arc::new(
                crate::Limit::new(id, crate::Selector::Global, crate::Window::PerTask)
                    .tokens(tokens),
            ),
            span: WindowSpan::Task,
        };
        let specs = [spec("wide", 10_000), spec("narrow", 500)];
        let request = ReserveRequest {
            base: Amount::new(100, Money::ZERO),
            per_unit: Amount::new(1, Money::ZERO),
            min_units: 1,
            max_units: 1_000,
        };
        let now = "2026-01-01T00:00:00Z".parse().unwrap();
        let ReserveOutcome::Reserved(ticket) = store.reserve_now(&specs, &request, now) else {
            panic!("100 + 400 fits the narrow counter");
        };
        assert_eq!(ticket.units(), 400);
        assert_eq!(ticket.amount().tokens, 500);
        // Nothing is left on the narrow counter, not even the base plus one unit.
        assert!(matches!(
            store.reserve_now(&specs, &request, now),
            ReserveOutcome::Denied(Denial {
                counter: 1,
                never: false,
                ..
            })
        ));
    }
}
