//! What the PostgreSQL unit tests share: the test database and a fresh schema name, and an
//! event to record.

use crate::ledger::{EventKind, UsageEvent};
use crate::{Attribution, Money, Usage};

/// `DATABASE_URL` and a fresh schema name, or `None` after saying the test is skipped.
pub(super) fn database(test: &str) -> Option<(String, String)> {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("skipped: DATABASE_URL not set");
        return None;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    Some((url, format!("tb_{test}_{}_{nanos}", std::process::id())))
}

/// An event with a tag, as the tests record it.
pub(super) fn an_event() -> UsageEvent {
    UsageEvent {
        id: 7,
        at: jiff::Timestamp::from_second(1_780_000_000).unwrap(),
        attribution: Attribution::agent("writer").with_tag("team", "core"),
        model: "gpt-4o".into(),
        requested_model: None,
        usage: Usage::new(100, 20),
        cost: Money::from_cents(3),
        estimated: false,
        kind: EventKind::Call,
        saved: Default::default(),
    }
}
