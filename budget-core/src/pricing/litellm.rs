//! Reading LiteLLM's `model_prices_and_context_window.json`: which entries are priced, skipped
//! or refused, and how each field is read.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use crate::money::{Money, MoneyParseError};

use super::error::{FIELDS_LISTED, FieldProblem, PriceError, quote};
use super::price::{ModelPrice, PriceTier};
use super::table::PriceTable;

/// LiteLLM modes whose entries are loaded.
const PRICED_MODES: [&str; 3] = ["chat", "completion", "responses"];

impl PriceTable {
    /// Loads a LiteLLM `model_prices_and_context_window.json` document (see the module docs
    /// for what is loaded, skipped and refused). Never panics.
    pub fn from_litellm_json(text: &str) -> Result<PriceTable, PriceError> {
        let top: &RawValue =
            serde_json::from_str(text).map_err(|e| PriceError::Json(e.to_string()))?;
        let found = json_type(top);
        if found != "an object" {
            return Err(PriceError::NotAnObject { found });
        }
        let entries: BTreeMap<String, &RawValue> =
            serde_json::from_str(top.get()).map_err(|e| PriceError::Json(e.to_string()))?;
        let mut table = PriceTable::new();
        let mut aliases = BTreeMap::new();
        let mut model_entries = 0;
        for (key, raw) in &entries {
            if key.starts_with('_') || key == "sample_spec" {
                continue;
            }
            model_entries += 1;
            match parse_entry(key, raw)? {
                Parsed::Price(price) => {
                    table.insert(key.as_str(), *price);
                }
                Parsed::Alias(target) => {
                    aliases.insert(key.to_lowercase(), target.to_lowercase());
                }
                Parsed::Skip => {}
            }
        }
        for (alias, target) in &aliases {
            let mut next = target;
            // Follow alias chains a bounded number of hops (cycles end here too).
            for _ in 0..8 {
                if let Some(entry) = table.models.get(next) {
                    let entry = entry.clone();
                    table.models.entry(alias.clone()).or_insert(entry);
                    break;
                }
                match aliases.get(next) {
                    Some(further) => next = further,
                    None => break,
                }
            }
        }
        // A file of entries none of which is priced is a mistake (a field misnamed throughout,
        // the wrong file), not an empty price list: every model would then be unknown.
        if table.is_empty() && model_entries > 0 {
            return Err(PriceError::NoPrices {
                entries: model_entries,
            });
        }
        Ok(table)
    }

    /// Loads a LiteLLM-format price file ([`PriceTable::from_litellm_json`]); errors name the
    /// file.
    pub fn from_litellm_file(path: impl AsRef<std::path::Path>) -> Result<PriceTable, PriceError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| PriceError::Io {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        PriceTable::from_litellm_json(&text).map_err(|e| PriceError::InFile {
            path: path.to_owned(),
            source: Box::new(e),
        })
    }
}

enum Parsed {
    Price(Box<ModelPrice>),
    Alias(String),
    Skip,
}

/// Which rate a LiteLLM `…_above_<N>k_tokens` field sets.
#[derive(Clone, Copy)]
enum TierRate {
    Input,
    Output,
    Cached,
    Write,
}

const TIER_BASES: [(&str, TierRate); 4] = [
    ("input_cost_per_token", TierRate::Input),
    ("output_cost_per_token", TierRate::Output),
    ("cache_read_input_token_cost", TierRate::Cached),
    ("cache_creation_input_token_cost", TierRate::Write),
];

/// `(rate, threshold in tokens)` for a field named `<base>_above_<N>k_tokens` (or `…m_tokens`).
fn tier_field(field: &str) -> Option<(TierRate, u64)> {
    for (base, rate) in TIER_BASES {
        let Some(rest) = field
            .strip_prefix(base)
            .and_then(|r| r.strip_prefix("_above_"))
        else {
            continue;
        };
        let (digits, scale) = if let Some(n) = rest.strip_suffix("k_tokens") {
            (n, 1_000u64)
        } else if let Some(n) = rest.strip_suffix("m_tokens") {
            (n, 1_000_000)
        } else {
            return None;
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        return digits
            .parse::<u64>()
            .ok()?
            .checked_mul(scale)
            .map(|t| (rate, t));
    }
    None
}

/// What a field of a price entry is, as far as deciding whether an unpriced entry is a
/// mistake goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CostField {
    /// Not about money (`mode`, `max_tokens`, `supports_vision`, …).
    NotACost,
    /// A per-token price LiteLLM publishes (any modality, tier or service level).
    Token,
    /// A price in another unit: per second, character, image, pixel, query, request, page…
    OtherUnit,
    /// Names a cost or price, but no field LiteLLM publishes: most likely misspelled.
    Unknown,
}

/// Per-token price fields LiteLLM publishes, before tier and service-level suffixes.
const TOKEN_COST_FIELDS: &[&str] = &[
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "explicit_cache_read_input_token_cost",
    "output_cost_per_reasoning_token",
    "input_cost_per_audio_token",
    "output_cost_per_audio_token",
    "cache_read_input_audio_token_cost",
    "cache_creation_input_audio_token_cost",
    "input_cost_per_image_token",
    "output_cost_per_image_token",
    "cache_read_input_image_token_cost",
    "input_cost_per_video_token",
    "output_cost_per_video_token",
    "input_dbu_cost_per_token",
    "output_dbu_cost_per_token",
    "citation_cost_per_token",
    "computer_use_input_cost_per_1k_tokens",
    "computer_use_output_cost_per_1k_tokens",
];

/// The units, after `cost_per_`, of LiteLLM's prices that are not per token.
const OTHER_COST_UNITS: &[&str] = &[
    "second",
    "character",
    "image",
    "pixel",
    "query",
    "request",
    "session",
    "page",
    "text_message",
    "credit",
    "unit",
    "video_per_second",
    "audio_per_second",
    "1k_calls",
    "gb_per_day",
];

/// Service levels and tiers LiteLLM appends to a price field's name.
const COST_SUFFIXES: &[&str] = &[
    "_priority",
    "_flex",
    "_batches",
    "_ultrafast",
    "_decisions",
    "_balanced",
    "_cache_hit",
];

fn cost_field(field: &str) -> CostField {
    if !field.contains("cost") && !field.contains("price") {
        return CostField::NotACost;
    }
    let mut base = field;
    loop {
        if let Some(rest) = COST_SUFFIXES.iter().find_map(|s| base.strip_suffix(s)) {
            base = rest;
            continue;
        }
        // `_above_200k_tokens`, `_above_1hr`, `_above_8s_interval`.
        if let Some((rest, tier)) = base.rsplit_once("_above_")
            && tier.starts_with(|c: char| c.is_ascii_digit())
        {
            base = rest;
            continue;
        }
        break;
    }
    if TOKEN_COST_FIELDS.contains(&base) {
        return CostField::Token;
    }
    let unit = base.split_once("cost_per_").map(|(_, unit)| unit);
    if unit.is_some_and(|u| {
        OTHER_COST_UNITS.iter().any(|known| {
            u.strip_prefix(known)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('_'))
                && !u.ends_with("_token")
        })
    }) {
        return CostField::OtherUnit;
    }
    CostField::Unknown
}

fn parse_entry(key: &str, raw: &RawValue) -> Result<Parsed, PriceError> {
    let found = json_type(raw);
    if found != "an object" {
        return Err(PriceError::EntryNotAnObject {
            model: key.to_owned(),
            found,
        });
    }
    let fields: BTreeMap<String, &RawValue> =
        serde_json::from_str(raw.get()).map_err(|e| PriceError::Json(e.to_string()))?;
    let invalid = |field: &str, problem: FieldProblem| PriceError::InvalidField {
        model: key.to_owned(),
        field: field.to_owned(),
        problem,
    };
    let string = |field: &str| -> Result<Option<String>, PriceError> {
        fields
            .get(field)
            .map_or(Ok(None), |v| string_value(v))
            .map_err(|p| invalid(field, p))
    };
    let price = |field: &str| -> Result<Option<Money>, PriceError> {
        fields
            .get(field)
            .map_or(Ok(None), |v| price_value(v))
            .map_err(|p| invalid(field, p))
    };
    let count = |field: &str| -> Result<Option<u64>, PriceError> {
        fields
            .get(field)
            .map_or(Ok(None), |v| count_value(v))
            .map_err(|p| invalid(field, p))
    };

    if let Some(mode) = string("mode")? {
        if !PRICED_MODES.contains(&mode.as_str()) {
            return Ok(Parsed::Skip);
        }
    }
    let (input, output) = (
        price("input_cost_per_token")?,
        price("output_cost_per_token")?,
    );
    let (Some(input), Some(output)) = (input, output) else {
        if let Some(target) = string("alias_of")? {
            return Ok(Parsed::Alias(target));
        }
        let kinds: Vec<CostField> = fields.keys().map(|f| cost_field(f)).collect();
        let misnamed = kinds.contains(&CostField::Unknown);
        let other_unit = kinds.contains(&CostField::OtherUnit);
        let half = input.is_some() || output.is_some();
        if misnamed || (half && !other_unit) {
            let mut names: Vec<String> = fields.keys().take(FIELDS_LISTED).cloned().collect();
            if fields.len() > FIELDS_LISTED {
                names.push("…".to_owned());
            }
            return Err(PriceError::NoUsablePrice {
                model: key.to_owned(),
                fields: names,
            });
        }
        // No price at all (LiteLLM lists routers and subscription-billed ids), a price in
        // another unit (per second, per character, per image…) or for a service tier only.
        return Ok(Parsed::Skip);
    };
    let mut tiers: BTreeMap<u64, PriceTier> = BTreeMap::new();
    for field in fields.keys() {
        let Some((rate, threshold)) = tier_field(field) else {
            continue;
        };
        let Some(value) = price(field)? else {
            continue;
        };
        let tier = tiers.entry(threshold).or_insert(PriceTier {
            above_input_tokens: threshold,
            input: None,
            output: None,
            cached_input: None,
            cache_write: None,
        });
        let slot = match rate {
            TierRate::Input => &mut tier.input,
            TierRate::Output => &mut tier.output,
            TierRate::Cached => &mut tier.cached_input,
            TierRate::Write => &mut tier.cache_write,
        };
        *slot = Some(value);
    }
    let max_output_tokens = count("max_output_tokens")?;
    let max_tokens = count("max_tokens")?;
    Ok(Parsed::Price(Box::new(ModelPrice {
        input,
        output,
        cached_input: price("cache_read_input_token_cost")?,
        cache_write: price("cache_creation_input_token_cost")?,
        reasoning: price("output_cost_per_reasoning_token")?,
        tiers: tiers.into_values().collect(),
        max_input_tokens: count("max_input_tokens")?,
        max_output_tokens: max_output_tokens.or(max_tokens),
        provider: string("litellm_provider")?,
    })))
}

/// The JSON type of a raw value, as an error message phrase.
fn json_type(raw: &RawValue) -> &'static str {
    match raw.get().trim_start().bytes().next() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// A price: a JSON number (or a string holding one), `null` meaning absent.
fn price_value(raw: &RawValue) -> Result<Option<Money>, FieldProblem> {
    let text = raw.get().trim();
    let not_a_number = || FieldProblem::NotANumber { found: quote(text) };
    let number = match json_type(raw) {
        "null" => return Ok(None),
        "a number" => text.to_owned(),
        "a string" => serde_json::from_str::<String>(text).map_err(|_| not_a_number())?,
        _ => return Err(not_a_number()),
    };
    let numeric = |b: u8| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-');
    if !number.bytes().all(numeric) {
        return Err(not_a_number());
    }
    let money = Money::parse_dollars(&number).map_err(|e| match e {
        MoneyParseError::Empty | MoneyParseError::UnexpectedChar { .. } => not_a_number(),
        other => FieldProblem::Unrepresentable(other),
    })?;
    if money.is_negative() {
        return Err(FieldProblem::Negative { found: quote(text) });
    }
    Ok(Some(money))
}

/// A JSON string, `null` meaning absent.
fn string_value(raw: &RawValue) -> Result<Option<String>, FieldProblem> {
    let not_a_string = || FieldProblem::NotAString {
        found: quote(raw.get()),
    };
    match json_type(raw) {
        "null" => Ok(None),
        "a string" => serde_json::from_str(raw.get())
            .map(Some)
            .map_err(|_| not_a_string()),
        _ => Err(not_a_string()),
    }
}

/// A non-negative integer, `null` meaning absent.
fn count_value(raw: &RawValue) -> Result<Option<u64>, FieldProblem> {
    let text = raw.get().trim();
    if text == "null" {
        return Ok(None);
    }
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FieldProblem::NotACount { found: quote(text) });
    }
    text.parse()
        .map(Some)
        .map_err(|_| FieldProblem::NotACount { found: quote(text) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::test_support::*;
    use crate::usage::Usage;
    use proptest::prelude::*;

    #[test]
    fn pricing_loader_skips_what_it_does_not_price() {
        let table = PriceTable::from_litellm_json(
            r#"{
              "_meta": {"source": "test"},
              "sample_spec": {"max_input_tokens": "max input tokens", "input_cost_per_token": 0.0,
                              "output_cost_per_token": 0.0, "mode": "one of: chat, embedding"},
              "embedder": {"mode": "embedding", "input_cost_per_token": "bogus", "output_cost_per_token": 0},
              "image": {"mode": "image_generation", "output_cost_per_image": 0.04},
              "router": {"mode": "chat", "litellm_provider": "fireworks_ai", "max_tokens": 8192},
              "per-second": {"mode": "chat", "input_cost_per_second": 0.0001, "output_cost_per_second": 0.0001},
              "video-in": {"mode": "chat", "input_cost_per_video_per_second": 1e-05, "output_cost_per_token": 7.5e-06},
              "priority-only": {"mode": "chat", "input_cost_per_token_priority": 1e-06,
                                "output_cost_per_token_priority": 2e-06,
                                "cache_read_input_token_cost_above_200k_tokens_priority": 1e-07},
              "tts": {"input_cost_per_character": 3e-05, "litellm_provider": "deepgram"},
              "no-mode": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06, "max_tokens": 4096},
              "comp": {"mode": "completion", "input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06,
                       "max_input_tokens": 8000, "max_output_tokens": 1000, "max_tokens": 4096,
                       "litellm_provider": "text-completion-openai"},
              "latest": {"alias_of": "comp"},
              "chain": {"alias_of": "latest"},
              "dangling": {"alias_of": "embedder"},
              "loop-a": {"alias_of": "loop-b"},
              "loop-b": {"alias_of": "loop-a"}
            }"#,
        )
        .unwrap();
        let mut ids: Vec<&str> = table.iter().map(|(id, _)| id).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["chain", "comp", "latest", "no-mode"]);
        assert_eq!(table.resolve("chain").unwrap().id, "comp");
        let comp = table.get("comp").unwrap();
        assert_eq!(
            (comp.max_input_tokens, comp.max_output_tokens),
            (Some(8000), Some(1000))
        );
        assert_eq!(comp.provider.as_deref(), Some("text-completion-openai"));
        assert_eq!(table.get("no-mode").unwrap().max_output_tokens, Some(4096));
        assert!(PriceTable::from_litellm_json("{}").unwrap().is_empty());
    }

    #[test]
    fn pricing_malformed_fields_name_model_and_field() {
        let entry = |field: &str, value: &str| {
            format!(
                r#"{{"ok": {{"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06}},
                   "bad-model": {{"mode": "chat", "input_cost_per_token": 1e-06,
                                  "output_cost_per_token": 2e-06, "{field}": {value}}}}}"#
            )
        };
        type Case = (&'static str, &'static str, fn(&FieldProblem) -> bool);
        let cases: [Case; 12] = [
            (
                "input_cost_per_token",
                r#""abc""#,
                |p| matches!(p, FieldProblem::NotANumber { found } if found == r#""abc""#),
            ),
            (
                "output_cost_per_token",
                "-1e-06",
                |p| matches!(p, FieldProblem::Negative { found } if found == "-1e-06"),
            ),
            (
                "cache_read_input_token_cost",
                "true",
                |p| matches!(p, FieldProblem::NotANumber { found } if found == "true"),
            ),
            ("cache_creation_input_token_cost", "1e-30", |p| {
                matches!(
                    p,
                    FieldProblem::Unrepresentable(MoneyParseError::TooPrecise { .. })
                )
            }),
            ("output_cost_per_reasoning_token", "1e400", |p| {
                matches!(
                    p,
                    FieldProblem::Unrepresentable(MoneyParseError::OutOfRange { .. })
                )
            }),
            ("input_cost_per_token_above_200k_tokens", "[1]", |p| {
                matches!(p, FieldProblem::NotANumber { .. })
            }),
            ("output_cost_per_token", r#""$5""#, |p| {
                matches!(p, FieldProblem::NotANumber { .. })
            }),
            ("max_input_tokens", "-5", |p| {
                matches!(p, FieldProblem::NotACount { .. })
            }),
            ("max_output_tokens", "1.5", |p| {
                matches!(p, FieldProblem::NotACount { .. })
            }),
            ("max_tokens", "99999999999999999999999", |p| {
                matches!(p, FieldProblem::NotACount { .. })
            }),
            ("litellm_provider", "7", |p| {
                matches!(p, FieldProblem::NotAString { .. })
            }),
            ("mode", "{}", |p| {
                matches!(p, FieldProblem::NotAString { .. })
            }),
        ];
        for (field, value, check) in cases {
            let (model, got_field, problem) = field_problem(&entry(field, value));
            assert_eq!((model.as_str(), got_field.as_str()), ("bad-model", field));
            assert!(check(&problem), "{field} = {value}: {problem:?}");
            // The message names both.
            let message = load_err(&entry(field, value)).to_string();
            assert!(
                message.contains("bad-model") && message.contains(field),
                "{message}"
            );
        }
        // A very long bad value is quoted shortly.
        let long = format!("\"{}\"", "x".repeat(10_000));
        let (_, _, problem) = field_problem(&entry("input_cost_per_token", &long));
        assert!(problem.to_string().len() < 120);
    }

    /// A misspelled price field used to load as "OK, 0 models" and leave the model unknown.
    #[test]
    fn pricing_entry_without_a_usable_price_names_its_fields() {
        let cases = [
            // Misspelled: `input_cost_per_tokens`.
            (
                r#"{"my-model": {"mode": "chat", "input_cost_per_tokens": 1e-06,
                    "output_cost_per_token": 2e-06}}"#,
                vec!["input_cost_per_tokens", "mode", "output_cost_per_token"],
            ),
            // A price field LiteLLM does not have.
            (
                r#"{"my-model": {"input_price": 1e-06, "output_price": 2e-06}}"#,
                vec!["input_price", "output_price"],
            ),
            // Half a price: the output side is missing, or null.
            (
                r#"{"my-model": {"mode": "chat", "input_cost_per_token": 1e-06}}"#,
                vec!["input_cost_per_token", "mode"],
            ),
            (
                r#"{"my-model": {"mode": "chat", "input_cost_per_token": null,
                    "output_cost_per_token": 1e-06}}"#,
                vec!["input_cost_per_token", "mode", "output_cost_per_token"],
            ),
        ];
        for (doc, fields) in cases {
            // The same mistake among good entries still fails the file.
            let doc = doc.replacen(
                '{',
                r#"{"gpt-x": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06}, "#,
                1,
            );
            let err = load_err(&doc);
            assert_eq!(
                err,
                PriceError::NoUsablePrice {
                    model: "my-model".into(),
                    fields: fields.iter().map(|f| f.to_string()).collect(),
                },
                "{doc}"
            );
            let message = err.to_string();
            assert!(
                message.contains("my-model") && fields.iter().all(|f| message.contains(f)),
                "{message}"
            );
        }
        // Many fields are listed shortly.
        let many: Vec<String> = (0..40).map(|i| format!(r#""f{i:02}": 1"#)).collect();
        let doc = format!(
            r#"{{"m": {{"input_cost_per_tokens": 1, {}}}}}"#,
            many.join(", ")
        );
        match load_err(&doc) {
            PriceError::NoUsablePrice { fields, .. } => {
                assert_eq!(fields.len(), FIELDS_LISTED + 1);
                assert_eq!(fields.last().map(String::as_str), Some("…"));
            }
            other => panic!("{other:?}"),
        }
        // A file whose entries are all unpriced is no price list.
        assert_eq!(
            load_err(r#"{"a": {"mode": "chat"}, "b": {"mode": "embedding"}, "_meta": {}}"#),
            PriceError::NoPrices { entries: 2 }
        );
    }

    #[test]
    fn pricing_cost_fields_are_classified_like_litellm_names_them() {
        use CostField::{NotACost, OtherUnit, Token, Unknown};
        for (field, kind) in [
            ("mode", NotACost),
            ("max_output_tokens", NotACost),
            ("input_cost_per_token", Token),
            (
                "cache_creation_input_token_cost_above_12hr_above_200k_tokens_flex",
                Token,
            ),
            (
                "input_cost_per_audio_token_above_128k_tokens_batches",
                Token,
            ),
            ("input_cost_per_token_cache_hit", Token),
            ("output_cost_per_image", OtherUnit),
            ("output_cost_per_image_1024", OtherUnit),
            ("output_cost_per_second_1080p", OtherUnit),
            (
                "input_cost_per_video_per_second_above_15s_interval",
                OtherUnit,
            ),
            ("search_context_cost_per_query", OtherUnit),
            ("cost_per_second", OtherUnit),
            ("annotation_cost_per_page_batches", OtherUnit),
            ("input_cost_per_tokens", Unknown),
            ("input_cost_per_toke", Unknown),
            ("output_price", Unknown),
            ("input_cost_per_imagery", Unknown),
        ] {
            assert_eq!(cost_field(field), kind, "{field}");
        }
    }

    #[test]
    fn pricing_malformed_documents_are_typed_errors() {
        assert_eq!(
            load_err("[1, 2]"),
            PriceError::NotAnObject { found: "an array" }
        );
        assert_eq!(
            load_err("\"x\""),
            PriceError::NotAnObject { found: "a string" }
        );
        assert_eq!(load_err("null"), PriceError::NotAnObject { found: "null" });
        assert_eq!(
            load_err(" 3 "),
            PriceError::NotAnObject { found: "a number" }
        );
        assert!(matches!(load_err(""), PriceError::Json(_)));
        assert!(matches!(
            load_err(r#"{"gpt-4o": {"input_cost_per_token": 2.5e-06, "output_cost"#),
            PriceError::Json(_)
        ));
        assert!(matches!(
            load_err(r#"{"a": 1} trailing"#),
            PriceError::Json(_)
        ));
        assert_eq!(
            load_err(r#"{"m": [1]}"#),
            PriceError::EntryNotAnObject {
                model: "m".into(),
                found: "an array"
            }
        );
        // Deep nesting is an error, not a stack overflow.
        let deep = format!(r#"{{"m": {}{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
        assert!(PriceTable::from_litellm_json(&deep).is_err());
    }

    const SMALL_DOC: &str = r#"{"gpt-x": {"mode": "chat", "input_cost_per_token": 2.5e-06,
        "output_cost_per_token": 1e-05, "cache_read_input_token_cost": 1.25e-06,
        "input_cost_per_token_above_200k_tokens": 5e-06, "max_input_tokens": 128000,
        "litellm_provider": "openai"}, "alias": {"alias_of": "gpt-x"}, "_meta": {}}"#;

    proptest! {
        #[test]
        fn pricing_loader_never_panics_on_arbitrary_text(text in "\\PC{0,96}") {
            let _ = PriceTable::from_litellm_json(&text);
        }

        #[test]
        fn pricing_loader_never_panics_on_mutated_documents(
            edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<char>()), 1..6),
            input in 0u64..400_000, cached in 0u64..400_000, output in 0u64..10_000,
        ) {
            let mut doc: Vec<char> = SMALL_DOC.chars().collect();
            for (at, op, c) in edits {
                let i = at.index(doc.len() + 1);
                match op {
                    0 => doc.insert(i, c),
                    1 if i < doc.len() => { doc.remove(i); }
                    _ if i < doc.len() => doc[i] = c,
                    _ => doc.push(c),
                }
            }
            let doc: String = doc.into_iter().collect();
            if let Ok(table) = PriceTable::from_litellm_json(&doc) {
                let usage = Usage { input, cached_input: cached, cache_write: 0, output, reasoning: 0 };
                for model in ["gpt-x", "alias", "openai/gpt-x-2024-01-01"] {
                    if let Ok(priced) = table.cost(model, &usage) {
                        prop_assert!(!priced.cost.is_negative());
                    }
                }
            }
        }
    }
}
