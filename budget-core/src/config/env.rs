//! The `TOKEN_BUDGET_*` environment variables that override the file.

use std::collections::BTreeMap;

use crate::ledger::LEDGER_URL_VAR;
use crate::pricing::PRICES_ENV;
use crate::store::STORE_ENV;

/// The variable that overrides `time_zone`.
pub const TIME_ZONE_ENV: &str = "TOKEN_BUDGET_TIME_ZONE";

/// The variables that override the file, and the key each overrides.
pub const OVERRIDES: [(&str, &str); 4] = [
    (LEDGER_URL_VAR, "ledger"),
    (STORE_ENV, "store"),
    (PRICES_ENV, "prices.file"),
    (TIME_ZONE_ENV, "time_zone"),
];

/// Environment variables, as a map, so that loading can be tested without touching the
/// process's environment. Variables set to an empty (or blank) value count as unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvVars(BTreeMap<String, String>);

impl EnvVars {
    /// No variables.
    pub fn new() -> EnvVars {
        EnvVars::default()
    }

    /// The process's `TOKEN_BUDGET_*` variables (those that are valid Unicode).
    pub fn from_process() -> EnvVars {
        std::env::vars()
            .filter(|(name, _)| name.starts_with("TOKEN_BUDGET_"))
            .collect()
    }

    /// Sets a variable.
    pub fn set(mut self, name: impl Into<String>, value: impl Into<String>) -> EnvVars {
        self.0.insert(name.into(), value.into());
        self
    }

    /// The variable's value, unless unset or blank.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for EnvVars {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> EnvVars {
        EnvVars(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}
