//! # budget-core
//!
//! The accounting domain of token-budget: exact token usage, integer money, prices, token
//! counts, attribution, limits, the reservation protocol and the ledger. No tower, no HTTP, no
//! macros: those crates build on this one.
//!
//! # Vocabulary
//!
//! Each word below means one thing, in every crate of the workspace.
//!
//! | word | means | type |
//! |---|---|---|
//! | budget | the handle that holds limits, prices, a store and a ledger | [`Budget`] |
//! | limit | a cap on tokens and/or money, for the calls a selector picks, per window | [`Limit`] |
//! | selector | which calls a limit counts: everyone, or by agent, task, user, model, tag | [`Selector`] |
//! | values | whether a selector counts one named value or each value apart | [`limits::Values`] |
//! | counter | one limit's usage for one selected value in one window; its key's `scope` field is that value | [`limits::CounterKey`] |
//! | window | when a counter starts over: per task, rolling, calendar period | [`Window`] |
//! | task scope | one running task of an agent: its own limits, steps, cancellation | [`scope::TaskScope`] |
//! | estimate | what a caller asks to reserve for a call: prompt, output cap, choices | [`CallEstimate`], [`Estimate`] |
//! | request | the estimate priced, as a store admits it: a fixed part plus units | [`admission::ReserveRequest`] |
//! | fit | how many units (output tokens) of a request fit on a counter, decided purely | [`admission::fit`], [`admission::Decision`] |
//! | ticket | a store's receipt for what it holds on its counters | [`store::Ticket`] |
//! | reservation | the caller's handle on a granted call: commit it, or drop it | [`Reservation`] |
//! | denial | a store's refusal, by counter index; the budget names the limit in [`Denied`] | [`store::Denial`], [`BudgetError::Exhausted`] |
//! | commit | settling a reservation with what was billed, and one ledger event | [`Reservation::commit`], [`Committed`] |
//! | prices | the price table, and the unit prices a call's prompt selects | [`PriceTable`], [`pricing::UnitPrices`] |
//! | error kind | what failed in a store or ledger; fail-open and retries decide on it, never on text | [`BackendErrorKind`] |
//! | clock | the one source of time: budget windows read it, and rate limits can | [`clock::Clock`] |
#![forbid(unsafe_code)]

pub mod admission;
pub mod attribution;
mod backend_error;
mod budget;
pub mod clock;
pub mod compress;
pub mod config;
pub mod control_plane;
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
    FieldProblem, ModelPrice, PriceError, PriceTable, PriceTier, Priced, ResolvedPrice, UnitPrices,
    UnknownModelPolicy,
};
pub use tokens::{ChatMessage, Encoding, TokenCount, count_chat, count_text};
pub use usage::{Usage, UsageError};
