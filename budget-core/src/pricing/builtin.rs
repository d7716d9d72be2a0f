//! The built-in price table (a curated extract of LiteLLM's file, embedded in the crate) and
//! the price file named by the environment.

use std::sync::LazyLock;

use super::error::PriceError;
use super::table::PriceTable;

/// The embedded built-in price file (LiteLLM format).
const BUILTIN_JSON: &str = include_str!("../../data/prices.json");

static BUILTIN: LazyLock<PriceTable> =
    LazyLock::new(|| PriceTable::from_litellm_json(BUILTIN_JSON).unwrap_or_default());

/// The environment variable that names a LiteLLM-format price file ([`PriceTable::from_env`]).
pub const PRICES_ENV: &str = "TOKEN_BUDGET_PRICES";

impl PriceTable {
    /// A copy of the built-in table (`data/prices.json`, extracted from LiteLLM 1.110.2),
    /// parsed once on first use. The copy can be extended ([`PriceTable::insert`],
    /// [`PriceTable::merge_from`]); use [`PriceTable::builtin_ref`] to share it without copying.
    pub fn builtin() -> PriceTable {
        BUILTIN.clone()
    }

    /// The shared built-in table. The embedded file is checked by the test suite; were it ever
    /// unreadable, this table would be empty and refuse every model, never price one at $0.
    pub fn builtin_ref() -> &'static PriceTable {
        &BUILTIN
    }

    /// The built-in table, with the prices of the LiteLLM-format file named by
    /// `TOKEN_BUDGET_PRICES` ([`PRICES_ENV`]) merged over it (the file wins for the ids it
    /// has). Unset or empty: the built-in table alone. A file that cannot be read or is not a
    /// valid price file is an error naming it, never a silently smaller table.
    pub fn from_env() -> Result<PriceTable, PriceError> {
        PriceTable::builtin_with_file(std::env::var_os(PRICES_ENV).filter(|v| !v.is_empty()))
    }

    /// The built-in table with the prices of the LiteLLM-format file at `path` merged over
    /// it, or the built-in table alone for `None`: what [`PriceTable::from_env`] does with the
    /// variable's value.
    pub fn builtin_with_file(
        path: Option<impl AsRef<std::path::Path>>,
    ) -> Result<PriceTable, PriceError> {
        let mut table = PriceTable::builtin();
        if let Some(path) = path {
            table.merge_from(PriceTable::from_litellm_file(path)?);
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Money;
    use crate::pricing::test_support::*;

    #[test]
    fn pricing_builtin_has_the_seed_prices() {
        let table = PriceTable::builtin_ref();
        assert!(table.len() >= 40, "{} entries", table.len());
        for (model, input, output) in [
            ("gpt-4o", "2.50", "10.00"),
            ("claude-3-5-sonnet", "3.00", "15.00"),
            ("gpt-4o-mini", "0.15", "0.60"),
            ("claude-3-haiku", "0.25", "1.25"),
        ] {
            let r = builtin(model);
            assert_eq!((r.id, r.fallback), (model, false));
            assert_eq!(r.price.input, per_million(input), "{model} input");
            assert_eq!(r.price.output, per_million(output), "{model} output");
        }
        assert_eq!(
            builtin("gpt-4o").price.cached_input,
            Some(per_million("1.25"))
        );
        assert_eq!(builtin("gpt-4o").price.provider.as_deref(), Some("openai"));
    }

    #[test]
    fn pricing_builtin_never_prices_a_model_at_zero() {
        for (id, price) in PriceTable::builtin_ref().iter() {
            assert!(
                price.input > Money::ZERO && price.output > Money::ZERO,
                "{id}"
            );
        }
        // A fresh copy equals the shared table.
        assert_eq!(&PriceTable::builtin(), PriceTable::builtin_ref());
    }

    #[test]
    fn pricing_file_and_env_loading() {
        let dir = std::env::temp_dir().join(format!("budget-prices-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.json");
        std::fs::write(
            &good,
            r#"{"gpt-4o": {"input_cost_per_token": 5e-06, "output_cost_per_token": 2e-05},
                "house-model": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06}}"#,
        )
        .unwrap();
        let table = PriceTable::builtin_with_file(Some(&good)).unwrap();
        // The file overrides the built-in price and adds its own model; the rest stays.
        assert_eq!(table.get("gpt-4o").unwrap().input, per_million("5"));
        assert_eq!(table.get("house-model").unwrap().output, per_million("2"));
        assert_eq!(table.len(), PriceTable::builtin_ref().len() + 1);
        assert_eq!(
            PriceTable::builtin_with_file(None::<&str>).unwrap(),
            PriceTable::builtin()
        );

        let bad = dir.join("bad.json");
        std::fs::write(
            &bad,
            r#"{"m": {"input_cost_per_tokn": 1, "output_cost_per_token": 1}}"#,
        )
        .unwrap();
        let err = PriceTable::builtin_with_file(Some(&bad)).unwrap_err();
        assert!(
            matches!(&err, PriceError::InFile { path, source }
                if path == &bad && matches!(**source, PriceError::NoUsablePrice { .. })),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("bad.json") && err.to_string().contains("input_cost_per_tokn")
        );
        let missing = dir.join("missing.json");
        let err = PriceTable::from_litellm_file(&missing).unwrap_err();
        assert!(
            matches!(&err, PriceError::Io { path, .. } if path == &missing),
            "{err:?}"
        );
        assert!(err.to_string().contains("missing.json"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
