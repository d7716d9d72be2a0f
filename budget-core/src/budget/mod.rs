//! The budget: limits, prices, a store and a ledger behind one handle, and the reservation
//! protocol that ties them together.
//!
//! # Estimate, then reconcile
//!
//! ```text
//! reserve(who, model, estimate)      estimate = exact prompt tokens + output cap
//!   ├─ paused agent / cancelled task ──────────────────────────────> refused
//!   ├─ every matching limit, current window ─> store.reserve (all or none)
//!   │                                            ├─ "not now" ─────> Exhausted (retry_after)
//!   │                                            └─ "never"  ──────> ExceedsLimit
//!   └─> Reservation (#[must_use]; dropping it releases)
//! call the provider
//! reservation.commit(actual)         actual = what the provider reported (or counted)
//!   ├─ store.settle: reservation removed, actual committed to the windows current now;
//!   │   any excess over the estimate is recorded as overshoot — never dropped
//!   └─ ledger.record(event)          exactly once: commit consumes the reservation
//! ```
//!
//! A hard limit is never crossed by reservations, however many run at once: admission and
//! reservation happen in one atomic step in the store. Actual usage above an estimate (a
//! provider that ignored the output cap) is still committed and reported as overshoot, and it
//! blocks further reservations until the window frees up.

mod builder;
mod control;
mod error;
mod plan;
mod report;
mod reservation;
mod restore;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use parking_lot::{Mutex, RwLock};

pub use builder::BudgetBuilder;
pub use error::{BudgetError, Denied};
pub use plan::{CallEstimate, Estimate};
pub use report::{DenialCounts, LimitStatus, Remaining, percent_used};
pub use reservation::{CommitDetails, Committed, Reservation, ThresholdCrossing};

use crate::attribution::{Attribution, TaskId};
use crate::clock::Clock;
use crate::control_plane;
use crate::controls::{Controls, Refusal};
use crate::ledger::{Ledger, MemoryLedger};
use crate::limits::{Limit, LimitError, LimitSet};
use crate::pricing::PriceTable;
use crate::scope::TaskScope;
use crate::store::{BudgetStore, MemoryBudgetStore, ReserveOutcome};
use plan::{Planner, Windows};
use reservation::Held;

///
/// ```
/// use budget_core::{Attribution, Budget, Estimate, Usage};
/// use budget_core::limits::{Limit, Selector, Window};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let budget = Budget::builder()
///     .limit(Limit::new("research", Selector::agent("researcher"), Window::PerTask).tokens(1_000))
///     .build()
///     .unwrap();
/// let who = Attribution::agent("researcher").with_task("t-1".into());
///
/// let held = budget.reserve(&who, "gpt-4o", Estimate::new(200, 500)).await.unwrap();
/// let done = held.commit(Usage::new(200, 120)).await.unwrap(); // the unused 380 go back
/// assert_eq!(done.event.usage.total(), 320);
///
/// // 320 committed: a call that may use 680 more still fits, one of 800 does not.
/// assert!(budget.reserve(&who, "gpt-4o", Estimate::new(180, 500)).await.is_ok());
/// assert!(budget.reserve(&who, "gpt-4o", Estimate::new(300, 500)).await.is_err());
/// # });
/// ```
pub struct Budget<S: BudgetStore = MemoryBudgetStore, L: Ledger = MemoryLedger> {
    inner: Arc<Inner<S, L>>,
}

/// A summary: the price table alone has hundreds of entries.
impl<S: BudgetStore, L: Ledger> std::fmt::Debug for Budget<S, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field(
                "limits",
                &self
                    .limits()
                    .iter()
                    .map(|l| l.id.clone())
                    .collect::<Vec<_>>(),
            )
            .field("priced_models", &self.prices().len())
            .field("clock", &self.inner.clock)
            .field("time_zone", self.time_zone())
            .finish_non_exhaustive()
    }
}

impl<S: BudgetStore, L: Ledger> Clone for Budget<S, L> {
    fn clone(&self) -> Self {
        Budget {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<S, L> {
    store: S,
    ledger: L,
    /// The limits in force: `own_limits` with the control plane's decisions over them.
    limits: RwLock<Arc<LimitSet>>,
    /// This budget's own limits: the builder's (the file's) and `set_limit`'s.
    own_limits: RwLock<LimitSet>,
    /// The control log this budget obeys, and the decisions it has applied.
    control: control::ControlBinding,
    prices: RwLock<Arc<PriceTable>>,
    clock: Arc<dyn Clock>,
    windows: Windows,
    controls: Controls,
    next_event: AtomicU64,
    denials: Mutex<HashMap<Arc<str>, DenialCounts>>,
    /// Whether to restore the windows from the ledger before the first use.
    restore_on_start: bool,
    /// Set once the windows were restored (or restoring was tried and succeeded).
    restored: tokio::sync::OnceCell<()>,
}

impl<S: BudgetStore, L: Ledger> Budget<S, L> {
    /// Reserves `estimate` for a call by `who` to `model` against every matching hard limit,
    /// all or nothing. Refuses paused agents and cancelled tasks first.
    pub async fn reserve(
        &self,
        who: &Attribution,
        model: &str,
        estimate: Estimate,
    ) -> Result<Reservation<S, L>, BudgetError> {
        let output = estimate.max_output_tokens;
        self.reserve_call(
            who,
            None,
            model,
            CallEstimate::new(estimate.input_tokens, output..=output),
        )
        .await
    }

    /// Reserves the prompt plus as many output tokens as every matching hard limit still
    /// allows, between `output.start()` and `output.end()`, in one atomic step: the output cap
    /// to send is [`Reservation::granted_output`]. Refused when not even the minimum fits.
    ///
    /// This is how a call's `max_tokens` is clamped to the budget without a race between
    /// asking what is left and reserving it.
    pub async fn reserve_output(
        &self,
        who: &Attribution,
        model: &str,
        input_tokens: u64,
        output: std::ops::RangeInclusive<u64>,
    ) -> Result<Reservation<S, L>, BudgetError> {
        self.reserve_call(who, None, model, CallEstimate::new(input_tokens, output))
            .await
    }

    /// [`Budget::reserve_output`] for a call made inside a task scope: attributed to the
    /// scope's agent, task and step, refused when the task (or a parent) is cancelled, stopped
    /// or spent, and reserved against the task's own limits and its parents' as well as the
    /// budget's. The committed usage is recorded back into the scope.
    pub async fn reserve_in_scope(
        &self,
        scope: &TaskScope,
        model: &str,
        input_tokens: u64,
        output: std::ops::RangeInclusive<u64>,
    ) -> Result<Reservation<S, L>, BudgetError> {
        let who = scope.attribution();
        self.reserve_call(
            &who,
            Some(scope),
            model,
            CallEstimate::new(input_tokens, output),
        )
        .await
    }

    /// Reserves a call as [`CallEstimate`] describes it — every choice's output counted — by
    /// `who`, inside `scope` when given (then attributed, refused and limited as
    /// [`Budget::reserve_in_scope`] says). The output cap to send is
    /// [`Reservation::granted_output`], per choice.
    pub async fn reserve_call(
        &self,
        who: &Attribution,
        scope: Option<&TaskScope>,
        model: &str,
        call: CallEstimate,
    ) -> Result<Reservation<S, L>, BudgetError> {
        if let Some(scope) = scope {
            // Bound first: a cancel of an enclosing task that came before this tree's first
            // call is applied now, and refuses this very call.
            self.bind_scope(scope);
            if let Err(stopped) = scope.refusal() {
                self.count_denial(who, |d| d.stopped += 1);
                return Err(stopped);
            }
        }
        self.ensure_restored().await?;
        if let Some(refusal) = self.inner.controls.refusal(who) {
            self.count_denial(who, |d| d.stopped += 1);
            return Err(match refusal {
                Refusal::Paused => BudgetError::AgentPaused {
                    agent: who.agent_arc().clone(),
                },
                Refusal::Cancelled(task) => BudgetError::TaskCancelled { task },
            });
        }
        let (limits, prices, now) = (self.limits(), self.prices(), self.now());
        let plan = Planner {
            limits: &limits,
            prices: &prices,
            windows: &self.inner.windows,
            now,
        }
        .plan(who, scope, model, &call)?;
        let request = plan.request;
        let outcome = self
            .inner
            .store
            .reserve(&plan.counters, &request, now)
            .await?;
        match outcome {
            ReserveOutcome::Reserved(ticket) => Ok(Reservation::new(
                self.clone(),
                Held {
                    amount: ticket.amount(),
                    ticket,
                    who: who.clone(),
                    requested_model: (*plan.model != *model).then(|| Arc::from(model)),
                    scoped: plan.scoped().to_vec(),
                    model: plan.model,
                    limits,
                    specs: plan.counters,
                    scope: scope.cloned(),
                    input_tokens: call.input_tokens,
                    choices: call.choice_count(),
                    sent: None,
                },
            )),
            ReserveOutcome::Denied(denial) => {
                let spec = &plan.counters[denial.counter];
                let denied = Box::new(Denied {
                    limit: spec.key.limit.clone(),
                    scope: spec.key.scope.clone(),
                    cap_kind: denial.cap_kind,
                    cap: *spec.cap(),
                    in_use: denial.in_use,
                    requested: request.amount(request.min_units),
                    retry_after: denial.retry_after,
                });
                if denial.never {
                    self.count_denial(who, |d| d.exceeds_limit += 1);
                    Err(BudgetError::ExceedsLimit(denied))
                } else {
                    self.count_denial(who, |d| d.exhausted += 1);
                    Err(BudgetError::Exhausted(denied))
                }
            }
        }
    }

    /// Adds a limit or replaces the one with the same id ("set budget for agent X"). Usage so
    /// far is kept: counters are keyed by the limit's id.
    ///
    /// - **A new cap** (or enforcement, or alert thresholds) applies at once to the usage
    ///   already in the current window.
    /// - **A new window** carries the usage over, rounded toward safety (this is what
    ///   [`MemoryBudgetStore`] does; a shared store documents its own rule). A rolling window
    ///   of another duration re-slots its usage, each amount at the latest instant it may have
    ///   happened, so none leaves the new window early. A new calendar period, or a switch
    ///   between rolling and calendar, counts every amount that may fall in the new window as
    ///   if it did: day to hour puts the whole day's usage in this hour, hour to day puts this
    ///   hour's (and any earlier hour the store still holds) in today. Usage that had already
    ///   left the old window is not brought back, so a window made longer may count less than
    ///   was truly spent in it. Calls in flight across the change count in the new window
    ///   twice (reserved, then committed) until it ends. A limit made per-task, or a per-task
    ///   limit given a rolling or calendar window, starts at zero: per-task usage has no time,
    ///   and no window's usage belongs to one task.
    /// - **A new selector** counts per selected value: usage of values no longer selected is
    ///   not carried to the new ones.
    ///
    /// It applies here at once. On a shared control log ([`BudgetBuilder::control_log`],
    /// [`Budget::from_config`](crate::Budget::from_config)) it is also published as a decision
    /// — in the order the changes were made, by a background task; [`Budget::flush`] waits for
    /// it — so every budget on the log applies it, and it overrides their configured limit of
    /// that id until reverted ([`ControlChange::RevertLimit`](control_plane::ControlChange)).
    pub fn set_limit(&self, limit: Limit) -> Result<(), LimitError> {
        self.inner.own_limits.write().upsert(limit.clone())?;
        self.recompute_limits()?;
        self.publish(control_plane::ControlChange::SetLimit { limit });
        Ok(())
    }

    /// Removes a limit; returns whether it existed. Its counters are not cleared: a limit set
    /// again under the same id finds the usage still in its window.
    ///
    /// Like [`Budget::set_limit`], it applies here at once and, on a shared control log, is
    /// published for every budget on it.
    pub fn remove_limit(&self, id: &str) -> bool {
        let removed = self.inner.own_limits.write().remove(id).is_some();
        // Removing a limit cannot make the set invalid.
        let _ = self.recompute_limits();
        if removed {
            self.publish(control_plane::ControlChange::RemoveLimit { id: id.into() });
        }
        removed
    }

    /// The limits in force.
    pub fn limits(&self) -> Arc<LimitSet> {
        self.inner.limits.read().clone()
    }

    /// The price table in force.
    pub fn prices(&self) -> Arc<PriceTable> {
        self.inner.prices.read().clone()
    }

    /// Replaces the price table (e.g. after loading a newer LiteLLM file).
    pub fn set_prices(&self, prices: PriceTable) {
        *self.inner.prices.write() = Arc::new(prices);
    }

    /// Pause/resume and cancellation.
    pub fn controls(&self) -> &Controls {
        &self.inner.controls
    }

    /// Ends a task: forgets its per-task counters and its entry in [`Controls`] (a pending
    /// cancel, and the bindings of its scopes). Task scopes do this themselves when their last
    /// clone is dropped; call it for tasks that run without a scope.
    pub fn finish_task(&self, task: &TaskId) {
        self.inner.store.forget_task(task);
        self.inner.controls.finish_task(task);
    }

    /// The ledger.
    pub fn ledger(&self) -> &L {
        &self.inner.ledger
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// The clock.
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// The time zone calendar windows are cut in.
    pub fn time_zone(&self) -> &TimeZone {
        self.inner.windows.time_zone()
    }

    /// Denials so far, per agent.
    pub fn denials(&self) -> HashMap<Arc<str>, DenialCounts> {
        self.inner.denials.lock().clone()
    }

    fn count_denial(&self, who: &Attribution, bump: impl FnOnce(&mut DenialCounts)) {
        bump(
            self.inner
                .denials
                .lock()
                .entry(who.agent_arc().clone())
                .or_default(),
        );
    }

    /// Runs `plan` with a planner over the limits and prices in force at `now`.
    fn planner<T>(&self, now: Timestamp, plan: impl FnOnce(&Planner<'_>) -> T) -> T {
        let (limits, prices) = (self.limits(), self.prices());
        plan(&Planner {
            limits: &limits,
            prices: &prices,
            windows: &self.inner.windows,
            now,
        })
    }

    /// Ties a task scope, and every scope it is nested in, to this budget, once each:
    /// `controls().cancel_task` then reaches each of them (and so their sub-agents) whichever
    /// of them reached the budget (an orchestrator that only delegates is cancelled too), and
    /// each one's counters and control entry go when it ends. A scope nested in a scope of its
    /// own task id is reached through that one, and leaves the task's counters to it.
    ///
    /// Outermost first, so that a scope found bound has all its parents bound: the usual call
    /// costs one look at the scope's own registrations.
    fn bind_scope(&self, scope: &TaskScope) {
        let key = Arc::as_ptr(&self.inner) as *const () as usize;
        if scope.has_finisher(key) {
            return;
        }
        let chain: Vec<&TaskScope> = std::iter::successors(Some(scope), |s| s.parent()).collect();
        for s in chain.into_iter().rev() {
            s.finish_once_with(key, || {
                let budget = Arc::downgrade(&self.inner);
                let task = s.task().clone();
                let counters = s.counter_task().clone();
                let binding = s
                    .owns_task()
                    .then(|| self.inner.controls.bind_task(&task, s.cancel_token()));
                move || {
                    let Some(inner) = budget.upgrade() else {
                        return;
                    };
                    // Another scope still running the same task keeps the task's counters.
                    let last = binding.is_none_or(|b| inner.controls.unbind_task(&task, b));
                    if last {
                        inner.store.forget_task(&counters);
                    }
                }
            });
        }
    }

    /// Waits until every commit handed over so far — those of dropped reservations, streams
    /// and commit futures included — has reached the store and the ledger. Call it before the
    /// program exits: it is what a normal shutdown needs to lose nothing.
    pub async fn flush(&self) -> Result<(), BudgetError> {
        self.control_published().await;
        let ledger = self.inner.ledger.flush().await;
        self.inner.store.flush().await?;
        ledger.map_err(BudgetError::LedgerQuery)
    }
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Budget>();
    assert_send_sync::<Reservation>();
    assert_send_sync::<BudgetError>();
};
