//! What a call asks for, and which counters it is held to: a pure function of the limits, the
//! prices and the time, shared by reserving, `remaining` and `pressure` (and by commits whose
//! reserved counters went stale), so that they can never disagree about which limits apply.

use std::ops::RangeInclusive;
use std::sync::Arc;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use parking_lot::RwLock;

use super::error::{BudgetError, window_error};
use crate::admission::{Amount, ReserveRequest};
use crate::attribution::Attribution;
use crate::limits::{CounterKey, LimitSet, Period, Window, WindowSpan};
use crate::pricing::PriceTable;
use crate::scope::TaskScope;
use crate::store::CounterSpec;

/// What a call may use at most: the exact prompt tokens and the output cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Estimate {
    /// Prompt tokens (counted exactly, or estimated for non-OpenAI models).
    pub input_tokens: u64,
    /// The most output the call may produce (the request's `max_tokens`).
    pub max_output_tokens: u64,
}

impl Estimate {
    /// An estimate.
    pub const fn new(input_tokens: u64, max_output_tokens: u64) -> Estimate {
        Estimate {
            input_tokens,
            max_output_tokens,
        }
    }

    /// Input plus output cap, saturating.
    pub const fn total(&self) -> u64 {
        self.input_tokens.saturating_add(self.max_output_tokens)
    }
}

/// What one provider call asks to reserve: its prompt, the output caps it can be sent with, and
/// how many choices (`n`) it asks the provider for.
///
/// The output cap applies to *each* choice, so a call of `n` choices may produce `n` times the
/// cap: it is reserved as `input_tokens + choices × cap`, and the cap granted is the largest
/// that fits that way on every limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEstimate {
    /// Prompt tokens (counted exactly, or estimated for non-OpenAI models).
    pub input_tokens: u64,
    /// The output cap per choice: at least `start()`, at most `end()`.
    pub output: RangeInclusive<u64>,
    /// Choices asked for (`n`); 0 is taken as 1.
    pub choices: u32,
}

impl CallEstimate {
    /// One choice, with an output cap between `output.start()` and `output.end()`.
    pub fn new(input_tokens: u64, output: RangeInclusive<u64>) -> CallEstimate {
        CallEstimate {
            input_tokens,
            output,
            choices: 1,
        }
    }

    /// The same call asking for `choices` choices.
    pub fn choices(self, choices: u32) -> CallEstimate {
        CallEstimate { choices, ..self }
    }

    /// Choices as counted: 0 is 1.
    pub(super) fn choice_count(&self) -> u64 {
        u64::from(self.choices.max(1))
    }
}

/// The current window of each kind a budget counts in, cut in its time zone.
///
/// Calendar windows are remembered per period, so that the hot path does not convert time
/// zones on every call; the memo never changes an answer.
#[derive(Debug)]
pub(super) struct Windows {
    time_zone: TimeZone,
    calendar: [RwLock<Option<(Timestamp, Timestamp)>>; 4],
}

impl Windows {
    pub(super) fn new(time_zone: TimeZone) -> Windows {
        Windows {
            time_zone,
            calendar: Default::default(),
        }
    }

    pub(super) fn time_zone(&self) -> &TimeZone {
        &self.time_zone
    }

    /// The span of `window` that holds `now`.
    pub(super) fn span(&self, window: &Window, now: Timestamp) -> Result<WindowSpan, BudgetError> {
        let Window::Calendar(period) = *window else {
            return window
                .span(now, &self.time_zone)
                .map_err(|e| window_error(Period::Day, e));
        };
        let slot = &self.calendar[period as usize];
        if let Some((start, end)) = *slot.read()
            && start <= now
            && now < end
        {
            return Ok(WindowSpan::Calendar { start, end });
        }
        let (start, end) = period
            .bounds(now, &self.time_zone)
            .map_err(|e| window_error(period, e))?;
        *slot.write() = Some((start, end));
        Ok(WindowSpan::Calendar { start, end })
    }
}

/// Everything a budget plans from, at one instant.
pub(super) struct Planner<'a> {
    pub(super) limits: &'a LimitSet,
    pub(super) prices: &'a PriceTable,
    pub(super) windows: &'a Windows,
    pub(super) now: Timestamp,
}

/// One call, planned: the model as priced, what it asks to reserve, and the counters it is
/// held to.
#[derive(Debug)]
pub(super) struct Plan {
    /// The model as the price table names it.
    pub(super) model: Arc<str>,
    /// The prompt as the fixed part, one output token (for every choice) as the unit.
    pub(super) request: ReserveRequest,
    /// The counter of every limit that applies to the call in its current window, then the
    /// task scope's own counters (and its parents').
    pub(super) counters: Vec<CounterSpec>,
    /// Where the scope's counters start in `counters`.
    scoped_from: usize,
}

impl Plan {
    /// The counters of the task scope's own limits and its parents'.
    pub(super) fn scoped(&self) -> &[CounterSpec] {
        &self.counters[self.scoped_from..]
    }

    /// The counters that can refuse a call: those of hard limits.
    pub(super) fn into_hard_counters(self) -> Vec<CounterSpec> {
        self.counters.into_iter().filter(|s| s.is_hard()).collect()
    }
}

impl Planner<'_> {
    /// Plans a call by `who` to `model`, made in `scope` when given.
    ///
    /// The worst-case cost is linear in the output for a given prompt (the prompt fixes the
    /// price tier), so one output token's price is the difference of two evaluations.
    pub(super) fn plan(
        &self,
        who: &Attribution,
        scope: Option<&TaskScope>,
        model: &str,
        call: &CallEstimate,
    ) -> Result<Plan, BudgetError> {
        let resolved = self.prices.resolve(model)?;
        let model: Arc<str> = Arc::from(resolved.id);
        let input = call.input_tokens;
        let base_money = resolved.price.max_cost_of(input, 0);
        let per_output_money = resolved
            .price
            .max_cost_of(input, 1)
            .saturating_sub(base_money);
        let choices = call.choice_count();
        // One unit is one token of output cap, which every choice may use.
        let request = ReserveRequest {
            base: Amount::new(input, base_money),
            per_unit: Amount::new(choices, per_output_money.saturating_mul_tokens(choices)),
            min_units: *call.output.start(),
            max_units: *call.output.end(),
        };
        let mut counters = self.counters(who, &model)?;
        let scoped_from = counters.len();
        if let Some(scope) = scope {
            counters.extend(scope_counters(scope));
        }
        Ok(Plan {
            model,
            request,
            counters,
            scoped_from,
        })
    }

    /// The counters of every limit that applies to a call by `who` to `model` (as priced), in
    /// their current windows.
    pub(super) fn counters(
        &self,
        who: &Attribution,
        model: &Arc<str>,
    ) -> Result<Vec<CounterSpec>, BudgetError> {
        let mut specs = Vec::with_capacity(self.limits.len());
        for limit in self.limits.iter() {
            let span = self.windows.span(&limit.window, self.now)?;
            if let Some(key) = limit.counter_for(who, model, span) {
                specs.push(CounterSpec {
                    key,
                    limit: limit.clone(),
                    span,
                });
            }
        }
        Ok(specs)
    }
}

/// The counters of a task scope's own limits and its parents', which apply to every call made
/// in it whatever its attribution.
pub(super) fn scope_counters(scope: &TaskScope) -> Vec<CounterSpec> {
    scope
        .task_limits()
        .into_iter()
        .map(|(task, limit)| CounterSpec {
            key: CounterKey {
                limit: limit.id.clone(),
                scope: Arc::from(task.as_str()),
                task: Some(task),
                window: 0,
            },
            limit,
            span: WindowSpan::Task,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Money;
    use crate::limits::{Limit, Selector};
    use crate::scope::TaskScope;

    fn at(ts: &str) -> Timestamp {
        ts.parse().unwrap()
    }

    fn limits() -> LimitSet {
        LimitSet::new([
            Limit::new("all/day", Selector::Global, Window::Calendar(Period::Day)).tokens(1_000),
            Limit::new("research", Selector::agent("researcher"), Window::PerTask).tokens(500),
            Limit::new("writer", Selector::agent("writer"), Window::PerTask).tokens(500),
            Limit::new(
                "gpt-4o/hour",
                Selector::model("gpt-4o"),
                Window::Calendar(Period::Hour),
            )
            .money(Money::from_dollars(1)),
            Limit::new(
                "watch",
                Selector::Global,
                Window::Rolling(jiff::SignedDuration::from_mins(5)),
            )
            .tokens(10)
            .soft(),
        ])
        .unwrap()
    }

    /// The limits above, the built-in prices, UTC.
    struct Fixture {
        limits: LimitSet,
        prices: PriceTable,
        windows: Windows,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                limits: limits(),
                prices: PriceTable::builtin(),
                windows: Windows::new(TimeZone::UTC),
            }
        }

        fn planner(&self) -> Planner<'_> {
            Planner {
                limits: &self.limits,
                prices: &self.prices,
                windows: &self.windows,
                now: at("2026-12-06T10:30:00Z"),
            }
        }
    }

    fn ids(specs: &[CounterSpec]) -> Vec<&str> {
        specs.iter().map(|s| &*s.key.limit).collect()
    }

    #[test]
    fn a_call_is_held_to_every_limit_that_selects_it_and_no_other() {
        let fixture = Fixture::new();
        let planner = fixture.planner();
        let researcher = Attribution::agent("researcher").with_task("t-1".into());

        let plan = planner
            .plan(
                &researcher,
                None,
                "gpt-4o-2024-08-06",
                &CallEstimate::new(100, 10..=200),
            )
            .unwrap();
        assert_eq!(
            ids(&plan.counters),
            ["all/day", "research", "gpt-4o/hour", "watch"]
        );
        // Priced, and so named, as the price table names it.
        assert_eq!(&*plan.model, "gpt-4o");
        assert!(plan.scoped().is_empty());

        let mini = planner
            .plan(
                &researcher,
                None,
                "gpt-4o-mini",
                &CallEstimate::new(100, 10..=200),
            )
            .unwrap();
        assert_eq!(ids(&mini.counters), ["all/day", "research", "watch"]);
    }

    #[test]
    fn only_hard_limits_can_refuse() {
        let fixture = Fixture::new();
        let planner = fixture.planner();
        let plan = planner
            .plan(
                &Attribution::agent("writer").with_task("t-2".into()),
                None,
                "gpt-4o",
                &CallEstimate::new(1, 1..=1),
            )
            .unwrap();
        assert_eq!(
            ids(&plan.into_hard_counters()),
            ["all/day", "writer", "gpt-4o/hour"]
        );
    }

    #[test]
    fn the_request_is_the_prompt_plus_one_output_token_per_choice_per_unit() {
        let fixture = Fixture::new();
        let planner = fixture.planner();
        let who = Attribution::agent("writer");
        let one = planner
            .plan(&who, None, "gpt-4o", &CallEstimate::new(1_000, 50..=400))
            .unwrap()
            .request;
        let price = fixture.prices.resolve("gpt-4o").unwrap().price;
        assert_eq!(one.base, Amount::new(1_000, price.max_cost_of(1_000, 0)));
        assert_eq!(
            one.per_unit,
            Amount::new(
                1,
                price
                    .max_cost_of(1_000, 1)
                    .saturating_sub(price.max_cost_of(1_000, 0))
            )
        );
        assert_eq!((one.min_units, one.max_units), (50, 400));
        // 400 output tokens cost what the price says they cost.
        assert_eq!(one.amount(400).money, price.max_cost_of(1_000, 400));

        let four = planner
            .plan(
                &who,
                None,
                "gpt-4o",
                &CallEstimate::new(1_000, 50..=400).choices(4),
            )
            .unwrap()
            .request;
        assert_eq!(four.base, one.base);
        assert_eq!(four.per_unit.tokens, 4);
        assert_eq!(
            four.per_unit.money,
            one.per_unit.money.saturating_mul_tokens(4)
        );
        assert_eq!(four.amount(400).tokens, 1_000 + 4 * 400);

        let zero = planner
            .plan(
                &who,
                None,
                "gpt-4o",
                &CallEstimate::new(1_000, 50..=400).choices(0),
            )
            .unwrap()
            .request;
        assert_eq!(zero, one, "0 choices is taken as 1");
    }

    #[test]
    fn a_scope_adds_its_own_and_its_parents_counters_after_the_limits() {
        let fixture = Fixture::new();
        let planner = fixture.planner();
        let parent = TaskScope::builder(Attribution::agent("lead").with_task("p".into()))
            .tokens(900)
            .build();
        let child = TaskScope::builder(Attribution::agent("writer").with_task("c".into()))
            .tokens(300)
            .parent(Some(parent.clone()))
            .build();
        let plan = planner
            .plan(
                &child.attribution(),
                Some(&child),
                "gpt-4o",
                &CallEstimate::new(1, 1..=1),
            )
            .unwrap();
        assert_eq!(
            ids(&plan.counters),
            [
                "all/day",
                "writer",
                "gpt-4o/hour",
                "watch",
                "task:c",
                "task:p"
            ]
        );
        let scoped: Vec<_> = plan
            .scoped()
            .iter()
            .map(|s| (&*s.key.scope, s.span))
            .collect();
        assert_eq!(scoped, [("c", WindowSpan::Task), ("p", WindowSpan::Task)]);
    }

    #[test]
    fn calendar_windows_are_cut_in_the_time_zone_and_move_on_with_the_clock() {
        let windows = Windows::new(TimeZone::get("America/New_York").unwrap());
        let day = Window::Calendar(Period::Day);
        let span = windows.span(&day, at("2026-12-06T03:00:00Z")).unwrap();
        // 03:00 UTC is still the 5th in New York (UTC-5).
        assert_eq!(
            span,
            WindowSpan::Calendar {
                start: at("2026-12-05T05:00:00Z"),
                end: at("2026-12-06T05:00:00Z")
            }
        );
        // The remembered window is not answered once the clock leaves it.
        let next = windows.span(&day, at("2026-12-06T05:00:00Z")).unwrap();
        assert_eq!(
            next,
            WindowSpan::Calendar {
                start: at("2026-12-06T05:00:00Z"),
                end: at("2026-12-07T05:00:00Z")
            }
        );
        assert_eq!(
            windows.span(&day, at("2026-12-06T03:00:00Z")).unwrap(),
            span
        );
    }

    #[test]
    fn a_model_the_table_cannot_price_is_an_error() {
        // The built-in table refuses unknown models (`UnknownModelPolicy::Error`, the default).
        let fixture = Fixture::new();
        let planner = fixture.planner();
        let err = planner
            .plan(
                &Attribution::agent("writer"),
                None,
                "no-such-model",
                &CallEstimate::new(1, 1..=1),
            )
            .unwrap_err();
        assert!(matches!(err, BudgetError::Pricing(_)), "{err}");
    }
}
