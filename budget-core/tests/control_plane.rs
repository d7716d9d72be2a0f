//! The control plane's log in a SQLite ledger file: shared by every connection (every process)
//! on the file, gap-free, and each record names the decision it really replaced.

mod common;

use budget_core::control_plane::{
    Actor, AuditRecord, ControlChange, ControlLog, ControlState, ModelSwitch, SqliteControlLog,
};
use budget_core::ledger::{EventKind, Ledger, LedgerQuery, SqliteLedger};
use budget_core::{
    Amount, Attribution, BackendErrorKind, Limit, Money, Period, Selector, TaskId, Usage,
    UsageEvent, Window,
};
use common::TempDb;
use jiff::Timestamp;

fn at(ts: &str) -> Timestamp {
    ts.parse().unwrap()
}

fn replay(records: &[AuditRecord]) -> ControlState {
    let mut state = ControlState::default();
    for record in records {
        assert_eq!(
            state.apply(&record.change),
            record.replaced,
            "record {} names what it replaced",
            record.seq
        );
    }
    state
}

#[tokio::test]
async fn two_connections_share_one_gap_free_log() {
    let db = TempDb::new("control-shared");
    let (one, two) = (
        SqliteControlLog::open(db.path()).unwrap(),
        SqliteControlLog::open(db.path()).unwrap(),
    );
    let day = Limit::new(
        "support/day",
        Selector::agent("support"),
        Window::Calendar(Period::Day),
    )
    .tokens(500_000);
    one.append(
        ControlChange::SetLimit { limit: day.clone() },
        Actor::operator("ana"),
        at("2026-12-06T09:00:00Z"),
    )
    .await
    .unwrap();
    let seen = two.since(0).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].by, Actor::operator("ana"));
    assert_eq!(two.last_seq().await.unwrap(), 1);

    // Writers on both connections at once, all on the same two targets.
    let mut writers = Vec::new();
    for i in 0..40u32 {
        let log = if i % 2 == 0 { one.clone() } else { two.clone() };
        writers.push(tokio::spawn(async move {
            let change = match i % 4 {
                0 => ControlChange::pause("support"),
                1 => ControlChange::resume("support"),
                2 => ControlChange::SwitchModel {
                    agent: "research".into(),
                    to: ModelSwitch::Model("gpt-4o-mini".into()),
                },
                _ => ControlChange::ResetModel {
                    agent: "research".into(),
                },
            };
            log.append(change, Actor::rule("test"), at("2026-12-06T09:01:00Z"))
                .await
                .unwrap()
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let records = one.since(0).await.unwrap();
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=41).collect::<Vec<_>>(), "no gaps, no duplicates");
    assert_eq!(two.since(0).await.unwrap(), records);
    let state = replay(&records);
    assert_eq!(state.limit("support/day"), Some(&day));
    assert_eq!(one.since(40).await.unwrap(), records[40..]);
}

#[tokio::test]
async fn the_log_survives_a_reopen_and_lives_beside_the_ledger() {
    let db = TempDb::new("control-reopen");
    let ledger = SqliteLedger::open(db.path()).unwrap();
    let log = SqliteControlLog::open(db.path()).unwrap();
    let task = TaskId::new("t-9");
    log.append(
        ControlChange::KillTask { task: task.clone() },
        Actor::rule("runaway_detected"),
        at("2026-12-06T10:00:00Z"),
    )
    .await
    .unwrap();
    let event = UsageEvent {
        id: 1,
        at: at("2026-12-06T10:00:01Z"),
        attribution: Attribution::agent("support"),
        model: "gpt-4o-mini".into(),
        requested_model: None,
        usage: Usage::new(10, 5),
        cost: Money::ZERO,
        estimated: false,
        kind: EventKind::Call,
        saved: Amount::ZERO,
    };
    ledger.record(event).await.unwrap();
    drop((ledger, log));

    let log = SqliteControlLog::open(db.path()).unwrap();
    let records = log.since(0).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].at, at("2026-12-06T10:00:00Z"));
    assert!(replay(&records).is_killed(&task));
    let ledger = SqliteLedger::open(db.path()).unwrap();
    let totals = ledger.totals(&LedgerQuery::default()).await.unwrap();
    assert_eq!(
        totals[0].usage.total(),
        15,
        "the ledger's events are intact beside the log"
    );
}

#[tokio::test]
async fn an_unreadable_record_is_a_corrupt_error_naming_it() {
    let db = TempDb::new("control-corrupt");
    let log = SqliteControlLog::open(db.path()).unwrap();
    log.append(
        ControlChange::pause("support"),
        Actor::operator("ana"),
        at("2026-12-06T10:00:00Z"),
    )
    .await
    .unwrap();
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    conn.execute("UPDATE control_log SET change = '{\"op\":\"explode\"}'", [])
        .unwrap();
    let err = log.since(0).await.unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Corrupt);
    assert!(
        err.to_string()
            .contains("control record 1: its change cannot be read"),
        "{err}"
    );
    // Appending on the same target needs the last decision: refused the same way, not guessed.
    let err = log
        .append(
            ControlChange::resume("support"),
            Actor::operator("ana"),
            at("2026-12-06T10:01:00Z"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Corrupt);
}

#[test]
fn a_file_that_is_not_a_ledger_is_refused() {
    let db = TempDb::new("control-foreign");
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    conn.execute_batch("CREATE TABLE other (x INTEGER);")
        .unwrap();
    drop(conn);
    let err = SqliteControlLog::open(db.path()).unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Corrupt);
    assert!(
        err.to_string().contains("not a token-budget ledger"),
        "{err}"
    );
}

#[tokio::test]
async fn a_ledger_file_from_before_the_control_log_is_brought_up_to_date() {
    let db = TempDb::new("control-upgrade");
    drop(SqliteLedger::open(db.path()).unwrap());
    // What a schema-1 file looks like: the same, without the control log.
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    conn.execute_batch("DROP TABLE control_log; PRAGMA user_version = 1;")
        .unwrap();
    drop(conn);

    let log = SqliteControlLog::open(db.path()).unwrap();
    log.append(
        ControlChange::pause("support"),
        Actor::operator("ana"),
        at("2026-12-06T10:00:00Z"),
    )
    .await
    .unwrap();
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, budget_core::ledger::SQLITE_SCHEMA_VERSION);
    assert_eq!(version, 2);
}

// ---------------------------------------------------------------------------------------------
// Budgets obeying the log.

fn budget_on(db: &TempDb) -> budget_core::Budget {
    budget_core::Budget::builder()
        .control_log(SqliteControlLog::open(db.path()).unwrap())
        .build()
        .unwrap()
}

/// Waits (10 s at most) until `seen` holds for `budget`; returns how long that took.
async fn until(
    budget: &budget_core::Budget,
    what: &str,
    seen: impl Fn(&budget_core::Budget) -> bool,
) -> std::time::Duration {
    let started = std::time::Instant::now();
    while !seen(budget) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{what}: not obeyed within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_obeys_the_decisions_another_makes_on_the_same_file() {
    let db = TempDb::new("control-obey");
    let (decider, follower) = (budget_on(&db), budget_on(&db));
    let _watch = follower.watch_control(std::time::Duration::from_millis(50));
    let ops = Actor::operator("ops");

    let cap = Limit::new("support/task", Selector::agent("support"), Window::PerTask).tokens(100);
    decider.set_shared_limit(cap, ops.clone()).await.unwrap();
    let waited = until(&follower, "a shared limit", |b| {
        b.limits().get("support/task").is_some()
    })
    .await;
    println!("limit obeyed after {waited:?}");

    decider.pause_agent("writer", ops.clone()).await.unwrap();
    let waited = until(&follower, "a pause", |b| {
        b.controls().is_paused(&Attribution::agent("writer"))
    })
    .await;
    println!("pause obeyed after {waited:?}");

    let task = TaskId::new("t-1");
    decider.kill_task(&task, ops.clone()).await.unwrap();
    let waited = until(&follower, "a kill", |b| b.controls().is_cancelled(&task)).await;
    println!("kill obeyed after {waited:?}");

    decider
        .switch_model("research", ModelSwitch::Cheapest, ops.clone())
        .await
        .unwrap();
    let waited = until(&follower, "a model switch", |b| {
        b.model_switch("research") == Some(ModelSwitch::Cheapest)
    })
    .await;
    println!("switch obeyed after {waited:?}");

    // And the follower's calls are held to them.
    let support = Attribution::agent("support").with_task(TaskId::new("t-2"));
    let err = follower
        .reserve(&support, "gpt-4o-mini", budget_core::Estimate::new(80, 50))
        .await
        .unwrap_err();
    assert!(
        matches!(err, budget_core::BudgetError::ExceedsLimit(_)),
        "{err}"
    );
    let err = follower
        .reserve(
            &Attribution::agent("writer"),
            "gpt-4o-mini",
            budget_core::Estimate::new(1, 1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, budget_core::BudgetError::AgentPaused { .. }),
        "{err}"
    );
    let killed = Attribution::agent("research").with_task(task.clone());
    let err = follower
        .reserve(&killed, "gpt-4o-mini", budget_core::Estimate::new(1, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, budget_core::BudgetError::TaskCancelled { .. }),
        "{err}"
    );

    // The audit trail says who decided what, in order.
    let trail: Vec<String> = follower
        .control_records(0)
        .await
        .unwrap()
        .iter()
        .map(|r| format!("{} {}", r.by, r.change))
        .collect();
    assert_eq!(
        trail,
        [
            "operator ops set limit support/task",
            "operator ops pause agent writer",
            "operator ops kill task t-1",
            "operator ops switch agent research to the cheapest model",
        ]
    );
}

#[tokio::test]
async fn a_restarted_budget_starts_with_every_decision_in_force() {
    let db = TempDb::new("control-restart");
    {
        let before = budget_on(&db);
        before
            .pause_agent("writer", Actor::rule("daily_budget_exceeded"))
            .await
            .unwrap();
        let cap = Limit::new("all/day", Selector::Global, Window::Calendar(Period::Day)).tokens(10);
        before
            .set_shared_limit(cap, Actor::operator("ana"))
            .await
            .unwrap();
    }
    // No watcher: the log is replayed before the first call.
    let after = budget_on(&db);
    let err = after
        .reserve(
            &Attribution::agent("writer"),
            "gpt-4o-mini",
            budget_core::Estimate::new(1, 1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, budget_core::BudgetError::AgentPaused { .. }),
        "{err}"
    );
    let err = after
        .reserve(
            &Attribution::agent("support"),
            "gpt-4o-mini",
            budget_core::Estimate::new(8, 8),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, budget_core::BudgetError::ExceedsLimit(_)),
        "{err}"
    );
}

#[tokio::test]
async fn decisions_override_the_budgets_own_limits_until_reverted() {
    // The default log: this process alone.
    let own = Limit::new("all/day", Selector::Global, Window::Calendar(Period::Day)).tokens(1_000);
    let budget = budget_core::Budget::builder()
        .limit(own.clone())
        .build()
        .unwrap();
    let ops = Actor::operator("ops");
    let tighter = own.clone().tokens(10);
    budget.set_shared_limit(tighter, ops.clone()).await.unwrap();
    assert_eq!(budget.limits().get("all/day").unwrap().cap.tokens, Some(10));

    // An in-process change to the budget's own limit does not undo the decision...
    budget.set_limit(own.clone().tokens(5_000)).unwrap();
    assert_eq!(budget.limits().get("all/day").unwrap().cap.tokens, Some(10));
    // ...until the decision is reverted: then the budget's own limit is in force.
    let record = budget
        .decide(
            ControlChange::RevertLimit {
                id: "all/day".into(),
            },
            ops.clone(),
        )
        .await
        .unwrap();
    assert!(matches!(
        record.replaced,
        Some(ControlChange::SetLimit { .. })
    ));
    assert_eq!(
        budget.limits().get("all/day").unwrap().cap.tokens,
        Some(5_000)
    );

    budget
        .decide(
            ControlChange::RemoveLimit {
                id: "all/day".into(),
            },
            ops,
        )
        .await
        .unwrap();
    assert!(budget.limits().get("all/day").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_opened_from_one_configuration_watch_the_control_log_by_themselves() {
    let db = TempDb::new("control-config");
    let yaml = format!("ledger: sqlite:{}\n", db.path().display());
    let config = budget_core::config::Config::from_yaml(&yaml).unwrap();
    let (one, two) = (
        config.open_budget().await.unwrap(),
        config.open_budget().await.unwrap(),
    );
    one.pause_agent("writer", Actor::operator("ops"))
        .await
        .unwrap();
    // No sync, no watcher started here: the configured budget watches the log itself.
    let started = std::time::Instant::now();
    while !two.controls().is_paused(&Attribution::agent("writer")) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "not obeyed within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    println!("obeyed after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_decided_elsewhere_cancels_a_running_task_scope_and_its_sub_agents() {
    let db = TempDb::new("control-kill-scope");
    let (decider, runner) = (budget_on(&db), budget_on(&db));
    let _watch = runner.watch_control(std::time::Duration::from_millis(20));
    let task = TaskId::new("t-long");
    let scope =
        budget_core::scope::TaskScope::new(Attribution::agent("research").with_task(task.clone()));
    let sub_agent = scope.child(Attribution::agent("helper").with_task(TaskId::new("t-sub")));
    // The scope's first call ties it to the running budget.
    let held = runner
        .reserve_in_scope(&sub_agent, "gpt-4o-mini", 10, 10..=10)
        .await
        .unwrap();
    held.commit(Usage::new(10, 5)).await.unwrap();

    decider
        .kill_task(&task, Actor::rule("runaway_detected"))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    while !scope.cancel_token().is_cancelled() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "not cancelled in 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(
        sub_agent.cancel_token().is_cancelled(),
        "the sub-agent stops with its task"
    );
    assert!(
        sub_agent.step_boundary().is_err(),
        "a #[budgeted] loop stops at its next step"
    );
    let refused = runner
        .reserve_in_scope(&sub_agent, "gpt-4o-mini", 10, 10..=10)
        .await;
    assert!(refused.is_err());
}
