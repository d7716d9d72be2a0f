//! The sections that are plain settings over defaults: `routing`, `compression`, `runaway`
//! and the alert rules.

use std::collections::BTreeSet;

use super::RoutingConfig;
use super::alerts::AlertRule;
use super::error::{ConfigError, invalid};
use super::file::{FileAlerts, FileCompression, FileRouting, FileRunaway, FileTiers};
use super::read::At;
use crate::compress::CompressConfig;
use crate::runaway::RunawayConfig;

/// `routing:` over [`RoutingConfig::default`].
pub(crate) fn routing(section: Option<FileRouting>) -> RoutingConfig {
    section.map_or_else(RoutingConfig::default, |r| {
        let defaults = RoutingConfig::default();
        let tiers = r.tiers;
        let tier = |pick: fn(&FileTiers) -> &Option<String>, default: String| {
            tiers
                .as_ref()
                .and_then(|t| pick(t).clone())
                .unwrap_or(default)
        };
        RoutingConfig {
            easy: tier(|t| &t.easy, defaults.easy),
            medium: tier(|t| &t.medium, defaults.medium),
            hard: tier(|t| &t.hard, defaults.hard),
            downgrade_at: r
                .downgrade_at
                .map_or(defaults.downgrade_at, |p| u32::from(p.0)),
            route_all: r.route_all.unwrap_or(defaults.route_all),
            allow_upgrades: r.allow_upgrades.unwrap_or(defaults.allow_upgrades),
        }
    })
}

/// `compression:` over [`CompressConfig::default`].
pub(crate) fn compression(
    section: Option<FileCompression>,
    at: At<'_>,
) -> Result<CompressConfig, ConfigError> {
    let mut compression = CompressConfig::default();
    if let Some(c) = section {
        let d = &mut compression;
        d.keep_last = c.keep_last.unwrap_or(d.keep_last);
        d.drop_low_signal = c.drop_low_signal.unwrap_or(d.drop_low_signal);
        d.summarise = c.summarise.unwrap_or(d.summarise);
        d.summary_max_tokens = c.summary_max_tokens.map_or(d.summary_max_tokens, |t| t.0);
        d.truncate = c.truncate.unwrap_or(d.truncate);
        d.evict_oldest = c.evict_oldest.unwrap_or(d.evict_oldest);
        if let Some(pressure) = c.pressure {
            d.pressure = Vec::new();
            for (index, step) in pressure.into_iter().enumerate() {
                if step.value.target.0 == 0 {
                    return Err(invalid(
                        at(step.referenced),
                        &format!("compression.pressure[{index}].target"),
                        "expected a positive token count, found 0".into(),
                    ));
                }
                d.pressure
                    .push((u32::from(step.value.above.0), step.value.target.0));
            }
        }
    }

    Ok(compression)
}

/// `runaway:` over [`RunawayConfig::default`].
pub(crate) fn runaway(
    section: Option<FileRunaway>,
    at: At<'_>,
) -> Result<RunawayConfig, ConfigError> {
    let mut runaway = RunawayConfig::default();
    if let Some(r) = section {
        let d = &mut runaway;
        d.enabled = r.enabled.unwrap_or(d.enabled);
        d.repeat_limit = r.repeat_limit.unwrap_or(d.repeat_limit);
        if let Some(bits) = r.similarity_bits {
            if bits.value > 64 {
                return Err(invalid(
                    at(bits.referenced),
                    "runaway.similarity_bits",
                    format!(
                        "expected at most 64 (the bits of a SimHash), found {}",
                        bits.value
                    ),
                ));
            }
            d.similarity_bits = bits.value;
        }
        d.spike_factor = r.spike_factor.unwrap_or(d.spike_factor);
        d.spike_after_steps = r.spike_after_steps.unwrap_or(d.spike_after_steps);
        d.spike_min_tokens = r.spike_min_tokens.map_or(d.spike_min_tokens, |t| t.0);
        d.retry_factor = r.retry_factor.unwrap_or(d.retry_factor);
    }

    Ok(runaway)
}

/// `alerts.budget_rules`: names unique and non-empty, conditions non-empty.
pub(crate) fn alerts(
    section: Option<FileAlerts>,
    at: At<'_>,
) -> Result<Vec<AlertRule>, ConfigError> {
    let mut alerts = Vec::new();
    let mut names = BTreeSet::new();
    for (index, rule) in section
        .map(|a| a.budget_rules)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let field = format!("alerts.budget_rules[{index}]");
        let rule = rule.value;
        if rule.name.value.trim().is_empty() || !names.insert(rule.name.value.clone()) {
            return Err(invalid(
                at(rule.name.referenced),
                &format!("{field}.name"),
                format!(
                    "expected a non-empty rule name used once, found `{}`",
                    rule.name.value
                ),
            ));
        }
        if rule.condition.value.trim().is_empty() {
            return Err(invalid(
                at(rule.condition.referenced),
                &format!("{field}.condition"),
                "expected a condition such as `daily_tokens > daily_limit`, found an empty text"
                    .into(),
            ));
        }
        alerts.push(AlertRule {
            name: rule.name.value,
            condition: rule.condition.value,
            severity: rule.severity,
            action: rule.action,
            message: rule.message,
        });
    }

    Ok(alerts)
}
