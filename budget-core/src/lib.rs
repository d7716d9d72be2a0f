//! # budget-core
//!
//! The accounting domain of token-budget: exact token usage, integer money, prices, token
//! counts, attribution, limits, the reservation protocol and the ledger. No tower, no HTTP, no
//! macros: those crates build on this one.
#![forbid(unsafe_code)]

pub mod admission;
pub mod attribution;
mod backend_error;
mod budget;
pub mod clock;
pub mod compress;
pub mod controls;
pub mod conversation;
pub mod ledger;
pub mod limits;
pub mod money;
pub mod presets;
pub mod pricing;
mod redact;
pub mod runaway;
pub mod scope;
pub mod store;
pub mod tokens;
pub mod usage;

pub use admission::Amount;
pub use attribution::{Attribution, TaskId, UNATTRIBUTED};
pub use backend_error::BackendErrorKind;
pub use budget::{
    Budget, BudgetBuilder, BudgetError, CallEstimate, CommitDetails, Committed, DenialCounts,
    Denied, Estimate, LimitStatus, Remaining, Reservation, ThresholdCrossing, percent_used,
};
pub use ledger::{AnyLedger, EventKind, Ledger, LedgerUrl, MemoryLedger, UsageEvent};
pub use limits::{Cap, Limit, Period, Selector, Window};
pub use store::{BudgetStore, MemoryBudgetStore};

pub use money::{Money, MoneyParseError};
pub use pricing::{
    FieldProblem, ModelPrice, PriceError, PriceTable, PriceTier, Priced, Rates, ResolvedPrice,
    UnknownModelPolicy,
};
pub use tokens::{ChatMessage, Encoding, TokenCount, count_chat, count_text};
pub use usage::{Usage, UsageError};
