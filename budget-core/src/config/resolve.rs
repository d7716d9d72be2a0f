//! From the file's shape and the environment to a checked [`Config`]: env overrides applied,
//! presets expanded, and the rules the types cannot hold checked, each error at its value's
//! line and column.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::tz::TimeZone;
use serde_saphyr::Spanned;

use super::alerts::AlertRule;
use super::env::{EnvVars, TIME_ZONE_ENV};
use super::error::{ConfigError, Origin, did_you_mean};
use super::file::{FileAgent, FileConfig, FileEnforcement, FileLimit, FilePreset, FileTier};
use super::read::origin_at;
use super::{AgentConfig, Config, RoutingConfig, Sourced};
use crate::compress::CompressConfig;
use crate::conversation::Difficulty;
use crate::ledger::{LEDGER_URL_VAR, LedgerUrl};
use crate::limits::{Limit, Selector, Values};
use crate::presets::AgentPreset;
use crate::pricing::{ModelPrice, PRICES_ENV, PriceTable};
use crate::runaway::RunawayConfig;
use crate::store::STORE_ENV;

/// Turns the file (read from `file`, if any) and `env` into a checked configuration.
pub(crate) fn resolve(
    parsed: FileConfig,
    file: Option<&Path>,
    env: &EnvVars,
) -> Result<Config, ConfigError> {
    let at = |spanned_location: serde_saphyr::Location| origin_at(file, Some(spanned_location));
    let invalid = |origin: Origin, field: &str, message: String| ConfigError::Invalid {
        origin,
        field: field.to_owned(),
        message,
    };
    // A value from the env variable when set, else from the file.
    let pick = |var: &str, value: Option<Spanned<String>>| -> Option<Sourced<String>> {
        match env.get(var) {
            Some(text) => Some(Sourced {
                value: text.trim().to_owned(),
                origin: Origin::Env(var.to_owned()),
            }),
            None => value.map(|s| Sourced {
                value: s.value,
                origin: at(s.referenced),
            }),
        }
    };

    let ledger = match pick(LEDGER_URL_VAR, parsed.ledger) {
        None => None,
        Some(text) => Some(
            LedgerUrl::parse(&text.value)
                .map(|url| text.with(url))
                .map_err(|e| invalid(text.origin.clone(), "ledger", e.to_string()))?,
        ),
    };
    let store = pick(STORE_ENV, parsed.store);

    let time_zone = match pick(TIME_ZONE_ENV, parsed.time_zone) {
        None => TimeZone::UTC,
        Some(name) => TimeZone::get(&name.value).map_err(|_| {
            invalid(
                name.origin.clone(),
                "time_zone",
                format!(
                    "expected an IANA time zone name such as `Europe/Paris` or `UTC`, found `{}`",
                    name.value
                ),
            )
        })?,
    };

    let base = file.and_then(Path::parent).unwrap_or(Path::new(""));
    let prices_section = parsed.prices.unwrap_or_default();
    let price_file = pick(PRICES_ENV, prices_section.file).map(|text| {
        // A path in the file is relative to the file; one in the environment, to the
        // working directory.
        let path = match text.origin {
            Origin::Yaml { .. } => base.join(&text.value),
            Origin::Env(_) => PathBuf::from(&text.value),
        };
        text.with(path)
    });
    let mut prices = PriceTable::builtin();
    if let Some(path) = &price_file {
        if !path.value.is_file() {
            return Err(invalid(
                path.origin.clone(),
                "prices.file",
                format!(
                    "expected a LiteLLM price file, but {} does not exist",
                    path.value.display()
                ),
            ));
        }
        let table = PriceTable::from_litellm_file(&path.value)
            .map_err(|e| invalid(path.origin.clone(), "prices.file", e.to_string()))?;
        prices.merge_from(table);
    }
    for (model, price) in prices_section.models {
        let field = format!("prices.models.{model}");
        let origin = at(price.referenced);
        let per_token = |dollars: crate::Money| dollars.to_decimal_string();
        let mut model_price = ModelPrice::per_million(
            &per_token(price.value.input.0),
            &per_token(price.value.output.0),
        )
        .map_err(|e| invalid(origin.clone(), &field, e.to_string()))?;
        if let Some(cached) = price.value.cached_input {
            model_price = model_price
                .with_cached_per_million(&per_token(cached.0))
                .map_err(|e| invalid(origin.clone(), &field, e.to_string()))?;
        }
        prices.insert(model, model_price);
    }

    let mut agents = BTreeMap::new();
    let mut preset_limits = Vec::new();
    for (name, agent) in parsed.agents {
        let origin = at(agent.referenced);
        let config = agent_config(agent.value)
            .map_err(|message| invalid(origin, &format!("agents.{name}"), message))?;
        if let Some(preset) = config.preset {
            preset_limits.extend(preset.limits(&name));
        }
        agents.insert(name, config);
    }

    let mut limits: Vec<Limit> = Vec::new();
    let mut ids = BTreeSet::new();
    for (index, limit) in parsed.limits.into_iter().enumerate() {
        let field = format!("limits[{index}]");
        let origin = at(limit.referenced);
        let limit = file_limit(limit.value, &field, &agents, &|l| at(l))?;
        if !ids.insert(limit.id.clone()) {
            return Err(invalid(
                origin,
                &format!("{field}.id"),
                format!(
                    "limit id `{}` is used twice; limit ids must be unique",
                    limit.id
                ),
            ));
        }
        limits.push(limit);
    }
    // A limit declared in `limits` replaces the preset's limit of the same id.
    preset_limits.retain(|l| !ids.contains(&l.id));
    preset_limits.extend(limits);
    let limits = preset_limits;

    let routing = parsed.routing.map_or_else(RoutingConfig::default, |r| {
        let defaults = RoutingConfig::default();
        let tiers = r.tiers;
        let tier = |pick: fn(&super::file::FileTiers) -> &Option<String>, default: String| {
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
    });

    let mut compression = CompressConfig::default();
    if let Some(c) = parsed.compression {
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

    let mut runaway = RunawayConfig::default();
    if let Some(r) = parsed.runaway {
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

    let mut alerts = Vec::new();
    let mut names = BTreeSet::new();
    for (index, rule) in parsed
        .alerts
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

    Ok(Config {
        ledger,
        store,
        price_file,
        prices,
        time_zone,
        agents,
        limits,
        routing,
        compression,
        runaway,
        alerts,
    })
}

fn agent_config(agent: FileAgent) -> Result<AgentConfig, String> {
    if agent.model.is_some() && agent.tier.is_some() {
        return Err("expected a default `model` or a `tier`, not both".into());
    }
    Ok(AgentConfig {
        preset: agent.preset.map(|p| match p {
            FilePreset::CustomerSupport => AgentPreset::CustomerSupport,
            FilePreset::Research => AgentPreset::Research,
            FilePreset::CodeGeneration => AgentPreset::CodeGeneration,
            FilePreset::DataAnalysis => AgentPreset::DataAnalysis,
            FilePreset::InternalTooling => AgentPreset::InternalTooling,
        }),
        critical: agent.critical,
        model: agent.model,
        tier: agent.tier.map(|t| match t {
            FileTier::Easy => Difficulty::Easy,
            FileTier::Medium => Difficulty::Medium,
            FileTier::Hard => Difficulty::Hard,
        }),
    })
}

fn file_limit(
    limit: FileLimit,
    field: &str,
    agents: &BTreeMap<String, AgentConfig>,
    at: &dyn Fn(serde_saphyr::Location) -> Origin,
) -> Result<Limit, ConfigError> {
    let invalid = |origin: Origin, key: &str, message: String| ConfigError::Invalid {
        origin,
        field: format!("{field}.{key}"),
        message,
    };
    let id = limit.id.value.trim();
    if id.is_empty() {
        return Err(invalid(
            at(limit.id.referenced),
            "id",
            "expected a non-empty limit id".into(),
        ));
    }
    let selector = parse_selector(&limit.selector.value).ok_or_else(|| {
        invalid(
            at(limit.selector.referenced),
            "selector",
            format!(
                "expected `global`, `agent=NAME`, `task=each`, `user=NAME`, `model=NAME` or \
                 `tag:KEY=VALUE` (`each` for every value apart), found `{}`",
                limit.selector.value
            ),
        )
    })?;
    // With an `agents` section, an agent selector must name one of its agents: a typo would
    // otherwise make a limit that never applies. Without the section, any name goes.
    if let Selector::Agent(Values::Is(name)) = &selector
        && !agents.is_empty()
        && !agents.contains_key(&**name)
    {
        let hint = did_you_mean(name, agents.keys().map(String::as_str))
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        return Err(invalid(
            at(limit.selector.referenced),
            "selector",
            format!("agent `{name}` has no entry in `agents`{hint}"),
        ));
    }
    let mut built = Limit::new(id, selector, limit.window.0);
    if limit.tokens.is_none() && limit.cost.is_none() {
        return Err(invalid(
            at(limit.id.referenced),
            "tokens",
            "expected a cap: `tokens`, `cost` or both".into(),
        ));
    }
    if let Some(tokens) = limit.tokens {
        if tokens.value.0 == 0 {
            return Err(invalid(
                at(tokens.referenced),
                "tokens",
                "expected a positive token count, found 0 (remove the limit to stop counting, or \
                 use a soft limit to only alert)"
                    .into(),
            ));
        }
        built = built.tokens(tokens.value.0);
    }
    if let Some(cost) = limit.cost {
        if cost.value.0 <= crate::Money::ZERO {
            return Err(invalid(
                at(cost.referenced),
                "cost",
                format!(
                    "expected a positive amount of dollars, found {}",
                    cost.value.0
                ),
            ));
        }
        built = built.money(cost.value.0);
    }
    if matches!(limit.enforcement, FileEnforcement::Soft) {
        built = built.soft();
    }
    let thresholds: Vec<u8> = limit.alert_at.iter().map(|p| p.0).collect();
    Ok(built.alert_at(&thresholds))
}

/// `global`, `agent=NAME`, `agent=each`, `task=…`, `user=…`, `model=…`, `tag:KEY=VALUE`: the
/// text [`Selector`]'s `Display` writes.
pub(crate) fn parse_selector(text: &str) -> Option<Selector> {
    let text = text.trim();
    if text == "global" {
        return Some(Selector::Global);
    }
    let values = |v: &str| -> Option<Values> {
        let v = v.trim();
        match v {
            "" => None,
            "each" => Some(Values::Each),
            _ => Some(Values::Is(Arc::from(v))),
        }
    };
    if let Some(tag) = text.strip_prefix("tag:") {
        let (key, value) = tag.split_once('=')?;
        let key = key.trim();
        return (!key.is_empty()).then(|| {
            Some(Selector::Tag {
                key: Arc::from(key),
                value: values(value)?,
            })
        })?;
    }
    let (kind, value) = text.split_once('=')?;
    let value = values(value)?;
    Some(match kind.trim() {
        "agent" => Selector::Agent(value),
        "task" => Selector::Task(value),
        "user" => Selector::User(value),
        "model" => Selector::Model(value),
        _ => return None,
    })
}
