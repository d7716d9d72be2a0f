//! Budget presets for the agent types of the users' planning table: a daily token cap and a
//! monthly cost cap per agent, both hard, alerting at 70% and 90%.
//!
//! | agent type | daily limit | monthly cost cap |
//! |---|---|---|
//! | Customer Support | 500K tokens | $150 |
//! | Research Agent | 2M tokens | $600 |
//! | Code Generation | 3M tokens | $900 |
//! | Data Analysis | 1M tokens | $300 |
//! | Internal Tooling | 200K tokens | $60 |

use crate::Money;
use crate::limits::{Limit, Period, Selector, Window};

/// An agent type with a planned budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentPreset {
    /// 500K tokens a day, $150 a month.
    CustomerSupport,
    /// 2M tokens a day, $600 a month.
    Research,
    /// 3M tokens a day, $900 a month.
    CodeGeneration,
    /// 1M tokens a day, $300 a month.
    DataAnalysis,
    /// 200K tokens a day, $60 a month.
    InternalTooling,
}

impl AgentPreset {
    /// Every preset, in the table's order.
    pub const ALL: [AgentPreset; 5] = [
        AgentPreset::CustomerSupport,
        AgentPreset::Research,
        AgentPreset::CodeGeneration,
        AgentPreset::DataAnalysis,
        AgentPreset::InternalTooling,
    ];

    /// Daily token cap.
    pub const fn daily_tokens(self) -> u64 {
        match self {
            AgentPreset::CustomerSupport => 500_000,
            AgentPreset::Research => 2_000_000,
            AgentPreset::CodeGeneration => 3_000_000,
            AgentPreset::DataAnalysis => 1_000_000,
            AgentPreset::InternalTooling => 200_000,
        }
    }

    /// Monthly cost cap.
    pub const fn monthly_cost(self) -> Money {
        Money::from_dollars(match self {
            AgentPreset::CustomerSupport => 150,
            AgentPreset::Research => 600,
            AgentPreset::CodeGeneration => 900,
            AgentPreset::DataAnalysis => 300,
            AgentPreset::InternalTooling => 60,
        })
    }

    /// The table's name for the type.
    pub const fn label(self) -> &'static str {
        match self {
            AgentPreset::CustomerSupport => "Customer Support",
            AgentPreset::Research => "Research Agent",
            AgentPreset::CodeGeneration => "Code Generation",
            AgentPreset::DataAnalysis => "Data Analysis",
            AgentPreset::InternalTooling => "Internal Tooling",
        }
    }

    /// The two limits for an agent of this type: `<agent>/daily-tokens` and
    /// `<agent>/monthly-cost`.
    ///
    /// ```
    /// use budget_core::presets::AgentPreset;
    /// let limits = AgentPreset::Research.limits("researcher");
    /// assert_eq!(limits[0].cap.tokens, Some(2_000_000));
    /// assert_eq!(&*limits[1].id, "researcher/monthly-cost");
    /// ```
    pub fn limits(self, agent: &str) -> Vec<Limit> {
        vec![
            Limit::new(
                format!("{agent}/daily-tokens"),
                Selector::agent(agent),
                Window::Calendar(Period::Day),
            )
            .tokens(self.daily_tokens())
            .alert_at(&[70, 90]),
            Limit::new(
                format!("{agent}/monthly-cost"),
                Selector::agent(agent),
                Window::Calendar(Period::Month),
            )
            .money(self.monthly_cost())
            .alert_at(&[70, 90]),
        ]
    }
}
