//! Limits that change while a budget runs, task scopes nested in each other, and cancelling a
//! task tree from outside (issue #9: items 4, 6 and 7, and the nested-scope suspicions).

mod common;

use budget_core::clock::FakeClock;
use budget_core::limits::LimitError;
use budget_core::scope::TaskScope;
use budget_core::{
    Attribution, Budget, BudgetError, BudgetStore, CommitDetails, Estimate, Limit, Period,
    Selector, TaskId, Usage, Window,
};
use common::ready;
use jiff::{SignedDuration, Timestamp};

const MODEL: &str = "gpt-4o";

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn budget_at(clock: &FakeClock, limit: Limit) -> Budget {
    Budget::builder()
        .clock(clock.clone())
        .limit(limit)
        .build()
        .unwrap()
}

fn spend(budget: &Budget, who: &Attribution, tokens: u64) {
    ready(budget.record(who, MODEL, Usage::new(tokens, 0), CommitDetails::default())).unwrap();
}

/// Whether a call of `tokens` would be admitted now (the reservation is given back at once).
fn fits(budget: &Budget, who: &Attribution, tokens: u64) -> bool {
    match ready(budget.reserve(who, MODEL, Estimate::new(tokens, 0))) {
        Ok(held) => {
            held.release();
            true
        }
        Err(BudgetError::Exhausted(_)) => false,
        Err(other) => panic!("unexpected refusal: {other}"),
    }
}

fn rolling(minutes: i64) -> Limit {
    Limit::new(
        "a/rolling",
        Selector::agent("a"),
        Window::Rolling(SignedDuration::from_mins(minutes)),
    )
    .tokens(1_000)
}

fn calendar(period: Period) -> Limit {
    Limit::new("a/calendar", Selector::agent("a"), Window::Calendar(period)).tokens(1_000)
}

// ---- item 4: duplicate limit ids -------------------------------------------------------------

#[test]
fn duplicate_limit_ids_fail_the_build() {
    let err = Budget::builder()
        .limit(Limit::new("same", Selector::Global, Window::PerTask).tokens(10))
        .limit(Limit::new("same", Selector::agent("a"), Window::PerTask).tokens(1_000_000))
        .build()
        .unwrap_err();
    assert_eq!(err, LimitError::DuplicateId("same".into()));
    let err = budget_core::limits::LimitSet::new([
        Limit::new("x", Selector::Global, Window::PerTask).tokens(1),
        Limit::new("x", Selector::Global, Window::PerTask).tokens(2),
    ])
    .unwrap_err();
    assert!(err.to_string().contains("\"x\""), "{err}");
}

// ---- item 7: a limit's window changes under set_limit -----------------------------------------

#[test]
fn lengthening_a_rolling_window_keeps_its_usage() {
    let clock = FakeClock::at(ts("2026-12-01T10:00:00Z"));
    let budget = budget_at(&clock, rolling(60));
    let who = Attribution::agent("a");
    spend(&budget, &who, 900);
    clock.advance(SignedDuration::from_mins(5));
    // 60 min in 60 slots of 1 min becomes 90 min in slots of 90 s: the numbering changes.
    budget.set_limit(rolling(90)).unwrap();
    assert!(!fits(&budget, &who, 900), "900 + 900 under a 1,000 cap");
    assert!(fits(&budget, &who, 100));
    // The 900 leave the 90-minute window after 90 minutes (plus at most a slot), not before.
    clock.set(ts("2026-12-01T11:29:00Z"));
    assert!(!fits(&budget, &who, 900));
    clock.set(ts("2026-12-01T11:32:00Z"));
    assert!(
        fits(&budget, &who, 900),
        "the usage ages out of the new window"
    );
}

#[test]
fn shortening_a_rolling_window_keeps_its_recent_usage_and_rounds_late() {
    let clock = FakeClock::at(ts("2026-12-01T10:00:30Z"));
    let budget = budget_at(&clock, rolling(60));
    let who = Attribution::agent("a");
    spend(&budget, &who, 900);
    clock.advance(SignedDuration::from_mins(10));
    budget.set_limit(rolling(30)).unwrap();
    assert!(
        !fits(&budget, &who, 900),
        "spent 10 minutes ago: inside 30 minutes"
    );
    // Spent at 10:00:30, counted in the one-minute slot 10:00-10:01. Placed at the latest
    // instant it may have happened (10:00:59), it is in the 30 s slot 10:00:30-10:01 and
    // leaves with it at 10:30:30; placed at the earliest, it would leave at 10:30.
    clock.set(ts("2026-12-01T10:30:15Z"));
    assert!(!fits(&budget, &who, 900), "released early");
    clock.set(ts("2026-12-01T10:31:30Z"));
    assert!(fits(&budget, &who, 900));
}

#[test]
fn a_window_changed_back_and_forth_keeps_its_usage() {
    let clock = FakeClock::at(ts("2026-12-01T10:00:00Z"));
    let budget = budget_at(&clock, rolling(60));
    let who = Attribution::agent("a");
    spend(&budget, &who, 400);
    budget.set_limit(rolling(120)).unwrap();
    spend(&budget, &who, 400);
    budget.set_limit(rolling(60)).unwrap();
    assert!(!fits(&budget, &who, 300));
    assert!(fits(&budget, &who, 200));
}

#[test]
fn a_window_change_first_seen_by_another_agent_keeps_every_agents_usage() {
    let clock = FakeClock::at(ts("2026-12-01T10:00:00Z"));
    let each = |minutes| {
        Limit::new(
            "each/rolling",
            Selector::Agent(budget_core::limits::Values::Each),
            Window::Rolling(SignedDuration::from_mins(minutes)),
        )
        .tokens(1_000)
    };
    let budget = budget_at(&clock, each(60));
    let (a, b) = (Attribution::agent("a"), Attribution::agent("b"));
    spend(&budget, &a, 900);
    let in_flight = ready(budget.reserve(&a, MODEL, Estimate::new(50, 0))).unwrap();
    budget.set_limit(each(90)).unwrap();
    assert!(fits(&budget, &b, 1_000), "b has spent nothing");
    ready(in_flight.commit(Usage::new(50, 0))).unwrap();
    // Exactly 950: the reservation made before the change is not counted twice.
    assert!(fits(&budget, &a, 50));
    assert!(!fits(&budget, &a, 51));
}

#[test]
fn changing_a_calendar_period_carries_the_usage() {
    // Day to hour: the day's usage may all have been this hour; it counts in it.
    let clock = FakeClock::at(ts("2026-12-01T10:20:00Z"));
    let budget = budget_at(&clock, calendar(Period::Day));
    let who = Attribution::agent("a");
    spend(&budget, &who, 900);
    budget.set_limit(calendar(Period::Hour)).unwrap();
    assert!(
        !fits(&budget, &who, 900),
        "900 + 900 under a 1,000 hourly cap"
    );
    clock.set(ts("2026-12-01T11:00:00Z"));
    assert!(fits(&budget, &who, 900), "a new hour starts empty");

    // Hour to day: this hour's usage is part of today's.
    let clock = FakeClock::at(ts("2026-12-01T10:20:00Z"));
    let budget = budget_at(&clock, calendar(Period::Hour));
    spend(&budget, &who, 900);
    budget.set_limit(calendar(Period::Day)).unwrap();
    assert!(!fits(&budget, &who, 900));
    clock.set(ts("2026-12-01T15:00:00Z"));
    assert!(!fits(&budget, &who, 900), "still the same day");
    clock.set(ts("2026-12-02T00:00:00Z"));
    assert!(fits(&budget, &who, 900));
}

#[test]
fn switching_between_rolling_and_calendar_windows_carries_the_usage() {
    let clock = FakeClock::at(ts("2026-12-01T10:20:00Z"));
    let limit = |window| Limit::new("a/switch", Selector::agent("a"), window).tokens(1_000);
    let budget = budget_at(
        &clock,
        limit(Window::Rolling(SignedDuration::from_mins(60))),
    );
    let who = Attribution::agent("a");
    spend(&budget, &who, 900);
    budget
        .set_limit(limit(Window::Calendar(Period::Hour)))
        .unwrap();
    assert!(
        !fits(&budget, &who, 900),
        "rolling to calendar lost the usage"
    );
    clock.advance(SignedDuration::from_mins(5));
    budget
        .set_limit(limit(Window::Rolling(SignedDuration::from_mins(60))))
        .unwrap();
    assert!(
        !fits(&budget, &who, 900),
        "calendar to rolling lost the usage"
    );
}

#[test]
fn changing_a_cap_keeps_the_usage_of_every_window_kind() {
    let clock = FakeClock::at(ts("2026-12-01T10:20:00Z"));
    for limit in [rolling(60), calendar(Period::Day)] {
        let budget = budget_at(&clock, limit.clone());
        let who = Attribution::agent("a");
        spend(&budget, &who, 900);
        budget.set_limit(limit.clone().tokens(1_500)).unwrap();
        assert!(!fits(&budget, &who, 700), "{}", limit.window);
        assert!(fits(&budget, &who, 600), "{}", limit.window);
    }
}

// ---- nested scopes that reuse their parent's task id -------------------------------------------

fn scope(agent: &str, task: &str, tokens: u64, parent: Option<&TaskScope>) -> TaskScope {
    TaskScope::builder(Attribution::agent(agent).with_task(TaskId::new(task)))
        .tokens(tokens)
        .runaway(budget_core::runaway::RunawayConfig::disabled())
        .parent(parent.cloned())
        .build()
}

fn spend_in(budget: &Budget, scope: &TaskScope, tokens: u64) -> Result<(), BudgetError> {
    let held = ready(budget.reserve_in_scope(scope, MODEL, tokens, 0..=0))?;
    ready(held.commit(Usage::new(tokens, 0)))?;
    Ok(())
}

#[test]
fn a_nested_scope_with_its_parents_task_id_counts_once() {
    let budget = Budget::builder().build().unwrap();
    let parent = scope("lead", "same-id", 1_000, None);
    let child = scope("helper", "same-id", 1_000, Some(&parent));
    spend_in(&budget, &child, 400).unwrap();
    // 400 spent in all: the parent has 600 left, not 200.
    spend_in(&budget, &parent, 600).expect("the child's 400 were counted twice");
    assert!(spend_in(&budget, &parent, 1).is_err());
}

#[test]
fn a_nested_scope_with_its_parents_task_id_keeps_its_own_cap() {
    let budget = Budget::builder().build().unwrap();
    let parent = scope("lead", "same-cap", 1_000, None);
    let child = scope("helper", "same-cap", 300, Some(&parent));
    spend_in(&budget, &child, 250).unwrap();
    let err = ready(budget.reserve_in_scope(&child, MODEL, 100, 0..=0)).unwrap_err();
    assert!(
        matches!(&err, BudgetError::Exhausted(d) if d.cap.tokens == Some(300)),
        "{err}"
    );
    // A second helper under the same id gets its own 300.
    drop(child);
    let again = scope("helper", "same-cap", 300, Some(&parent));
    spend_in(&budget, &again, 300).unwrap();
}

#[test]
fn a_nested_scope_ending_does_not_wipe_its_parents_counter() {
    let budget = Budget::builder().build().unwrap();
    let parent = scope("lead", "kept", 1_000, None);
    spend_in(&budget, &parent, 100).unwrap();
    let child = scope("helper", "kept", 1_000, Some(&parent));
    spend_in(&budget, &child, 400).unwrap();
    drop(child);
    // 500 spent: 600 more would cross the parent's cap.
    let err = ready(budget.reserve_in_scope(&parent, MODEL, 600, 0..=0)).unwrap_err();
    assert!(
        matches!(&err, BudgetError::Exhausted(d) if &*d.limit == "task:kept"),
        "{err}"
    );
    // And a cancel of the task still reaches the parent after the child is gone.
    budget.controls().cancel_task(&TaskId::new("kept"));
    assert!(matches!(
        parent.step_boundary(),
        Err(BudgetError::TaskCancelled { .. })
    ));
}

// ---- item 6: cancelling a task that only delegates ---------------------------------------------

fn orchestrator(task: &str) -> TaskScope {
    TaskScope::builder(Attribution::agent("orchestrator").with_task(TaskId::new(task)))
        .runaway(budget_core::runaway::RunawayConfig::disabled())
        .build()
}

#[test]
fn cancelling_an_orchestrator_that_only_delegates_stops_its_tree() {
    let budget = Budget::builder().build().unwrap();
    let orch = orchestrator("orch-after");
    let sub = orch.child(Attribution::agent("researcher"));
    let grand = sub.child(Attribution::agent("fetcher"));
    orch.step_boundary().unwrap();
    spend_in(&budget, &grand, 10).unwrap();
    // Only the grandchild ever reserved.
    budget.controls().cancel_task(orch.task());
    assert!(matches!(
        orch.step_boundary(),
        Err(BudgetError::TaskCancelled { task }) if task == *orch.task()
    ));
    assert!(sub.is_cancelled() && grand.is_cancelled());
    assert!(matches!(
        spend_in(&budget, &grand, 10),
        Err(BudgetError::TaskCancelled { .. })
    ));
    // A sub-agent started after the cancel is cancelled from the start.
    let late = orch.child(Attribution::agent("late"));
    assert!(late.step_boundary().is_err());
    assert!(budget.controls().is_cancelled(orch.task()));
}

#[test]
fn cancelling_before_the_first_reserve_stops_the_first_call_and_the_tree() {
    let budget = Budget::builder().build().unwrap();
    let orch = orchestrator("orch-before");
    budget.controls().cancel_task(orch.task());
    let sub = orch.child(Attribution::agent("researcher"));
    sub.step_boundary().unwrap(); // nothing has reached the budget yet
    let err = spend_in(&budget, &sub, 10).unwrap_err();
    assert!(matches!(err, BudgetError::TaskCancelled { .. }), "{err}");
    assert!(budget.ledger().events().is_empty(), "a call was admitted");
    assert!(orch.step_boundary().is_err(), "the orchestrator goes on");
    assert!(sub.step_boundary().is_err());
}

#[test]
fn cancelling_a_sub_agent_leaves_its_orchestrator_running() {
    let budget = Budget::builder().build().unwrap();
    let orch = orchestrator("orch-sibling");
    let a = orch.child(Attribution::agent("a"));
    let b = orch.child(Attribution::agent("b"));
    spend_in(&budget, &a, 10).unwrap();
    spend_in(&budget, &b, 10).unwrap();
    budget.controls().cancel_task(a.task());
    assert!(a.step_boundary().is_err());
    assert!(orch.step_boundary().is_ok());
    spend_in(&budget, &b, 10).unwrap();
}

// ---- growth: parents that never reserve ------------------------------------------------------

#[test]
fn finished_orchestrators_leave_no_counters_or_controls_behind() {
    let budget = Budget::builder()
        .limit(Limit::new("per-task", Selector::Global, Window::PerTask).tokens(1_000_000))
        .build()
        .unwrap();
    for i in 0..200 {
        let orch = scope("orchestrator", &format!("orch-{i}"), 100_000, None);
        for j in 0..3 {
            let sub = scope("sub", &format!("orch-{i}/sub-{j}"), 1_000, Some(&orch));
            spend_in(&budget, &sub, 10).unwrap();
        }
        if i % 2 == 0 {
            budget.controls().cancel_task(orch.task());
        }
    }
    let left = ready(budget.store().snapshot(budget.now())).unwrap();
    let per_task: Vec<_> = left.iter().filter(|(k, _)| k.task.is_some()).collect();
    assert!(
        per_task.is_empty(),
        "{} left, e.g. {:?}",
        per_task.len(),
        per_task[0].0
    );
    assert_eq!(budget.controls().tracked_tasks(), 0);
}

#[test]
fn cancels_of_tasks_that_never_come_are_bounded() {
    let budget = Budget::builder().build().unwrap();
    for i in 0..(budget_core::controls::PENDING_CANCELS + 500) {
        budget
            .controls()
            .cancel_task(&TaskId::new(format!("ghost-{i}")));
    }
    assert!(budget.controls().tracked_tasks() <= budget_core::controls::PENDING_CANCELS);
    // The most recent ones are still kept.
    let last = budget_core::controls::PENDING_CANCELS + 499;
    assert!(
        budget
            .controls()
            .is_cancelled(&TaskId::new(format!("ghost-{last}")))
    );
}

#[test]
fn sub_agents_binding_their_orchestrator_at_once_bind_it_once() {
    let budget = Budget::builder().build().unwrap();
    for round in 0..50 {
        let orch = scope("orchestrator", &format!("race-{round}"), 1_000_000, None);
        let start = std::sync::Arc::new(std::sync::Barrier::new(4));
        let workers: Vec<_> = (0..4)
            .map(|i| {
                let (budget, orch, start) = (budget.clone(), orch.clone(), start.clone());
                std::thread::spawn(move || {
                    let sub = scope("sub", &format!("race-{round}/{i}"), 1_000, Some(&orch));
                    start.wait();
                    spend_in(&budget, &sub, 10).unwrap();
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        budget.controls().cancel_task(orch.task());
        assert!(orch.is_cancelled());
    }
    // Every orchestrator was bound once, and unbound when it ended.
    assert_eq!(budget.controls().tracked_tasks(), 0);
    let left = ready(budget.store().snapshot(budget.now())).unwrap();
    assert!(left.iter().all(|(k, _)| k.task.is_none()), "{left:?}");
}
