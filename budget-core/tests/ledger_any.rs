//! A ledger chosen by URL: `AnyLedger` records events and reads their totals back on every
//! backend — memory, a SQLite file in a directory it creates (and reopens), PostgreSQL when
//! `DATABASE_URL` is set (otherwise that test prints "skipped: DATABASE_URL not set") — and a
//! `Budget` runs on it.

mod common;

use std::sync::Arc;

use budget_core::ledger::{
    AnyLedger, Dimension, EventKind, KeyPart, Ledger, LedgerQuery, LedgerUrl, LedgerUrlError,
    OpenLedgerError, RankBy, UsageEvent,
};
use budget_core::{Amount, Attribution, Budget, Estimate, Money, TaskId, Usage};

fn event(id: u64, agent: &str, input: u64, output: u64, nano_dollars: i64) -> UsageEvent {
    UsageEvent {
        id,
        at: jiff::Timestamp::now(),
        attribution: Attribution::agent(agent)
            .with_task(TaskId::new(format!("{agent}-task")))
            .with_tag("run", "r-1"),
        model: Arc::from("gpt-4o-mini"),
        requested_model: (id % 2 == 0).then(|| Arc::from("gpt-4o")),
        usage: Usage::new(input, output),
        cost: Money::from_nanos(nano_dollars),
        estimated: false,
        kind: EventKind::Call,
        saved: Amount::ZERO,
    }
}

/// Records three events and checks the totals by agent, by requested model and the top
/// spender.
async fn record_and_read_back(ledger: &AnyLedger) {
    for e in [
        event(1, "planner", 100, 10, 1_500),
        event(2, "coder", 1_000, 200, 30_000),
        event(3, "coder", 500, 50, 12_345),
    ] {
        ledger.record(e).await.expect("record");
    }
    ledger.flush().await.expect("flush");
    let by_agent = ledger
        .totals(&LedgerQuery::group_by([Dimension::Agent]))
        .await
        .expect("totals");
    let rows: Vec<_> = by_agent
        .iter()
        .map(|g| (g.key[0].to_string(), g.events, g.usage.total(), g.cost))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("coder".into(), 2, 1_750, Money::from_nanos(42_345)),
            ("planner".into(), 1, 110, Money::from_nanos(1_500)),
        ],
        "{ledger}"
    );
    let routed = ledger
        .totals(
            &LedgerQuery::group_by([Dimension::RequestedModel])
                .filter(Dimension::Tag("run".into()), KeyPart::text("r-1")),
        )
        .await
        .expect("totals");
    let keys: Vec<_> = routed
        .iter()
        .map(|g| (g.key[0].clone(), g.events))
        .collect();
    assert_eq!(
        keys,
        vec![(KeyPart::None, 2), (KeyPart::text("gpt-4o"), 1)],
        "{ledger}"
    );
    let top = ledger
        .top(&LedgerQuery::group_by([Dimension::Agent]), RankBy::Cost, 1)
        .await
        .expect("top");
    assert_eq!(top[0].key, vec![KeyPart::text("coder")], "{ledger}");
}

#[tokio::test]
async fn memory() {
    let ledger = AnyLedger::open("memory:").await.expect("open");
    assert_eq!(ledger.backend(), "memory");
    assert_eq!(ledger.to_string(), "memory (this process only)");
    record_and_read_back(&ledger).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_file_in_a_new_directory_survives_reopening() {
    let dir = common::TempDir::new("any-sqlite");
    let file = dir.path().join("nested").join("ledger.sqlite3");
    assert!(!dir.path().exists());

    let ledger = AnyLedger::open(&format!("sqlite:{}", file.display()))
        .await
        .expect("open creates the directories");
    assert_eq!(ledger.backend(), "sqlite");
    assert_eq!(
        ledger.to_string(),
        format!("SQLite file {}", file.display())
    );
    assert!(file.exists());
    record_and_read_back(&ledger).await;
    drop(ledger);

    // The same file, named as a bare path and as `sqlite://`.
    for text in [
        file.display().to_string(),
        format!("sqlite://{}", file.display()),
    ] {
        let reopened = AnyLedger::open(&text).await.expect("reopen");
        let all = reopened
            .totals(&LedgerQuery::default())
            .await
            .expect("totals");
        assert_eq!(all.len(), 1, "{text}");
        assert_eq!(all[0].events, 3, "{text}");
        assert_eq!(all[0].cost, Money::from_nanos(43_845), "{text}");
    }
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    let Some(url) = common::database_url() else {
        return;
    };
    let schema = common::TempSchema::new(&url, "any");
    let sep = if url.contains('?') { '&' } else { '?' };
    let text = format!("{url}{sep}namespace={}", schema.name);
    let ledger = AnyLedger::open(&text).await.expect("connect");
    assert_eq!(ledger.backend(), "postgres");
    let shown = ledger.to_string();
    assert!(shown.starts_with("PostgreSQL "), "{shown}");
    assert!(
        shown.ends_with(&format!("(schema {})", schema.name)),
        "{shown}"
    );
    assert!(!shown.contains("namespace="), "{shown}");
    record_and_read_back(&ledger).await;
}

#[tokio::test]
async fn bad_urls_are_typed_errors() {
    let err = AnyLedger::open("redis://u:secret@cache:6379")
        .await
        .expect_err("redis");
    let OpenLedgerError::Url(LedgerUrlError::UnknownScheme { scheme, text }) = &err else {
        panic!("unexpected error {err:?}");
    };
    assert_eq!(scheme, "redis");
    assert_eq!(text, "redis://u:***@cache:6379");
    assert!(!err.to_string().contains("secret"), "{err}");

    let err = AnyLedger::open("").await.expect_err("empty");
    assert!(
        matches!(err, OpenLedgerError::Url(LedgerUrlError::Empty)),
        "{err:?}"
    );
}

#[test]
fn parsed_urls() {
    assert_eq!("memory:".parse::<LedgerUrl>(), Ok(LedgerUrl::Memory));
    let url: LedgerUrl = "postgresql://u:pw@db/tb?namespace=books"
        .parse()
        .expect("postgres");
    assert_eq!(url.to_string(), "postgresql://u:***@db/tb?namespace=books");
}

#[tokio::test]
async fn a_budget_runs_on_any_ledger() {
    let ledger = AnyLedger::open("memory:").await.expect("open");
    let budget = Budget::builder().ledger(ledger).build().expect("budget");
    let who = Attribution::agent("coder").with_task(TaskId::new("t-1"));
    let held = budget
        .reserve(&who, "gpt-4o-mini", Estimate::new(1_000, 200))
        .await
        .expect("reserve");
    held.commit(Usage::new(1_000, 100)).await.expect("commit");
    let all = budget
        .ledger()
        .totals(&LedgerQuery::default())
        .await
        .expect("totals");
    assert_eq!(all[0].events, 1);
    assert_eq!(all[0].usage.total(), 1_100);
}
