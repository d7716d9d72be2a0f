//! Putting a [`Config`] on a [`Budget`]: its limits, prices and time zone on the builder, and
//! the ledger and store its URLs name.

use std::path::Path;

use super::{Config, ConfigError, Origin};
#[cfg(feature = "postgres")]
use crate::control_plane::PostgresControlLog;
#[cfg(feature = "sqlite")]
use crate::control_plane::SqliteControlLog;
use crate::ledger::{AnyLedger, Ledger, LedgerUrl, default_ledger_path};
#[cfg(feature = "redis")]
use crate::store::redis_control_log;
use crate::store::{AnyBudgetStore, BudgetStore};
use crate::{Budget, BudgetBuilder};

/// How often a budget opened from a configuration reads the control log: decisions made by
/// another process apply within about this long (BENCHMARKS.md, "Control plane propagation").
pub const CONTROL_WATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

impl<S: BudgetStore, L: Ledger> BudgetBuilder<S, L> {
    /// Adds the configuration's limits (presets' included), declares its critical agents and
    /// uses its prices and time zone. The store and ledger are left as they are:
    /// [`Config::open_budget`] opens those the configuration names.
    pub fn config(self, config: &Config) -> Self {
        let critical = config
            .agents
            .iter()
            .filter(|(_, agent)| agent.critical)
            .map(|(name, _)| name.as_str());
        critical
            .fold(self, |builder, agent| builder.critical_agent(agent))
            .limits(config.limits.iter().cloned())
            .prices(config.prices.clone())
            .time_zone(config.time_zone.clone())
    }
}

impl Config {
    /// Opens the ledger and the store this configuration names (the default ledger file and
    /// an in-memory store when it names none) and builds a budget with its limits, prices and
    /// time zone.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Open`] naming where the URL came from when the ledger or store cannot
    /// be opened (a store URL with an unknown option is refused here, before anything
    /// connects); [`ConfigError::Limits`] if the budget refuses the limits.
    pub async fn open_budget(&self) -> Result<Budget<AnyBudgetStore, AnyLedger>, ConfigError> {
        let (ledger_url, ledger_origin) = match &self.ledger {
            Some(url) => (url.value.clone(), url.origin.clone()),
            None => (LedgerUrl::Sqlite(default_ledger_path()), Origin::Default),
        };
        let ledger = ledger_url.open().await.map_err(|e| ConfigError::Open {
            origin: ledger_origin.clone(),
            field: "ledger",
            source: Box::new(e),
        })?;
        let store = match &self.store {
            Some(url) => AnyBudgetStore::open(&url.value)
                .await
                .map_err(|e| ConfigError::Open {
                    origin: url.origin.clone(),
                    field: "store",
                    source: Box::new(e),
                })?,
            None => AnyBudgetStore::open("memory:")
                .await
                .map_err(|e| ConfigError::Open {
                    origin: Origin::Default,
                    field: "store",
                    source: Box::new(e),
                })?,
        };
        let builder = Budget::builder().store(store).ledger(ledger).config(self);
        // The control plane lives beside a durable ledger; every budget on it watches it.
        #[cfg(any(feature = "sqlite", feature = "postgres"))]
        let cannot_open = |e: crate::ledger::LedgerError| ConfigError::Open {
            origin: ledger_origin.clone(),
            field: "ledger",
            source: Box::new(e),
        };
        // A Redis store is what every process of a fleet shares for its budgets: its control
        // log is preferred; else the durable ledger's.
        #[cfg(feature = "redis")]
        let redis_log = match &self.store {
            Some(url) => redis_control_log(&url.value)
                .await
                .map_err(|e| ConfigError::Open {
                    origin: url.origin.clone(),
                    field: "store",
                    source: Box::new(e),
                })?,
            None => None,
        };
        #[cfg(feature = "redis")]
        if let Some(log) = redis_log {
            return Ok(watched(builder.control_log(log).build()?));
        }
        let (builder, watched_log) = match &ledger_url {
            #[cfg(feature = "sqlite")]
            LedgerUrl::Sqlite(path) => {
                let log = SqliteControlLog::open(path).map_err(cannot_open)?;
                (builder.control_log(log), true)
            }
            #[cfg(feature = "postgres")]
            LedgerUrl::Postgres { url, namespace } => {
                let log = PostgresControlLog::connect(url, namespace)
                    .await
                    .map_err(cannot_open)?;
                (builder.control_log(log), true)
            }
            _ => (builder, false),
        };
        let budget = builder.build()?;
        Ok(if watched_log { watched(budget) } else { budget })
    }
}

/// Starts the budget's control-log watcher. Detached: it stops by itself when the budget is
/// dropped.
fn watched<S: BudgetStore, L: Ledger>(budget: Budget<S, L>) -> Budget<S, L> {
    drop(budget.watch_control(CONTROL_WATCH_EVERY));
    budget
}

impl Budget<AnyBudgetStore, AnyLedger> {
    /// Loads the configuration file at `path` (with the `TOKEN_BUDGET_*` variables over it)
    /// and opens the budget it describes: [`Config::load`], then [`Config::open_budget`].
    pub async fn from_config(
        path: impl AsRef<Path>,
    ) -> Result<Budget<AnyBudgetStore, AnyLedger>, ConfigError> {
        Config::load(path)?.open_budget().await
    }
}
