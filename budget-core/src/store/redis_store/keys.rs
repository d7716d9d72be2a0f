//! Redis key names for counters, their leases and settle markers.
//!
//! Every key of one store starts with the hash tag `{prefix}`, so a script's keys always share
//! one cluster slot. Key parts are percent-escaped (`%`, `:`, braces and glob characters), so a
//! counter key parses back into its [`CounterKey`] and a `SCAN MATCH` pattern built from an
//! escaped task id matches that task only.

use std::fmt::Write;

use crate::attribution::TaskId;
use crate::limits::CounterKey;

/// The key names of one store.
#[derive(Debug, Clone)]
pub(in crate::store) struct KeySpace {
    /// `{prefix}`.
    tag: String,
}

impl KeySpace {
    /// Key names under `prefix`, which must be non-empty and made of ASCII letters, digits and
    /// `_ - . :` (no braces, no glob characters).
    pub(super) fn new(prefix: &str) -> Result<KeySpace, String> {
        if prefix.is_empty() {
            return Err("the key prefix is empty".into());
        }
        if let Some(bad) = prefix
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
        {
            return Err(format!(
                "the key prefix {prefix:?} contains {bad:?}; use ASCII letters, digits and _ - . :"
            ));
        }
        Ok(KeySpace {
            tag: format!("{{{prefix}}}"),
        })
    }

    /// The counter hash of `key`.
    pub(in crate::store) fn counter(&self, key: &CounterKey) -> String {
        self.named("c", key)
    }

    /// The lease set of `key`.
    pub(in crate::store) fn leases(&self, key: &CounterKey) -> String {
        self.named("l", key)
    }

    /// The reservation id sequence.
    pub(in crate::store) fn sequence(&self) -> String {
        format!("{}:seq", self.tag)
    }

    /// A bitmap of settle markers: a bit is set when its settle applies, so that a retry
    /// applies nothing.
    pub(super) fn settled(&self, id: &str) -> String {
        format!("{}:d:{id}", self.tag)
    }

    /// The control log's sequence: the number of the last record.
    pub(super) fn control_seq(&self) -> String {
        format!("{}:ctl:seq", self.tag)
    }

    /// The control log's records: a hash with fields `<seq>:at`, `<seq>:actor`, `<seq>:change`
    /// and `<seq>:replaced`.
    pub(super) fn control_records(&self) -> String {
        format!("{}:ctl:log", self.tag)
    }

    /// The control log's index: a hash from each target's key to its last record's number.
    pub(super) fn control_last(&self) -> String {
        format!("{}:ctl:last", self.tag)
    }

    /// The channel each control-log append publishes its number on.
    pub(super) fn control_channel(&self) -> String {
        format!("{}:ctl", self.tag)
    }

    /// A `SCAN MATCH` pattern for every counter hash.
    pub(super) fn all_counters(&self) -> String {
        format!("{}:c:*", self.tag)
    }

    /// A `SCAN MATCH` pattern for the counter hashes of `task`.
    pub(super) fn task_counters(&self, task: &TaskId) -> String {
        let mut pattern = format!("{}:c:*:t", self.tag);
        escape(task.as_str(), &mut pattern);
        pattern.push_str(":*");
        pattern
    }

    /// The counter key a counter hash name stands for, or `None` for a foreign key.
    pub(super) fn parse_counter(&self, name: &str) -> Option<CounterKey> {
        let rest = name.strip_prefix(&self.tag)?.strip_prefix(":c:")?;
        let mut parts = rest.split(':');
        let (limit, scope, task, window) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let task = match task {
            "-" => None,
            t => Some(TaskId::new(unescape(t.strip_prefix('t')?)?)),
        };
        Some(CounterKey {
            limit: unescape(limit)?.into(),
            scope: unescape(scope)?.into(),
            task,
            window: window.parse().ok()?,
        })
    }

    /// The lease set name belonging to a counter hash name.
    pub(super) fn leases_of(&self, counter: &str) -> Option<String> {
        let rest = counter.strip_prefix(&self.tag)?.strip_prefix(":c:")?;
        Some(format!("{}:l:{rest}", self.tag))
    }

    fn named(&self, kind: &str, key: &CounterKey) -> String {
        let mut out = String::with_capacity(self.tag.len() + 48);
        let _ = write!(out, "{}:{kind}:", self.tag);
        escape(&key.limit, &mut out);
        out.push(':');
        escape(&key.scope, &mut out);
        match &key.task {
            None => out.push_str(":-:"),
            Some(task) => {
                out.push_str(":t");
                escape(task.as_str(), &mut out);
                out.push(':');
            }
        }
        let _ = write!(out, "{}", key.window);
        out
    }
}

fn escape(part: &str, out: &mut String) {
    for ch in part.chars() {
        match ch {
            '%' | ':' | '{' | '}' | '*' | '?' | '[' | ']' | '\\' => {
                let _ = write!(out, "%{:02X}", ch as u32);
            }
            _ => out.push(ch),
        }
    }
}

fn unescape(part: &str) -> Option<String> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = part.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_names_parse_back_whatever_the_parts_hold() {
        let keys = KeySpace::new("tb:test").unwrap();
        for (limit, scope, task) in [
            ("daily", "*", None),
            ("per:colon", "user{1}%", Some("task*?[x]\\")),
            ("ünïcode", "a b", Some("-")),
        ] {
            let key = CounterKey {
                limit: limit.into(),
                scope: scope.into(),
                task: task.map(TaskId::new),
                window: -1_700_000_000,
            };
            let name = keys.counter(&key);
            assert!(name.starts_with("{tb:test}:c:"), "{name}");
            assert_eq!(name.matches(':').count(), 6, "{name}: parts are escaped");
            assert_eq!(keys.parse_counter(&name), Some(key.clone()));
            assert_eq!(keys.leases_of(&name), Some(keys.leases(&key)));
        }
        assert_eq!(keys.parse_counter("{other}:c:a:b:-:0"), None);
        assert_eq!(keys.parse_counter("{tb:test}:c:a:b:-:0:extra"), None);
        assert_eq!(keys.parse_counter("{tb:test}:c:a%zz:b:-:0"), None);
    }

    #[test]
    fn task_patterns_hold_no_glob_characters_from_the_task() {
        let keys = KeySpace::new("p").unwrap();
        let pattern = keys.task_counters(&TaskId::new("a*b?[c]"));
        assert_eq!(pattern, "{p}:c:*:ta%2Ab%3F%5Bc%5D:*");
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(KeySpace::new("").is_err());
        assert!(KeySpace::new("a}b").is_err());
        assert!(KeySpace::new("a*").is_err());
        assert!(KeySpace::new("token-budget:prod_1.eu").is_ok());
    }
}
