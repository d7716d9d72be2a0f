//! Model-id normalisation: the decorations (dates, versions, provider prefixes) that
//! resolution strips one at a time.

/// One decoration removed from a lower-cased model id, or `None` when there is none left.
pub(crate) fn strip_once(name: &str) -> Option<String> {
    // Prefix first: the order model families are derived in (`limits::model_family`).
    strip_prefix_once(name).or_else(|| strip_suffix_once(name))
}

/// Provider prefixes that are never dropped: their ids are priced apart from the bare ids of
/// the same models (Google AI Studio's `gemini/…` against Vertex AI's `gemini-…`), so an id
/// the table lacks under its prefix is unknown, never priced as the other provider's.
pub(super) const KEPT_PREFIXES: [&str; 1] = ["gemini/"];

/// A lower-cased model id without its first provider (`openai/`) or vendor (`us.`,
/// `anthropic.`) prefix, or `None` when it has none.
pub(super) fn strip_prefix_once(name: &str) -> Option<String> {
    if let Some((_, rest)) = name.split_once('/') {
        return Some(rest.to_owned());
    }
    if let Some((vendor, rest)) = name.split_once('.') {
        if !vendor.is_empty() && vendor.bytes().all(|b| b.is_ascii_lowercase()) {
            return Some(rest.to_owned());
        }
    }
    None
}

/// One trailing decoration (a date, a version, `@…`, `-latest`…) removed from a lower-cased
/// model id, which may still carry its provider prefix; `None` when there is none left.
pub(super) fn strip_suffix_once(name: &str) -> Option<String> {
    // The decorations below are matched on the model part, after any provider prefix.
    let model = name.rsplit_once('/').map_or(name, |(_, m)| m);
    let prefix = &name[..name.len() - model.len()];
    let keep = |base: &str| Some(format!("{prefix}{base}"));
    let name = model;
    if let Some((base, _)) = name.rsplit_once('@') {
        return keep(base);
    }
    if let Some(base) = strip_suffix_shape(name, "-v#:#") {
        return keep(base);
    }
    if let Some(base) = name.strip_suffix("-latest") {
        return keep(base);
    }
    if let Some(base) = strip_date(name) {
        return keep(base);
    }
    if name.starts_with("claude") {
        if let Some(base) = strip_suffix_shape(name, "-v#") {
            return keep(base);
        }
        if name.contains('.') {
            return keep(&name.replace('.', "-"));
        }
    }
    if name.starts_with("gemini") {
        if let Some(base) = strip_suffix_shape(name, "-ddd") {
            return keep(base);
        }
    }
    None
}

/// `name` without a `-YYYY-MM-DD` or `-YYYYMMDD` suffix (year 20xx).
fn strip_date(name: &str) -> Option<&str> {
    strip_suffix_shape(name, "-20dd-dd-dd").or_else(|| strip_suffix_shape(name, "-20dddddd"))
}

/// Strips a suffix of the given shape: `d` is one ASCII digit, `#` one or more digits, any
/// other byte itself. The remaining base must not be empty.
fn strip_suffix_shape<'a>(name: &'a str, shape: &str) -> Option<&'a str> {
    let bytes = name.as_bytes();
    let mut end = bytes.len();
    for &s in shape.as_bytes().iter().rev() {
        match s {
            b'd' => {
                end = end.checked_sub(1)?;
                if !bytes[end].is_ascii_digit() {
                    return None;
                }
            }
            b'#' => {
                let digits = bytes[..end]
                    .iter()
                    .rev()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                if digits == 0 {
                    return None;
                }
                end -= digits;
            }
            other => {
                end = end.checked_sub(1)?;
                if bytes[end] != other {
                    return None;
                }
            }
        }
    }
    // The shape is ASCII, so `end` is a char boundary.
    (end > 0).then(|| name.get(..end)).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pricing_strip_once_removes_one_decoration_prefix_first() {
        let steps = |id: &str| {
            let mut out = vec![id.to_owned()];
            while let Some(next) = strip_once(out.last().unwrap()) {
                out.push(next);
            }
            out
        };
        assert_eq!(
            steps("openai/gpt-4o-2024-08-06"),
            ["openai/gpt-4o-2024-08-06", "gpt-4o-2024-08-06", "gpt-4o"]
        );
        assert_eq!(
            steps("us.anthropic.claude-3.5-sonnet-v2:0"),
            [
                "us.anthropic.claude-3.5-sonnet-v2:0",
                "anthropic.claude-3.5-sonnet-v2:0",
                "claude-3.5-sonnet-v2:0",
                "claude-3.5-sonnet",
                "claude-3-5-sonnet"
            ]
        );
    }
}
