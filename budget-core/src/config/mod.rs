//! One file for everything an operator declares: `token-budget.yaml`.
//!
//! [`Config::load`] reads the file with serde-saphyr, applies the `TOKEN_BUDGET_*`
//! environment variables over it, expands the agents' planning presets into limits and checks
//! everything it can before anything runs. [`BudgetBuilder::config`](crate::BudgetBuilder::config)
//! puts the limits, prices and time zone on a budget; [`Config::open_budget`] (or
//! [`Budget::from_config`](crate::Budget::from_config)) also opens the ledger and the store
//! the file names. The tower layers take [`Config::routing`] and [`Config::compression`]
//! (budget-tower: `RouteLayer::routing(&config.routing)`,
//! `CompressLayer::config(config.compression.clone())`).
//!
//! ```
//! use budget_core::config::{Config, EnvVars};
//! use budget_core::presets::AgentPreset;
//!
//! let yaml = r#"
//! time_zone: Europe/Paris
//! agents:
//!   researcher: { preset: research, tier: hard }
//! limits:
//!   - id: fleet-daily
//!     selector: global
//!     window: day
//!     tokens: 10M
//!     cost: $150
//!     alert_at: [70%, 90%]
//! "#;
//! let env = EnvVars::new().set("TOKEN_BUDGET_LEDGER", "memory:");
//! let config = Config::from_yaml_with_env(yaml, None, &env)?;
//! assert_eq!(config.agents["researcher"].preset, Some(AgentPreset::Research));
//! // The preset's two limits, then the file's own.
//! assert_eq!(config.limits.len(), 3);
//! assert_eq!(config.limits[2].cap.tokens, Some(10_000_000));
//!
//! let budget = budget_core::Budget::builder().config(&config).build()?;
//! assert_eq!(budget.limits().len(), 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Sections
//!
//! | key | holds | becomes |
//! |---|---|---|
//! | `ledger` | a ledger URL, as `TOKEN_BUDGET_LEDGER` takes it | [`LedgerUrl`] |
//! | `store` | a store URL, as `TOKEN_BUDGET_STORE` takes it | opened by [`AnyBudgetStore::open`](crate::store::AnyBudgetStore::open) |
//! | `prices` | `file:` a LiteLLM price file (relative to the config file), `models:` prices per 1M tokens | [`PriceTable`] |
//! | `time_zone` | an IANA name; calendar windows are cut in it (default UTC) | [`TimeZone`] |
//! | `agents` | per agent: `preset`, `critical`, a default `model` or `tier` | [`AgentConfig`]; presets add limits |
//! | `limits` | `id`, `selector`, `window`, `tokens` and/or `cost`, `enforcement`, `alert_at` | [`Limit`] |
//! | `routing` | `tiers` (easy/medium/hard models), `downgrade_at`, `route_all`, `allow_upgrades` | [`RoutingConfig`] |
//! | `compression` | `pressure` (`above` → `target`) and the policy knobs | [`CompressConfig`] |
//! | `runaway` | the detection settings | [`RunawayConfig`] |
//! | `alerts` | `budget_rules`: the users' rule list, checked but not evaluated here | [`AlertRule`] |
//!
//! Units: tokens `4000`, `500k`, `2M`; money `$150`, `$0.25` (read as digits, never through
//! floating point); windows `task`, `hour`, `day`, `week`, `month`, `rolling 30m`; durations
//! `90s`, `30m`, `1h`, `2d`; percentages `90%`, `90` or `0.9`. Selectors are written as
//! [`Selector`]'s display: `global`, `agent=researcher`, `agent=each`, `user=NAME`,
//! `model=gpt-4o`, `task=each`, `tag:team=search`.
//!
//! # Precedence
//!
//! From weakest to strongest:
//!
//! 1. the built-in defaults (in-memory store, the default ledger file, the built-in prices,
//!    UTC, the compression and runaway defaults);
//! 2. the file;
//! 3. the environment: `TOKEN_BUDGET_LEDGER` (ledger), `TOKEN_BUDGET_STORE` (store),
//!    `TOKEN_BUDGET_PRICES` (price file, relative to the working directory),
//!    `TOKEN_BUDGET_TIME_ZONE` (time zone). A variable set to an empty value counts as unset.
//!    The environment holds URLs and paths, not limits.
//! 4. (not built yet) the runtime control plane: limits set, agents paused or models switched
//!    while things run will override the file and the environment until they are removed.
//!    Everything [`Config`] holds is plain data that such a layer can override.
//!
//! # Checks
//!
//! Every error is a [`ConfigError`] naming the file:line:column (or the environment
//! variable), the field path (`limits[2].tokens`) and what was expected. Unknown keys are
//! errors with a "did you mean" when a known key is close. Beyond the types: caps must be
//! positive, limit ids unique, the time zone and presets known, the price file must exist and
//! parse, ledger URLs must parse (unknown options included; store URLs are checked by
//! [`Config::open_budget`], before it connects). A limit whose selector names one agent
//! (`agent=NAME`) must name an agent of the `agents` section when that section is present: a
//! typo would otherwise make a limit that never applies. Without an `agents` section, any
//! name is accepted. A limit in `limits` with the id of a preset's limit
//! (`<agent>/daily-tokens`, `<agent>/monthly-cost`) replaces it.

// A configuration error is built at most once per load, far from any hot path; keeping its
// fields inline keeps it easy to match on.
#![allow(clippy::result_large_err)]

mod alerts;
mod budget;
mod env;
mod error;
mod file;
mod limits;
mod read;
mod resolve;
mod sections;
mod units;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jiff::tz::TimeZone;

pub use alerts::{AlertAction, AlertRule, Severity};
pub use budget::CONTROL_WATCH_EVERY;
pub use env::{EnvVars, OVERRIDES, TIME_ZONE_ENV};
pub use error::{ConfigError, Origin};
pub use units::{parse_duration, parse_money, parse_percent, parse_tokens, parse_window};

use crate::compress::CompressConfig;
use crate::conversation::Difficulty;
use crate::ledger::LedgerUrl;
use crate::limits::{Limit, Selector};
use crate::presets::AgentPreset;
use crate::pricing::PriceTable;
use crate::runaway::RunawayConfig;

/// The file name [`Config::discover`] looks for.
pub const CONFIG_FILE: &str = "token-budget.yaml";

/// The environment variable naming the configuration file for [`Config::discover`].
pub const CONFIG_ENV: &str = "TOKEN_BUDGET_CONFIG";

/// A value and where it was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    /// The value.
    pub value: T,
    /// Where it was set: the file, or an environment variable.
    pub origin: Origin,
}

impl<T> Sourced<T> {
    fn with<U>(&self, value: U) -> Sourced<U> {
        Sourced {
            value,
            origin: self.origin.clone(),
        }
    }
}

/// A checked configuration: see the [module docs](self).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The ledger, if the file or `TOKEN_BUDGET_LEDGER` names one; else the default file
    /// ([`crate::ledger::default_ledger_path`]).
    pub ledger: Option<Sourced<LedgerUrl>>,
    /// The store URL, if the file or `TOKEN_BUDGET_STORE` names one; else `memory:`.
    pub store: Option<Sourced<String>>,
    /// The price file merged over the built-in table, if any.
    pub price_file: Option<Sourced<PathBuf>>,
    /// The built-in prices, with the price file and then `prices.models` merged over them.
    pub prices: PriceTable,
    /// The zone calendar windows are cut in.
    pub time_zone: TimeZone,
    /// The declared agents, by name.
    pub agents: BTreeMap<String, AgentConfig>,
    /// The presets' limits (for agents with a preset), then the file's `limits`.
    pub limits: Vec<Limit>,
    /// Model tiers for the routing layer.
    pub routing: RoutingConfig,
    /// The compression policy.
    pub compression: CompressConfig,
    /// Runaway detection.
    pub runaway: RunawayConfig,
    /// The alert rules, unevaluated.
    pub alerts: Vec<AlertRule>,
}

/// One entry of `agents`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The planning preset, whose limits the configuration adds.
    pub preset: Option<AgentPreset>,
    /// A critical agent is not paused by `pause_all_noncritical_agents`.
    pub critical: bool,
    /// The model the agent calls by default.
    pub model: Option<String>,
    /// The tier the agent's calls are routed as, instead of a fixed model.
    pub tier: Option<Difficulty>,
}

/// The routing section: which model each difficulty goes to, and when to step down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingConfig {
    /// The easy tier's model (default `gpt-4o-mini`).
    pub easy: String,
    /// The medium tier's model (default `gpt-4o`).
    pub medium: String,
    /// The hard tier's model (default `gpt-4o`).
    pub hard: String,
    /// Step one tier down when a budget is this percent used (default 80).
    pub downgrade_at: u32,
    /// Route requests for models that are not tier models too (default `false`).
    pub route_all: bool,
    /// Let the router pick a dearer model than the one requested (default `false`).
    pub allow_upgrades: bool,
}

impl Default for RoutingConfig {
    fn default() -> RoutingConfig {
        RoutingConfig {
            easy: "gpt-4o-mini".into(),
            medium: "gpt-4o".into(),
            hard: "gpt-4o".into(),
            downgrade_at: 80,
            route_all: false,
            allow_upgrades: false,
        }
    }
}

impl RoutingConfig {
    /// The model of a tier.
    pub fn tier(&self, difficulty: Difficulty) -> &str {
        match difficulty {
            Difficulty::Easy => &self.easy,
            Difficulty::Medium => &self.medium,
            Difficulty::Hard => &self.hard,
        }
    }
}

impl Config {
    /// Reads and checks the file at `path`, with the process's `TOKEN_BUDGET_*` variables
    /// over it.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        Config::load_with_env(path, &EnvVars::from_process())
    }

    /// Reads and checks the file at `path`, with `env` over it.
    pub fn load_with_env(path: impl AsRef<Path>, env: &EnvVars) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_yaml_with_env(&text, Some(path), env)
    }

    /// The file named by `TOKEN_BUDGET_CONFIG`, else `./token-budget.yaml` if it exists, else
    /// no file (defaults and the environment only).
    pub fn discover() -> Result<Config, ConfigError> {
        let env = EnvVars::from_process();
        match env.get(CONFIG_ENV) {
            Some(path) => Config::load_with_env(path, &env),
            None if Path::new(CONFIG_FILE).is_file() => Config::load_with_env(CONFIG_FILE, &env),
            None => Config::from_yaml_with_env("", None, &env),
        }
    }

    /// Checks YAML text, without the environment.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml_with_env(text, None, &EnvVars::new())
    }

    /// Checks YAML text read from `file` (for error locations and relative paths; `None` for
    /// text from elsewhere), with `env` over it.
    pub fn from_yaml_with_env(
        text: &str,
        file: Option<&Path>,
        env: &EnvVars,
    ) -> Result<Config, ConfigError> {
        let parsed = read::parse_file(text, file)?;
        resolve::resolve(parsed, file, env)
    }

    /// The limits that count one agent's calls by name (`agent=NAME`).
    pub fn limits_of_agent<'a>(&'a self, agent: &'a str) -> impl Iterator<Item = &'a Limit> {
        self.limits.iter().filter(move |l| {
            matches!(&l.selector, Selector::Agent(crate::limits::Values::Is(a)) if &**a == agent)
        })
    }
}
