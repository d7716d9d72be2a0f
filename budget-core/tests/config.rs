//! `token-budget.yaml`: every kind of bad configuration with its exact error, the units, the
//! environment's precedence, presets expanding into limits, and the shipped example file.

use std::path::{Path, PathBuf};

use budget_core::config::{
    AgentConfig, AlertAction, Config, ConfigError, EnvVars, Origin, Severity,
};
use budget_core::conversation::Difficulty;
use budget_core::ledger::LedgerUrl;
use budget_core::limits::{Enforcement, Period, Selector, Window};
use budget_core::presets::AgentPreset;
use budget_core::{Budget, Money};
use jiff::SignedDuration;

/// The start of a limit with no cap yet.
const LIMIT: &str = "limits:\n  - id: a\n    selector: global\n    window: day\n";

fn error(yaml: &str) -> String {
    match Config::from_yaml(yaml) {
        Err(e) => e.to_string(),
        Ok(config) => panic!("accepted:\n{yaml}\n{config:?}"),
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tb-config-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../token-budget.example.yaml")
}

// ---- bad configurations: one test per kind, each with its whole message ----

#[test]
fn config_rejects_an_unknown_key_with_a_did_you_mean() {
    assert_eq!(
        error(&format!("{LIMIT}    tokns: 5\n")),
        "<yaml>:5:5: unknown key `tokns` in `limits[0]`, did you mean `tokens`?; expected one \
         of: id, selector, window, tokens, cost, enforcement, alert_at"
    );
    assert_eq!(
        error("limtis: []\n"),
        "<yaml>:1:1: unknown key `limtis` in `<root>`, did you mean `limits`?; expected one of: \
         ledger, store, prices, time_zone, agents, limits, routing, compression, runaway, alerts"
    );
    let Err(ConfigError::UnknownKey {
        key,
        suggestion,
        field,
        ..
    }) = Config::from_yaml("routing:\n  tires: {}\n")
    else {
        panic!("not an unknown key")
    };
    assert_eq!(
        (&*key, suggestion.as_deref(), &*field),
        ("tires", Some("tiers"), "routing")
    );
}

#[test]
fn config_rejects_a_far_unknown_key_without_a_suggestion() {
    assert_eq!(
        error("compression:\n  squeeze: true\n"),
        "<yaml>:2:3: unknown key `squeeze` in `compression`; expected one of: keep_last, \
         drop_low_signal, summarise, summary_max_tokens, truncate, evict_oldest, pressure"
    );
}

#[test]
fn config_rejects_wrong_types() {
    assert_eq!(
        error(&format!("{LIMIT}    tokens: [1]\n")),
        "<yaml>:5:13: `limits[0].tokens`: expected a single value, found a list or a mapping"
    );
    assert_eq!(
        error("agents:\n  a:\n    critical: maybe\n"),
        "<yaml>:3:15: `agents.a.critical`: expected `true` or `false`"
    );
    assert_eq!(
        error("limits: 5\n"),
        "<yaml>:1:9: `limits`: expected a list"
    );
    assert_eq!(
        error("runaway:\n  repeat_limit: -1\n"),
        "<yaml>:2:17: `runaway.repeat_limit`: expected a whole number from 0 (u32)"
    );
}

#[test]
fn config_rejects_unparsable_units() {
    assert_eq!(
        error(&format!("{LIMIT}    tokens: lots\n")),
        "<yaml>:5:13: `limits[0].tokens`: expected a token count such as `4000`, `500k`, `2M` \
         or `1.5M` (k = 1,000, M = 1,000,000, G = 1,000,000,000), found `lots`"
    );
    assert_eq!(
        error(&format!("{LIMIT}    cost: 150 dollars\n")),
        "<yaml>:5:11: `limits[0].cost`: expected an amount of dollars such as `$150` or \
         `$0.25`, found `150 dollars`"
    );
    assert_eq!(
        error("limits:\n  - id: a\n    selector: global\n    window: daily\n    tokens: 5\n"),
        "<yaml>:4:13: `limits[0].window`: expected a window: `task`, `hour`, `day`, `week`, \
         `month` (calendar periods in `time_zone`) or `rolling DURATION` such as `rolling 1h`, \
         found `daily`"
    );
    assert_eq!(
        error(&format!("{LIMIT}    tokens: 5\n    alert_at: [150%]\n")),
        "<yaml>:6:16: `limits[0].alert_at[0]`: expected a percentage from 1 to 100 such as \
         `90%`, `90` or `0.9`, found `150%`"
    );
}

#[test]
fn config_rejects_zero_and_negative_caps() {
    assert_eq!(
        error(&format!("{LIMIT}    tokens: 0\n")),
        "<yaml>:5:13: `limits[0].tokens`: expected a positive token count, found 0 (remove the \
         limit to stop counting, or use a soft limit to only alert)"
    );
    assert_eq!(
        error(&format!("{LIMIT}    cost: -$1\n")),
        "<yaml>:5:11: `limits[0].cost`: expected a positive amount of dollars, found -$1.00"
    );
    assert_eq!(
        error("compression:\n  pressure:\n    - { above: 90%, target: 0 }\n"),
        "<yaml>:3:7: `compression.pressure[0].target`: expected a positive token count, found 0"
    );
}

#[test]
fn config_rejects_a_limit_without_a_cap() {
    assert_eq!(
        error(LIMIT),
        "<yaml>:2:9: `limits[0].tokens`: expected a cap: `tokens`, `cost` or both"
    );
}

#[test]
fn config_rejects_duplicate_limit_ids() {
    let yaml = format!(
        "{LIMIT}    tokens: 5\n  - id: a\n    selector: global\n    window: week\n    tokens: 5\n"
    );
    assert_eq!(
        error(&yaml),
        "<yaml>:6:5: `limits[1].id`: limit id `a` is used twice; limit ids must be unique"
    );
}

#[test]
fn config_rejects_an_unknown_time_zone_from_the_file_and_from_the_env() {
    assert_eq!(
        error("time_zone: Mars/Olympus_Mons\n"),
        "<yaml>:1:12: `time_zone`: expected an IANA time zone name such as `Europe/Paris` or \
         `UTC`, found `Mars/Olympus_Mons`"
    );
    let env = EnvVars::new().set("TOKEN_BUDGET_TIME_ZONE", "Nowhere/Land");
    let err = Config::from_yaml_with_env("time_zone: UTC\n", None, &env).unwrap_err();
    assert_eq!(
        err.to_string(),
        "environment variable TOKEN_BUDGET_TIME_ZONE: `time_zone`: expected an IANA time zone \
         name such as `Europe/Paris` or `UTC`, found `Nowhere/Land`"
    );
    assert_eq!(
        err.origin(),
        Some(&Origin::Env("TOKEN_BUDGET_TIME_ZONE".into()))
    );
}

#[test]
fn config_rejects_an_unknown_preset() {
    assert_eq!(
        error("agents:\n  r: { preset: reserch }\n"),
        "<yaml>:2:16: `agents.r.preset`: expected one of `customer_support`, `research`, \
         `code_generation`, `data_analysis`, `internal_tooling`, found `reserch`; did you mean \
         `research`?"
    );
}

#[test]
fn config_rejects_a_selector_naming_an_undeclared_agent() {
    let yaml = "agents:\n  researcher: { preset: research }\nlimits:\n  - id: a\n    \
                selector: agent=reseacher\n    window: day\n    tokens: 5\n";
    assert_eq!(
        error(yaml),
        "<yaml>:5:15: `limits[0].selector`: agent `reseacher` has no entry in `agents`; did you \
         mean `researcher`?"
    );
    // Without an `agents` section, any agent name is accepted.
    let config = Config::from_yaml(
        "limits:\n  - id: a\n    selector: agent=anyone\n    window: day\n    tokens: 5\n",
    )
    .unwrap();
    assert_eq!(config.limits[0].selector, Selector::agent("anyone"));
}

#[test]
fn config_rejects_an_unknown_selector() {
    assert_eq!(
        error("limits:\n  - id: a\n    selector: team=x\n    window: day\n    tokens: 5\n"),
        "<yaml>:3:15: `limits[0].selector`: expected `global`, `agent=NAME`, `task=each`, \
         `user=NAME`, `model=NAME` or `tag:KEY=VALUE` (`each` for every value apart), found \
         `team=x`"
    );
}

#[test]
fn config_rejects_a_missing_price_file_relative_to_the_config_file() {
    let dir = temp_dir("missing-prices");
    let file = dir.join("token-budget.yaml");
    std::fs::write(&file, "prices:\n  file: no-such-prices.json\n").unwrap();
    let err = Config::load_with_env(&file, &EnvVars::new()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:2:9: `prices.file`: expected a LiteLLM price file, but {} does not exist",
            file.display(),
            dir.join("no-such-prices.json").display()
        )
    );
}

#[test]
fn config_rejects_a_ledger_url_with_an_unknown_option() {
    let err = error("ledger: postgres://db/books?bogus=1\n");
    assert!(
        err.starts_with(
            "<yaml>:1:9: `ledger`: invalid ledger \"postgres://db/books?bogus=1\": unknown option \
             \"bogus\"; accepted: namespace, user, password,"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn config_rejects_a_store_url_with_an_unknown_option_before_connecting() {
    let config =
        Config::from_yaml("ledger: \"memory:\"\nstore: redis://127.0.0.1:1/0?bogus=1\n").unwrap();
    let err = config.open_budget().await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(
            "<yaml>:2:8: `store`: cannot open: budget store redis://127.0.0.1:1/0?bogus=1:"
        ),
        "{text}"
    );
    assert!(text.contains("bogus"), "{text}");
}

#[test]
fn config_rejects_bad_alert_rules() {
    let rule = |severity: &str, action: &str, condition: &str| {
        format!(
            "alerts:\n  budget_rules:\n    - name: x\n      condition: {condition}\n      \
             severity: {severity}\n      action: {action}\n      message: m\n"
        )
    };
    assert_eq!(
        error(&rule("P5", "notify_team", "a > b")),
        "<yaml>:5:17: `alerts.budget_rules[0].severity`: expected one of `P1`, `P2`, `P3`, `P4`, \
         found `P5`; did you mean `P1`?"
    );
    assert_eq!(
        error(&rule("P1", "notify_teem", "a > b")),
        "<yaml>:6:15: `alerts.budget_rules[0].action`: expected one of \
         `pause_all_noncritical_agents`, `investigate_agent`, `kill_agent_task`, `notify_team`, \
         found `notify_teem`; did you mean `notify_team`?"
    );
    assert_eq!(
        error(&rule("P1", "notify_team", "\"\"")),
        "<yaml>:4:18: `alerts.budget_rules[0].condition`: expected a condition such as \
         `daily_tokens > daily_limit`, found an empty text"
    );
}

#[test]
fn config_rejects_a_missing_key_and_contradictory_agent_settings() {
    assert_eq!(
        error("limits:\n  - id: a\n    window: day\n    tokens: 5\n"),
        "<yaml>:4:5: `limits[0]`: missing required key `selector`"
    );
    assert_eq!(
        error("agents:\n  a: { model: gpt-4o, tier: easy }\n"),
        "<yaml>:2:6: `agents.a`: expected a default `model` or a `tier`, not both"
    );
}

#[test]
fn config_rejects_malformed_yaml_and_duplicate_keys() {
    assert_eq!(
        error("time_zone: UTC\ntime_zone: UTC\n"),
        "<yaml>:2:1: the key `time_zone` appears twice in one mapping"
    );
    assert_eq!(error("limits: [\n"), "<yaml>:1:9: unclosed bracket '['");
}

#[test]
fn config_rejects_an_env_ledger_it_cannot_use() {
    let env = EnvVars::new().set("TOKEN_BUDGET_LEDGER", "redis://x");
    assert_eq!(
        Config::from_yaml_with_env("", None, &env)
            .unwrap_err()
            .to_string(),
        "environment variable TOKEN_BUDGET_LEDGER: `ledger`: unknown ledger scheme `redis:` in \
         \"redis://x\"; accepted: `memory:`, `sqlite:PATH`, `sqlite://PATH`, a file path, or \
         `postgres://…` / `postgresql://…` (optionally with `?namespace=NAME`)"
    );
}

#[test]
fn config_never_panics_on_odd_input() {
    for yaml in [
        "",
        "---\n",
        "~\n",
        "[]\n",
        "42\n",
        "a",
        "limits: [{}]\n",
        "agents: {a: ~}\n",
        "\t\n",
        "{{{{",
    ] {
        let _ = Config::from_yaml(yaml);
    }
}

// ---- good configurations ----

#[test]
fn config_reads_human_units() {
    let config = Config::from_yaml(
        "limits:\n  - { id: t, selector: user=each, window: rolling 30m, tokens: 1.5M, \
         cost: $0.25, enforcement: soft, alert_at: [0.9, 70%, 80] }\n  - { id: u, selector: \
         tag:team=search, window: task, tokens: 500k }\n  - { id: v, selector: model=gpt-4o, \
         window: week, cost: \"$150\" }\n",
    )
    .unwrap();
    let t = &config.limits[0];
    assert_eq!(t.window, Window::Rolling(SignedDuration::from_mins(30)));
    assert_eq!(t.cap.tokens, Some(1_500_000));
    assert_eq!(t.cap.money, Some(Money::from_cents(25)));
    assert_eq!(t.enforcement, Enforcement::Soft);
    assert_eq!(t.alert_thresholds, vec![70, 80, 90]);
    assert_eq!(config.limits[1].selector, Selector::tag("team", "search"));
    assert_eq!(config.limits[1].window, Window::PerTask);
    assert_eq!(config.limits[2].cap.money, Some(Money::from_dollars(150)));
    assert_eq!(config.limits[2].window, Window::Calendar(Period::Week));
}

#[test]
fn config_defaults_without_a_file() {
    let config = Config::from_yaml("").unwrap();
    assert!(config.ledger.is_none() && config.store.is_none() && config.limits.is_empty());
    assert_eq!(config.time_zone, jiff::tz::TimeZone::UTC);
    assert_eq!(config.compression.pressure, vec![(90, 2_000), (70, 4_000)]);
    assert_eq!(config.routing.tier(Difficulty::Easy), "gpt-4o-mini");
}

#[test]
fn config_env_overrides_the_file() {
    let yaml = "ledger: \"memory:\"\nstore: \"memory:\"\ntime_zone: UTC\n";
    let file_only = Config::from_yaml(yaml).unwrap();
    assert_eq!(file_only.ledger.as_ref().unwrap().value, LedgerUrl::Memory);
    assert!(matches!(
        file_only.ledger.unwrap().origin,
        Origin::Yaml { line: 1, .. }
    ));

    let env = EnvVars::new()
        .set("TOKEN_BUDGET_LEDGER", "sqlite:/tmp/x.sqlite3")
        .set("TOKEN_BUDGET_STORE", "redis://cache/0")
        .set("TOKEN_BUDGET_TIME_ZONE", "America/New_York")
        .set("TOKEN_BUDGET_UNRELATED", "ignored");
    let config = Config::from_yaml_with_env(yaml, None, &env).unwrap();
    let ledger = config.ledger.unwrap();
    assert_eq!(ledger.value, LedgerUrl::Sqlite("/tmp/x.sqlite3".into()));
    assert_eq!(ledger.origin, Origin::Env("TOKEN_BUDGET_LEDGER".into()));
    assert_eq!(config.store.unwrap().value, "redis://cache/0");
    assert_eq!(
        config.time_zone,
        jiff::tz::TimeZone::get("America/New_York").unwrap()
    );

    // Blank counts as unset: the file's value stays.
    let blank = EnvVars::new().set("TOKEN_BUDGET_LEDGER", "  ");
    let config = Config::from_yaml_with_env(yaml, None, &blank).unwrap();
    assert_eq!(config.ledger.unwrap().value, LedgerUrl::Memory);
}

#[test]
fn config_env_price_file_is_relative_to_the_working_directory() {
    let dir = temp_dir("env-prices");
    let prices = dir.join("prices.json");
    std::fs::write(
        &prices,
        r#"{"acme-large": {"input_cost_per_token": 0.00001, "output_cost_per_token": 0.00003, "litellm_provider": "acme", "mode": "chat"}}"#,
    )
    .unwrap();
    let env = EnvVars::new().set("TOKEN_BUDGET_PRICES", prices.to_str().unwrap());
    let config =
        Config::from_yaml_with_env("prices:\n  file: elsewhere.json\n", None, &env).unwrap();
    assert_eq!(config.price_file.unwrap().value, prices);
    assert!(config.prices.get("acme-large").is_some());
    assert!(
        config.prices.get("gpt-4o").is_some(),
        "the built-in table stays"
    );
}

#[test]
fn config_presets_expand_into_limits_and_explicit_limits_replace_them() {
    let config = Config::from_yaml(
        "agents:\n  support: { preset: customer_support, critical: true, model: gpt-4o-mini }\n  \
         coder: { preset: code_generation, tier: medium }\nlimits:\n  - { id: coder/daily-tokens, \
         selector: agent=coder, window: day, tokens: 4M }\n",
    )
    .unwrap();
    assert_eq!(
        config.agents["support"],
        AgentConfig {
            preset: Some(AgentPreset::CustomerSupport),
            critical: true,
            model: Some("gpt-4o-mini".into()),
            tier: None,
        }
    );
    assert_eq!(config.agents["coder"].tier, Some(Difficulty::Medium));
    let ids: Vec<&str> = config.limits.iter().map(|l| &*l.id).collect();
    assert_eq!(
        ids,
        [
            "coder/monthly-cost",
            "support/daily-tokens",
            "support/monthly-cost",
            "coder/daily-tokens"
        ]
    );
    let support: Vec<_> = config.limits_of_agent("support").collect();
    assert_eq!(support[0].cap.tokens, Some(500_000));
    assert_eq!(support[1].cap.money, Some(Money::from_dollars(150)));
    assert_eq!(config.limits[3].cap.tokens, Some(4_000_000));
}

#[test]
fn config_example_file_loads() {
    let config = Config::load_with_env(example_path(), &EnvVars::new()).unwrap();
    assert_eq!(
        config.time_zone,
        jiff::tz::TimeZone::get("Europe/Paris").unwrap()
    );
    assert_eq!(config.agents.len(), 5);
    assert!(config.agents["support-bot"].critical);
    // 5 agents x 2 preset limits, one replaced, + 5 file limits.
    assert_eq!(config.limits.len(), 14);
    let researcher_daily = config
        .limits
        .iter()
        .find(|l| &*l.id == "researcher/daily-tokens");
    assert_eq!(researcher_daily.unwrap().cap.tokens, Some(3_000_000));
    assert_eq!(config.compression.pressure, vec![(90, 2_000), (70, 4_000)]);
    assert_eq!(config.routing.downgrade_at, 80);
    assert_eq!(config.runaway.spike_min_tokens, 2_000);
    assert_eq!(config.alerts.len(), 4);
    assert_eq!(
        config.alerts[0].action,
        AlertAction::PauseAllNoncriticalAgents
    );
    assert_eq!(config.alerts[3].severity, Severity::P3);
    assert_eq!(
        config.alerts[1].condition,
        "agent_hourly_tokens > agent_hourly_limit * 2"
    );
    assert!(config.prices.get("acme-small").is_some());
}

#[test]
fn config_of_the_fleet_demo_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fleet.yaml");
    let config = Config::load_with_env(path, &EnvVars::new()).unwrap();
    assert_eq!(config.agents.len(), 7);
    // Two preset limits per agent, then the file's seven.
    assert_eq!(config.limits.len(), 21);
    let per_task = config.limits.iter().find(|l| &*l.id == "per-task").unwrap();
    assert_eq!(
        (per_task.window, per_task.cap.tokens),
        (Window::PerTask, Some(50_000))
    );
}

#[tokio::test]
async fn config_opens_a_budget_with_its_ledger_store_and_limits() {
    let dir = temp_dir("open");
    let file = dir.join("token-budget.yaml");
    std::fs::write(
        &file,
        format!(
            "ledger: sqlite:{}\nstore: \"memory:\"\ntime_zone: Asia/Tokyo\nagents:\n  \
             analyst: {{ preset: data_analysis }}\n",
            dir.join("ledger.sqlite3").display()
        ),
    )
    .unwrap();
    let budget = Budget::from_config(&file).await.unwrap();
    assert_eq!(budget.limits().len(), 2);
    assert!(dir.join("ledger.sqlite3").exists());
    let limit = budget
        .limits()
        .get("analyst/daily-tokens")
        .cloned()
        .unwrap();
    assert_eq!(limit.cap.tokens, Some(1_000_000));
}

#[tokio::test]
async fn agents_declared_critical_keep_running_when_the_noncritical_ones_are_paused() {
    use budget_core::control_plane::{Actor, ControlChange};
    use budget_core::{Attribution, BudgetError, Estimate};
    let config = Config::from_yaml(
        "agents:\n  support-bot: { critical: true }\n  researcher: { critical: false }\n",
    )
    .unwrap();
    let budget = Budget::builder().config(&config).build().unwrap();
    budget
        .decide(
            ControlChange::PauseNoncritical,
            Actor::rule("daily_budget_exceeded"),
        )
        .await
        .unwrap();
    // The support bot's calls carry no critical flag: the configuration's word is enough.
    let support = Attribution::agent("support-bot");
    let held = budget
        .reserve(&support, "gpt-4o-mini", Estimate::new(1, 1))
        .await;
    assert!(held.is_ok(), "{:?}", held.err());
    let researcher = Attribution::agent("researcher");
    let refused = budget
        .reserve(&researcher, "gpt-4o-mini", Estimate::new(1, 1))
        .await;
    assert!(
        matches!(refused, Err(BudgetError::AgentPaused { .. })),
        "{refused:?}"
    );
}
