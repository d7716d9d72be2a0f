use budget_core::{Budget, BudgetStore, Ledger, MemoryBudgetStore, MemoryLedger};
use tower::Layer;

use super::BudgetService;

/// Output cap granted to a request that has none, when the price table does not know the
/// model's maximum output either.
pub const DEFAULT_OUTPUT_CAP: u64 = 4_096;

/// Wraps an LLM service so that every call is counted, attributed, reserved before it is sent
/// and committed after. See the [module docs](super).
#[derive(Debug)]
pub struct BudgetLayer<St: BudgetStore = MemoryBudgetStore, L: Ledger = MemoryLedger> {
    budget: Budget<St, L>,
    default_output_cap: u64,
}

impl<St: BudgetStore, L: Ledger> Clone for BudgetLayer<St, L> {
    fn clone(&self) -> Self {
        BudgetLayer {
            budget: self.budget.clone(),
            default_output_cap: self.default_output_cap,
        }
    }
}

impl<St: BudgetStore, L: Ledger> BudgetLayer<St, L> {
    /// A layer enforcing `budget`.
    pub fn new(budget: Budget<St, L>) -> Self {
        BudgetLayer {
            budget,
            default_output_cap: DEFAULT_OUTPUT_CAP,
        }
    }

    /// The output cap for requests without one, when the model's maximum is unknown
    /// (default [`DEFAULT_OUTPUT_CAP`]).
    pub fn default_output_cap(mut self, cap: u64) -> Self {
        self.default_output_cap = cap;
        self
    }

    /// The budget.
    pub fn budget(&self) -> &Budget<St, L> {
        &self.budget
    }
}

impl<S, St: BudgetStore, L: Ledger> Layer<S> for BudgetLayer<St, L> {
    type Service = BudgetService<S, St, L>;

    fn layer(&self, inner: S) -> Self::Service {
        BudgetService::new(inner, self.budget.clone(), self.default_output_cap)
    }
}
