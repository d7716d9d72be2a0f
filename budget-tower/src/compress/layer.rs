use std::collections::HashMap;
use std::sync::Arc;

use budget_core::compress::CompressConfig;
use budget_core::{Budget, BudgetStore, Ledger, MemoryBudgetStore, MemoryLedger};
use tower::Layer;

use super::CompressService;

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) default: CompressConfig,
    pub(crate) per_agent: HashMap<String, CompressConfig>,
    pub(crate) summary_model: Option<String>,
}

impl Settings {
    pub(crate) fn for_agent(&self, agent: &str) -> &CompressConfig {
        self.per_agent.get(agent).unwrap_or(&self.default)
    }
}

/// Compresses conversations under budget pressure. See the [module docs](super).
#[derive(Debug)]
pub struct CompressLayer<St: BudgetStore = MemoryBudgetStore, L: Ledger = MemoryLedger> {
    budget: Budget<St, L>,
    settings: Arc<Settings>,
}

impl<St: BudgetStore, L: Ledger> Clone for CompressLayer<St, L> {
    fn clone(&self) -> Self {
        CompressLayer {
            budget: self.budget.clone(),
            settings: self.settings.clone(),
        }
    }
}

impl<St: BudgetStore, L: Ledger> CompressLayer<St, L> {
    /// A layer reading pressure from `budget`, with the default policy and no summaries.
    pub fn new(budget: Budget<St, L>) -> Self {
        CompressLayer {
            budget,
            settings: Arc::new(Settings {
                default: CompressConfig::default(),
                per_agent: HashMap::new(),
                summary_model: None,
            }),
        }
    }

    /// Settings are changed only while the layer is built; clones made before share the old.
    fn settings_mut(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.settings)
    }

    /// The policy for every agent without one of its own.
    pub fn config(mut self, config: CompressConfig) -> Self {
        self.settings_mut().default = config;
        self
    }

    /// The policy for one agent.
    pub fn agent_config(mut self, agent: impl Into<String>, config: CompressConfig) -> Self {
        self.settings_mut().per_agent.insert(agent.into(), config);
        self
    }

    /// Summarise older turns with this (cheap) model.
    pub fn summarise_with(mut self, model: impl Into<String>) -> Self {
        self.settings_mut().summary_model = Some(model.into());
        self
    }
}

impl<S, St: BudgetStore, L: Ledger> Layer<S> for CompressLayer<St, L> {
    type Service = CompressService<S, St, L>;

    fn layer(&self, inner: S) -> Self::Service {
        CompressService::new(inner, self.budget.clone(), self.settings.clone())
    }
}
