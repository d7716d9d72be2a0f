//! Settling and releasing: handed over at call time, counted once however often sent, and
//! waited for by `flush`.

use std::future::Future;
use std::sync::atomic::Ordering;

use jiff::Timestamp;

use super::batch::Pending;
use super::error::OpError;
use super::wire::{Reply, clamp_tokens, money_arg};
use super::{Call, RETRY_HORIZON, RedisBudgetStore, Which};
use crate::admission::Amount;
use crate::backend_error::BackendErrorKind;
use crate::store::{BudgetStore, CounterSpec, CounterUsage, StoreError, Ticket};

/// How long a settle's marker lives after the last settle marked next to it: longer than
/// [`RETRY_HORIZON`], so that a retried settle always finds the marker its first application
/// left.
const SETTLED_MARKER_MS: u64 = 3_600_000;

/// Settle markers are bits: one bitmap key holds those of 2^16 consecutive settles of one
/// instance (8 KiB), so marking every settle costs a bit, not a key (about 130 bytes).
const MARKER_BITS: u32 = 16;

impl RedisBudgetStore {
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
                .map_err(|e| self.op_error("settle (not handed over)", e)),
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
                Err(e) if e.queued => return Err(store.op_error("settle (queued for retry)", e)),
                Err(e) if e.kind.is_outage() => {
                    return Err(store.op_error(
                        "settle (the store is closing: the shared counters miss this usage)",
                        e,
                    ));
                }
                Err(e) => return Err(store.op_error("settle", e)),
            };
            (0..count)
                .map(|_| reply.usage())
                .collect::<Result<_, _>>()
                .map_err(|e| store.unexpected("settle: unexpected reply", e))
        }
    }

    pub(super) fn settle_call(
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

    /// Queues the release of `ticket` without waiting.
    pub(super) fn release_in_redis(&self, ticket: Ticket) {
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

    /// Waits until every settle and release handed over before the call has reached Redis.
    pub(super) async fn flush_to_redis(&self) -> Result<(), StoreError> {
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
                    BackendErrorKind::Unreachable,
                    "flush",
                    format!(
                        "Redis cannot be reached; {left} settles or releases wait for it \
                         (retried for up to {RETRY_HORIZON:?})"
                    ),
                ));
            }
            if shared.tracker.deliveries() == before {
                return Err(self.error(
                    BackendErrorKind::Timeout,
                    "flush",
                    format!("nothing reached Redis in {tick:?}; {left} settles or releases wait"),
                ));
            }
        }
    }
}

/// The lease set member of a reservation: `id|tokens|money`, exactly as the reserve script
/// wrote it.
pub(in crate::store) fn lease_member(id: impl std::fmt::Display, amount: Amount) -> String {
    format!(
        "{id}|{}|{}",
        clamp_tokens(amount.tokens),
        money_arg(amount.money)
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jiff::Timestamp;

    use super::super::RedisStoreOptions;
    use super::super::fixture::{daily, tokens};
    use crate::store::{BudgetStore, Ticket};

    /// A settle whose reply was lost is sent again by the retry queue: whether it had been
    /// applied or not, it must count once.
    #[tokio::test]
    async fn a_settle_sent_twice_counts_once() {
        let now: Timestamp = "2026-04-01T08:00:00Z".parse().unwrap();
        let Some(daily) = daily("twice", RedisStoreOptions::new(), now).await else {
            return;
        };
        let (store, specs) = (&daily.store, &daily.specs);
        let ticket = daily.reserve(50, now).await;
        let reserved = store
            .settle_call(&ticket, specs, tokens(40), now.as_millisecond())
            .unwrap();
        let unreserved = store
            .settle_call(
                &Ticket::unreserved(),
                specs,
                tokens(5),
                now.as_millisecond(),
            )
            .unwrap();
        let mut conn = store.inner.conn.clone();
        for call in [&reserved, &reserved, &unreserved, &unreserved] {
            call.run(&mut conn).await.unwrap();
        }
        let usage = store.usage(specs, now).await.unwrap()[0];
        assert_eq!(usage.committed, tokens(45));
        assert_eq!(usage.admitted, tokens(40));
        assert_eq!((usage.reserved, usage.in_flight), (tokens(0), 0));
        daily.clean_up().await;
    }

    /// A settle arriving after its lease ran out and was forgotten (over an hour later) still
    /// counts, as overshoot; sent again (its reply lost), it still counts once.
    #[tokio::test]
    async fn a_very_late_settle_sent_twice_counts_once() {
        let t0: Timestamp = "2026-04-01T08:00:00Z".parse().unwrap();
        let options = RedisStoreOptions::new().lease(Duration::from_secs(60));
        let Some(daily) = daily("late", options, t0).await else {
            return;
        };
        let (store, specs) = (&daily.store, &daily.specs);
        let ticket = daily.reserve(50, t0).await;
        let t1 = t0 + jiff::SignedDuration::from_secs(60 + 3_600 + 1);
        // Reading purges the lease, and forgets it: it ran out over an hour before t1.
        store.usage(specs, t1).await.unwrap();
        let late = store
            .settle_call(&ticket, specs, tokens(40), t1.as_millisecond())
            .unwrap();
        let mut conn = store.inner.conn.clone();
        late.run(&mut conn).await.unwrap();
        late.run(&mut conn).await.unwrap();
        let usage = store.usage(specs, t1).await.unwrap()[0];
        assert_eq!((usage.committed, usage.admitted), (tokens(40), tokens(0)));
        assert_eq!((usage.reserved, usage.in_flight), (tokens(0), 0));
        daily.clean_up().await;
    }
}
