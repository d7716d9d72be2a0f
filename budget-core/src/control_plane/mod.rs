//! The control plane: the operator's decisions made while things run — limits set or reverted,
//! agents paused or resumed, tasks killed, an agent's model switched or reset — kept as an
//! append-only log of audit records that every process replays.
//!
//! The configuration file is the base; a decision here overrides it for its target until a
//! later decision reverts it ([`ControlChange::RevertLimit`], [`ControlChange::ResumeAgent`],
//! [`ControlChange::ResetModel`]). A task killed stays killed.
//!
//! This module is the domain: what a change is, what it replaces ([`ControlState::apply`]
//! folds a log into the decisions in force, and says for each record what it overrode), and the
//! log's contract ([`ControlLog`]). [`MemoryControlLog`] keeps the log in one process;
//! `SqliteControlLog` keeps it in the SQLite ledger's file (table `control_log`, schema version
//! 2), where every process on that file reads it; `PostgresControlLog` keeps it in the
//! PostgreSQL ledger's schema (table `control_log`, schema version 3), where every process on
//! that namespace reads it; `RedisControlLog` keeps it in Redis under a store's key prefix
//! (see its docs for the keys). The durable logs store a record's actor and changes as JSON text
//! and its time as nanoseconds, and give the same errors: a record that cannot be read back is
//! a [`BackendErrorKind::Corrupt`](crate::BackendErrorKind::Corrupt) error naming it.
//!
//! ```
//! use budget_core::control_plane::{
//!     Actor, ControlChange, ControlLog, ControlState, MemoryControlLog,
//! };
//! use budget_core::{Limit, Period, Selector, Window};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let log = MemoryControlLog::new();
//! let now = "2026-12-06T09:00:00Z".parse().unwrap();
//! let day = Window::Calendar(Period::Day);
//! let day = Limit::new("support/day", Selector::agent("support"), day).tokens(500_000);
//! log.append(ControlChange::SetLimit { limit: day }, Actor::operator("ana"), now).await.unwrap();
//! log.append(ControlChange::pause("support"), Actor::rule("daily_budget_exceeded"), now)
//!     .await
//!     .unwrap();
//!
//! let mut state = ControlState::default();
//! for record in log.since(0).await.unwrap() {
//!     state.apply(&record.change);
//! }
//! assert!(state.is_paused("support"));
//! assert_eq!(state.limit("support/day").unwrap().cap.tokens, Some(500_000));
//! # });
//! ```

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
pub(crate) mod codec;
mod memory;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use jiff::Timestamp;

use crate::attribution::TaskId;
use crate::ledger::LedgerError;
use crate::limits::Limit;

#[cfg(feature = "postgres")]
pub use crate::ledger::PostgresControlLog;
#[cfg(feature = "sqlite")]
pub use crate::ledger::SqliteControlLog;
#[cfg(feature = "redis")]
pub use crate::store::RedisControlLog;
pub use memory::MemoryControlLog;

/// One decision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlChange {
    /// Adds a limit, or replaces the one with its id (the file's or an earlier decision's).
    SetLimit {
        /// The limit in force from now on.
        limit: Limit,
    },
    /// Removes the limit with this id, the file's included, until reverted.
    RemoveLimit {
        /// The limit's id.
        id: Arc<str>,
    },
    /// Drops the decisions on the limit with this id: the file's limit (if any) is in force.
    RevertLimit {
        /// The limit's id.
        id: Arc<str>,
    },
    /// The agent's calls are refused until it is resumed.
    PauseAgent {
        /// The agent.
        agent: Arc<str>,
    },
    /// Lifts a pause.
    ResumeAgent {
        /// The agent.
        agent: Arc<str>,
    },
    /// Every agent not marked critical is paused (the users' `pause_all_noncritical_agents`).
    PauseNoncritical,
    /// Lifts [`ControlChange::PauseNoncritical`]; agents paused by name stay paused.
    ResumeNoncritical,
    /// The task (and its sub-agents) is cancelled for good.
    KillTask {
        /// The task.
        task: TaskId,
    },
    /// The agent's calls go to another model than routing would pick.
    SwitchModel {
        /// The agent.
        agent: Arc<str>,
        /// Where its calls go.
        to: ModelSwitch,
    },
    /// Back to routing by difficulty and budget for the agent.
    ResetModel {
        /// The agent.
        agent: Arc<str>,
    },
}

impl ControlChange {
    /// Pauses `agent`.
    pub fn pause(agent: impl Into<Arc<str>>) -> ControlChange {
        ControlChange::PauseAgent {
            agent: agent.into(),
        }
    }

    /// Resumes `agent`.
    pub fn resume(agent: impl Into<Arc<str>>) -> ControlChange {
        ControlChange::ResumeAgent {
            agent: agent.into(),
        }
    }

    /// What the decision is about: a later decision on the same target replaces it.
    pub fn target(&self) -> Target {
        match self {
            ControlChange::SetLimit { limit } => Target::Limit(limit.id.clone()),
            ControlChange::RemoveLimit { id } | ControlChange::RevertLimit { id } => {
                Target::Limit(id.clone())
            }
            ControlChange::PauseAgent { agent } | ControlChange::ResumeAgent { agent } => {
                Target::Pause(agent.clone())
            }
            ControlChange::PauseNoncritical | ControlChange::ResumeNoncritical => {
                Target::Noncritical
            }
            ControlChange::KillTask { task } => Target::Task(task.clone()),
            ControlChange::SwitchModel { agent, .. } | ControlChange::ResetModel { agent } => {
                Target::Model(agent.clone())
            }
        }
    }

    /// Whether the change only takes back earlier decisions on its target (the state then
    /// holds nothing for it).
    pub(crate) fn reverts(&self) -> bool {
        matches!(
            self,
            ControlChange::RevertLimit { .. }
                | ControlChange::ResumeAgent { .. }
                | ControlChange::ResumeNoncritical
                | ControlChange::ResetModel { .. }
        )
    }
}

/// One line for an audit trail: `pause agent support`, `set limit support/day`.
impl fmt::Display for ControlChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlChange::SetLimit { limit } => write!(f, "set limit {}", limit.id),
            ControlChange::RemoveLimit { id } => write!(f, "remove limit {id}"),
            ControlChange::RevertLimit { id } => write!(f, "revert limit {id} to the file's"),
            ControlChange::PauseAgent { agent } => write!(f, "pause agent {agent}"),
            ControlChange::ResumeAgent { agent } => write!(f, "resume agent {agent}"),
            ControlChange::PauseNoncritical => f.write_str("pause every non-critical agent"),
            ControlChange::ResumeNoncritical => f.write_str("resume the non-critical agents"),
            ControlChange::KillTask { task } => write!(f, "kill task {task}"),
            ControlChange::SwitchModel { agent, to } => {
                write!(f, "switch agent {agent} to {to}")
            }
            ControlChange::ResetModel { agent } => write!(f, "reset agent {agent}'s model"),
        }
    }
}

/// Where a switched agent's calls go.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelSwitch {
    /// The cheapest model of the routing tiers ("switch to cheaper model").
    Cheapest,
    /// This model.
    Model(Arc<str>),
}

impl fmt::Display for ModelSwitch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSwitch::Cheapest => f.write_str("the cheapest model"),
            ModelSwitch::Model(m) => f.write_str(m),
        }
    }
}

/// What a decision is about. Decisions on one target replace each other.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// A limit, by id.
    Limit(Arc<str>),
    /// An agent's pause.
    Pause(Arc<str>),
    /// The pause of every non-critical agent.
    Noncritical,
    /// A task.
    Task(TaskId),
    /// An agent's model.
    Model(Arc<str>),
}

impl Target {
    /// The target as one string, for a log's index: `limit:<id>`, `pause:<agent>`,
    /// `task:<id>`, `model:<agent>`.
    pub fn key(&self) -> String {
        match self {
            Target::Limit(id) => format!("limit:{id}"),
            Target::Pause(agent) => format!("pause:{agent}"),
            Target::Noncritical => "pause-noncritical".to_string(),
            Target::Task(task) => format!("task:{task}"),
            Target::Model(agent) => format!("model:{agent}"),
        }
    }
}

/// Who decided: a person (or program) through the API or CLI, or an alert rule's action.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Actor {
    /// An operator, by name.
    Operator(Arc<str>),
    /// An alert rule, by name.
    Rule(Arc<str>),
}

impl Actor {
    /// An operator.
    pub fn operator(name: impl Into<Arc<str>>) -> Actor {
        Actor::Operator(name.into())
    }

    /// An alert rule.
    pub fn rule(name: impl Into<Arc<str>>) -> Actor {
        Actor::Rule(name.into())
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Operator(name) => write!(f, "operator {name}"),
            Actor::Rule(name) => write!(f, "rule {name}"),
        }
    }
}

/// One decision as the log keeps it: what, what it replaced, when, by whom.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditRecord {
    /// Its place in the log: 1, 2, 3... with no gaps.
    pub seq: u64,
    /// When it was decided.
    pub at: Timestamp,
    /// Who decided.
    pub by: Actor,
    /// The decision.
    pub change: ControlChange,
    /// The decision in force on the same target before this one (`None`: the file's value,
    /// or nothing).
    pub replaced: Option<ControlChange>,
}

/// One line of an audit trail:
/// `#3 2026-12-06T09:00:00Z rule daily_budget_exceeded: pause agent support (was: the file's)`.
impl fmt::Display for AuditRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} {} {}: {}", self.seq, self.at, self.by, self.change)?;
        match &self.replaced {
            Some(old) => write!(f, " (was: {old})"),
            None => f.write_str(" (was: the file's)"),
        }
    }
}

/// The decisions in force: the latest one per target, folded from the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlState {
    decisions: BTreeMap<Target, ControlChange>,
}

impl ControlState {
    /// Applies one decision; returns the one it replaced on the same target.
    pub fn apply(&mut self, change: &ControlChange) -> Option<ControlChange> {
        let target = change.target();
        if change.reverts() {
            self.decisions.remove(&target)
        } else {
            self.decisions.insert(target, change.clone())
        }
    }

    /// The decision in force on `target`.
    pub fn decision(&self, target: &Target) -> Option<&ControlChange> {
        self.decisions.get(target)
    }

    /// The decision on the target `target` builds. The target (an allocation) is only built when
    /// some decision is in force: the router asks on every call, and usually there is none.
    fn decision_on(&self, target: impl FnOnce() -> Target) -> Option<&ControlChange> {
        if self.decisions.is_empty() {
            return None;
        }
        self.decisions.get(&target())
    }

    /// What the decisions say of the limit `id`: `Some(Some(limit))` set, `Some(None)` removed,
    /// `None` no decision (the file's limit, if any, is in force).
    pub fn limit_decision(&self, id: &str) -> Option<Option<&Limit>> {
        match self.decision_on(|| Target::Limit(Arc::from(id)))? {
            ControlChange::SetLimit { limit } => Some(Some(limit)),
            _ => Some(None),
        }
    }

    /// The limit `id` as set by a decision, if one set it.
    pub fn limit(&self, id: &str) -> Option<&Limit> {
        self.limit_decision(id).flatten()
    }

    /// The limits in force: `base` (the file's), with every limit decision applied — set
    /// limits replace or join them, removed ones leave.
    pub fn limits_over(&self, base: &[Limit]) -> Vec<Limit> {
        let mut out: Vec<Limit> = base
            .iter()
            .filter_map(|l| match self.limit_decision(&l.id) {
                None => Some(l.clone()),
                Some(set) => set.cloned(),
            })
            .collect();
        for decision in self.decisions.values() {
            if let ControlChange::SetLimit { limit } = decision
                && !base.iter().any(|b| b.id == limit.id)
            {
                out.push(limit.clone());
            }
        }
        out
    }

    /// Whether `agent` is paused.
    pub fn is_paused(&self, agent: &str) -> bool {
        self.decision_on(|| Target::Pause(Arc::from(agent)))
            .is_some()
    }

    /// Whether every non-critical agent is paused.
    pub fn noncritical_paused(&self) -> bool {
        self.decisions.contains_key(&Target::Noncritical)
    }

    /// Whether `task` was killed.
    pub fn is_killed(&self, task: &TaskId) -> bool {
        self.decision_on(|| Target::Task(task.clone())).is_some()
    }

    /// Where `agent`'s calls are switched to, if they are.
    pub fn model_switch(&self, agent: &str) -> Option<&ModelSwitch> {
        match self.decision_on(|| Target::Model(Arc::from(agent)))? {
            ControlChange::SwitchModel { to, .. } => Some(to),
            _ => None,
        }
    }

    /// Every decision in force, by target.
    pub fn decisions(&self) -> impl Iterator<Item = &ControlChange> {
        self.decisions.values()
    }
}

/// Where decisions are kept: an append-only log every process reads.
///
/// `append` assigns the next sequence number and records what the change replaced, in one
/// step, so that concurrent writers cannot both think they replaced the same decision. A
/// reader applies [`ControlLog::since`] its last sequence number to its [`ControlState`].
pub trait ControlLog: Send + Sync + 'static {
    /// Appends a decision made `at` by `by`; returns its audit record.
    fn append(
        &self,
        change: ControlChange,
        by: Actor,
        at: Timestamp,
    ) -> impl Future<Output = Result<AuditRecord, LedgerError>> + Send;

    /// The records after sequence number `seq` (all of them for 0), in order.
    fn since(&self, seq: u64)
    -> impl Future<Output = Result<Vec<AuditRecord>, LedgerError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{Period, Selector, Window};

    fn limit(id: &str, tokens: u64) -> Limit {
        Limit::new(id, Selector::Global, Window::Calendar(Period::Day)).tokens(tokens)
    }

    #[test]
    fn a_decision_replaces_the_last_one_on_its_target_and_reverts_take_it_back() {
        let mut state = ControlState::default();
        assert_eq!(state.apply(&ControlChange::pause("support")), None);
        assert!(state.is_paused("support"));
        assert_eq!(
            state.apply(&ControlChange::pause("support")),
            Some(ControlChange::pause("support"))
        );
        assert_eq!(
            state.apply(&ControlChange::resume("support")),
            Some(ControlChange::pause("support"))
        );
        assert!(!state.is_paused("support"));
        assert_eq!(state.apply(&ControlChange::resume("support")), None);

        let switch = ControlChange::SwitchModel {
            agent: "research".into(),
            to: ModelSwitch::Cheapest,
        };
        state.apply(&switch);
        assert_eq!(state.model_switch("research"), Some(&ModelSwitch::Cheapest));
        assert_eq!(state.model_switch("support"), None);
        let reset = ControlChange::ResetModel {
            agent: "research".into(),
        };
        assert_eq!(state.apply(&reset), Some(switch));
        assert_eq!(state.model_switch("research"), None);
    }

    #[test]
    fn limits_from_the_file_are_the_base_that_decisions_override() {
        let file = [limit("all/day", 1_000), limit("support/day", 500)];
        let mut state = ControlState::default();
        assert_eq!(state.limits_over(&file), file);

        state.apply(&ControlChange::SetLimit {
            limit: limit("all/day", 2_000),
        });
        state.apply(&ControlChange::SetLimit {
            limit: limit("research/day", 300),
        });
        state.apply(&ControlChange::RemoveLimit {
            id: "support/day".into(),
        });
        assert_eq!(
            state.limits_over(&file),
            [limit("all/day", 2_000), limit("research/day", 300)]
        );
        assert_eq!(state.limit_decision("support/day"), Some(None));

        state.apply(&ControlChange::RevertLimit {
            id: "support/day".into(),
        });
        state.apply(&ControlChange::RevertLimit {
            id: "all/day".into(),
        });
        assert_eq!(
            state.limits_over(&file),
            [
                limit("all/day", 1_000),
                limit("support/day", 500),
                limit("research/day", 300)
            ]
        );
    }

    #[test]
    fn a_killed_task_stays_killed() {
        let mut state = ControlState::default();
        let task = TaskId::new("t-7");
        state.apply(&ControlChange::KillTask { task: task.clone() });
        state.apply(&ControlChange::pause("support"));
        state.apply(&ControlChange::resume("support"));
        assert!(state.is_killed(&task));
        assert!(!state.is_killed(&TaskId::new("t-8")));
    }

    #[test]
    fn changes_and_records_survive_a_round_trip_through_json() {
        let record = AuditRecord {
            seq: 3,
            at: "2026-12-06T09:00:00Z".parse().unwrap(),
            by: Actor::rule("daily_budget_exceeded"),
            change: ControlChange::SetLimit {
                limit: limit("all/day", 2_000).soft(),
            },
            replaced: Some(ControlChange::RemoveLimit {
                id: "all/day".into(),
            }),
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<AuditRecord>(&json).unwrap(), record);
        assert_eq!(
            record.to_string(),
            "#3 2026-12-06T09:00:00Z rule daily_budget_exceeded: set limit all/day \
             (was: remove limit all/day)"
        );
    }
}
