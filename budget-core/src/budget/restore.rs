//! Rebuilding the current windows from the ledger, so that a restart does not hand out a fresh
//! day.

use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;

use super::Budget;
use super::error::BudgetError;
use crate::admission::Amount;
use crate::ledger::{Ledger, LedgerQuery};
use crate::limits::{CounterKey, Window, WindowSpan};
use crate::store::{BudgetStore, CounterSpec, Ticket};

impl<S: BudgetStore, L: Ledger> Budget<S, L> {
    /// Rebuilds the usage of every calendar and rolling window limit's current window from the
    /// ledger, so that a restart does not reset today's (this hour's, week's, month's; the last
    /// rolling duration's) budget. Returns how many counters it restored.
    ///
    /// A budget on a durable ledger ([`Ledger::is_durable`]) does this by itself before its first
    /// reservation, record or report (`remaining`, `pressure`, `status`), unless built with
    /// [`BudgetBuilder::restore_windows`](super::BudgetBuilder::restore_windows)`(false)`; either
    /// way it happens once per budget, and a call after it returns 0. Rolling windows are restored
    /// into their current slot: the usage then ages out up to one window later than it would have,
    /// never earlier (rounding toward safety). Per-task windows are not restored (a restarted
    /// process starts its tasks anew).
    ///
    /// A store that keeps its counters itself ([`BudgetStore::keeps_counters`], e.g. Redis)
    /// is left alone and 0 is returned: every replica restoring into it would count the day
    /// once more.
    pub async fn restore_from_ledger(&self) -> Result<usize, BudgetError> {
        let mut restored_now = 0;
        self.inner
            .restored
            .get_or_try_init(|| async {
                restored_now = self.restore_windows().await?;
                Ok::<(), BudgetError>(())
            })
            .await?;
        Ok(restored_now)
    }

    /// Restores the windows from the ledger once, before the first use, when the budget was
    /// built to (see [`Budget::restore_from_ledger`]).
    pub(super) async fn ensure_restored(&self) -> Result<(), BudgetError> {
        self.ensure_control_replayed().await?;
        if !self.inner.restore_on_start || self.inner.restored.initialized() {
            return Ok(());
        }
        self.restore_from_ledger().await.map(drop)
    }

    async fn restore_windows(&self) -> Result<usize, BudgetError> {
        if self.inner.store.keeps_counters() {
            return Ok(0);
        }
        let now = self.now();
        let mut restored = 0;
        for limit in self.limits().iter() {
            let span = self.inner.windows.span(&limit.window, now)?;
            let since = match (limit.window, span) {
                (_, WindowSpan::Calendar { start, .. }) => start,
                (Window::Rolling(duration), _) => {
                    now.checked_sub(duration).unwrap_or(Timestamp::MIN)
                }
                _ => continue,
            };
            let Some(group_by) = limit.selector.ledger_grouping() else {
                continue;
            };
            let query = LedgerQuery {
                since: Some(since),
                group_by,
                time_zone: self.time_zone().clone(),
                ..LedgerQuery::default()
            };
            let groups = self
                .inner
                .ledger
                .totals(&query)
                .await
                .map_err(BudgetError::LedgerQuery)?;
            // Groups are matched by the selector itself (a model limit takes the dated and
            // prefixed ids of its model too), so restore charges what a live call would.
            let mut amounts: HashMap<Arc<str>, Amount> = HashMap::new();
            for group in groups {
                if let Some(scope_value) = limit.selector.scope_of_group(&group.key) {
                    let amount = amounts.entry(scope_value).or_default();
                    *amount = amount.saturating_add(Amount::new(group.usage.total(), group.cost));
                }
            }
            for (scope_value, amount) in amounts {
                let spec = CounterSpec {
                    key: CounterKey {
                        limit: limit.id.clone(),
                        scope: scope_value,
                        task: None,
                        window: span.id(),
                    },
                    limit: limit.clone(),
                    span,
                };
                self.inner
                    .store
                    .settle(Ticket::unreserved(), &[spec], amount, now)
                    .await?;
                restored += 1;
            }
        }
        Ok(restored)
    }
}
