//! Loads LiteLLM's real price file, when this machine has it, and checks the built-in table
//! against it.

use budget_core::{Money, PriceTable};

const LITELLM_FILE: &str = "/tmp/litellm/litellm/model_prices_and_context_window_backup.json";

fn real_table() -> Option<PriceTable> {
    let Ok(text) = std::fs::read_to_string(LITELLM_FILE) else {
        println!("skipped: {LITELLM_FILE} is not present");
        return None;
    };
    match PriceTable::from_litellm_json(&text) {
        Ok(table) => Some(table),
        Err(e) => panic!("the real LiteLLM file must load: {e}"),
    }
}

fn per_million(text: &str) -> Money {
    Money::per_million_tokens(text).unwrap()
}

#[test]
fn pricing_loads_the_real_litellm_file() {
    let Some(table) = real_table() else { return };
    assert!(table.len() > 2000, "only {} entries", table.len());
    let gpt4o = table.resolve("gpt-4o").unwrap();
    assert_eq!(gpt4o.id, "gpt-4o");
    assert_eq!(gpt4o.price.input, per_million("2.50"));
    assert_eq!(gpt4o.price.output, per_million("10.00"));
    assert_eq!(gpt4o.price.cached_input, Some(per_million("1.25")));
    assert_eq!(gpt4o.price.max_input_tokens, Some(128_000));
    assert_eq!(gpt4o.price.provider.as_deref(), Some("openai"));
    let pro = table.get("gemini-2.5-pro").unwrap();
    assert_eq!(pro.tiers.len(), 1);
    assert_eq!(pro.tiers[0].input, Some(per_million("2.50")));
    // `alias_of` entries resolve to their target.
    let latest = table.resolve("claude-opus-latest").unwrap();
    assert_eq!(latest.id, "claude-opus-5-5");
}

/// Every built-in entry carries exactly the prices of the LiteLLM entry it was copied from.
#[test]
fn pricing_builtin_matches_its_litellm_source() {
    let Some(real) = real_table() else { return };
    let builtin_json: serde_json::Value =
        serde_json::from_str(include_str!("../data/prices.json")).unwrap();
    let builtin = PriceTable::builtin_ref();
    let mut checked = 0;
    for (id, entry) in builtin_json.as_object().unwrap() {
        if id.starts_with('_') {
            continue;
        }
        let source = entry
            .get("_source_key")
            .and_then(|s| s.as_str())
            .unwrap_or(id);
        let ours = builtin.resolve(id).unwrap().price;
        let theirs = real.resolve(source).unwrap().price;
        assert_eq!(
            (ours.input, ours.output, ours.cached_input, ours.cache_write),
            (
                theirs.input,
                theirs.output,
                theirs.cached_input,
                theirs.cache_write
            ),
            "{id} (from {source})"
        );
        assert_eq!(
            (&ours.reasoning, &ours.tiers),
            (&theirs.reasoning, &theirs.tiers),
            "{id}"
        );
        checked += 1;
    }
    assert!(checked >= 40);
}

/// A dated or decorated id that resolves (by stripping) to a built-in family id must cost
/// what LiteLLM says that exact id costs: stripping may not change the price.
#[test]
fn pricing_builtin_resolution_agrees_with_litellm_for_known_ids() {
    let Some(real) = real_table() else { return };
    let builtin = PriceTable::builtin_ref();
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for (id, theirs) in real.iter() {
        let Ok(ours) = builtin.resolve(id) else {
            continue;
        };
        // Only ids of the vendors the built-in table covers, under their own provider.
        let same_vendor = matches!(
            (theirs.provider.as_deref(), ours.price.provider.as_deref()),
            (Some(a), Some(b)) if a == b
        );
        if ours.id == id || !same_vendor || id.contains('/') {
            continue;
        }
        checked += 1;
        let key = |p: &budget_core::ModelPrice| (p.input, p.output, p.cached_input);
        if key(ours.price) != key(theirs) {
            mismatches.push(format!("{id} -> {}", ours.id));
        }
    }
    println!("{checked} decorated ids checked");
    assert!(checked > 10, "only {checked} ids checked");
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}

/// `TOKEN_BUDGET_PRICES=PATH` loads a price file over the built-in table. The variable is set
/// for a child run of this test binary only: setting it here would race other tests.
#[test]
fn pricing_env_variable_loads_a_price_file() {
    const CHILD: &str = "BUDGET_PRICES_ENV_CHILD";
    if let Some(expect) = std::env::var_os(CHILD) {
        match expect.to_str() {
            Some("ok") => {
                let table = PriceTable::from_env().unwrap();
                assert_eq!(table.get("house-model").unwrap().input, per_million("1"));
                assert_eq!(table.get("gpt-4o").unwrap().input, per_million("2.50"));
            }
            Some("misspelled") => {
                let err = PriceTable::from_env().unwrap_err().to_string();
                assert!(
                    err.contains("house-model") && err.contains("input_cost_per_tokens"),
                    "{err}"
                );
            }
            _ => assert_eq!(&PriceTable::from_env().unwrap(), PriceTable::builtin_ref()),
        }
        return;
    }
    let dir = std::env::temp_dir().join(format!("budget-prices-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |expect: &str, file: Option<(&str, &str)>| {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args([
                "--exact",
                "pricing_env_variable_loads_a_price_file",
                "--test-threads=1",
            ])
            .env(CHILD, expect)
            .env_remove(budget_core::pricing::PRICES_ENV);
        if let Some((name, text)) = file {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            child.env(budget_core::pricing::PRICES_ENV, &path);
        }
        let out = child.output().unwrap();
        assert!(
            out.status.success(),
            "{expect}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(
        "ok",
        Some((
            "ok.json",
            r#"{"house-model": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06}}"#,
        )),
    );
    run(
        "misspelled",
        Some((
            "bad.json",
            r#"{"house-model": {"input_cost_per_tokens": 1e-06, "output_cost_per_token": 2e-06}}"#,
        )),
    );
    run("unset", None);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `gemini/…` ids are Google AI Studio's, priced apart from Vertex AI's bare `gemini-…` ids in
/// LiteLLM's file; the built-in table used to price them with the Vertex entry.
#[test]
fn pricing_gemini_ai_studio_ids_are_priced_apart_from_vertex() {
    let Some(real) = real_table() else { return };
    let builtin = PriceTable::builtin_ref();
    let mut checked = Vec::new();
    for (id, theirs) in real.iter() {
        if !id.starts_with("gemini/") {
            continue;
        }
        let Ok(ours) = builtin.resolve(id) else {
            continue;
        };
        assert_eq!(
            ours.price.provider.as_deref(),
            Some("gemini"),
            "{id} resolved to {}",
            ours.id
        );
        let key = |p: &budget_core::ModelPrice| {
            (
                (p.input, p.output, p.cached_input, p.cache_write),
                (p.reasoning, p.tiers.clone()),
            )
        };
        assert_eq!(key(ours.price), key(theirs), "{id} resolved to {}", ours.id);
        checked.push(id.to_owned());
    }
    println!("{} gemini/ ids checked", checked.len());
    assert!(checked.len() >= 8, "{checked:?}");
}

/// Models the tokenizer counts exactly, or that users run, must have a built-in price.
#[test]
fn pricing_builtin_covers_gpt_4_and_deepseek() {
    let Some(real) = real_table() else { return };
    for id in ["gpt-4", "gpt-4-0613", "deepseek-chat", "deepseek-reasoner"] {
        let ours = PriceTable::builtin_ref()
            .resolve(id)
            .unwrap_or_else(|e| panic!("{e}"));
        let theirs = real.get(id).unwrap();
        assert_eq!(ours.id, id);
        assert_eq!(
            (ours.price.input, ours.price.output, ours.price.cached_input),
            (theirs.input, theirs.output, theirs.cached_input),
            "{id}"
        );
    }
}
