//! The users' alert rules, parsed and schema-checked. Conditions are kept as text here:
//! evaluating them is the alert engine's job.

use serde::Deserialize;

/// How urgent an alert is, P1 the most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub enum Severity {
    /// Page now.
    P1,
    /// Urgent.
    P2,
    /// Soon.
    P3,
    /// Informational.
    P4,
}

/// What a rule does when its condition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertAction {
    /// Pause every agent not marked `critical`.
    PauseAllNoncriticalAgents,
    /// Flag the agent for a look.
    InvestigateAgent,
    /// Cancel the agent's running task.
    KillAgentTask,
    /// Tell the team.
    NotifyTeam,
}

/// One rule of `alerts.budget_rules`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRule {
    /// A unique name.
    pub name: String,
    /// The condition, unevaluated (`daily_tokens > daily_limit`).
    pub condition: String,
    /// How urgent.
    pub severity: Severity,
    /// What to do.
    pub action: AlertAction,
    /// The message template (`{used}/{limit}`).
    pub message: String,
}
