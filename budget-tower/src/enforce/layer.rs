use budget_core::{Budget, BudgetStore, Ledger, MemoryBudgetStore, MemoryLedger};
use tower::Layer;

use super::BudgetService;

/// Output cap granted to a request that has none, when the price table does not know the
/// model's maximum output either.
pub const DEFAULT_OUTPUT_CAP: u64 = 4_096;

/// Wraps an LLM service so that every call is counted, attributed, reserved before it is sent
/// and committed after. See the [module docs](super).
#[derive(Debug)]
pub struct BudgetLayer<St: BudgetStore = MemoryBudgetStore, L: Ledger = MemoryLedger, B = ()> {
    budget: Budget<St, L>,
    default_output_cap: u64,
    billed: B,
}

impl<St: BudgetStore, L: Ledger, B: Clone> Clone for BudgetLayer<St, L, B> {
    fn clone(&self) -> Self {
        BudgetLayer {
            budget: self.budget.clone(),
            default_output_cap: self.default_output_cap,
            billed: self.billed.clone(),
        }
    }
}

impl<St: BudgetStore, L: Ledger> BudgetLayer<St, L> {
    /// A layer enforcing `budget`. Failed calls release their reservation; see
    /// [`BudgetLayer::billed_failures`].
    pub fn new(budget: Budget<St, L>) -> Self {
        BudgetLayer {
            budget,
            default_output_cap: DEFAULT_OUTPUT_CAP,
            billed: (),
        }
    }
}

impl<St: BudgetStore, L: Ledger, B> BudgetLayer<St, L, B> {
    /// Tells the layer which failures the provider billed anyway (an answer that arrived but
    /// could not be read): their usage is committed instead of released. For async-openai use
    /// [`openai::billed_failure`](crate::openai::billed_failure).
    pub fn billed_failures<B2>(self, billed: B2) -> BudgetLayer<St, L, B2> {
        BudgetLayer {
            budget: self.budget,
            default_output_cap: self.default_output_cap,
            billed,
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

impl<S, St: BudgetStore, L: Ledger, B: Clone> Layer<S> for BudgetLayer<St, L, B> {
    type Service = BudgetService<S, St, L, B>;

    fn layer(&self, inner: S) -> Self::Service {
        BudgetService::new(
            inner,
            self.budget.clone(),
            self.default_output_cap,
            self.billed.clone(),
        )
    }
}
