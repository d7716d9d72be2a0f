//! The file's shape, as serde reads it: every section with `deny_unknown_fields`, values in
//! human units parsed from their text (never through `f64`), and [`Spanned`] where a later
//! check needs the value's line and column.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, de::Error as _};
use serde_saphyr::Spanned;

use super::units::{
    MONEY_EXPECTED, PERCENT_EXPECTED, TOKENS_EXPECTED, WINDOW_EXPECTED, parse_money, parse_percent,
    parse_tokens, parse_window,
};
use crate::Money;
use crate::limits::Window;

/// Parses a scalar's text with `parse`, or fails with "expected …, found `text`".
fn from_text<'de, D: Deserializer<'de>, T>(
    deserializer: D,
    parse: impl Fn(&str) -> Option<T>,
    expected: &str,
) -> Result<T, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse(&text).ok_or_else(|| D::Error::custom(format!("expected {expected}, found `{text}`")))
}

macro_rules! text_unit {
    ($(#[$doc:meta])* $name:ident($inner:ty), $parse:expr, $expected:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) struct $name(pub(crate) $inner);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                from_text(deserializer, $parse, $expected).map($name)
            }
        }
    };
}

text_unit!(
    /// `500k`, `2M`, `4000`.
    Tokens(u64), parse_tokens, TOKENS_EXPECTED
);
text_unit!(
    /// `$150`, `$0.25`.
    Dollars(Money), parse_money, MONEY_EXPECTED
);
text_unit!(
    /// `90%`, `90`, `0.9`.
    Percent(u8), parse_percent, PERCENT_EXPECTED
);
text_unit!(
    /// `day`, `task`, `rolling 1h`.
    WindowText(Window), parse_window, WINDOW_EXPECTED
);

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub(crate) ledger: Option<Spanned<String>>,
    pub(crate) store: Option<Spanned<String>>,
    pub(crate) prices: Option<FilePrices>,
    pub(crate) time_zone: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) agents: BTreeMap<String, Spanned<FileAgent>>,
    #[serde(default)]
    pub(crate) limits: Vec<Spanned<FileLimit>>,
    pub(crate) routing: Option<FileRouting>,
    pub(crate) compression: Option<FileCompression>,
    pub(crate) runaway: Option<FileRunaway>,
    pub(crate) alerts: Option<FileAlerts>,
}

/// `prices:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilePrices {
    pub(crate) file: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) models: BTreeMap<String, Spanned<FileModelPrice>>,
}

/// One model's prices, per million tokens.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileModelPrice {
    pub(crate) input: Dollars,
    pub(crate) output: Dollars,
    pub(crate) cached_input: Option<Dollars>,
}

/// The users' planning presets, by file name.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FilePreset {
    CustomerSupport,
    Research,
    CodeGeneration,
    DataAnalysis,
    InternalTooling,
}

/// A routing tier.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FileTier {
    Easy,
    Medium,
    Hard,
}

/// `agents.NAME:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAgent {
    pub(crate) preset: Option<FilePreset>,
    #[serde(default)]
    pub(crate) critical: bool,
    pub(crate) model: Option<String>,
    pub(crate) tier: Option<FileTier>,
}

/// Hard or soft.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FileEnforcement {
    #[default]
    Hard,
    Soft,
}

/// `limits[i]:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileLimit {
    pub(crate) id: Spanned<String>,
    pub(crate) selector: Spanned<String>,
    pub(crate) window: WindowText,
    pub(crate) tokens: Option<Spanned<Tokens>>,
    pub(crate) cost: Option<Spanned<Dollars>>,
    #[serde(default)]
    pub(crate) enforcement: FileEnforcement,
    #[serde(default)]
    pub(crate) alert_at: Vec<Percent>,
}

/// `routing:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRouting {
    pub(crate) tiers: Option<FileTiers>,
    pub(crate) downgrade_at: Option<Percent>,
    pub(crate) route_all: Option<bool>,
    pub(crate) allow_upgrades: Option<bool>,
}

/// `routing.tiers:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileTiers {
    pub(crate) easy: Option<String>,
    pub(crate) medium: Option<String>,
    pub(crate) hard: Option<String>,
}

/// `compression:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileCompression {
    pub(crate) keep_last: Option<usize>,
    pub(crate) drop_low_signal: Option<bool>,
    pub(crate) summarise: Option<bool>,
    pub(crate) summary_max_tokens: Option<Tokens>,
    pub(crate) truncate: Option<bool>,
    pub(crate) evict_oldest: Option<bool>,
    pub(crate) pressure: Option<Vec<Spanned<FilePressure>>>,
}

/// `compression.pressure[i]:` above this share of a budget, compress to this many tokens.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilePressure {
    pub(crate) above: Percent,
    pub(crate) target: Tokens,
}

/// `runaway:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRunaway {
    pub(crate) enabled: Option<bool>,
    pub(crate) repeat_limit: Option<u32>,
    pub(crate) similarity_bits: Option<Spanned<u32>>,
    pub(crate) spike_factor: Option<u64>,
    pub(crate) spike_after_steps: Option<u32>,
    pub(crate) spike_min_tokens: Option<Tokens>,
    pub(crate) retry_factor: Option<u64>,
}

/// `alerts:`: the users' rule list, under its own key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAlerts {
    #[serde(default)]
    pub(crate) budget_rules: Vec<Spanned<FileAlertRule>>,
}

/// `alerts.budget_rules[i]:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAlertRule {
    pub(crate) name: Spanned<String>,
    pub(crate) condition: Spanned<String>,
    pub(crate) severity: super::alerts::Severity,
    pub(crate) action: super::alerts::AlertAction,
    pub(crate) message: String,
}
