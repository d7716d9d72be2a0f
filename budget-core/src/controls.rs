//! Pausing agents and cancelling tasks from outside (alert actions, an admin, a runaway
//! detector). The budget consults these before every reservation; the `#[budgeted]` macro
//! consults them at every step boundary.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;

use crate::attribution::{Attribution, TaskId};

/// Why a call is refused before any budget is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    Paused,
    Cancelled(TaskId),
}

/// Paused agents and cancelled tasks.
#[derive(Debug, Default)]
pub struct Controls {
    paused: RwLock<foldhash::HashSet<Arc<str>>>,
    noncritical_paused: AtomicBool,
    tasks: RwLock<foldhash::HashMap<TaskId, CancellationToken>>,
}

impl Controls {
    /// Pauses an agent: its calls are refused until [`Controls::resume_agent`].
    pub fn pause_agent(&self, agent: &str) {
        self.paused.write().insert(agent.into());
    }

    /// Resumes a paused agent.
    pub fn resume_agent(&self, agent: &str) {
        self.paused.write().remove(agent);
    }

    /// Pauses every agent not marked critical (the seed's `pause_all_noncritical_agents`).
    pub fn pause_noncritical(&self) {
        self.noncritical_paused.store(true, Ordering::SeqCst);
    }

    /// Lifts [`Controls::pause_noncritical`] (agents paused by name stay paused).
    pub fn resume_noncritical(&self) {
        self.noncritical_paused.store(false, Ordering::SeqCst);
    }

    /// Whether calls attributed to `who` are paused.
    pub fn is_paused(&self, who: &Attribution) -> bool {
        (!who.is_critical() && self.noncritical_paused.load(Ordering::Relaxed))
            || self.paused.read().contains(who.agent_name())
    }

    /// The agents paused by name.
    pub fn paused_agents(&self) -> Vec<Arc<str>> {
        let mut v: Vec<_> = self.paused.read().iter().cloned().collect();
        v.sort();
        v
    }

    /// The cancellation token of a task (created on first use). Cancelling it, or calling
    /// [`Controls::cancel_task`], refuses the task's further calls.
    pub fn task_token(&self, task: &TaskId) -> CancellationToken {
        if let Some(token) = self.tasks.read().get(task) {
            return token.clone();
        }
        self.tasks.write().entry(task.clone()).or_default().clone()
    }

    /// Makes `token` the task's cancellation token (a task scope's own), so that
    /// [`Controls::cancel_task`] reaches code that only watches the scope. A task cancelled
    /// before it was bound is cancelled at once.
    pub fn bind_task(&self, task: &TaskId, token: &CancellationToken) {
        let mut tasks = self.tasks.write();
        if tasks.get(task).is_some_and(CancellationToken::is_cancelled) {
            token.cancel();
        }
        tasks.insert(task.clone(), token.clone());
    }

    /// Cancels a task.
    pub fn cancel_task(&self, task: &TaskId) {
        self.task_token(task).cancel();
    }

    /// Whether a task was cancelled.
    pub fn is_cancelled(&self, task: &TaskId) -> bool {
        self.tasks
            .read()
            .get(task)
            .is_some_and(CancellationToken::is_cancelled)
    }

    /// Forgets a finished task's token.
    pub fn finish_task(&self, task: &TaskId) {
        self.tasks.write().remove(task);
    }

    pub(crate) fn refusal(&self, who: &Attribution) -> Option<Refusal> {
        if self.is_paused(who) {
            return Some(Refusal::Paused);
        }
        match who.task() {
            Some(task) if self.is_cancelled(task) => Some(Refusal::Cancelled(task.clone())),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_and_cancel() {
        let c = Controls::default();
        let worker = Attribution::agent("w").with_task(TaskId::new("t"));
        let pager = Attribution::agent("pager").critical(true);
        assert_eq!(c.refusal(&worker), None);
        c.pause_noncritical();
        assert_eq!(c.refusal(&worker), Some(Refusal::Paused));
        assert_eq!(c.refusal(&pager), None);
        c.resume_noncritical();
        c.pause_agent("pager");
        assert_eq!(c.refusal(&pager), Some(Refusal::Paused));
        c.resume_agent("pager");
        let token = c.task_token(&TaskId::new("t"));
        c.cancel_task(&TaskId::new("t"));
        assert!(token.is_cancelled());
        assert_eq!(
            c.refusal(&worker),
            Some(Refusal::Cancelled(TaskId::new("t")))
        );
        c.finish_task(&TaskId::new("t"));
        assert_eq!(c.refusal(&worker), None);
    }
}
