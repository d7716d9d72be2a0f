//! A reservation's life after it is granted: held, marked sent, then committed (priced,
//! settled in the store, recorded in the ledger) or given back.
//!
//! Every commit hands its writes to the store and the ledger before its first `.await`, and a
//! commit that is never run hands them over when it is dropped: usage is never lost to a
//! cancelled caller.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use jiff::Timestamp;

use super::Budget;
use super::error::BudgetError;
use super::plan::Planner;
use super::report::percent_used;
use crate::admission::Amount;
use crate::attribution::Attribution;
use crate::ledger::{EventKind, Ledger, MemoryLedger, UsageEvent};
use crate::limits::{Limit, LimitSet};
use crate::scope::TaskScope;
use crate::store::{BudgetStore, CounterSpec, CounterUsage, MemoryBudgetStore, StoreError, Ticket};
use crate::{BackendErrorKind, Usage};

/// How usage is to be recorded on commit.
#[derive(Debug, Clone, Default)]
pub struct CommitDetails {
    /// The model id the provider says it served (often a dated id of the requested alias).
    pub served_model: Option<Arc<str>>,
    /// The usage was counted or estimated locally rather than reported by the provider.
    pub estimated: bool,
    /// The kind of spend (defaults to a call).
    pub kind: Option<EventKind>,
    /// What this spend saved (cache hits, compression).
    pub saved: Amount,
    /// The model the caller asked for, when a router changed it.
    pub requested_model: Option<Arc<str>>,
}

/// One limit's counter after a commit crossed one of its alert thresholds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThresholdCrossing {
    /// The limit.
    pub limit: Arc<Limit>,
    /// Its counter's scope value.
    pub scope: Arc<str>,
    /// The threshold crossed, in percent.
    pub threshold: u8,
    /// The counter's usage after the commit.
    pub usage: CounterUsage,
}

/// The result of a commit.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The event written to the ledger.
    pub event: UsageEvent,
    /// Alert thresholds this commit crossed.
    pub crossings: Vec<ThresholdCrossing>,
}

impl<S: BudgetStore, L: Ledger> Budget<S, L> {
    /// Records usage that had no reservation (a cache hit at $0, a late report). It is
    /// committed to every matching counter like any other usage.
    ///
    /// Like [`Reservation::commit_with`], the usage is taken when this is called: dropping the
    /// returned future, polled or not, still records it (without waiting for the outcome).
    pub fn record(
        &self,
        who: &Attribution,
        model: &str,
        usage: Usage,
        details: CommitDetails,
    ) -> impl Future<Output = Result<Committed, BudgetError>> + Send + 'static {
        let held = self.prices().resolve(model).map(|resolved| {
            let priced_model: Arc<str> = Arc::from(resolved.id);
            Held {
                ticket: Ticket::unreserved(),
                who: who.clone(),
                requested_model: (*priced_model != *model).then(|| Arc::from(model)),
                model: priced_model,
                amount: Amount::ZERO,
                limits: self.limits(),
                // No reservation: the counters are found at commit time.
                specs: Vec::new(),
                scope: None,
                scoped: Vec::new(),
                input_tokens: usage.input,
                choices: 1,
                sent: None,
            }
        });
        let pending = held.map(|held| PendingCommit::new(self.clone(), held, usage, details));
        async move {
            let mut pending = pending?;
            // A budget restores its windows before it counts anything: else the restore would
            // count this usage a second time.
            pending.budget.ensure_restored().await?;
            pending.run().await
        }
    }
    /// Everything a commit writes, decided before anything is written: the price, the
    /// counters to charge and the ledger event.
    fn prepare(&self, held: Held, usage: Usage, details: CommitDetails) -> Prepared {
        let Held {
            ticket,
            who,
            model: reserved_model,
            requested_model,
            amount,
            limits: reserved_limits,
            specs: reserved_specs,
            scope,
            scoped,
            ..
        } = held;
        let prices = self.prices();
        let mut estimated = details.estimated;
        // Price by what was served when the table knows it; else by what was reserved.
        let served = details.served_model.as_deref().map(|m| prices.resolve(m));
        let (model, price) = match served {
            Some(Ok(r)) if *r.id == *reserved_model => (reserved_model.clone(), Some(r.price)),
            Some(Ok(r)) => (Arc::from(r.id), Some(r.price)),
            Some(Err(_)) | None => {
                estimated |= served.is_some();
                let price = prices.resolve(&reserved_model).ok().map(|r| r.price);
                (reserved_model.clone(), price)
            }
        };
        let cost = match price {
            Some(p) => p.cost(&usage),
            None => {
                // The table changed under us and lost the model: bill what was reserved.
                estimated = true;
                amount.money
            }
        };
        let actual = Amount::new(usage.total(), cost);
        let now = self.now();
        let limits = self.limits();
        // Usage is charged to the limits the call was reserved on, whatever model id the
        // provider answers with (OpenAI serves `gpt-4o` as `gpt-4o-2024-08-06`): the counters
        // reserved on are reused while the limits are the same and their windows current.
        // Otherwise (a window ended, the limits changed) the counters are found anew for the
        // model as reserved; if even that fails, the reserved ones are charged.
        let reuse = !reserved_specs.is_empty()
            && Arc::ptr_eq(&limits, &reserved_limits)
            && reserved_specs.iter().all(|s| s.span.contains(now));
        let mut unsettled = None;
        let specs = if reuse {
            reserved_specs
        } else {
            let planner = Planner {
                limits: &limits,
                prices: &prices,
                windows: &self.inner.windows,
                now,
            };
            match planner.counters(&who, &reserved_model) {
                Ok(mut specs) => {
                    specs.extend(scoped);
                    specs
                }
                Err(error) if !reserved_specs.is_empty() => {
                    tracing::debug!(%error, "charging the counters reserved on");
                    reserved_specs
                }
                Err(error) => {
                    unsettled = Some(StoreError::new(
                        BackendErrorKind::OutOfRange,
                        "budget",
                        format!("no counters to charge: {error}"),
                    ));
                    scoped
                }
            }
        };
        if let Some(scope) = &scope {
            scope.record(actual.tokens, actual.money);
        }
        let requested_model = details
            .requested_model
            .clone()
            .filter(|m| *m != model)
            .or(requested_model)
            .or_else(|| (model != reserved_model).then(|| reserved_model.clone()));
        let event = UsageEvent {
            id: self.inner.next_event.fetch_add(1, Ordering::Relaxed),
            at: now,
            attribution: who,
            model,
            requested_model,
            usage,
            cost,
            estimated,
            kind: details.kind.unwrap_or(EventKind::Call),
            saved: details.saved,
        };
        Prepared {
            ticket,
            specs,
            actual,
            now,
            event,
            unsettled,
        }
    }

    /// Commits `usage` for a held reservation (or for unreserved usage): prices it, settles
    /// the counters and records one ledger event.
    ///
    /// Both writes are handed over before the first `.await` (stores and ledgers take them at
    /// call time), so a commit cancelled at any await still settles and records exactly once;
    /// the awaits only collect the outcomes.
    async fn settle(
        &self,
        held: Held,
        usage: Usage,
        details: CommitDetails,
    ) -> Result<Committed, BudgetError> {
        let Prepared {
            ticket,
            specs,
            actual,
            now,
            event,
            unsettled,
        } = self.prepare(held, usage, details);
        let settling = self.inner.store.settle(ticket, &specs, actual, now);
        let recording = self.inner.ledger.record(event.clone());
        let settled = settling.await;
        let recorded = recording.await;
        let settled = match unsettled {
            Some(error) => Err(error),
            None => settled,
        };
        let crossings = match &settled {
            Ok(usages) => crossings(&specs, usages, actual),
            Err(_) => Vec::new(),
        };
        // The ledger records the event even when the store cannot count it: usage is never
        // dropped, and the error says which of the two is behind.
        match (recorded, settled) {
            (Ok(()), Ok(_)) => Ok(Committed { event, crossings }),
            (Err(source), _) => Err(BudgetError::Ledger {
                source,
                event: Box::new(event),
            }),
            (Ok(()), Err(source)) => Err(BudgetError::Unsettled {
                source,
                event: Box::new(event),
            }),
        }
    }

    /// [`Budget::settle`] without waiting: used where nothing can wait (a reservation or a
    /// commit dropped). The store and the ledger take both writes now; failures surface in
    /// their own logs and retries, and [`Budget::flush`] waits for them.
    fn settle_detached(&self, held: Held, usage: Usage, details: CommitDetails) {
        let Prepared {
            ticket,
            specs,
            actual,
            now,
            event,
            ..
        } = self.prepare(held, usage, details);
        drop(self.inner.store.settle(ticket, &specs, actual, now));
        drop(self.inner.ledger.record(event));
    }
}

/// What [`Budget::prepare`] decided for one commit.
struct Prepared {
    ticket: Ticket,
    specs: Vec<CounterSpec>,
    actual: Amount,
    now: Timestamp,
    event: UsageEvent,
    /// Set when no counter could be found for unreserved usage.
    unsettled: Option<StoreError>,
}

/// A commit not yet handed over. Dropped before it ran (a commit future never polled), it
/// hands the commit over without waiting: usage is never lost to a cancelled commit.
struct PendingCommit<S: BudgetStore, L: Ledger> {
    budget: Budget<S, L>,
    commit: Option<(Held, Usage, CommitDetails)>,
}

impl<S: BudgetStore, L: Ledger> PendingCommit<S, L> {
    fn new(budget: Budget<S, L>, held: Held, usage: Usage, details: CommitDetails) -> Self {
        PendingCommit {
            budget,
            commit: Some((held, usage, details)),
        }
    }

    async fn run(&mut self) -> Result<Committed, BudgetError> {
        let (held, usage, details) = self
            .commit
            .take()
            .expect("a pending commit runs once, from the future that owns it");
        self.budget.settle(held, usage, details).await
    }
}

impl<S: BudgetStore, L: Ledger> Drop for PendingCommit<S, L> {
    fn drop(&mut self) {
        if let Some((held, usage, details)) = self.commit.take() {
            self.budget.settle_detached(held, usage, details);
        }
    }
}
/// The alert thresholds a commit of `actual` carried its counters across.
fn crossings(
    specs: &[CounterSpec],
    usages: &[CounterUsage],
    actual: Amount,
) -> Vec<ThresholdCrossing> {
    let mut out = Vec::new();
    for (spec, usage) in specs.iter().zip(usages) {
        if spec.limit.alert_thresholds.is_empty() {
            continue;
        }
        let after = percent_used(spec.cap(), usage.committed);
        let before = percent_used(spec.cap(), usage.committed.saturating_sub(actual));
        for &threshold in &spec.limit.alert_thresholds {
            let t = u32::from(threshold);
            if before < t && after >= t {
                out.push(ThresholdCrossing {
                    limit: spec.limit.clone(),
                    scope: spec.key.scope.clone(),
                    threshold,
                    usage: *usage,
                });
            }
        }
    }
    out
}

/// What a reservation holds until it is settled.
#[derive(Debug)]
pub(super) struct Held {
    pub(super) ticket: Ticket,
    pub(super) who: Attribution,
    /// The model as the price table names it.
    pub(super) model: Arc<str>,
    /// The model as the caller named it, when that differs.
    pub(super) requested_model: Option<Arc<str>>,
    pub(super) amount: Amount,
    /// The limits the counters were chosen under, to tell whether they still apply.
    pub(super) limits: Arc<LimitSet>,
    pub(super) specs: Vec<CounterSpec>,
    /// The task scope the call was made in, to record its usage into.
    pub(super) scope: Option<TaskScope>,
    /// The counters of the scope's own limits (and its parents'), part of `specs`.
    pub(super) scoped: Vec<CounterSpec>,
    /// The prompt tokens reserved for.
    pub(super) input_tokens: u64,
    /// Choices the call asked for: each may use the whole granted output.
    pub(super) choices: u64,
    /// Set once the request was handed to the provider: from then on the call may be billed,
    /// and dropping the reservation charges it (with these details) instead of releasing it.
    pub(super) sent: Option<CommitDetails>,
}

impl Held {
    /// What the provider may bill for the call at most: the prompt and every choice's whole
    /// granted output.
    fn billed_at_most(&self) -> Usage {
        Usage::new(
            self.input_tokens,
            self.ticket.units().saturating_mul(self.choices),
        )
    }
}

/// Budget held for one call. Commit it with the actual usage, or drop it.
///
/// Dropping it gives the budget back while the call has not been sent. Once
/// [`Reservation::mark_sent`] says the request was handed to the provider, the provider may
/// bill it whatever happens to the caller (a timeout, a disconnect, a shutdown): dropping it
/// then commits [`Reservation::billed_at_most`], flagged estimated, instead.
#[must_use = "a reservation holds budget until it is committed or dropped"]
#[derive(Debug)]
pub struct Reservation<S: BudgetStore = MemoryBudgetStore, L: Ledger = MemoryLedger> {
    budget: Budget<S, L>,
    /// `None` once committed or released.
    held: Option<Held>,
}

impl<S: BudgetStore, L: Ledger> Reservation<S, L> {
    pub(super) fn new(budget: Budget<S, L>, held: Held) -> Self {
        Reservation {
            budget,
            held: Some(held),
        }
    }

    fn held(&self) -> &Held {
        self.held
            .as_ref()
            .expect("a reservation is only emptied by the methods that consume it")
    }

    /// What is held on every matching limit.
    pub fn amount(&self) -> Amount {
        self.held().amount
    }

    /// The output tokens granted: the output cap the call must be sent with (per choice).
    pub fn granted_output(&self) -> u64 {
        self.held().ticket.units()
    }

    /// The most a provider can bill for this call as granted: the prompt, and the granted
    /// output for every choice. What a sent call is charged when its outcome is unknown.
    pub fn billed_at_most(&self) -> Usage {
        self.held().billed_at_most()
    }

    /// Whose call it is.
    pub fn attribution(&self) -> &Attribution {
        &self.held().who
    }

    /// The model, as the price table names it.
    pub fn model(&self) -> &str {
        &self.held().model
    }

    /// Says the request is being handed to the provider now. From here on the call may be
    /// billed even if nobody sees its answer, so dropping the reservation commits
    /// [`Reservation::billed_at_most`] with `details` (flagged estimated) rather than
    /// releasing it. [`Reservation::release`] still gives it back, for a call the provider
    /// certainly did not bill.
    pub fn mark_sent(&mut self, details: CommitDetails) {
        if let Some(held) = self.held.as_mut() {
            held.sent = Some(details);
        }
    }

    /// Whether [`Reservation::mark_sent`] was called.
    pub fn is_sent(&self) -> bool {
        self.held().sent.is_some()
    }

    /// Settles with the usage the provider reported: unused budget goes back, excess is
    /// committed as overshoot, and one event goes to the ledger.
    ///
    /// The commit is taken when this is called: dropping the returned future, polled or not,
    /// still settles and records it exactly once (only the outcome is not seen).
    pub fn commit(
        self,
        actual: Usage,
    ) -> impl Future<Output = Result<Committed, BudgetError>> + Send + 'static {
        self.commit_with(actual, CommitDetails::default())
    }

    /// [`Reservation::commit`] with details: the served model, an estimated flag, the kind.
    pub fn commit_with(
        mut self,
        actual: Usage,
        details: CommitDetails,
    ) -> impl Future<Output = Result<Committed, BudgetError>> + Send + 'static {
        let held = self.held.take().expect("not yet settled");
        let mut pending = PendingCommit::new(self.budget.clone(), held, actual, details);
        async move { pending.run().await }
    }

    /// Gives the budget back without recording usage: the call never reached the provider,
    /// or the provider certainly did not bill it.
    pub fn release(mut self) {
        if let Some(held) = self.held.take() {
            self.budget.inner.store.release(held.ticket);
        }
    }
}

impl<S: BudgetStore, L: Ledger> Drop for Reservation<S, L> {
    fn drop(&mut self) {
        let Some(mut held) = self.held.take() else {
            return;
        };
        match held.sent.take() {
            None => self.budget.inner.store.release(held.ticket),
            Some(details) => {
                let usage = held.billed_at_most();
                let details = CommitDetails {
                    estimated: true,
                    ..details
                };
                self.budget.settle_detached(held, usage, details);
            }
        }
    }
}
