//! The budget: limits, prices, a store and a ledger behind one handle, and the reservation
//! protocol that ties them together.
//!
//! # Estimate, then reconcile
//!
//! ```text
//! reserve(who, model, estimate)      estimate = exact prompt tokens + output cap
//!   ├─ paused agent / cancelled task ──────────────────────────────> refused
//!   ├─ every matching limit, current window ─> store.reserve (all or none)
//!   │                                            ├─ "not now" ─────> Exhausted (retry_after)
//!   │                                            └─ "never"  ──────> ExceedsLimit
//!   └─> Reservation (#[must_use]; dropping it releases)
//! call the provider
//! reservation.commit(actual)         actual = what the provider reported (or counted)
//!   ├─ store.settle: reservation removed, actual committed to the windows current now;
//!   │   any excess over the estimate is recorded as overshoot — never dropped
//!   └─ ledger.record(event)          exactly once: commit consumes the reservation
//! ```
//!
//! A hard limit is never crossed by reservations, however many run at once: admission and
//! reservation happen in one atomic step in the store. Actual usage above an estimate (a
//! provider that ignored the output cap) is still committed and reported as overshoot, and it
//! blocks further reservations until the window frees up.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use parking_lot::{Mutex, RwLock};

use crate::admission::{Amount, CapKind, ReserveRequest, headroom};
use crate::attribution::{Attribution, TaskId};
use crate::clock::{Clock, SystemClock};
use crate::controls::{Controls, Refusal};
use crate::ledger::{EventKind, Ledger, LedgerError, MemoryLedger, UsageEvent};
use crate::limits::{Cap, CounterKey, Limit, LimitError, LimitSet, Period, Window, WindowSpan};
use crate::pricing::{PriceError, PriceTable};
use crate::scope::TaskScope;
use crate::store::{
    BudgetStore, CounterSpec, CounterUsage, MemoryBudgetStore, ReserveOutcome, StoreError, Ticket,
};
use crate::{Money, Usage};

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
    pub output: std::ops::RangeInclusive<u64>,
    /// Choices asked for (`n`); 0 is taken as 1.
    pub choices: u32,
}

impl CallEstimate {
    /// One choice, with an output cap between `output.start()` and `output.end()`.
    pub fn new(input_tokens: u64, output: std::ops::RangeInclusive<u64>) -> CallEstimate {
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
}

/// Why a call may not be made, or could not be accounted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetError {
    /// The window's budget is spent (committed plus reserved leaves too little). It may free up:
    /// see [`Denied::retry_after`].
    #[error("budget exhausted: {0}")]
    Exhausted(Box<Denied>),
    /// The call alone is larger than the limit: it can never be made as it is.
    #[error("call can never fit: {0}")]
    ExceedsLimit(Box<Denied>),
    /// The agent is paused.
    #[error("agent {agent:?} is paused")]
    AgentPaused {
        /// The agent.
        agent: Arc<str>,
    },
    /// The task was cancelled (from outside: an alert action, an admin, a parent task).
    #[error("task {task} was cancelled")]
    TaskCancelled {
        /// The task.
        task: TaskId,
    },
    /// The task took as many steps as it may.
    #[error("task {task} reached its limit of {max_steps} steps")]
    StepLimit {
        /// The task.
        task: TaskId,
        /// Its step cap.
        max_steps: u32,
    },
    /// The task (or the parent task it runs under) has spent its own budget.
    #[error("task {task} has spent its budget ({tokens} tokens, {money})")]
    TaskBudgetSpent {
        /// The task whose budget is spent.
        task: TaskId,
        /// Tokens it committed.
        tokens: u64,
        /// Money it committed.
        money: Money,
    },
    /// Runaway detection stopped the task.
    #[error("task {task} stopped as a runaway: {kind}")]
    Runaway {
        /// The task.
        task: TaskId,
        /// Which signal fired.
        kind: crate::runaway::RunawayKind,
    },
    /// The model could not be priced.
    #[error(transparent)]
    Pricing(#[from] PriceError),
    /// The budget store failed; the call is refused (fail closed).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Usage was recorded in the ledger, but the budget store could not count it (it is
    /// unreachable; a store that retries says so in its message). The event is kept here.
    #[error("usage event {} recorded in the ledger but not counted by the budget store: {source}", event.id)]
    Unsettled {
        /// Why the store failed.
        source: StoreError,
        /// The recorded event.
        event: Box<UsageEvent>,
    },
    /// The usage was settled in the budget but the ledger did not take the event. The event is
    /// returned so that it can be recorded again: usage is never silently lost.
    #[error("usage event {} not recorded: {source}", event.id)]
    Ledger {
        /// The ledger's error.
        source: LedgerError,
        /// The event that was not recorded.
        event: Box<UsageEvent>,
    },
    /// The ledger could not answer a query (restoring window usage at start-up) or flush what
    /// it was handed ([`Budget::flush`]).
    #[error(transparent)]
    LedgerQuery(LedgerError),
    /// A calendar window could not be computed in the configured time zone.
    #[error("cannot compute the {period} window: {message}")]
    Window {
        /// Which period.
        period: &'static str,
        /// jiff's explanation.
        message: String,
    },
}

/// Which limit refused a call, and by how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The limit that refused.
    pub limit: Arc<str>,
    /// Its counter's scope value.
    pub scope: Arc<str>,
    /// Which cap refused.
    pub cap_kind: CapKind,
    /// The cap.
    pub cap: Cap,
    /// Committed plus reserved on the counter when it refused.
    pub in_use: Amount,
    /// What the call asked to reserve.
    pub requested: Amount,
    /// When enough budget frees up, if known (a new calendar window, rolling usage ageing out);
    /// `None` when only in-flight calls settling can free it, or never.
    pub retry_after: Option<Timestamp>,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "limit {:?} ({}) has {} tokens / {} in use of {}; the call asks for {} tokens / {}",
            self.limit,
            self.scope,
            self.in_use.tokens,
            self.in_use.money,
            CapDisplay(&self.cap),
            self.requested.tokens,
            self.requested.money,
        )?;
        if let Some(t) = self.retry_after {
            write!(f, "; frees up at {t}")?;
        }
        Ok(())
    }
}

struct CapDisplay<'a>(&'a Cap);

impl std::fmt::Display for CapDisplay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.0.tokens, self.0.money) {
            (Some(t), Some(m)) => write!(f, "{t} tokens / {m}"),
            (Some(t), None) => write!(f, "{t} tokens"),
            (None, Some(m)) => write!(f, "{m}"),
            (None, None) => f.write_str("no cap"),
        }
    }
}

/// How usage is to be recorded on commit.
#[derive(Debug, Clone, Default)]
pub struct CommitDetails {
    /// The model id the provider says it served (often a dated id of the requested alias).
    pub served_model: Option<Arc<str>>,
    /// The usage was counted or estimated locally rather than reported by the provider.
    pub estimated: bool,
    /// The kind of spend (defaults to a call).
    pub kind: Option<EventKind>,
    /// What this spend saved (cache hits, compression).
    pub saved: Amount,
    /// The model the caller asked for, when a router changed it.
    pub requested_model: Option<Arc<str>>,
}

/// One limit's counter after a commit crossed one of its alert thresholds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThresholdCrossing {
    /// The limit.
    pub limit: Arc<Limit>,
    /// Its counter's scope value.
    pub scope: Arc<str>,
    /// The threshold crossed, in percent.
    pub threshold: u8,
    /// The counter's usage after the commit.
    pub usage: CounterUsage,
}

/// The result of a commit.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The event written to the ledger.
    pub event: UsageEvent,
    /// Alert thresholds this commit crossed.
    pub crossings: Vec<ThresholdCrossing>,
}

/// How much a caller may still spend under every hard limit that applies to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remaining {
    /// Tokens left under the tightest token cap (`None`: no token cap applies).
    pub tokens: Option<u64>,
    /// Money left under the tightest money cap (`None`: no money cap applies).
    pub money: Option<Money>,
    /// The largest output cap a call with the given prompt could be granted now (`None`: no
    /// limit applies). Zero means the prompt alone does not fit.
    pub max_output_tokens: Option<u64>,
    /// The limit that binds the output cap.
    pub binding_limit: Option<Arc<str>>,
}

/// One limit's counter, for status reports ("what's the budget status?").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitStatus {
    /// The limit.
    pub limit: Arc<Limit>,
    /// The counter's scope value.
    pub scope: Arc<str>,
    /// The task, for per-task limits.
    pub task: Option<TaskId>,
    /// Usage in the current window.
    pub usage: CounterUsage,
    /// When the current window ends (calendar windows).
    pub window_end: Option<Timestamp>,
}

impl LimitStatus {
    /// The larger of the token and money percentages used (committed + reserved), rounded down.
    pub fn percent_used(&self) -> u32 {
        percent_used(&self.limit.cap, self.usage.in_use())
    }
}

/// One line for a person: `research/day (researcher): 12400 tokens / $0.31 of 50000 tokens
/// (24% used), 1200 tokens / $0.012 reserved by 2 calls in flight, until 2026-12-07T05:00:00Z`.
impl std::fmt::Display for LimitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let usage = &self.usage;
        write!(f, "{} ({}", self.limit.id, self.scope)?;
        if let Some(task) = &self.task
            && task.as_str() != &*self.scope
        {
            write!(f, ", task {task}")?;
        }
        write!(
            f,
            "): {} tokens / {} of {} ({}% used",
            usage.committed.tokens,
            usage.committed.money,
            CapDisplay(&self.limit.cap),
            self.percent_used()
        )?;
        if !self.limit.is_hard() {
            f.write_str(", soft")?;
        }
        f.write_str(")")?;
        if usage.in_flight > 0 || !usage.reserved.is_zero() {
            write!(
                f,
                ", {} tokens / {} reserved by {} calls in flight",
                usage.reserved.tokens, usage.reserved.money, usage.in_flight
            )?;
        }
        let overshoot = usage.overshoot();
        if !overshoot.is_zero() {
            write!(
                f,
                ", {} tokens / {} beyond what was reserved",
                overshoot.tokens, overshoot.money
            )?;
        }
        if let Some(end) = self.window_end {
            write!(f, ", until {end}")?;
        }
        Ok(())
    }
}

/// Percent of `cap` used by `used`: the larger of tokens and money, rounded down.
pub fn percent_used(cap: &Cap, used: Amount) -> u32 {
    let tokens = cap
        .tokens
        .map_or(0, |c| ratio(u128::from(used.tokens), u128::from(c)));
    let money = cap.money.map_or(0, |c| {
        ratio(
            u128::try_from(used.money.units()).unwrap_or(0),
            u128::try_from(c.units()).unwrap_or(0),
        )
    });
    tokens.max(money)
}

fn ratio(used: u128, cap: u128) -> u32 {
    if cap == 0 {
        return if used == 0 { 0 } else { u32::MAX };
    }
    u32::try_from(used.saturating_mul(100) / cap).unwrap_or(u32::MAX)
}

/// Denials per agent, kept for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DenialCounts {
    /// Refused because a window's budget was spent.
    pub exhausted: u64,
    /// Refused because the call alone exceeds a limit.
    pub exceeds_limit: u64,
    /// Refused because the agent was paused or its task cancelled.
    pub stopped: u64,
}

/// The budget handle. Cheap to clone; clones share everything.
///
/// ```
/// use budget_core::{Attribution, Budget, Estimate, Usage};
/// use budget_core::limits::{Limit, Selector, Window};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let budget = Budget::builder()
///     .limit(Limit::new("research", Selector::agent("researcher"), Window::PerTask).tokens(1_000))
///     .build()
///     .unwrap();
/// let who = Attribution::agent("researcher").with_task("t-1".into());
///
/// let held = budget.reserve(&who, "gpt-4o", Estimate::new(200, 500)).await.unwrap();
/// let done = held.commit(Usage::new(200, 120)).await.unwrap(); // the unused 380 go back
/// assert_eq!(done.event.usage.total(), 320);
///
/// // 320 committed: a call that may use 680 more still fits, one of 800 does not.
/// assert!(budget.reserve(&who, "gpt-4o", Estimate::new(180, 500)).await.is_ok());
/// assert!(budget.reserve(&who, "gpt-4o", Estimate::new(300, 500)).await.is_err());
/// # });
/// ```
pub struct Budget<S: BudgetStore = MemoryBudgetStore, L: Ledger = MemoryLedger> {
    inner: Arc<Inner<S, L>>,
}

/// A summary: the price table alone has hundreds of entries.
impl<S: BudgetStore, L: Ledger> std::fmt::Debug for Budget<S, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field(
                "limits",
                &self
                    .limits()
                    .iter()
                    .map(|l| l.id.clone())
                    .collect::<Vec<_>>(),
            )
            .field("priced_models", &self.prices().len())
            .field("clock", &self.inner.clock)
            .field("time_zone", &self.inner.time_zone)
            .finish_non_exhaustive()
    }
}

impl<S: BudgetStore, L: Ledger> Clone for Budget<S, L> {
    fn clone(&self) -> Self {
        Budget {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<S, L> {
    store: S,
    ledger: L,
    limits: RwLock<Arc<LimitSet>>,
    prices: RwLock<Arc<PriceTable>>,
    clock: Arc<dyn Clock>,
    time_zone: TimeZone,
    controls: Controls,
    next_event: AtomicU64,
    denials: Mutex<HashMap<Arc<str>, DenialCounts>>,
    /// The current calendar window per period, so that the hot path does not convert time
    /// zones on every call.
    calendar: [RwLock<Option<(Timestamp, Timestamp)>>; 4],
    /// Whether to restore the windows from the ledger before the first use.
    restore_on_start: bool,
    /// Set once the windows were restored (or restoring was tried and succeeded).
    restored: tokio::sync::OnceCell<()>,
}

/// Builds a [`Budget`].
#[derive(Debug)]
pub struct BudgetBuilder<S, L> {
    store: S,
    ledger: L,
    limits: Vec<Limit>,
    prices: Option<PriceTable>,
    clock: Arc<dyn Clock>,
    time_zone: TimeZone,
    restore: Option<bool>,
}

impl Budget {
    /// A builder with an in-memory store and ledger, the built-in price table, the system
    /// clock and UTC.
    pub fn builder() -> BudgetBuilder<MemoryBudgetStore, MemoryLedger> {
        BudgetBuilder {
            store: MemoryBudgetStore::new(),
            ledger: MemoryLedger::new(),
            limits: Vec::new(),
            prices: None,
            clock: Arc::new(SystemClock),
            time_zone: TimeZone::UTC,
            restore: None,
        }
    }
}

impl<S: BudgetStore, L: Ledger> BudgetBuilder<S, L> {
    /// Adds a limit.
    pub fn limit(mut self, limit: Limit) -> Self {
        self.limits.push(limit);
        self
    }

    /// Adds limits.
    pub fn limits(mut self, limits: impl IntoIterator<Item = Limit>) -> Self {
        self.limits.extend(limits);
        self
    }

    /// Uses this price table instead of the built-in one.
    pub fn prices(mut self, prices: PriceTable) -> Self {
        self.prices = Some(prices);
        self
    }

    /// Uses the built-in price table with the LiteLLM-format file named by
    /// `TOKEN_BUDGET_PRICES` merged over it ([`PriceTable::from_env`]); unset or empty, the
    /// built-in table. A file that cannot be read or holds no usable prices is an error naming
    /// it.
    pub fn prices_from_env(self) -> Result<Self, PriceError> {
        Ok(self.prices(PriceTable::from_env()?))
    }

    /// Uses this clock.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Cuts calendar windows in this time zone.
    pub fn time_zone(mut self, tz: TimeZone) -> Self {
        self.time_zone = tz;
        self
    }

    /// Whether to rebuild the current windows from the ledger before the first call (see
    /// [`Budget::restore_from_ledger`]). By default a budget does when its ledger is durable,
    /// so that a restart does not hand out a fresh day; `false` is the explicit opt-out (a
    /// demo that counts each run apart, a ledger shared with unrelated budgets).
    pub fn restore_windows(mut self, restore: bool) -> Self {
        self.restore = Some(restore);
        self
    }

    /// Uses this store.
    pub fn store<S2: BudgetStore>(self, store: S2) -> BudgetBuilder<S2, L> {
        BudgetBuilder {
            store,
            ledger: self.ledger,
            limits: self.limits,
            prices: self.prices,
            clock: self.clock,
            time_zone: self.time_zone,
            restore: self.restore,
        }
    }

    /// Uses this ledger.
    pub fn ledger<L2: Ledger>(self, ledger: L2) -> BudgetBuilder<S, L2> {
        BudgetBuilder {
            store: self.store,
            ledger,
            limits: self.limits,
            prices: self.prices,
            clock: self.clock,
            time_zone: self.time_zone,
            restore: self.restore,
        }
    }

    /// Validates the limits and builds the budget.
    pub fn build(self) -> Result<Budget<S, L>, LimitError> {
        let limits = LimitSet::new(self.limits)?;
        let prices = self.prices.unwrap_or_else(PriceTable::builtin);
        let restore_on_start = self.restore.unwrap_or_else(|| self.ledger.is_durable());
        Ok(Budget {
            inner: Arc::new(Inner {
                store: self.store,
                ledger: self.ledger,
                limits: RwLock::new(Arc::new(limits)),
                prices: RwLock::new(Arc::new(prices)),
                clock: self.clock,
                time_zone: self.time_zone,
                controls: Controls::default(),
                next_event: AtomicU64::new(1),
                denials: Mutex::new(HashMap::new()),
                calendar: Default::default(),
                restore_on_start,
                restored: tokio::sync::OnceCell::new(),
            }),
        })
    }
}

impl<S: BudgetStore, L: Ledger> Budget<S, L> {
    /// Reserves `estimate` for a call by `who` to `model` against every matching hard limit,
    /// all or nothing. Refuses paused agents and cancelled tasks first.
    pub async fn reserve(
        &self,
        who: &Attribution,
        model: &str,
        estimate: Estimate,
    ) -> Result<Reservation<S, L>, BudgetError> {
        let output = estimate.max_output_tokens;
        self.reserve_call(
            who,
            None,
            model,
            CallEstimate::new(estimate.input_tokens, output..=output),
        )
        .await
    }

    /// Reserves the prompt plus as many output tokens as every matching hard limit still
    /// allows, between `output.start()` and `output.end()`, in one atomic step: the output cap
    /// to send is [`Reservation::granted_output`]. Refused when not even the minimum fits.
    ///
    /// This is how a call's `max_tokens` is clamped to the budget without a race between
    /// asking what is left and reserving it.
    pub async fn reserve_output(
        &self,
        who: &Attribution,
        model: &str,
        input_tokens: u64,
        output: std::ops::RangeInclusive<u64>,
    ) -> Result<Reservation<S, L>, BudgetError> {
        self.reserve_call(who, None, model, CallEstimate::new(input_tokens, output))
            .await
    }

    /// [`Budget::reserve_output`] for a call made inside a task scope: attributed to the
    /// scope's agent, task and step, refused when the task (or a parent) is cancelled, stopped
    /// or spent, and reserved against the task's own limits and its parents' as well as the
    /// budget's. The committed usage is recorded back into the scope.
    pub async fn reserve_in_scope(
        &self,
        scope: &TaskScope,
        model: &str,
        input_tokens: u64,
        output: std::ops::RangeInclusive<u64>,
    ) -> Result<Reservation<S, L>, BudgetError> {
        let who = scope.attribution();
        self.reserve_call(
            &who,
            Some(scope),
            model,
            CallEstimate::new(input_tokens, output),
        )
        .await
    }

    /// Reserves a call as [`CallEstimate`] describes it — every choice's output counted — by
    /// `who`, inside `scope` when given (then attributed, refused and limited as
    /// [`Budget::reserve_in_scope`] says). The output cap to send is
    /// [`Reservation::granted_output`], per choice.
    pub async fn reserve_call(
        &self,
        who: &Attribution,
        scope: Option<&TaskScope>,
        model: &str,
        call: CallEstimate,
    ) -> Result<Reservation<S, L>, BudgetError> {
        if let Some(scope) = scope {
            // Bound first: a cancel of an enclosing task that came before this tree's first
            // call is applied now, and refuses this very call.
            self.bind_scope(scope);
            if let Err(stopped) = scope.refusal() {
                self.count_denial(who, |d| d.stopped += 1);
                return Err(stopped);
            }
        }
        self.ensure_restored().await?;
        let CallEstimate {
            input_tokens,
            output,
            choices,
        } = call;
        let choices = u64::from(choices.max(1));
        if let Some(refusal) = self.inner.controls.refusal(who) {
            self.count_denial(who, |d| d.stopped += 1);
            return Err(match refusal {
                Refusal::Paused => BudgetError::AgentPaused {
                    agent: who.agent_arc().clone(),
                },
                Refusal::Cancelled(task) => BudgetError::TaskCancelled { task },
            });
        }
        let prices = self.prices();
        let resolved = prices.resolve(model)?;
        let priced_model: Arc<str> = Arc::from(resolved.id);
        // The worst-case cost is linear in the output for a given prompt (the prompt fixes the
        // price tier), so one output token's price is the difference of two evaluations.
        let base_money = resolved.price.max_cost_of(input_tokens, 0);
        let per_output_money = resolved
            .price
            .max_cost_of(input_tokens, 1)
            .saturating_sub(base_money);
        // One unit is one token of output cap, which every choice may use.
        let request = ReserveRequest {
            base: Amount::new(input_tokens, base_money),
            per_unit: Amount::new(choices, per_output_money.saturating_mul_tokens(choices)),
            min_units: *output.start(),
            max_units: *output.end(),
        };
        let now = self.inner.clock.now();
        let limits = self.limits();
        let mut specs = self.counters_for(&limits, who, &priced_model, now)?;
        let scoped = scope.map(|s| self.scope_counters(s)).unwrap_or_default();
        specs.extend(scoped.iter().cloned());
        match self.inner.store.reserve(&specs, &request, now).await? {
            ReserveOutcome::Reserved(ticket) => Ok(Reservation {
                budget: self.clone(),
                held: Some(Held {
                    amount: ticket.amount(),
                    ticket,
                    who: who.clone(),
                    requested_model: (*priced_model != *model).then(|| Arc::from(model)),
                    model: priced_model,
                    limits,
                    specs,
                    scope: scope.cloned(),
                    scoped,
                    input_tokens,
                    choices,
                    sent: None,
                }),
            }),
            ReserveOutcome::Denied(denial) => {
                let spec = &specs[denial.counter];
                let denied = Box::new(Denied {
                    limit: spec.key.limit.clone(),
                    scope: spec.key.scope.clone(),
                    cap_kind: denial.cap_kind,
                    cap: *spec.cap(),
                    in_use: denial.in_use,
                    requested: request.amount(request.min_units),
                    retry_after: denial.retry_after,
                });
                if denial.never {
                    self.count_denial(who, |d| d.exceeds_limit += 1);
                    Err(BudgetError::ExceedsLimit(denied))
                } else {
                    self.count_denial(who, |d| d.exhausted += 1);
                    Err(BudgetError::Exhausted(denied))
                }
            }
        }
    }

    /// Records usage that had no reservation (a cache hit at $0, a late report). It is
    /// committed to every matching counter like any other usage.
    ///
    /// Like [`Reservation::commit_with`], the usage is taken when this is called: dropping the
    /// returned future, polled or not, still records it (without waiting for the outcome).
    pub fn record(
        &self,
        who: &Attribution,
        model: &str,
        usage: Usage,
        details: CommitDetails,
    ) -> impl Future<Output = Result<Committed, BudgetError>> + Send + 'static {
        let held = self.prices().resolve(model).map(|resolved| {
            let priced_model: Arc<str> = Arc::from(resolved.id);
            Held {
                ticket: Ticket::unreserved(),
                who: who.clone(),
                requested_model: (*priced_model != *model).then(|| Arc::from(model)),
                model: priced_model,
                amount: Amount::ZERO,
                limits: self.limits(),
                // No reservation: the counters are found at commit time.
                specs: Vec::new(),
                scope: None,
                scoped: Vec::new(),
                input_tokens: usage.input,
                choices: 1,
                sent: None,
            }
        });
        let pending = held.map(|held| PendingCommit::new(self.clone(), held, usage, details));
        async move {
            let mut pending = pending?;
            // A budget restores its windows before it counts anything: else the restore would
            // count this usage a second time.
            pending.budget.ensure_restored().await?;
            pending.run().await
        }
    }

    /// How much `who` may still spend on `model`, and the largest output cap a call with
    /// `prompt_tokens` could be granted now.
    pub async fn remaining(
        &self,
        who: &Attribution,
        model: &str,
        prompt_tokens: u64,
    ) -> Result<Remaining, BudgetError> {
        self.remaining_in_scope(who, None, model, prompt_tokens)
            .await
    }

    /// [`Budget::remaining`], counting the task scope's own limits (and its parents') too, as
    /// a call made inside `scope` is.
    pub async fn remaining_in_scope(
        &self,
        who: &Attribution,
        scope: Option<&TaskScope>,
        model: &str,
        prompt_tokens: u64,
    ) -> Result<Remaining, BudgetError> {
        self.ensure_restored().await?;
        let prices = self.prices();
        let resolved = prices.resolve(model)?;
        let priced_model: Arc<str> = Arc::from(resolved.id);
        let now = self.inner.clock.now();
        let mut specs: Vec<_> = self
            .counters_for(&self.limits(), who, &priced_model, now)?
            .into_iter()
            .filter(|s| s.is_hard())
            .collect();
        if let Some(scope) = scope {
            specs.extend(self.scope_counters(scope));
        }
        let usages = self.inner.store.usage(&specs, now).await?;
        let prompt_cost = resolved.price.max_cost_of(prompt_tokens, 0);
        let per_output = resolved
            .price
            .max_cost_of(prompt_tokens, 1)
            .saturating_sub(prompt_cost);
        let mut out = Remaining {
            tokens: None,
            money: None,
            max_output_tokens: None,
            binding_limit: None,
        };
        for (spec, usage) in specs.iter().zip(usages) {
            let (tokens_left, money_left) = headroom(spec.cap(), usage.in_use());
            let mut output: Option<u64> = None;
            if let Some(t) = tokens_left {
                out.tokens = Some(out.tokens.map_or(t, |o| o.min(t)));
                output = Some(t.saturating_sub(prompt_tokens));
            }
            if let Some(m) = money_left {
                out.money = Some(out.money.map_or(m, |o| o.min(m)));
                let after_prompt = m.saturating_sub(prompt_cost).max(Money::ZERO);
                let by_money = per_output
                    .tokens_affordable(after_prompt)
                    .unwrap_or(u64::MAX);
                output = Some(output.map_or(by_money, |o| o.min(by_money)));
            }
            if let Some(o) = output
                && out.max_output_tokens.is_none_or(|cur| o < cur)
            {
                out.max_output_tokens = Some(o);
                out.binding_limit = Some(spec.key.limit.clone());
            }
        }
        Ok(out)
    }

    /// Rebuilds the usage of every calendar and rolling window limit's current window from the
    /// ledger, so that a restart does not reset today's (this hour's, week's, month's; the last
    /// rolling duration's) budget. Returns how many counters it restored.
    ///
    /// A budget on a durable ledger ([`Ledger::is_durable`]) does this by itself before its
    /// first reservation, record or report (`remaining`, `pressure`, `status`), unless built with
    /// [`BudgetBuilder::restore_windows`]`(false)`; either way it happens once per budget, and
    /// a call after it returns 0. Rolling windows are restored into their current slot: the
    /// usage then ages out up to one window later than it would have, never earlier (rounding
    /// toward safety). Per-task windows are not restored (a restarted process starts its tasks
    /// anew).
    ///
    /// A store that keeps its counters itself ([`BudgetStore::keeps_counters`], e.g. Redis)
    /// is left alone and 0 is returned: every replica restoring into it would count the day
    /// once more.
    pub async fn restore_from_ledger(&self) -> Result<usize, BudgetError> {
        let mut restored_now = 0;
        self.inner
            .restored
            .get_or_try_init(|| async {
                restored_now = self.restore_windows().await?;
                Ok::<(), BudgetError>(())
            })
            .await?;
        Ok(restored_now)
    }

    /// Restores the windows from the ledger once, before the first use, when the budget was
    /// built to (see [`Budget::restore_from_ledger`]).
    async fn ensure_restored(&self) -> Result<(), BudgetError> {
        if !self.inner.restore_on_start || self.inner.restored.initialized() {
            return Ok(());
        }
        self.restore_from_ledger().await.map(drop)
    }

    async fn restore_windows(&self) -> Result<usize, BudgetError> {
        use crate::ledger::{Dimension, KeyPart, LedgerQuery};
        use crate::limits::Selector;
        if self.inner.store.keeps_counters() {
            return Ok(0);
        }
        let now = self.inner.clock.now();
        let mut restored = 0;
        for limit in self.limits().iter() {
            let span = self.span(&limit.window, now)?;
            let since = match (limit.window, span) {
                (_, WindowSpan::Calendar { start, .. }) => start,
                (Window::Rolling(duration), _) => {
                    now.checked_sub(duration).unwrap_or(Timestamp::MIN)
                }
                _ => continue,
            };
            let dimension = match &limit.selector {
                Selector::Global => None,
                Selector::Agent(_) => Some(Dimension::Agent),
                Selector::User(_) => Some(Dimension::User),
                Selector::Model(_) => Some(Dimension::Model),
                Selector::Tag { key, .. } => Some(Dimension::Tag(key.clone())),
                Selector::Task(_) => continue,
            };
            let query = LedgerQuery {
                since: Some(since),
                group_by: dimension.iter().cloned().collect(),
                time_zone: self.inner.time_zone.clone(),
                ..LedgerQuery::default()
            };
            let groups = self
                .inner
                .ledger
                .totals(&query)
                .await
                .map_err(BudgetError::LedgerQuery)?;
            // Groups are matched by the selector itself (a model limit takes the dated and
            // prefixed ids of its model too), so restore charges what a live call would.
            let mut amounts: HashMap<Arc<str>, Amount> = HashMap::new();
            for group in groups {
                let scope_value = match group.key.first() {
                    None => Some(Arc::from("*")),
                    Some(KeyPart::Text(v)) => limit.selector.scope_of_value(v),
                    Some(_) => None, // no value on this dimension: the limit never matched
                };
                if let Some(scope_value) = scope_value {
                    let amount = amounts.entry(scope_value).or_default();
                    *amount = amount.saturating_add(Amount::new(group.usage.total(), group.cost));
                }
            }
            for (scope_value, amount) in amounts {
                let spec = CounterSpec {
                    key: CounterKey {
                        limit: limit.id.clone(),
                        scope: scope_value,
                        task: None,
                        window: span.id(),
                    },
                    limit: limit.clone(),
                    span,
                };
                self.inner
                    .store
                    .settle(Ticket::unreserved(), &[spec], amount, now)
                    .await?;
                restored += 1;
            }
        }
        Ok(restored)
    }

    /// How close `who` is to its budget for `model`: the highest percentage used (committed +
    /// reserved, tokens or money) over every hard limit that applies, the scope's own task
    /// limits included; `None` when no limit applies. Compression and routing react to it.
    pub async fn pressure(
        &self,
        who: &Attribution,
        scope: Option<&TaskScope>,
        model: &str,
    ) -> Result<Option<u32>, BudgetError> {
        self.ensure_restored().await?;
        let prices = self.prices();
        let priced_model: Arc<str> = Arc::from(prices.resolve(model)?.id);
        let now = self.inner.clock.now();
        let mut specs: Vec<_> = self
            .counters_for(&self.limits(), who, &priced_model, now)?
            .into_iter()
            .filter(CounterSpec::is_hard)
            .collect();
        if let Some(scope) = scope {
            specs.extend(self.scope_counters(scope));
        }
        let usages = self.inner.store.usage(&specs, now).await?;
        Ok(specs
            .iter()
            .zip(usages)
            .map(|(spec, usage)| percent_used(spec.cap(), usage.in_use()))
            .max())
    }

    /// Every counter in a current window, joined with its limit; plus the limits that name one
    /// scope and have not been used yet. Sorted by limit id, then scope.
    pub async fn status(&self) -> Result<Vec<LimitStatus>, BudgetError> {
        self.ensure_restored().await?;
        let now = self.inner.clock.now();
        let limits = self.limits();
        let snapshot = self.inner.store.snapshot(now).await?;
        let mut out = Vec::new();
        for limit in limits.iter() {
            let span = self.span(&limit.window, now)?;
            let window_end = match span {
                WindowSpan::Calendar { end, .. } => Some(end),
                _ => None,
            };
            let mut found = false;
            for (key, usage) in snapshot.iter().filter(|(k, _)| k.limit == limit.id) {
                if key.window != span.id() {
                    continue;
                }
                found = true;
                out.push(LimitStatus {
                    limit: limit.clone(),
                    scope: key.scope.clone(),
                    task: key.task.clone(),
                    usage: *usage,
                    window_end,
                });
            }
            if !found && limit.window != Window::PerTask {
                let scope = match &limit.selector {
                    crate::limits::Selector::Global => Some(Arc::from("*")),
                    crate::limits::Selector::Agent(crate::limits::Scope::Is(v))
                    | crate::limits::Selector::User(crate::limits::Scope::Is(v))
                    | crate::limits::Selector::Model(crate::limits::Scope::Is(v))
                    | crate::limits::Selector::Task(crate::limits::Scope::Is(v)) => Some(v.clone()),
                    crate::limits::Selector::Tag {
                        value: crate::limits::Scope::Is(v),
                        ..
                    } => Some(v.clone()),
                    _ => None,
                };
                if let Some(scope) = scope {
                    out.push(LimitStatus {
                        limit: limit.clone(),
                        scope,
                        task: None,
                        usage: CounterUsage::default(),
                        window_end,
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.limit.id, &a.scope, &a.task).cmp(&(&b.limit.id, &b.scope, &b.task)));
        Ok(out)
    }

    /// Adds a limit or replaces the one with the same id ("set budget for agent X"). Usage so
    /// far is kept: counters are keyed by the limit's id.
    ///
    /// - **A new cap** (or enforcement, or alert thresholds) applies at once to the usage
    ///   already in the current window.
    /// - **A new window** carries the usage over, rounded toward safety (this is what
    ///   [`MemoryBudgetStore`] does; a shared store documents its own rule). A rolling window
    ///   of another duration re-slots its usage, each amount at the latest instant it may have
    ///   happened, so none leaves the new window early. A new calendar period, or a switch
    ///   between rolling and calendar, counts every amount that may fall in the new window as
    ///   if it did: day to hour puts the whole day's usage in this hour, hour to day puts this
    ///   hour's (and any earlier hour the store still holds) in today. Usage that had already
    ///   left the old window is not brought back, so a window made longer may count less than
    ///   was truly spent in it. Calls in flight across the change count in the new window
    ///   twice (reserved, then committed) until it ends. A limit made per-task, or a per-task
    ///   limit given a rolling or calendar window, starts at zero: per-task usage has no time,
    ///   and no window's usage belongs to one task.
    /// - **A new selector** counts per selected value: usage of values no longer selected is
    ///   not carried to the new ones.
    pub fn set_limit(&self, limit: Limit) -> Result<(), LimitError> {
        let mut guard = self.inner.limits.write();
        let mut set = LimitSet::clone(&guard);
        set.upsert(limit)?;
        *guard = Arc::new(set);
        Ok(())
    }

    /// Removes a limit; returns whether it existed. Its counters are not cleared: a limit set
    /// again under the same id finds the usage still in its window.
    pub fn remove_limit(&self, id: &str) -> bool {
        let mut guard = self.inner.limits.write();
        let mut set = LimitSet::clone(&guard);
        let removed = set.remove(id).is_some();
        *guard = Arc::new(set);
        removed
    }

    /// The limits in force.
    pub fn limits(&self) -> Arc<LimitSet> {
        self.inner.limits.read().clone()
    }

    /// The price table in force.
    pub fn prices(&self) -> Arc<PriceTable> {
        self.inner.prices.read().clone()
    }

    /// Replaces the price table (e.g. after loading a newer LiteLLM file).
    pub fn set_prices(&self, prices: PriceTable) {
        *self.inner.prices.write() = Arc::new(prices);
    }

    /// Pause/resume and cancellation.
    pub fn controls(&self) -> &Controls {
        &self.inner.controls
    }

    /// Ends a task: forgets its per-task counters and its entry in [`Controls`] (a pending
    /// cancel, and the bindings of its scopes). Task scopes do this themselves when their last
    /// clone is dropped; call it for tasks that run without a scope.
    pub fn finish_task(&self, task: &TaskId) {
        self.inner.store.forget_task(task);
        self.inner.controls.finish_task(task);
    }

    /// The ledger.
    pub fn ledger(&self) -> &L {
        &self.inner.ledger
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// The clock.
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// The time zone calendar windows are cut in.
    pub fn time_zone(&self) -> &TimeZone {
        &self.inner.time_zone
    }

    /// Denials so far, per agent.
    pub fn denials(&self) -> HashMap<Arc<str>, DenialCounts> {
        self.inner.denials.lock().clone()
    }

    fn count_denial(&self, who: &Attribution, bump: impl FnOnce(&mut DenialCounts)) {
        bump(
            self.inner
                .denials
                .lock()
                .entry(who.agent_arc().clone())
                .or_default(),
        );
    }

    fn span(&self, window: &Window, now: Timestamp) -> Result<WindowSpan, BudgetError> {
        let Window::Calendar(period) = *window else {
            return window
                .span(now, &self.inner.time_zone)
                .map_err(|e| window_error(Period::Day, e));
        };
        let slot = &self.inner.calendar[period as usize];
        if let Some((start, end)) = *slot.read()
            && start <= now
            && now < end
        {
            return Ok(WindowSpan::Calendar { start, end });
        }
        let (start, end) = period
            .bounds(now, &self.inner.time_zone)
            .map_err(|e| window_error(period, e))?;
        *slot.write() = Some((start, end));
        Ok(WindowSpan::Calendar { start, end })
    }

    /// The counters of a task scope's own limits and its parents', which apply to every call
    /// made in it whatever its attribution. Binds the scope and its parents first
    /// ([`Budget::bind_scope`]).
    fn scope_counters(&self, scope: &TaskScope) -> Vec<CounterSpec> {
        self.bind_scope(scope);
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

    /// Ties a task scope, and every scope it is nested in, to this budget, once each:
    /// `controls().cancel_task` then reaches each of them (and so their sub-agents) whichever
    /// of them reached the budget (an orchestrator that only delegates is cancelled too), and
    /// each one's counters and control entry go when it ends. A scope nested in a scope of its
    /// own task id is reached through that one, and leaves the task's counters to it.
    ///
    /// Outermost first, so that a scope found bound has all its parents bound: the usual call
    /// costs one look at the scope's own registrations.
    fn bind_scope(&self, scope: &TaskScope) {
        let key = Arc::as_ptr(&self.inner) as *const () as usize;
        if scope.has_finisher(key) {
            return;
        }
        let chain: Vec<&TaskScope> = std::iter::successors(Some(scope), |s| s.parent()).collect();
        for s in chain.into_iter().rev() {
            s.finish_once_with(key, || {
                let budget = Arc::downgrade(&self.inner);
                let task = s.task().clone();
                let counters = s.counter_task().clone();
                let binding = s
                    .owns_task()
                    .then(|| self.inner.controls.bind_task(&task, s.cancel_token()));
                move || {
                    let Some(inner) = budget.upgrade() else {
                        return;
                    };
                    // Another scope still running the same task keeps the task's counters.
                    let last = binding.is_none_or(|b| inner.controls.unbind_task(&task, b));
                    if last {
                        inner.store.forget_task(&counters);
                    }
                }
            });
        }
    }

    /// The counters of every limit that applies to a call, in their current windows.
    fn counters_for(
        &self,
        limits: &LimitSet,
        who: &Attribution,
        model: &Arc<str>,
        now: Timestamp,
    ) -> Result<Vec<CounterSpec>, BudgetError> {
        let mut specs = Vec::with_capacity(limits.len());
        for limit in limits.iter() {
            let span = self.span(&limit.window, now)?;
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

    /// Everything a commit writes, decided before anything is written: the price, the
    /// counters to charge and the ledger event.
    fn prepare(&self, held: Held, usage: Usage, details: CommitDetails) -> Prepared {
        let Held {
            ticket,
            who,
            model: reserved_model,
            requested_model,
            amount,
            limits: reserved_limits,
            specs: reserved_specs,
            scope,
            scoped,
            ..
        } = held;
        let prices = self.prices();
        let mut estimated = details.estimated;
        // Price by what was served when the table knows it; else by what was reserved.
        let served = details.served_model.as_deref().map(|m| prices.resolve(m));
        let (model, price) = match served {
            Some(Ok(r)) if *r.id == *reserved_model => (reserved_model.clone(), Some(r.price)),
            Some(Ok(r)) => (Arc::from(r.id), Some(r.price)),
            Some(Err(_)) | None => {
                estimated |= served.is_some();
                let price = prices.resolve(&reserved_model).ok().map(|r| r.price);
                (reserved_model.clone(), price)
            }
        };
        let cost = match price {
            Some(p) => p.cost(&usage),
            None => {
                // The table changed under us and lost the model: bill what was reserved.
                estimated = true;
                amount.money
            }
        };
        let actual = Amount::new(usage.total(), cost);
        let now = self.inner.clock.now();
        let limits = self.limits();
        // Usage is charged to the limits the call was reserved on, whatever model id the
        // provider answers with (OpenAI serves `gpt-4o` as `gpt-4o-2024-08-06`): the counters
        // reserved on are reused while the limits are the same and their windows current.
        // Otherwise (a window ended, the limits changed) the counters are found anew for the
        // model as reserved; if even that fails, the reserved ones are charged.
        let reuse = !reserved_specs.is_empty()
            && Arc::ptr_eq(&limits, &reserved_limits)
            && reserved_specs.iter().all(|s| s.span.contains(now));
        let mut unsettled = None;
        let specs = if reuse {
            reserved_specs
        } else {
            match self.counters_for(&limits, &who, &reserved_model, now) {
                Ok(mut specs) => {
                    specs.extend(scoped);
                    specs
                }
                Err(error) if !reserved_specs.is_empty() => {
                    tracing::debug!(%error, "charging the counters reserved on");
                    reserved_specs
                }
                Err(error) => {
                    unsettled = Some(StoreError::new(
                        crate::BackendErrorKind::OutOfRange,
                        "budget",
                        format!("no counters to charge: {error}"),
                    ));
                    scoped
                }
            }
        };
        if let Some(scope) = &scope {
            scope.record(actual.tokens, actual.money);
        }
        let requested_model = details
            .requested_model
            .clone()
            .filter(|m| *m != model)
            .or(requested_model)
            .or_else(|| (model != reserved_model).then(|| reserved_model.clone()));
        let event = UsageEvent {
            id: self.inner.next_event.fetch_add(1, Ordering::Relaxed),
            at: now,
            attribution: who,
            model,
            requested_model,
            usage,
            cost,
            estimated,
            kind: details.kind.unwrap_or(EventKind::Call),
            saved: details.saved,
        };
        Prepared {
            ticket,
            specs,
            actual,
            now,
            event,
            unsettled,
        }
    }

    /// Commits `usage` for a held reservation (or for unreserved usage): prices it, settles
    /// the counters and records one ledger event.
    ///
    /// Both writes are handed over before the first `.await` (stores and ledgers take them at
    /// call time), so a commit cancelled at any await still settles and records exactly once;
    /// the awaits only collect the outcomes.
    async fn settle(
        &self,
        held: Held,
        usage: Usage,
        details: CommitDetails,
    ) -> Result<Committed, BudgetError> {
        let Prepared {
            ticket,
            specs,
            actual,
            now,
            event,
            unsettled,
        } = self.prepare(held, usage, details);
        let settling = self.inner.store.settle(ticket, &specs, actual, now);
        let recording = self.inner.ledger.record(event.clone());
        let settled = settling.await;
        let recorded = recording.await;
        let settled = match unsettled {
            Some(error) => Err(error),
            None => settled,
        };
        let crossings = match &settled {
            Ok(usages) => crossings(&specs, usages, actual),
            Err(_) => Vec::new(),
        };
        // The ledger records the event even when the store cannot count it: usage is never
        // dropped, and the error says which of the two is behind.
        match (recorded, settled) {
            (Ok(()), Ok(_)) => Ok(Committed { event, crossings }),
            (Err(source), _) => Err(BudgetError::Ledger {
                source,
                event: Box::new(event),
            }),
            (Ok(()), Err(source)) => Err(BudgetError::Unsettled {
                source,
                event: Box::new(event),
            }),
        }
    }

    /// [`Budget::settle`] without waiting: used where nothing can wait (a reservation or a
    /// commit dropped). The store and the ledger take both writes now; failures surface in
    /// their own logs and retries, and [`Budget::flush`] waits for them.
    fn settle_detached(&self, held: Held, usage: Usage, details: CommitDetails) {
        let Prepared {
            ticket,
            specs,
            actual,
            now,
            event,
            ..
        } = self.prepare(held, usage, details);
        drop(self.inner.store.settle(ticket, &specs, actual, now));
        drop(self.inner.ledger.record(event));
    }

    /// Waits until every commit handed over so far — those of dropped reservations, streams
    /// and commit futures included — has reached the store and the ledger. Call it before the
    /// program exits: it is what a normal shutdown needs to lose nothing.
    pub async fn flush(&self) -> Result<(), BudgetError> {
        let ledger = self.inner.ledger.flush().await;
        self.inner.store.flush().await?;
        ledger.map_err(BudgetError::LedgerQuery)
    }
}

/// What [`Budget::prepare`] decided for one commit.
struct Prepared {
    ticket: Ticket,
    specs: Vec<CounterSpec>,
    actual: Amount,
    now: Timestamp,
    event: UsageEvent,
    /// Set when no counter could be found for unreserved usage.
    unsettled: Option<StoreError>,
}

/// A commit not yet handed over. Dropped before it ran (a commit future never polled), it
/// hands the commit over without waiting: usage is never lost to a cancelled commit.
struct PendingCommit<S: BudgetStore, L: Ledger> {
    budget: Budget<S, L>,
    commit: Option<(Held, Usage, CommitDetails)>,
}

impl<S: BudgetStore, L: Ledger> PendingCommit<S, L> {
    fn new(budget: Budget<S, L>, held: Held, usage: Usage, details: CommitDetails) -> Self {
        PendingCommit {
            budget,
            commit: Some((held, usage, details)),
        }
    }

    async fn run(&mut self) -> Result<Committed, BudgetError> {
        let (held, usage, details) = self
            .commit
            .take()
            .expect("a pending commit runs once, from the future that owns it");
        self.budget.settle(held, usage, details).await
    }
}

impl<S: BudgetStore, L: Ledger> Drop for PendingCommit<S, L> {
    fn drop(&mut self) {
        if let Some((held, usage, details)) = self.commit.take() {
            self.budget.settle_detached(held, usage, details);
        }
    }
}

/// The alert thresholds a commit of `actual` carried its counters across.
fn crossings(
    specs: &[CounterSpec],
    usages: &[CounterUsage],
    actual: Amount,
) -> Vec<ThresholdCrossing> {
    let mut out = Vec::new();
    for (spec, usage) in specs.iter().zip(usages) {
        if spec.limit.alert_thresholds.is_empty() {
            continue;
        }
        let after = percent_used(spec.cap(), usage.committed);
        let before = percent_used(spec.cap(), usage.committed.saturating_sub(actual));
        for &threshold in &spec.limit.alert_thresholds {
            let t = u32::from(threshold);
            if before < t && after >= t {
                out.push(ThresholdCrossing {
                    limit: spec.limit.clone(),
                    scope: spec.key.scope.clone(),
                    threshold,
                    usage: *usage,
                });
            }
        }
    }
    out
}

fn window_error(period: Period, e: jiff::Error) -> BudgetError {
    BudgetError::Window {
        period: period.as_str(),
        message: e.to_string(),
    }
}

/// What a reservation holds until it is settled.
#[derive(Debug)]
struct Held {
    ticket: Ticket,
    who: Attribution,
    /// The model as the price table names it.
    model: Arc<str>,
    /// The model as the caller named it, when that differs.
    requested_model: Option<Arc<str>>,
    amount: Amount,
    /// The limits the counters were chosen under, to tell whether they still apply.
    limits: Arc<LimitSet>,
    specs: Vec<CounterSpec>,
    /// The task scope the call was made in, to record its usage into.
    scope: Option<TaskScope>,
    /// The counters of the scope's own limits (and its parents'), part of `specs`.
    scoped: Vec<CounterSpec>,
    /// The prompt tokens reserved for.
    input_tokens: u64,
    /// Choices the call asked for: each may use the whole granted output.
    choices: u64,
    /// Set once the request was handed to the provider: from then on the call may be billed,
    /// and dropping the reservation charges it (with these details) instead of releasing it.
    sent: Option<CommitDetails>,
}

impl Held {
    /// What the provider may bill for the call at most: the prompt and every choice's whole
    /// granted output.
    fn billed_at_most(&self) -> Usage {
        Usage::new(
            self.input_tokens,
            self.ticket.units().saturating_mul(self.choices),
        )
    }
}

/// Budget held for one call. Commit it with the actual usage, or drop it.
///
/// Dropping it gives the budget back while the call has not been sent. Once
/// [`Reservation::mark_sent`] says the request was handed to the provider, the provider may
/// bill it whatever happens to the caller (a timeout, a disconnect, a shutdown): dropping it
/// then commits [`Reservation::billed_at_most`], flagged estimated, instead.
#[must_use = "a reservation holds budget until it is committed or dropped"]
#[derive(Debug)]
pub struct Reservation<S: BudgetStore = MemoryBudgetStore, L: Ledger = MemoryLedger> {
    budget: Budget<S, L>,
    /// `None` once committed or released.
    held: Option<Held>,
}

impl<S: BudgetStore, L: Ledger> Reservation<S, L> {
    fn held(&self) -> &Held {
        self.held
            .as_ref()
            .expect("a reservation is only emptied by the methods that consume it")
    }

    /// What is held on every matching limit.
    pub fn amount(&self) -> Amount {
        self.held().amount
    }

    /// The output tokens granted: the output cap the call must be sent with (per choice).
    pub fn granted_output(&self) -> u64 {
        self.held().ticket.units()
    }

    /// The most a provider can bill for this call as granted: the prompt, and the granted
    /// output for every choice. What a sent call is charged when its outcome is unknown.
    pub fn billed_at_most(&self) -> Usage {
        self.held().billed_at_most()
    }

    /// Whose call it is.
    pub fn attribution(&self) -> &Attribution {
        &self.held().who
    }

    /// The model, as the price table names it.
    pub fn model(&self) -> &str {
        &self.held().model
    }

    /// Says the request is being handed to the provider now. From here on the call may be
    /// billed even if nobody sees its answer, so dropping the reservation commits
    /// [`Reservation::billed_at_most`] with `details` (flagged estimated) rather than
    /// releasing it. [`Reservation::release`] still gives it back, for a call the provider
    /// certainly did not bill.
    pub fn mark_sent(&mut self, details: CommitDetails) {
        if let Some(held) = self.held.as_mut() {
            held.sent = Some(details);
        }
    }

    /// Whether [`Reservation::mark_sent`] was called.
    pub fn is_sent(&self) -> bool {
        self.held().sent.is_some()
    }

    /// Settles with the usage the provider reported: unused budget goes back, excess is
    /// committed as overshoot, and one event goes to the ledger.
    ///
    /// The commit is taken when this is called: dropping the returned future, polled or not,
    /// still settles and records it exactly once (only the outcome is not seen).
    pub fn commit(
        self,
        actual: Usage,
    ) -> impl Future<Output = Result<Committed, BudgetError>> + Send + 'static {
        self.commit_with(actual, CommitDetails::default())
    }

    /// [`Reservation::commit`] with details: the served model, an estimated flag, the kind.
    pub fn commit_with(
        mut self,
        actual: Usage,
        details: CommitDetails,
    ) -> impl Future<Output = Result<Committed, BudgetError>> + Send + 'static {
        let held = self.held.take().expect("not yet settled");
        let mut pending = PendingCommit::new(self.budget.clone(), held, actual, details);
        async move { pending.run().await }
    }

    /// Gives the budget back without recording usage: the call never reached the provider,
    /// or the provider certainly did not bill it.
    pub fn release(mut self) {
        if let Some(held) = self.held.take() {
            self.budget.inner.store.release(held.ticket);
        }
    }
}

impl<S: BudgetStore, L: Ledger> Drop for Reservation<S, L> {
    fn drop(&mut self) {
        let Some(mut held) = self.held.take() else {
            return;
        };
        match held.sent.take() {
            None => self.budget.inner.store.release(held.ticket),
            Some(details) => {
                let usage = held.billed_at_most();
                let details = CommitDetails {
                    estimated: true,
                    ..details
                };
                self.budget.settle_detached(held, usage, details);
            }
        }
    }
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Budget>();
    assert_send_sync::<Reservation>();
    assert_send_sync::<BudgetError>();
};
