//! A counter's window as the scripts take it: its kind, its slot, how long its keys live and
//! when it ends.

use super::{Call, RedisBudgetStore, millis, wire};
use crate::backend_error::BackendErrorKind;
use crate::limits::{ROLLING_LIVE_SLOTS, WindowSpan};
use crate::store::StoreError;

impl RedisBudgetStore {
    pub(in crate::store) fn window_args(
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
                        BackendErrorKind::OutOfRange,
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
}
