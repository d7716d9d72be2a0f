//! Limits that change while a budget runs, task scopes nested in each other, and cancelling a
//! task tree from outside (issue #9: items 4, 6 and 7, and the nested-scope suspicions).

mod common;

use budget_core::clock::FakeClock;
use budget_core::limits::LimitError;
use budget_core::{
    Attribution, Budget, BudgetError, CommitDetails, Estimate, Limit, Period, Selector, Usage,
    Window,
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
