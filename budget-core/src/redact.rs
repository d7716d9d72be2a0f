//! URLs fit for messages: errors name the store or ledger they are about, never its password.

/// The URL as shown in messages: the password of `scheme://user:password@host` and any
/// `password=` query parameter replaced by `***`. Texts without `://` are returned as they are.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (before_query, query) = match rest.find(['?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    // The last `@` before the query ends the user info, even if the password holds a `/`.
    let mut out = format!("{scheme}://");
    match before_query.rfind('@') {
        Some(at) => {
            let (userinfo, host) = before_query.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _)) => out.push_str(&format!("{user}:***{host}")),
                None => out.push_str(before_query),
            }
        }
        None => out.push_str(before_query),
    }
    // `query` is empty or starts with `?` or `#`; parameters are separated by `&`.
    let mut rest = query;
    while let Some(sep) = rest.chars().next() {
        let end = rest[1..].find(['&', '#']).map_or(rest.len(), |i| i + 1);
        let param = &rest[1..end];
        out.push(sep);
        match param.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                out.push_str(key);
                out.push_str("=***");
            }
            _ => out.push_str(param),
        }
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
}
