//! A restart does not reset the day's budget: spend, stop, start again on the same SQLite
//! ledger file, restore, and the windows hold what they held.

use budget_core::clock::FakeClock;
use budget_core::ledger::SqliteLedger;
use budget_core::limits::Values;
use budget_core::{
    Attribution, Budget, BudgetStore, Estimate, Limit, MemoryBudgetStore, Money, Period, Selector,
    TaskId, Usage, Window,
};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

fn limits() -> Vec<Limit> {
    vec![
        Limit::new(
            "global/day",
            Selector::Global,
            Window::Calendar(Period::Day),
        )
        .tokens(1_000_000),
        Limit::new(
            "agent/day",
            Selector::Agent(Values::Each),
            Window::Calendar(Period::Day),
        )
        .tokens(20_000),
        Limit::new(
            "researcher/month",
            Selector::agent("researcher"),
            Window::Calendar(Period::Month),
        )
        .money(Money::from_dollars(5)),
        Limit::new(
            "user/day",
            Selector::User(Values::Each),
            Window::Calendar(Period::Day),
        )
        .tokens(9_000),
        Limit::new("task", Selector::Agent(Values::Each), Window::PerTask).tokens(50_000),
    ]
}

fn budget(path: &std::path::Path, clock: &FakeClock) -> Budget<MemoryBudgetStore, SqliteLedger> {
    restoring(path, clock, true)
}

/// A budget on the ledger at `path`, restoring its windows from it by itself or not.
fn restoring(
    path: &std::path::Path,
    clock: &FakeClock,
    restore: bool,
) -> Budget<MemoryBudgetStore, SqliteLedger> {
    Budget::builder()
        .clock(clock.clone())
        .time_zone(TimeZone::get("America/New_York").unwrap())
        .limits(limits())
        .ledger(SqliteLedger::open(path).unwrap())
        .restore_windows(restore)
        .build()
        .unwrap()
}

async fn spend(
    budget: &Budget<MemoryBudgetStore, SqliteLedger>,
    agent: &str,
    user: &str,
    input: u64,
    output: u64,
) {
    let who = Attribution::agent(agent)
        .with_user(user)
        .with_task(TaskId::generate());
    let held = budget
        .reserve(&who, "gpt-4o", Estimate::new(input, output))
        .await
        .unwrap();
    held.commit(Usage::new(input, output)).await.unwrap();
}

/// Every counter of a current window, as (limit, scope, committed tokens, committed money).
async fn windows(
    budget: &Budget<MemoryBudgetStore, SqliteLedger>,
) -> Vec<(String, String, u64, Money)> {
    let mut out: Vec<_> = budget
        .status()
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.task.is_none() && !s.usage.committed.is_zero())
        .map(|s| {
            (
                s.limit.id.to_string(),
                s.scope.to_string(),
                s.usage.committed.tokens,
                s.usage.committed.money,
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_restart_keeps_the_days_spend() {
    let path = std::env::temp_dir().join(format!("token-budget-restart-{}.db", TaskId::generate()));
    let start: Timestamp = "2026-11-29T14:00:00-05:00".parse().unwrap();
    let clock = FakeClock::at(start);

    let (before, remaining_before) = {
        let budget = budget(&path, &clock);
        // Yesterday's spend belongs to yesterday's window: it must not come back as today's.
        clock.set(start - SignedDuration::from_hours(24));
        spend(&budget, "researcher", "alice", 4_000, 1_000).await;
        clock.set(start);
        spend(&budget, "researcher", "alice", 3_000, 500).await;
        spend(&budget, "researcher", "bob", 2_000, 700).await;
        spend(&budget, "writer", "alice", 1_200, 300).await;
        let who = Attribution::agent("researcher").with_user("alice");
        let remaining = budget.remaining(&who, "gpt-4o", 100).await.unwrap();
        (windows(&budget).await, remaining)
    }; // the process "stops": the ledger file is closed

    // Told not to restore by itself, a fresh store knows nothing until asked to.
    let manual = restoring(&path, &clock, false);
    assert!(
        windows(&manual).await.is_empty(),
        "a fresh store knows nothing yet"
    );
    let restored = manual.restore_from_ledger().await.unwrap();
    assert!(restored >= 6, "restored {restored} counters");
    assert_eq!(
        windows(&manual).await,
        before,
        "the same windows hold the same spend"
    );
    drop(manual);

    // By default it restores before its first use (here: a status query), once.
    let budget = budget(&path, &clock);
    assert_eq!(
        windows(&budget).await,
        before,
        "the same windows hold the same spend"
    );
    assert_eq!(
        budget.restore_from_ledger().await.unwrap(),
        0,
        "already done"
    );
    let who = Attribution::agent("researcher").with_user("alice");
    assert_eq!(
        budget.remaining(&who, "gpt-4o", 100).await.unwrap(),
        remaining_before
    );

    // And the restored budget still says no where the old one would have.
    let user_left = 9_000 - (3_000 + 500 + 1_200 + 300);
    let err = budget
        .reserve(&who, "gpt-4o", Estimate::new(user_left, 1))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("user/day"), "{err}");
    assert!(
        budget
            .store()
            .snapshot(budget.now())
            .await
            .unwrap()
            .iter()
            .all(|(_, u)| u.reserved.is_zero())
    );
    drop(budget);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}
