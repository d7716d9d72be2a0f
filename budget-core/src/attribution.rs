//! Who spent the tokens: agent, task, step, user, session and free-form tags.
//!
//! Every usage event carries an [`Attribution`]. A call nobody claimed is attributed to the agent
//! [`UNATTRIBUTED`] — it is counted, never dropped.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The agent name of usage that no agent claimed.
pub const UNATTRIBUTED: &str = "unattributed";

/// The identity of one task (one run of an agent function).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct TaskId(Arc<str>);

impl TaskId {
    /// A task id chosen by the caller (e.g. a ticket number).
    pub fn new(id: impl Into<Arc<str>>) -> TaskId {
        TaskId(id.into())
    }

    /// A fresh id, unique within this process and very unlikely to repeat across processes
    /// (it mixes the process id and start time into a counter).
    pub fn generate() -> TaskId {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        static PREFIX: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            splitmix(nanos ^ u64::from(std::process::id()).rotate_left(32))
        });
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        TaskId(format!("task-{:08x}-{n}", *PREFIX as u32).into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({})", self.0)
    }
}

impl From<&str> for TaskId {
    fn from(s: &str) -> TaskId {
        TaskId::new(s)
    }
}

/// To whom a call's usage belongs.
///
/// Cheap to clone: every text is an `Arc<str>`.
///
/// ```
/// use budget_core::{Attribution, TaskId};
///
/// let who = Attribution::agent("researcher")
///     .with_task(TaskId::new("t-42"))
///     .with_step(3)
///     .with_user("alice")
///     .with_tag("team", "search");
/// assert_eq!(who.tag("team"), Some("search"));
/// assert_eq!(Attribution::default().agent_name(), budget_core::UNATTRIBUTED);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Attribution {
    agent: Arc<str>,
    task: Option<TaskId>,
    step: Option<u32>,
    user: Option<Arc<str>>,
    session: Option<Arc<str>>,
    /// Sorted by key; one value per key.
    tags: Vec<(Arc<str>, Arc<str>)>,
    critical: bool,
}

impl Default for Attribution {
    fn default() -> Attribution {
        Attribution::agent(UNATTRIBUTED)
    }
}

impl Attribution {
    /// Usage of the named agent.
    pub fn agent(name: impl Into<Arc<str>>) -> Attribution {
        Attribution {
            agent: name.into(),
            task: None,
            step: None,
            user: None,
            session: None,
            tags: Vec::new(),
            critical: false,
        }
    }

    /// Sets the task.
    pub fn with_task(mut self, task: TaskId) -> Attribution {
        self.task = Some(task);
        self
    }

    /// Sets the step (loop iteration) inside the task.
    pub fn with_step(mut self, step: u32) -> Attribution {
        self.step = Some(step);
        self
    }

    /// Sets the end user the work is done for.
    pub fn with_user(mut self, user: impl Into<Arc<str>>) -> Attribution {
        self.user = Some(user.into());
        self
    }

    /// Sets the user's session.
    pub fn with_session(mut self, session: impl Into<Arc<str>>) -> Attribution {
        self.session = Some(session.into());
        self
    }

    /// Adds (or replaces) a free-form tag.
    pub fn with_tag(mut self, key: impl Into<Arc<str>>, value: impl Into<Arc<str>>) -> Attribution {
        let key = key.into();
        let value = value.into();
        match self.tags.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => self.tags[i].1 = value,
            Err(i) => self.tags.insert(i, (key, value)),
        }
        self
    }

    /// Marks the agent critical: exempt from "pause all non-critical agents".
    pub fn critical(mut self, critical: bool) -> Attribution {
        self.critical = critical;
        self
    }

    /// The agent's name ([`UNATTRIBUTED`] when nobody claimed the call).
    pub fn agent_name(&self) -> &str {
        &self.agent
    }

    /// The agent's name, shared.
    pub fn agent_arc(&self) -> &Arc<str> {
        &self.agent
    }

    /// The task, if any.
    pub fn task(&self) -> Option<&TaskId> {
        self.task.as_ref()
    }

    /// The step, if any.
    pub fn step(&self) -> Option<u32> {
        self.step
    }

    /// The user, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The session, if any.
    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    /// The value of tag `key`, if set.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*self.tags[i].1)
    }

    /// All tags, sorted by key.
    pub fn tags(&self) -> impl Iterator<Item = (&str, &str)> {
        self.tags.iter().map(|(k, v)| (&**k, &**v))
    }

    /// Whether the agent is critical.
    pub fn is_critical(&self) -> bool {
        self.critical
    }

    /// `true` for usage no agent claimed.
    pub fn is_unattributed(&self) -> bool {
        &*self.agent == UNATTRIBUTED
    }

    pub(crate) fn user_arc(&self) -> Option<&Arc<str>> {
        self.user.as_ref()
    }

    pub(crate) fn tag_arc(&self, key: &str) -> Option<&Arc<str>> {
        self.tags
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &self.tags[i].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_sorted_and_replaced() {
        let a = Attribution::agent("a")
            .with_tag("z", "1")
            .with_tag("b", "2")
            .with_tag("z", "3");
        assert_eq!(a.tags().collect::<Vec<_>>(), vec![("b", "2"), ("z", "3")]);
        assert_eq!(a.tag("missing"), None);
    }

    #[test]
    fn generated_task_ids_are_unique() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| TaskId::generate()).collect();
        assert_eq!(ids.len(), 1000);
    }
}
