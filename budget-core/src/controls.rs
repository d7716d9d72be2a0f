//! Pausing agents and cancelling tasks from outside (alert actions, an admin, a runaway
//! detector). The budget consults these before every reservation; the `#[budgeted]` macro
//! consults them at every step boundary.
//!
//! A task is known here by its id. The task scopes running it are *bound* to the id the first
//! time they, or any scope nested in them, reach the budget (a scope does not know its budget
//! before that), so [`Controls::cancel_task`] cancels every bound scope of the task, and with
//! it their sub-agents. A cancel of a task that no scope has bound yet is kept and applied when
//! one binds: a cancel that comes before the task's first call still stops it. A task's entry
//! goes when its last bound scope ends; cancels that no scope ever claims are bounded by
//! [`PENDING_CANCELS`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;

use crate::attribution::{Attribution, TaskId};

/// Why a call is refused before any budget is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    Paused,
    Cancelled(TaskId),
}

/// How many tasks with no bound scope (cancelled, or asked for a token, before any of their
/// scopes reached the budget, or after all of them ended) are remembered; beyond it the oldest
/// are forgotten. A process that cancels tasks which never run, or already finished, would
/// otherwise keep every one of them.
pub const PENDING_CANCELS: usize = 4096;

/// Paused agents and cancelled tasks.
#[derive(Debug, Default)]
pub struct Controls {
    paused: RwLock<foldhash::HashSet<Arc<str>>>,
    /// Agents declared critical (in the configuration), whatever their calls' attribution says.
    critical: RwLock<foldhash::HashSet<Arc<str>>>,
    noncritical_paused: AtomicBool,
    tasks: RwLock<Tasks>,
    next_id: AtomicU64,
}

#[derive(Debug, Default)]
struct Tasks {
    entries: foldhash::HashMap<TaskId, TaskEntry>,
    /// Entries made without a bound scope, oldest first, with their serial (an id may have
    /// been bound, removed or made again since: only the same serial with no scope is dropped).
    pending: VecDeque<(TaskId, u64)>,
}

#[derive(Debug, Default)]
struct TaskEntry {
    serial: u64,
    /// Cancelled by [`Controls::cancel_task`]; scopes bound later are cancelled on binding.
    own: CancellationToken,
    /// The scopes bound to the task, by binding id.
    scopes: Vec<(u64, CancellationToken)>,
}

impl TaskEntry {
    fn is_cancelled(&self) -> bool {
        self.own.is_cancelled() || self.scopes.iter().any(|(_, t)| t.is_cancelled())
    }
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

    /// Declares `agent` critical: [`Controls::pause_noncritical`] never pauses it, whether or
    /// not its calls are attributed as critical.
    pub fn mark_critical(&self, agent: &str) {
        self.critical.write().insert(agent.into());
    }

    /// Whether calls attributed to `who` are paused.
    pub fn is_paused(&self, who: &Attribution) -> bool {
        let noncritical_paused = self.noncritical_paused.load(Ordering::Relaxed)
            && !who.is_critical()
            && !self.critical.read().contains(who.agent_name());
        noncritical_paused || self.paused.read().contains(who.agent_name())
    }

    /// The agents paused by name.
    pub fn paused_agents(&self) -> Vec<Arc<str>> {
        let mut v: Vec<_> = self.paused.read().iter().cloned().collect();
        v.sort();
        v
    }

    /// The cancellation token of a task (created on first use): the token of its first bound
    /// scope, or, before one is bound, one that is applied to the scopes when they bind.
    /// Cancelling it refuses the task's further calls; [`Controls::cancel_task`] does that and
    /// also reaches every bound scope of the task, whenever the token was taken.
    pub fn task_token(&self, task: &TaskId) -> CancellationToken {
        if let Some(entry) = self.tasks.read().entries.get(task) {
            return entry.scopes.first().map_or(&entry.own, |(_, t)| t).clone();
        }
        let mut tasks = self.tasks.write();
        let entry = self.entry(&mut tasks, task);
        entry.scopes.first().map_or(&entry.own, |(_, t)| t).clone()
    }

    /// Binds a task scope's cancellation token to the task, so that
    /// [`Controls::cancel_task`] reaches code that only watches the scope (and the scope's
    /// sub-agents). A task cancelled before is cancelled at once. Several scopes may be bound
    /// to one task. Returns the binding, for [`Controls::unbind_task`] when the scope ends.
    pub fn bind_task(&self, task: &TaskId, token: &CancellationToken) -> u64 {
        let binding = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut tasks = self.tasks.write();
        let entry = tasks
            .entries
            .entry(task.clone())
            .or_insert_with(|| TaskEntry {
                serial: binding,
                ..TaskEntry::default()
            });
        if entry.own.is_cancelled() {
            token.cancel();
        }
        entry.scopes.push((binding, token.clone()));
        binding
    }

    /// Undoes a [`Controls::bind_task`] (its scope ended). The task is forgotten with its last
    /// bound scope. Returns whether no scope is bound to the task any more (the caller may
    /// then drop the task's counters).
    pub fn unbind_task(&self, task: &TaskId, binding: u64) -> bool {
        let mut tasks = self.tasks.write();
        let Some(entry) = tasks.entries.get_mut(task) else {
            return true;
        };
        let before = entry.scopes.len();
        entry.scopes.retain(|(b, _)| *b != binding);
        let unbound = entry.scopes.len() < before;
        let last = entry.scopes.is_empty();
        // An entry this binding was not in was made after the task was finished: it is a new
        // run's (or a cancel waiting for one) and stays.
        if unbound && last {
            tasks.entries.remove(task);
        }
        last
    }

    /// Cancels a task: every scope bound to it (and their sub-agents) and its further calls;
    /// a scope of it that binds later is cancelled when it binds.
    pub fn cancel_task(&self, task: &TaskId) {
        let mut tasks = self.tasks.write();
        let entry = self.entry(&mut tasks, task);
        entry.own.cancel();
        for (_, token) in &entry.scopes {
            token.cancel();
        }
    }

    /// Whether a task was cancelled (from here, or one of its bound scopes by its parent or
    /// as a runaway).
    pub fn is_cancelled(&self, task: &TaskId) -> bool {
        self.tasks
            .read()
            .entries
            .get(task)
            .is_some_and(TaskEntry::is_cancelled)
    }

    /// Forgets a finished task: its cancel and its bindings.
    pub fn finish_task(&self, task: &TaskId) {
        self.tasks.write().entries.remove(task);
    }

    /// How many tasks are remembered: those with a bound scope, and at most
    /// [`PENDING_CANCELS`] others.
    pub fn tracked_tasks(&self) -> usize {
        self.tasks.read().entries.len()
    }

    /// The task's entry, made (as a pending one, evicting the oldest beyond the bound) when
    /// there is none.
    fn entry<'a>(&self, tasks: &'a mut Tasks, task: &TaskId) -> &'a mut TaskEntry {
        let mut serial = 0;
        if !tasks.entries.contains_key(task) {
            serial = self.next_id.fetch_add(1, Ordering::Relaxed);
            tasks.pending.push_back((task.clone(), serial));
            while tasks.pending.len() > PENDING_CANCELS {
                let Some((old, old_serial)) = tasks.pending.pop_front() else {
                    break;
                };
                if tasks
                    .entries
                    .get(&old)
                    .is_some_and(|e| e.serial == old_serial && e.scopes.is_empty())
                {
                    tasks.entries.remove(&old);
                }
            }
        }
        tasks
            .entries
            .entry(task.clone())
            .or_insert_with(|| TaskEntry {
                serial,
                ..TaskEntry::default()
            })
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

    #[test]
    fn every_bound_scope_is_cancelled_and_the_last_to_end_forgets_the_task() {
        let c = Controls::default();
        let task = TaskId::new("shared");
        let (a, b) = (CancellationToken::new(), CancellationToken::new());
        let bound_a = c.bind_task(&task, &a);
        let bound_b = c.bind_task(&task, &b);
        c.cancel_task(&task);
        assert!(a.is_cancelled() && b.is_cancelled());
        assert!(!c.unbind_task(&task, bound_a), "b still runs the task");
        assert!(c.is_cancelled(&task));
        assert!(c.unbind_task(&task, bound_b));
        assert_eq!(c.tracked_tasks(), 0);
        // A cancel before any scope binds is applied on binding.
        c.cancel_task(&task);
        let late = CancellationToken::new();
        let bound = c.bind_task(&task, &late);
        assert!(late.is_cancelled());
        // A binding ended after the task was finished and made again leaves the new entry.
        c.finish_task(&task);
        c.cancel_task(&task);
        assert!(c.unbind_task(&task, bound));
        assert!(c.is_cancelled(&task));
    }
}
