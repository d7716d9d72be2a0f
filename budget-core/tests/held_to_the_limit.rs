//! Regressions of issue 9 in the core: paths where committed spend went past a hard limit or
//! billed usage was lost on ordinary provider behaviour. Each test failed before its fix.

mod common;

use std::sync::Arc;
use std::time::Duration;

use budget_core::admission::{Amount, ReserveRequest};
use budget_core::clock::FakeClock;
use budget_core::ledger::SqliteLedger;
use budget_core::limits::{CounterKey, Values};
use budget_core::store::{CounterSpec, CounterUsage, ReserveOutcome, StoreError, Ticket};
use budget_core::{
    Attribution, Budget, BudgetError, BudgetStore, CallEstimate, CommitDetails, Estimate, Ledger,
    Limit, MemoryBudgetStore, MemoryLedger, Period, PriceTable, Selector, TaskId, Usage, Window,
};
use jiff::{SignedDuration, Timestamp};

use common::TempDir;

/// The built-in prices plus LiteLLM's separate entry for a dated snapshot, as the real price
/// file has it.
fn prices_with_a_dated_entry() -> PriceTable {
    let mut prices = PriceTable::builtin();
    prices.merge_from(
        PriceTable::from_litellm_json(
            r#"{"gpt-4o-2024-08-06": {"input_cost_per_token": 2.5e-06,
                "output_cost_per_token": 1e-05, "litellm_provider": "openai", "mode": "chat"}}"#,
        )
        .unwrap(),
    );
    prices
}

fn gpt_4o_day(tokens: u64) -> Limit {
    Limit::new(
        "gpt-4o/day",
        Selector::model("gpt-4o"),
        Window::Calendar(Period::Day),
    )
    .tokens(tokens)
}

#[tokio::test]
async fn a_model_limit_is_charged_whatever_id_the_provider_answers_with() {
    let budget = Budget::builder()
        .prices(prices_with_a_dated_entry())
        .limit(gpt_4o_day(10_000))
        .build()
        .unwrap();
    let who = Attribution::agent("writer");
    let served = CommitDetails {
        served_model: Some(Arc::from("gpt-4o-2024-08-06")),
        ..CommitDetails::default()
    };
    let mut admitted = 0;
    for _ in 0..20 {
        let Ok(held) = budget
            .reserve(&who, "gpt-4o", Estimate::new(1_000, 1_000))
            .await
        else {
            continue;
        };
        let done = held
            .commit_with(Usage::new(1_000, 1_000), served.clone())
            .await
            .unwrap();
        // The ledger keeps both ids: priced as served, asked for as reserved.
        assert_eq!(&*done.event.model, "gpt-4o-2024-08-06");
        assert_eq!(done.event.requested_model.as_deref(), Some("gpt-4o"));
        admitted += 1;
    }
    assert_eq!(admitted, 5, "5 × 2,000 tokens fill a 10,000-token limit");
    let status = budget.status().await.unwrap();
    let day = status
        .iter()
        .find(|s| &*s.limit.id == "gpt-4o/day")
        .unwrap();
    assert_eq!(day.usage.committed.tokens, 10_000);
}

#[tokio::test]
async fn a_model_limit_covers_dated_and_prefixed_ids_of_its_model_only() {
    let budget = Budget::builder()
        .prices(prices_with_a_dated_entry())
        .limit(gpt_4o_day(3_000))
        .build()
        .unwrap();
    let who = Attribution::agent("writer");
    for model in ["gpt-4o-2024-08-06", "openai/gpt-4o"] {
        budget
            .reserve(&who, model, Estimate::new(500, 500))
            .await
            .unwrap()
            .commit(Usage::new(500, 500))
            .await
            .unwrap();
    }
    // 2,000 of 3,000 used by the other names of gpt-4o: 1,500 more does not fit...
    let refused = budget
        .reserve(&who, "gpt-4o", Estimate::new(1_000, 500))
        .await
        .unwrap_err();
    assert!(matches!(refused, BudgetError::Exhausted(_)), "{refused}");
    // ...while another model is not this limit's business.
    let other = budget
        .reserve(&who, "gpt-4o-mini", Estimate::new(10_000, 500))
        .await
        .unwrap();
    other.release();
}

#[tokio::test]
async fn every_choice_is_reserved_and_the_cap_clamped_so_all_fit() {
    let budget = Budget::builder()
        .limit(Limit::new("task", Selector::agent("a"), Window::PerTask).tokens(10_000))
        .build()
        .unwrap();
    let who = Attribution::agent("a").with_task(TaskId::new("t"));
    let held = budget
        .reserve_call(
            &who,
            None,
            "gpt-4o",
            CallEstimate::new(1_000, 1..=4_000).choices(8),
        )
        .await
        .unwrap();
    // 9,000 tokens left after the prompt, shared by 8 choices.
    assert_eq!(held.granted_output(), 1_125);
    assert_eq!(held.amount().tokens, 10_000);
    assert_eq!(held.billed_at_most(), Usage::new(1_000, 9_000));
    // A provider that obeys the cap on every choice stays within the limit.
    let done = held.commit(Usage::new(1_000, 8 * 1_125)).await.unwrap();
    assert_eq!(done.event.usage.total(), 10_000);
    let status = budget.status().await.unwrap();
    assert_eq!(status[0].usage.overshoot(), Amount::ZERO);
}

#[tokio::test]
async fn a_reservation_dropped_after_the_request_was_sent_is_charged_not_released() {
    let budget = Budget::builder()
        .limit(Limit::new("task", Selector::agent("a"), Window::PerTask).tokens(1_000))
        .build()
        .unwrap();
    let who = Attribution::agent("a").with_task(TaskId::new("t"));
    let mut held = budget
        .reserve(&who, "gpt-4o", Estimate::new(100, 200))
        .await
        .unwrap();
    held.mark_sent(CommitDetails::default());
    drop(held); // a timeout, a client gone
    let events = budget.ledger().events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].usage, Usage::new(100, 200));
    assert!(events[0].estimated);
    let status = budget.status().await.unwrap();
    assert_eq!(status[0].usage.committed.tokens, 300);
    assert!(status[0].usage.reserved.is_zero());

    // Not sent: given back.
    let unsent = budget
        .reserve(&who, "gpt-4o", Estimate::new(100, 200))
        .await
        .unwrap();
    drop(unsent);
    assert_eq!(budget.ledger().events().len(), 1);
}

/// A memory store whose settles take effect at once (as the trait asks) but whose answers
/// arrive late, like a remote store's.
struct SlowToAnswer(MemoryBudgetStore);

impl BudgetStore for SlowToAnswer {
    fn reserve(
        &self,
        counters: &[CounterSpec],
        request: &ReserveRequest,
        now: Timestamp,
    ) -> impl Future<Output = Result<ReserveOutcome, StoreError>> + Send {
        self.0.reserve(counters, request, now)
    }

    fn settle(
        &self,
        ticket: Ticket,
        counters: &[CounterSpec],
        actual: Amount,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<CounterUsage>, StoreError>> + Send {
        let usages = self.0.settle_now(ticket, counters, actual, now);
        async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(usages)
        }
    }

    fn release(&self, ticket: Ticket) {
        self.0.release(ticket);
    }

    fn usage(
        &self,
        counters: &[CounterSpec],
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<CounterUsage>, StoreError>> + Send {
        self.0.usage(counters, now)
    }

    fn snapshot(
        &self,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<(CounterKey, CounterUsage)>, StoreError>> + Send {
        self.0.snapshot(now)
    }

    fn forget_task(&self, task: &TaskId) {
        self.0.forget_task(task);
    }
}

#[tokio::test]
async fn a_commit_cancelled_half_way_still_records_what_it_settled() {
    let budget = Budget::builder()
        .store(SlowToAnswer(MemoryBudgetStore::new()))
        .limit(Limit::new("day", Selector::Global, Window::Calendar(Period::Day)).tokens(10_000))
        .build()
        .unwrap();
    let who = Attribution::agent("a");
    let held = budget
        .reserve(&who, "gpt-4o", Estimate::new(100, 200))
        .await
        .unwrap();
    // The caller gives up while the store's answer is on its way.
    let gave_up =
        tokio::time::timeout(Duration::from_millis(20), held.commit(Usage::new(100, 50))).await;
    assert!(gave_up.is_err(), "the commit was still waiting");
    let events = budget.ledger().events();
    assert_eq!(events.len(), 1, "the store counted it, so must the ledger");
    assert_eq!(events[0].usage, Usage::new(100, 50));
    let status = budget.status().await.unwrap();
    assert_eq!(status[0].usage.committed.tokens, 150);
    assert!(status[0].usage.reserved.is_zero());

    // A commit future dropped before it was ever polled is not lost either.
    let held = budget
        .reserve(&who, "gpt-4o", Estimate::new(10, 20))
        .await
        .unwrap();
    drop(held.commit(Usage::new(10, 5)));
    assert_eq!(budget.ledger().events().len(), 2);
    budget.flush().await.unwrap();
    let status = budget.status().await.unwrap();
    assert_eq!(status[0].usage.committed.tokens, 165);
}

#[tokio::test]
async fn a_record_dropped_unpolled_is_recorded() {
    let budget = Budget::builder().build().unwrap();
    drop(budget.record(
        &Attribution::agent("a"),
        "gpt-4o",
        Usage::new(10, 10),
        CommitDetails::default(),
    ));
    assert_eq!(budget.ledger().events().len(), 1);
}

fn daily(
    clock: &FakeClock,
    ledger: SqliteLedger,
) -> budget_core::BudgetBuilder<MemoryBudgetStore, SqliteLedger> {
    Budget::builder()
        .clock(clock.clone())
        .limit(Limit::new("day", Selector::agent("a"), Window::Calendar(Period::Day)).tokens(2_000))
        .limit(
            Limit::new(
                "hour",
                Selector::Agent(Values::Each),
                Window::Rolling(SignedDuration::from_hours(1)),
            )
            .tokens(50_000),
        )
        .ledger(ledger)
}

/// A first run of a process on a fresh ledger file: agent "a" spends `input` + `output` at
/// 10:00, and the process stops. Returns the directory (removed when dropped), the ledger's
/// path and the clock.
async fn first_run(
    test: &str,
    input: u64,
    output: u64,
) -> (TempDir, std::path::PathBuf, FakeClock) {
    let dir = TempDir::new(test);
    std::fs::create_dir_all(dir.path()).unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let clock = FakeClock::at("2026-12-06T10:00:00Z".parse().unwrap());
    let first = daily(&clock, SqliteLedger::open(&path).unwrap())
        .build()
        .unwrap();
    first
        .reserve(
            &Attribution::agent("a"),
            "gpt-4o",
            Estimate::new(input, output),
        )
        .await
        .unwrap()
        .commit(Usage::new(input, output))
        .await
        .unwrap();
    first.flush().await.unwrap();
    (dir, path, clock)
}

#[tokio::test]
async fn a_restart_on_a_durable_ledger_keeps_the_day_without_being_asked() {
    let (_dir, path, clock) = first_run("restart-by-default", 996, 996).await;
    let who = Attribution::agent("a");

    // The process starts again, an hour later: the same 1,992 tokens must not fit twice.
    clock.advance(SignedDuration::from_mins(5));
    let second = daily(&clock, SqliteLedger::open(&path).unwrap())
        .build()
        .unwrap();
    let refused = second
        .reserve(&who, "gpt-4o", Estimate::new(996, 996))
        .await
        .unwrap_err();
    assert!(matches!(refused, BudgetError::Exhausted(_)), "{refused}");
    let status = second.status().await.unwrap();
    let hour = status.iter().find(|s| &*s.limit.id == "hour").unwrap();
    assert_eq!(hour.usage.committed.tokens, 1_992, "the rolling hour too");
    assert_eq!(second.restore_from_ledger().await.unwrap(), 0, "once");
    drop(second);

    // The opt-out is explicit.
    let fresh = daily(&clock, SqliteLedger::open(&path).unwrap())
        .restore_windows(false)
        .build()
        .unwrap();
    fresh
        .reserve(&who, "gpt-4o", Estimate::new(996, 996))
        .await
        .unwrap()
        .release();
}

#[tokio::test]
async fn an_in_memory_ledger_is_not_restored_from() {
    let ledger = MemoryLedger::new();
    assert!(!ledger.is_durable());
    let budget = Budget::builder().ledger(ledger).build().unwrap();
    assert_eq!(budget.restore_from_ledger().await.unwrap(), 0);
}

#[tokio::test]
async fn a_status_line_reads_as_a_sentence() {
    let clock = FakeClock::at("2026-12-06T10:00:00Z".parse().unwrap());
    let budget = Budget::builder()
        .clock(clock)
        .limit(
            Limit::new(
                "research/day",
                Selector::agent("researcher"),
                Window::Calendar(Period::Day),
            )
            .tokens(50_000),
        )
        .build()
        .unwrap();
    let who = Attribution::agent("researcher");
    budget
        .reserve(&who, "gpt-4o", Estimate::new(10_000, 2_400))
        .await
        .unwrap()
        .commit(Usage::new(10_000, 2_400))
        .await
        .unwrap();
    let _in_flight = budget
        .reserve(&who, "gpt-4o", Estimate::new(1_000, 200))
        .await
        .unwrap();
    let status = budget.status().await.unwrap();
    let (spent, held) = (
        status[0].usage.committed.money,
        status[0].usage.reserved.money,
    );
    assert_eq!(
        status[0].to_string(),
        format!(
            "research/day (researcher): 12400 tokens / {spent} of 50000 tokens (27% used), \
             1200 tokens / {held} reserved by 1 calls in flight, until 2026-12-07T00:00:00Z"
        )
    );
}

/// A clock that can be moved to the end of time, where no calendar day can be computed.
#[derive(Debug, Clone, Default)]
struct EndOfTime(Arc<std::sync::atomic::AtomicBool>);

impl budget_core::clock::Clock for EndOfTime {
    fn now(&self) -> Timestamp {
        if self.0.load(std::sync::atomic::Ordering::SeqCst) {
            Timestamp::MAX
        } else {
            "2026-12-06T10:00:00Z".parse().unwrap()
        }
    }
}

/// Suspected in issue 9: a ticket dropped unreleased when the counters cannot be found at
/// commit. Before, the commit returned the window error and the reservation stayed held for
/// good; now the counters reserved on are charged.
#[tokio::test]
async fn a_commit_whose_window_cannot_be_computed_still_settles_its_reservation() {
    let clock = EndOfTime::default();
    let budget = Budget::builder()
        .clock(clock.clone())
        .limit(Limit::new("day", Selector::Global, Window::Calendar(Period::Day)).tokens(10_000))
        .build()
        .unwrap();
    let held = budget
        .reserve(&Attribution::agent("a"), "gpt-4o", Estimate::new(100, 200))
        .await
        .unwrap();
    clock.0.store(true, std::sync::atomic::Ordering::SeqCst);
    held.commit(Usage::new(100, 50)).await.unwrap();
    let counters = budget.store().snapshot_now(Timestamp::MIN);
    assert_eq!(counters.len(), 1, "{counters:?}");
    assert!(counters[0].1.reserved.is_zero(), "{counters:?}");
    assert_eq!(counters[0].1.committed.tokens, 150);
}

#[tokio::test]
async fn a_status_asked_first_after_a_restart_shows_the_restored_day() {
    let (_dir, path, clock) = first_run("restart-status", 500, 500).await;
    let second = daily(&clock, SqliteLedger::open(&path).unwrap())
        .build()
        .unwrap();
    let status = second.status().await.unwrap();
    let day = status.iter().find(|s| &*s.limit.id == "day").unwrap();
    assert_eq!(day.usage.committed.tokens, 1_000);
}
