//! URLs fit for messages: errors name the store or ledger they are about, never its password.

/// The URL as shown in messages: the password of `scheme://user:password@host` and any
/// `password=` (or `pass=`, as Redis Unix-socket URLs write it) query parameter replaced by
/// `***`. Texts without `://` are returned as they are.
///
/// The URL is parsed with the `url` crate (user info, percent-encoding, query pairs). A text
/// it cannot parse, or one with an `@` it leaves outside the user info (a password holding an
/// unencoded `/`, `?` or `#` moves the end of the authority), is redacted the cautious way:
/// everything from the first `:` after the user name to the last `@` is hidden, even if that
/// hides more than the password.
pub(crate) fn redact_url(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_owned();
    };
    if let Some(shown) = redact_parsed(text) {
        return shown;
    }
    match rest.rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{}", redact_params(&rest[at + 1..])),
            None => format!("{scheme}://{}", redact_params(rest)),
        },
        None => format!("{scheme}://{}", redact_params(rest)),
    }
}

/// [`redact_url`] for a text the `url` crate parses with every `@` in its user info.
fn redact_parsed(text: &str) -> Option<String> {
    let mut url = url::Url::parse(text).ok()?;
    let stray_at = url.path().contains('@')
        || url.query().is_some_and(|q| q.contains('@'))
        || url.fragment().is_some_and(|f| f.contains('@'));
    if stray_at {
        return None;
    }
    if url.password().is_some() {
        url.set_password(Some("***")).ok()?;
    }
    if let Some(query) = url.query() {
        let query: Vec<String> = query.split('&').map(redact_param).collect();
        url.set_query(Some(&query.join("&")));
    }
    Some(url.into())
}

/// `key=value` with the value hidden when the key (percent-decoded, any case) names a
/// password.
fn redact_param(param: &str) -> String {
    let key = param.split_once('=').map_or(param, |(key, _)| key);
    let decoded = url::form_urlencoded::parse(key.as_bytes())
        .next()
        .map(|(k, _)| k.into_owned())
        .unwrap_or_default();
    if ["password", "pass"]
        .iter()
        .any(|secret| decoded.eq_ignore_ascii_case(secret))
    {
        format!("{key}=***")
    } else {
        param.to_owned()
    }
}

/// `host/path?query#fragment` with password parameters hidden, for texts the `url` crate
/// cannot parse.
fn redact_params(rest: &str) -> String {
    let Some(start) = rest.find(['?', '#']) else {
        return rest.to_owned();
    };
    let mut out = rest[..start].to_owned();
    let mut rest = &rest[start..];
    // `rest` starts with `?`, `&` or `#`; parameters are separated by `&`.
    while let Some(sep) = rest.chars().next() {
        let end = rest[1..].find(['&', '#']).map_or(rest.len(), |i| i + 1);
        out.push(sep);
        out.push_str(&redact_param(&rest[1..end]));
        rest = &rest[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction() {
        let cases = [
            ("postgres://u:p@h/db", "postgres://u:***@h/db"),
            ("postgres://u:p/w@h:5/db", "postgres://u:***@h:5/db"),
            ("postgres://u:p@w@h/db?x=1", "postgres://u:***@h/db?x=1"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("postgres://h/db", "postgres://h/db"),
            (
                "postgres://h/db?user=u&PASSWORD=p&sslmode=require",
                "postgres://h/db?user=u&PASSWORD=***&sslmode=require",
            ),
            ("/tmp/a:b@c/ledger.db", "/tmp/a:b@c/ledger.db"),
            (
                "redis://user:secret@host:6379/0",
                "redis://user:***@host:6379/0",
            ),
            ("redis://:secret@host/", "redis://:***@host/"),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("not a url", "not a url"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    /// A password holding `?`, `#`, `/` or `@` unencoded, or percent-encoded, never shows;
    /// neither does a Unix-socket URL's `pass=` parameter.
    #[test]
    fn passwords_with_reserved_characters_are_hidden() {
        let cases = [
            (
                "redis://user:pa?ss@host:6379/0",
                "redis://user:***@host:6379/0",
            ),
            (
                "redis://user:12?ss@host:6379/0",
                "redis://user:***@host:6379/0",
            ),
            ("redis://user:pa#ss@host/0", "redis://user:***@host/0"),
            ("rediss://:pa?s#s@host/0", "rediss://:***@host/0"),
            (
                "postgres://u:p?w#x/y@h/db?password=z",
                "postgres://u:***@h/db?password=***",
            ),
            ("redis://u:p%40ss@h/0", "redis://u:***@h/0"),
            (
                "redis+unix:///run/redis.sock?db=1&pass=secret",
                "redis+unix:///run/redis.sock?db=1&pass=***",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }
}
