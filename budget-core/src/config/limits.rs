//! `agents` and `limits`: agents' presets expanded into limits, and each limit of the file
//! checked and built.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_saphyr::Spanned;

use super::AgentConfig;
use super::error::{ConfigError, Origin, did_you_mean, invalid};
use super::file::{FileAgent, FileEnforcement, FileLimit, FilePreset, FileTier};
use super::read::At;
use crate::conversation::Difficulty;
use crate::limits::{Limit, Selector, Values};
use crate::presets::AgentPreset;

/// The agents by name, and the limits: the presets', then the file's (a file limit with a
/// preset limit's id replaces it).
pub(crate) fn agents_and_limits(
    file_agents: BTreeMap<String, Spanned<FileAgent>>,
    file_limits: Vec<Spanned<FileLimit>>,
    at: At<'_>,
) -> Result<(BTreeMap<String, AgentConfig>, Vec<Limit>), ConfigError> {
    let mut agents = BTreeMap::new();
    let mut preset_limits = Vec::new();
    for (name, agent) in file_agents {
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
    for (index, limit) in file_limits.into_iter().enumerate() {
        let field = format!("limits[{index}]");
        let origin = at(limit.referenced);
        let limit = file_limit(limit.value, &field, &agents, at)?;
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

    Ok((agents, limits))
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
    at: At<'_>,
) -> Result<Limit, ConfigError> {
    let bad = |origin: Origin, key: &str, message: String| ConfigError::Invalid {
        origin,
        field: format!("{field}.{key}"),
        message,
    };
    let id = limit.id.value.trim();
    if id.is_empty() {
        return Err(bad(
            at(limit.id.referenced),
            "id",
            "expected a non-empty limit id".into(),
        ));
    }
    let selector = parse_selector(&limit.selector.value).ok_or_else(|| {
        bad(
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
        return Err(bad(
            at(limit.selector.referenced),
            "selector",
            format!("agent `{name}` has no entry in `agents`{hint}"),
        ));
    }
    let mut built = Limit::new(id, selector, limit.window.0);
    if limit.tokens.is_none() && limit.cost.is_none() {
        return Err(bad(
            at(limit.id.referenced),
            "tokens",
            "expected a cap: `tokens`, `cost` or both".into(),
        ));
    }
    if let Some(tokens) = limit.tokens {
        if tokens.value.0 == 0 {
            return Err(bad(
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
            return Err(bad(
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
