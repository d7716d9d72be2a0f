//! Reserving: one script call checks every hard counter and reserves on all or none; a
//! reserve whose reply was lost is given back once Redis answers.

use std::sync::atomic::Ordering;
use std::time::Instant;

use jiff::Timestamp;

use super::retry::Retry;
use super::wire::{clamp_tokens, money_arg};
use super::{Call, RedisBudgetStore, Which, millis};
use crate::admission::{Amount, CapKind, ReserveRequest};
use crate::limits::{CounterKey, WindowSpan};
use crate::store::{CounterSpec, Denial, ReserveOutcome, StoreError, Ticket};

impl RedisBudgetStore {
    /// The id of this instance's reservation `number`, as its leases name it: the instance's
    /// random number, then `number` in 20 digits, so that ids are unique across every process
    /// sharing the prefix and known before the reserve runs.
    pub(super) fn reservation_id(&self, number: u64) -> String {
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

    pub(super) async fn reserve_in_redis(
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
            Err(e) if self.inner.options.fail_open && e.kind.is_outage() => {
                self.inner.failed_open.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(store = %self.inner.name, error = %e, "Redis unreachable: admitting a call without a budget (fail-open)");
                return Ok(ReserveOutcome::Reserved(Ticket::new(
                    0,
                    request.amount(units),
                    units,
                    Vec::new(),
                )));
            }
            Err(e) => return Err(self.op_error("reserve", e)),
        };
        let bad = |e: String| self.unexpected("reserve: unexpected reply", e);
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
}
