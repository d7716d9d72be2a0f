//! token-budget facade.
#![forbid(unsafe_code)]
pub use budget_core as core;
