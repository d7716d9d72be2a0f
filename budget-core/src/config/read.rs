//! Reading the YAML into the file's shape, with serde-saphyr's line and column and
//! serde_path_to_error's field path on every error.

use std::path::Path;

use serde::Deserialize;
use serde_saphyr::Error as YamlError;

use super::error::{ConfigError, Origin, did_you_mean};
use super::file::FileConfig;

/// Parses `text` (read from `file`, if any) into the file's shape.
pub(crate) fn parse_file(text: &str, file: Option<&Path>) -> Result<FileConfig, ConfigError> {
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Ok(FileConfig::default());
    }
    let mut path = None;
    let result = serde_saphyr::with_deserializer_from_str(text, |de| {
        let mut track = serde_path_to_error::Track::new();
        let parsed =
            FileConfig::deserialize(serde_path_to_error::Deserializer::new(de, &mut track));
        if parsed.is_err() {
            path = Some(track.path());
        }
        parsed
    });
    result.map_err(|error| {
        let field = path
            .map(|p| field_path(&p))
            .unwrap_or_else(|| "<root>".into());
        from_yaml_error(&error, field, file)
    })
}

/// `limits[2].tokens` from serde_path_to_error's path, without the `value` steps that
/// [`serde_saphyr::Spanned`] adds (no key of the file is named `value`).
fn field_path(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            serde_path_to_error::Segment::Map { key } if key == "value" => {}
            serde_path_to_error::Segment::Map { key }
            | serde_path_to_error::Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    if out.is_empty() { "<root>".into() } else { out }
}

/// Turns a [`serde_saphyr::Spanned`] value's location into an [`Origin`] in the file.
pub(crate) type At<'a> = &'a dyn Fn(serde_saphyr::Location) -> Origin;

/// The place of a YAML error.
pub(crate) fn origin_at(file: Option<&Path>, location: Option<serde_saphyr::Location>) -> Origin {
    let (line, column) = location.map_or((0, 0), |l| (l.line(), l.column()));
    Origin::Yaml {
        file: file.map(Path::to_path_buf),
        line,
        column,
    }
}

fn from_yaml_error(error: &YamlError, field: String, file: Option<&Path>) -> ConfigError {
    let origin = origin_at(file, error.location());
    let invalid = |message: String| ConfigError::Invalid {
        origin: origin.clone(),
        field: field.clone(),
        message,
    };
    match error.without_snippet() {
        YamlError::SerdeUnknownField {
            field: key,
            expected,
            ..
        } => {
            // The path ends at the unknown key; the section is what holds it.
            let section = match field.rsplit_once('.') {
                Some((section, last)) if last == key => section.to_owned(),
                _ if field == *key => "<root>".to_owned(),
                _ => field.clone(),
            };
            ConfigError::UnknownKey {
                origin,
                field: section,
                key: key.clone(),
                suggestion: did_you_mean(key, expected.iter().copied()),
                expected: expected.iter().map(|k| (*k).to_owned()).collect(),
            }
        }
        YamlError::SerdeUnknownVariant {
            variant, expected, ..
        } => {
            let hint = did_you_mean(variant, expected.iter().copied())
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            let list: Vec<String> = expected.iter().map(|e| format!("`{e}`")).collect();
            invalid(format!(
                "expected one of {}, found `{variant}`{hint}",
                list.join(", ")
            ))
        }
        YamlError::SerdeInvalidType {
            unexpected,
            expected,
            ..
        }
        | YamlError::SerdeInvalidValue {
            unexpected,
            expected,
            ..
        } => invalid(format!("expected {expected}, found {unexpected}")),
        YamlError::SerdeMissingField { field: key, .. } => {
            invalid(format!("missing required key `{key}`"))
        }
        YamlError::Message { msg, .. } => invalid(msg.clone()),
        YamlError::DuplicateMappingKey { key, .. } => ConfigError::Syntax {
            origin,
            message: match key {
                Some(key) => format!("the key `{key}` appears twice in one mapping"),
                None => "a key appears twice in one mapping".to_owned(),
            },
        },
        YamlError::InvalidScalar { ty, .. } => invalid(format!("expected {}", scalar_name(ty))),
        other => {
            let message = other.to_string();
            // The origin already says where.
            let message = match message.rfind(" at line ") {
                Some(at) => message[..at].to_owned(),
                None => message,
            };
            // A node of the wrong shape (a list where one value goes, ...): a type error of
            // that field, said in the file's words.
            let shape = [
                (
                    "expected string scalar",
                    "expected a single value, found a list or a mapping",
                ),
                ("expected sequence start", "expected a list"),
                (
                    "expected mapping start",
                    "expected a mapping of `key: value` lines",
                ),
            ]
            .into_iter()
            .find(|(parser, _)| message.starts_with(parser));
            match shape {
                Some((_, said)) if field != "<root>" => invalid(said.to_owned()),
                _ => ConfigError::Syntax { origin, message },
            }
        }
    }
}

/// What a Rust scalar type means in the file.
fn scalar_name(ty: &str) -> String {
    match ty {
        "bool" | "boolean" => "`true` or `false`".into(),
        "u8" | "u16" | "u32" | "u64" | "usize" => format!("a whole number from 0 ({ty})"),
        _ => ty.to_owned(),
    }
}
