//! # budget-core
//!
//! The accounting domain of token-budget: exact token usage, integer money, prices, token
//! counts, attribution, limits, the reservation protocol and the ledger. No tower, no HTTP, no
//! macros: those crates build on this one.
#![forbid(unsafe_code)]

pub mod money;
pub mod pricing;
pub mod tokens;
pub mod usage;

pub use money::{Money, MoneyParseError};
pub use usage::{Usage, UsageError};
