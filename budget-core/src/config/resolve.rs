//! From the file's shape and the environment to a checked [`Config`]: the env overrides and
//! the URL, time zone and price checks here, the other sections in `limits` and `sections`.

use std::path::{Path, PathBuf};

use jiff::tz::TimeZone;
use serde_saphyr::Spanned;

use super::env::{EnvVars, TIME_ZONE_ENV};
use super::error::{ConfigError, Origin, invalid};
use super::file::FileConfig;
use super::read::origin_at;
use super::{Config, Sourced, limits, sections};
use crate::ledger::{LEDGER_URL_VAR, LedgerUrl};
use crate::pricing::{ModelPrice, PRICES_ENV, PriceTable};
use crate::store::STORE_ENV;

/// Turns the file (read from `file`, if any) and `env` into a checked configuration.
pub(crate) fn resolve(
    parsed: FileConfig,
    file: Option<&Path>,
    env: &EnvVars,
) -> Result<Config, ConfigError> {
    let at = |spanned_location: serde_saphyr::Location| origin_at(file, Some(spanned_location));
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
            Origin::Env(_) | Origin::Default => PathBuf::from(&text.value),
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

    let (agents, limits) = limits::agents_and_limits(parsed.agents, parsed.limits, &at)?;
    let routing = sections::routing(parsed.routing);
    let compression = sections::compression(parsed.compression, &at)?;
    let runaway = sections::runaway(parsed.runaway, &at)?;
    let alerts = sections::alerts(parsed.alerts, &at)?;

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
