//! Why a price could not be loaded, built or found, and what is wrong with one field.

#[cfg(doc)]
use crate::money::Money;
use crate::money::MoneyParseError;

#[cfg(doc)]
use super::UnknownModelPolicy;

/// How much of an offending value an error message quotes.
const QUOTE_LIMIT: usize = 48;

/// How many field names [`PriceError::NoUsablePrice`] lists.
pub const FIELDS_LISTED: usize = 16;

/// What is wrong with one field of a price entry (or with a per-million price text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldProblem {
    /// Not a decimal number (a word, a boolean, an object…).
    #[error("expected a decimal number, found {found}")]
    NotANumber {
        /// The offending JSON text (shortened).
        found: String,
    },
    /// A price below zero.
    #[error("price must not be negative, found {found}")]
    Negative {
        /// The offending text.
        found: String,
    },
    /// A number that [`Money`] cannot hold exactly (too precise, out of range).
    #[error(transparent)]
    Unrepresentable(MoneyParseError),
    /// Not a JSON string (`mode`, `litellm_provider`, `alias_of`).
    #[error("expected a string, found {found}")]
    NotAString {
        /// The offending JSON text (shortened).
        found: String,
    },
    /// Not a non-negative integer (`max_input_tokens`, `max_output_tokens`, `max_tokens`).
    #[error("expected a non-negative integer, found {found}")]
    NotACount {
        /// The offending JSON text (shortened).
        found: String,
    },
}

/// Why a price could not be loaded, built or found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    /// The price file is not valid JSON.
    #[error("price file is not valid JSON: {0}")]
    Json(String),
    /// The price file's top level is not a JSON object keyed by model id.
    #[error("price file must be a JSON object keyed by model id, found {found}")]
    NotAnObject {
        /// The JSON type found instead.
        found: &'static str,
    },
    /// A model's entry is not a JSON object.
    #[error("price entry `{model}` must be a JSON object, found {found}")]
    EntryNotAnObject {
        /// The model key.
        model: String,
        /// The JSON type found instead.
        found: &'static str,
    },
    /// A field of a model's entry is malformed.
    #[error("price entry `{model}`, field `{field}`: {problem}")]
    InvalidField {
        /// The model key.
        model: String,
        /// The field name.
        field: String,
        /// What is wrong with it.
        problem: FieldProblem,
    },
    /// A per-million price text given to a constructor is malformed.
    #[error("invalid per-million price {text:?}: {problem}")]
    InvalidPrice {
        /// The text given.
        text: String,
        /// What is wrong with it.
        problem: FieldProblem,
    },
    /// An entry that should be priced per token has no usable per-token price: a misspelled
    /// price field, or only one of the input and output prices. (Entries LiteLLM lists without
    /// any price, or prices in other units, are skipped instead: see the module docs.)
    #[error(
        "price entry `{model}` has no usable price: it needs both `input_cost_per_token` and \
         `output_cost_per_token`; fields seen: {}",
        fields.join(", ")
    )]
    NoUsablePrice {
        /// The model key.
        model: String,
        /// The entry's field names, sorted (at most [`FIELDS_LISTED`], then `…`).
        fields: Vec<String>,
    },
    /// The price file has model entries, but not one of them has a per-token price.
    #[error("price file has {entries} model entries but no per-token price in any of them")]
    NoPrices {
        /// How many model entries the file has (`_…` keys and `sample_spec` not counted).
        entries: usize,
    },
    /// The price file could not be read.
    #[error("cannot read price file {}: {message}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What the operating system said.
        message: String,
    },
    /// The price file was read but is not a valid price file.
    #[error("price file {}: {source}", path.display())]
    InFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        source: Box<PriceError>,
    },
    /// No price is known for the model and the table's policy is
    /// [`UnknownModelPolicy::Error`].
    #[error("no price known for model `{model}`")]
    UnknownModel {
        /// The model id as requested.
        model: String,
    },
}

/// The raw JSON text, shortened for an error message.
pub(super) fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_LIMIT) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}
