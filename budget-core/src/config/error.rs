//! What is wrong with a configuration, and where.

use std::fmt;
use std::path::PathBuf;

/// Where a value of the configuration came from: a place in a file (or in YAML text without a
/// file), or an environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Line and column (both from 1) in the YAML, and the file when it was read from one.
    Yaml {
        /// The file, or `None` for text given directly.
        file: Option<PathBuf>,
        /// Line, from 1 (0 when unknown).
        line: u64,
        /// Column, from 1 (0 when unknown).
        column: u64,
    },
    /// An environment variable.
    Env(String),
    /// Neither the file nor the environment: the built-in default.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Yaml { file, line, column } => {
                let file = file
                    .as_ref()
                    .map_or_else(|| "<yaml>".to_owned(), |f| f.display().to_string());
                write!(f, "{file}:{line}:{column}")
            }
            Origin::Env(variable) => write!(f, "environment variable {variable}"),
            Origin::Default => f.write_str("the default"),
        }
    }
}

/// A configuration that cannot be used. Each variant but [`ConfigError::Read`] names where
/// ([`Origin`]: file:line:column, or the environment variable) and the field path
/// (`limits[2].tokens`); its message says what was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The text is not well-formed YAML (or holds two documents, a duplicate key, ...).
    #[error("{origin}: {message}")]
    Syntax {
        /// Where.
        origin: Origin,
        /// What the YAML parser says.
        message: String,
    },
    /// A key that the section does not have. Unknown keys are never skipped.
    #[error("{origin}: unknown key `{key}` in `{field}`{}; expected one of: {}",
        suggestion.as_ref().map(|s| format!(", did you mean `{s}`?")).unwrap_or_default(),
        expected.join(", "))]
    UnknownKey {
        /// Where.
        origin: Origin,
        /// The section holding the key (`limits[0]`, or `<root>`).
        field: String,
        /// The key, as written.
        key: String,
        /// The closest known key, when one is close.
        suggestion: Option<String>,
        /// Every key the section has.
        expected: Vec<String>,
    },
    /// A value of the wrong type or form, or one the rules refuse (a zero cap, an unknown time
    /// zone or preset, a duplicate limit id, a missing price file, ...).
    #[error("{origin}: `{field}`: {message}")]
    Invalid {
        /// Where.
        origin: Origin,
        /// The field path, e.g. `limits[2].tokens`.
        field: String,
        /// What was expected, what was found.
        message: String,
    },
    /// The ledger or store named by the configuration could not be opened.
    #[error("{origin}: `{field}`: cannot open: {source}")]
    Open {
        /// Where the URL came from.
        origin: Origin,
        /// `ledger` or `store`.
        field: &'static str,
        /// The backend's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The limits passed the checks here but the budget refused them.
    #[error("the configured limits were refused: {0}")]
    Limits(#[from] crate::limits::LimitError),
}

impl ConfigError {
    /// Where the problem is, when it has a place.
    pub fn origin(&self) -> Option<&Origin> {
        match self {
            ConfigError::Syntax { origin, .. }
            | ConfigError::UnknownKey { origin, .. }
            | ConfigError::Invalid { origin, .. }
            | ConfigError::Open { origin, .. } => Some(origin),
            ConfigError::Read { .. } | ConfigError::Limits(_) => None,
        }
    }
}

/// A [`ConfigError::Invalid`].
pub(crate) fn invalid(origin: Origin, field: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        origin,
        field: field.to_owned(),
        message,
    }
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a likely
/// typo (at most a third of the word's length, and at least 1).
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c.to_owned())
}

/// Edit distance by characters, a swap of two neighbours counting as one edit (`tires` is
/// one edit from `tiers`): the optimal string alignment distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_are_near_misses_only() {
        assert_eq!(edit_distance("tokns", "tokens"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("tires", "tiers"), 1);
        assert_eq!(
            did_you_mean("tokns", ["tokens", "cost"]),
            Some("tokens".into())
        );
        assert_eq!(did_you_mean("zzz", ["tokens", "cost"]), None);
    }
}
