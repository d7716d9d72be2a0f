//! A budget obeying the control plane: every runtime decision goes through its log, and every
//! budget on the same log applies the decisions in the log's order.
//!
//! The limits in force are the budget's own (the builder's, the file's, and in-process
//! [`Budget::set_limit`] changes) with the log's limit decisions over them
//! ([`ControlState::limits_over`]). Pauses and kills reach [`Controls`](crate::controls::Controls);
//! model switches are read by the router ([`Budget::model_switch`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use jiff::Timestamp;

use super::error::BudgetError;
use super::{Budget, Inner};
use crate::attribution::TaskId;
use crate::control_plane::{
    Actor, AuditRecord, ControlChange, ControlLog, ControlState, MemoryControlLog, ModelSwitch,
};
use crate::ledger::{Ledger, LedgerError};
use crate::limits::{Limit, LimitError, LimitSet};
use crate::store::BudgetStore;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`ControlLog`] behind a pointer: a budget holds any log without another type parameter.
trait DynControlLog: Send + Sync {
    fn append(
        &self,
        change: ControlChange,
        by: Actor,
        at: Timestamp,
    ) -> BoxFuture<'_, Result<AuditRecord, LedgerError>>;

    fn since(&self, seq: u64) -> BoxFuture<'_, Result<Vec<AuditRecord>, LedgerError>>;
}

impl<T: ControlLog> DynControlLog for T {
    fn append(
        &self,
        change: ControlChange,
        by: Actor,
        at: Timestamp,
    ) -> BoxFuture<'_, Result<AuditRecord, LedgerError>> {
        Box::pin(ControlLog::append(self, change, by, at))
    }

    fn since(&self, seq: u64) -> BoxFuture<'_, Result<Vec<AuditRecord>, LedgerError>> {
        Box::pin(ControlLog::since(self, seq))
    }
}

/// A budget's tie to its control log.
pub(super) struct ControlBinding {
    log: Box<dyn DynControlLog>,
    /// The last record applied, held while applying so that records apply once, in order.
    applied: tokio::sync::Mutex<u64>,
    /// The decisions in force, for readers on the call path.
    state: parking_lot::RwLock<Arc<ControlState>>,
    /// Set once the whole log was replayed.
    replayed: tokio::sync::OnceCell<()>,
    /// Whether other processes read the log: then `set_limit` and `remove_limit` publish there.
    shared: bool,
    /// Limit changes made synchronously, on their way to the log in the order they were made.
    outbox: parking_lot::Mutex<Option<tokio::sync::mpsc::UnboundedSender<ControlChange>>>,
    /// Changes in the outbox not yet appended; `flushed` wakes [`Budget::flush`] at zero.
    pending: std::sync::atomic::AtomicUsize,
    flushed: tokio::sync::Notify,
}

impl ControlBinding {
    /// A binding to `log`, which other processes may read.
    pub(super) fn new(log: impl ControlLog) -> ControlBinding {
        ControlBinding::with(log, true)
    }

    /// A binding to a log of this process alone.
    pub(super) fn in_memory() -> ControlBinding {
        ControlBinding::with(MemoryControlLog::new(), false)
    }

    fn with(log: impl ControlLog, shared: bool) -> ControlBinding {
        ControlBinding {
            log: Box::new(log),
            applied: tokio::sync::Mutex::new(0),
            state: parking_lot::RwLock::new(Arc::new(ControlState::default())),
            // A log of this process alone starts empty: nothing to replay, and a budget on it
            // keeps its calls free of any wait (its futures are ready when first polled).
            replayed: if shared {
                tokio::sync::OnceCell::new()
            } else {
                tokio::sync::OnceCell::new_with(Some(()))
            },
            shared,
            outbox: parking_lot::Mutex::new(None),
            pending: std::sync::atomic::AtomicUsize::new(0),
            flushed: tokio::sync::Notify::new(),
        }
    }

    pub(super) fn state(&self) -> Arc<ControlState> {
        self.state.read().clone()
    }
}

impl std::fmt::Debug for ControlBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlBinding")
            .field("decisions", &self.state().decisions().count())
            .finish_non_exhaustive()
    }
}

impl<S: BudgetStore, L: Ledger> Budget<S, L> {
    /// Makes a decision: appends it to the control log, then applies the log up to it. Every
    /// budget on the same log applies it too ([`Budget::sync_control`]).
    ///
    /// A limit is checked before it is logged: one this budget could not hold is refused.
    pub async fn decide(
        &self,
        change: ControlChange,
        by: Actor,
    ) -> Result<AuditRecord, BudgetError> {
        if let ControlChange::SetLimit { limit } = &change {
            let mut candidate = self.limits().as_ref().clone();
            candidate.upsert(limit.clone())?;
        }
        let control = &self.inner.control;
        let record = control
            .log
            .append(change, by, self.now())
            .await
            .map_err(BudgetError::ControlLog)?;
        self.sync_control().await?;
        Ok(record)
    }

    /// Sets (adds or replaces) a limit for every budget on the control log.
    pub async fn set_shared_limit(
        &self,
        limit: Limit,
        by: Actor,
    ) -> Result<AuditRecord, BudgetError> {
        self.decide(ControlChange::SetLimit { limit }, by).await
    }

    /// Removes the limit `id` — the file's included — for every budget on the control log, until
    /// a [`ControlChange::RevertLimit`] gives it back.
    pub async fn remove_shared_limit(
        &self,
        id: &str,
        by: Actor,
    ) -> Result<AuditRecord, BudgetError> {
        self.decide(ControlChange::RemoveLimit { id: id.into() }, by)
            .await
    }

    /// Pauses `agent` for every budget on the control log.
    pub async fn pause_agent(&self, agent: &str, by: Actor) -> Result<AuditRecord, BudgetError> {
        self.decide(ControlChange::pause(agent), by).await
    }

    /// Resumes `agent` for every budget on the control log.
    pub async fn resume_agent(&self, agent: &str, by: Actor) -> Result<AuditRecord, BudgetError> {
        self.decide(ControlChange::resume(agent), by).await
    }

    /// Kills `task` (and its sub-agents) for every budget on the control log.
    pub async fn kill_task(&self, task: &TaskId, by: Actor) -> Result<AuditRecord, BudgetError> {
        self.decide(ControlChange::KillTask { task: task.clone() }, by)
            .await
    }

    /// Sends `agent`'s calls to `to` ("switch to cheaper model"), for every router on the log.
    pub async fn switch_model(
        &self,
        agent: &str,
        to: ModelSwitch,
        by: Actor,
    ) -> Result<AuditRecord, BudgetError> {
        let change = ControlChange::SwitchModel {
            agent: agent.into(),
            to,
        };
        self.decide(change, by).await
    }

    /// Back to routing by difficulty and budget for `agent`.
    pub async fn reset_model(&self, agent: &str, by: Actor) -> Result<AuditRecord, BudgetError> {
        let change = ControlChange::ResetModel {
            agent: agent.into(),
        };
        self.decide(change, by).await
    }

    /// Where the control plane sends `agent`'s calls, if it switched them.
    pub fn model_switch(&self, agent: &str) -> Option<ModelSwitch> {
        // Read in place: the router asks on every call.
        self.inner.control.state.read().model_switch(agent).cloned()
    }

    /// The decisions in force, as this budget has applied them.
    pub fn control_state(&self) -> Arc<ControlState> {
        self.inner.control.state()
    }

    /// The control log's records after sequence number `seq` (the audit trail).
    pub async fn control_records(&self, seq: u64) -> Result<Vec<AuditRecord>, BudgetError> {
        self.inner
            .control
            .log
            .since(seq)
            .await
            .map_err(BudgetError::ControlLog)
    }

    /// Applies the log's records this budget has not applied yet, in order; returns how many.
    /// [`Budget::watch_control`] calls it on a timer; a budget also does once before its first
    /// call or report, so a restarted process starts with every decision in force.
    pub async fn sync_control(&self) -> Result<usize, BudgetError> {
        let control = &self.inner.control;
        let mut applied = control.applied.lock().await;
        let records = control
            .log
            .since(*applied)
            .await
            .map_err(BudgetError::ControlLog)?;
        if records.is_empty() {
            return Ok(0);
        }
        let mut state = ControlState::clone(&control.state());
        for record in &records {
            state.apply(&record.change);
            self.obey(&record.change);
            *applied = record.seq;
        }
        let limits_changed = records
            .iter()
            .any(|r| matches!(r.change.target(), crate::control_plane::Target::Limit(_)));
        *control.state.write() = Arc::new(state);
        if limits_changed {
            self.recompute_limits()?;
        }
        Ok(records.len())
    }

    /// Replays the log once, before the first use.
    pub(super) async fn ensure_control_replayed(&self) -> Result<(), BudgetError> {
        let control = &self.inner.control;
        if control.replayed.initialized() {
            return Ok(());
        }
        control
            .replayed
            .get_or_try_init(|| async { self.sync_control().await.map(drop) })
            .await
            .map(drop)
    }

    /// Applies the log every `every` in a background task, for as long as the budget lives
    /// (it holds no reference that keeps the budget alive). A failed read is logged and
    /// retried at the next tick. Needs a tokio runtime.
    pub fn watch_control(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let budget: Weak<Inner<S, L>> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = budget.upgrade() else {
                    return;
                };
                let budget = Budget { inner };
                if let Err(error) = budget.sync_control().await {
                    tracing::warn!(%error, "cannot read the control log; retrying");
                }
            }
        })
    }

    /// Sends a change made synchronously (`set_limit`, `remove_limit`) to a shared control log,
    /// in the order the changes were made, through one background appender. Without a shared
    /// log, or outside a tokio runtime (said in a warning), the change stays in this process.
    pub(super) fn publish(&self, change: ControlChange) {
        use std::sync::atomic::Ordering;
        let control = &self.inner.control;
        if !control.shared {
            return;
        }
        let mut outbox = control.outbox.lock();
        if outbox.is_none() {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                tracing::warn!(%change, "no tokio runtime: the change stays in this process");
                return;
            };
            let (sender, mut changes) = tokio::sync::mpsc::unbounded_channel::<ControlChange>();
            let budget: Weak<Inner<S, L>> = Arc::downgrade(&self.inner);
            runtime.spawn(async move {
                while let Some(change) = changes.recv().await {
                    let Some(inner) = budget.upgrade() else {
                        return;
                    };
                    let budget = Budget { inner };
                    let what = change.to_string();
                    let by = Actor::operator(format!("process {}", std::process::id()));
                    let appended = budget.inner.control.log.append(change, by, budget.now()).await;
                    match appended {
                        Ok(_) => {
                            if let Err(error) = budget.sync_control().await {
                                tracing::warn!(%error, "cannot read the control log");
                            }
                        }
                        Err(error) => {
                            tracing::error!(%error, change = %what, "a limit change did not reach the control log: other processes do not see it");
                        }
                    }
                    if budget.inner.control.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
                        budget.inner.control.flushed.notify_waiters();
                    }
                }
            });
            *outbox = Some(sender);
        }
        if let Some(sender) = outbox.as_ref() {
            control.pending.fetch_add(1, Ordering::SeqCst);
            if sender.send(change).is_err() {
                control.pending.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Waits until every change [`Budget::publish`]ed so far has been appended (or failed).
    pub(super) async fn control_published(&self) {
        use std::sync::atomic::Ordering;
        let control = &self.inner.control;
        loop {
            let flushed = control.flushed.notified();
            if control.pending.load(Ordering::SeqCst) == 0 {
                return;
            }
            flushed.await;
        }
    }

    /// What one decision changes in this process, besides the state readers see.
    fn obey(&self, change: &ControlChange) {
        let controls = &self.inner.controls;
        match change {
            ControlChange::PauseAgent { agent } => controls.pause_agent(agent),
            ControlChange::ResumeAgent { agent } => controls.resume_agent(agent),
            ControlChange::PauseNoncritical => controls.pause_noncritical(),
            ControlChange::ResumeNoncritical => controls.resume_noncritical(),
            ControlChange::KillTask { task } => controls.cancel_task(task),
            // Limits are recomputed once per batch; model switches are read from the state.
            ControlChange::SetLimit { .. }
            | ControlChange::RemoveLimit { .. }
            | ControlChange::RevertLimit { .. }
            | ControlChange::SwitchModel { .. }
            | ControlChange::ResetModel { .. } => {}
        }
    }

    /// The limits in force: this budget's own, with the control plane's decisions over them.
    pub(super) fn recompute_limits(&self) -> Result<(), LimitError> {
        let own: Vec<Limit> = self
            .inner
            .own_limits
            .read()
            .iter()
            .map(|l| Limit::clone(l))
            .collect();
        let in_force = LimitSet::new(self.inner.control.state().limits_over(&own))?;
        *self.inner.limits.write() = Arc::new(in_force);
        Ok(())
    }
}
