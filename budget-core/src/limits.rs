//! What a budget is: a [`Limit`] is a selector (whose calls) × a window (over what time) × a cap
//! (tokens and/or money) × an enforcement (hard: deny; soft: only alert at thresholds).
//!
//! Several limits apply to one call at once: a call by agent `researcher` for user `alice` is
//! checked against the global daily cap, the researcher's per-task cap and alice's monthly cap
//! together, and reserved on all of them or on none.
//!
//! A window's identity is computed from the clock (the start of the current calendar day in the
//! configured time zone, say), so a new day simply has a new counter: there is no reset job to
//! forget, run twice, or run in the wrong time zone.

use std::fmt;
use std::sync::Arc;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};

use crate::Money;
use crate::attribution::{Attribution, TaskId};
use crate::ledger::{Dimension, KeyPart};

/// The scope value of the global selector's one counter.
static GLOBAL_SCOPE: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from("*"));

/// Which calls a limit applies to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    /// Every call.
    Global,
    /// Calls by an agent (or each agent separately).
    Agent(Values),
    /// Calls of a task (or each task separately).
    Task(Values),
    /// Calls for a user (or each user separately); calls without a user are not matched.
    User(Values),
    /// Calls to a model, by its canonical price-table id (or each model separately).
    Model(Values),
    /// Calls carrying a tag.
    Tag {
        /// The tag's key.
        key: Arc<str>,
        /// Its value (or each value separately).
        value: Values,
    },
}

/// Whether a selector names one value or counts every value apart.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Values {
    /// Each distinct value gets its own counter ("every agent may spend 1M a day").
    Each,
    /// Only this value ("the researcher may spend 2M a day").
    Is(Arc<str>),
}

/// The former name of [`Values`], before "scope" was left to task scopes alone.
#[deprecated(note = "renamed `limits::Values`")]
pub type Scope = Values;

impl Selector {
    /// Calls by the named agent.
    pub fn agent(name: impl Into<Arc<str>>) -> Selector {
        Selector::Agent(Values::Is(name.into()))
    }

    /// Calls for the named user.
    pub fn user(name: impl Into<Arc<str>>) -> Selector {
        Selector::User(Values::Is(name.into()))
    }

    /// Calls to the named model.
    pub fn model(name: impl Into<Arc<str>>) -> Selector {
        Selector::Model(Values::Is(name.into()))
    }

    /// Calls of the named task.
    pub fn task(id: impl Into<Arc<str>>) -> Selector {
        Selector::Task(Values::Is(id.into()))
    }

    /// Calls tagged `key=value`.
    pub fn tag(key: impl Into<Arc<str>>, value: impl Into<Arc<str>>) -> Selector {
        Selector::Tag {
            key: key.into(),
            value: Values::Is(value.into()),
        }
    }

    /// The counter scope of a call under this selector, or `None` when it does not apply.
    fn scope_of(&self, who: &Attribution, model: &Arc<str>) -> Option<Arc<str>> {
        fn pick(scope: &Values, value: Option<&Arc<str>>) -> Option<Arc<str>> {
            let value = value?;
            match scope {
                Values::Each => Some(value.clone()),
                Values::Is(wanted) if wanted == value => Some(value.clone()),
                Values::Is(_) => None,
            }
        }
        match self {
            Selector::Model(s) => model_scope(s, model),
            Selector::Global => Some(GLOBAL_SCOPE.clone()),
            Selector::Agent(s) => pick(s, Some(who.agent_arc())),
            Selector::Task(s) => match (s, who.task()) {
                (_, None) => None,
                (Values::Each, Some(t)) => Some(Arc::from(t.as_str())),
                (Values::Is(wanted), Some(t)) if **wanted == *t.as_str() => Some(wanted.clone()),
                (Values::Is(_), Some(_)) => None,
            },
            Selector::User(s) => pick(s, who.user_arc()),
            Selector::Tag { key, value } => pick(value, who.tag_arc(key)),
        }
    }
}

impl Selector {
    /// The counter scope that usage recorded with `value` on this selector's dimension (the
    /// agent, user, model or tag value of a ledger event) falls in, or `None` when the limit
    /// does not apply to it. Used to rebuild windows from the ledger.
    pub fn scope_of_value(&self, value: &Arc<str>) -> Option<Arc<str>> {
        match self {
            Selector::Global => Some(GLOBAL_SCOPE.clone()),
            Selector::Model(s) => model_scope(s, value),
            Selector::Agent(s)
            | Selector::User(s)
            | Selector::Task(s)
            | Selector::Tag { value: s, .. } => match s {
                Values::Each => Some(value.clone()),
                Values::Is(wanted) if wanted == value => Some(value.clone()),
                Values::Is(_) => None,
            },
        }
    }

    /// The one counter scope this selector names, if it names one: `*` for [`Selector::Global`],
    /// the value of a [`Values::Is`]; `None` for [`Values::Each`], whose counters appear with
    /// their values. Status reports show such a limit before its first call.
    pub fn named_scope(&self) -> Option<Arc<str>> {
        match self {
            Selector::Global => Some(GLOBAL_SCOPE.clone()),
            Selector::Agent(s)
            | Selector::User(s)
            | Selector::Model(s)
            | Selector::Task(s)
            | Selector::Tag { value: s, .. } => match s {
                Values::Is(v) => Some(v.clone()),
                Values::Each => None,
            },
        }
    }

    /// How ledger totals must be grouped to find this selector's counters: by nothing (the
    /// global counter), or by the one dimension it selects on. `None` for task selectors: the
    /// ledger's tasks are not the running process's.
    pub(crate) fn ledger_grouping(&self) -> Option<Vec<Dimension>> {
        Some(match self {
            Selector::Global => Vec::new(),
            Selector::Agent(_) => vec![Dimension::Agent],
            Selector::User(_) => vec![Dimension::User],
            Selector::Model(_) => vec![Dimension::Model],
            Selector::Tag { key, .. } => vec![Dimension::Tag(key.clone())],
            Selector::Task(_) => return None,
        })
    }

    /// The counter scope a ledger group (grouped by [`Selector::ledger_grouping`]) falls in,
    /// matched as a live call is: `None` when the limit does not apply to it.
    pub(crate) fn scope_of_group(&self, key: &[KeyPart]) -> Option<Arc<str>> {
        match key.first() {
            None => Some(GLOBAL_SCOPE.clone()),
            Some(KeyPart::Text(v)) => self.scope_of_value(v),
            // No value on this dimension: the limit never matched.
            Some(_) => None,
        }
    }
}

/// A model selector's counter scope for a call to `model`.
///
/// A model limit covers its model under every name a provider or a price file gives it:
/// `Selector::model("gpt-4o")` applies to `gpt-4o`, `gpt-4o-2024-08-06`, `openai/gpt-4o` and
/// `azure/gpt-4o-2024-08-06` alike (not to `gpt-4o-mini`, another model); `Values::Each` counts
/// each model under its family name. The family is the id without provider prefix, date,
/// `@version` or `-latest` suffix, as [`model_family`] strips them — except Google AI Studio's
/// `gemini/` prefix, which the price file keeps apart from Vertex AI's bare `gemini-…` ids. A selector naming a dated
/// id (`gpt-4o-2024-05-13`) covers that version's family too: limits are on models, not on
/// snapshots.
fn model_scope(scope: &Values, model: &Arc<str>) -> Option<Arc<str>> {
    match scope {
        Values::Each => Some(Arc::from(model_family(model))),
        Values::Is(wanted) if wanted == model => Some(wanted.clone()),
        Values::Is(wanted) if model_family(wanted) == model_family(model) => Some(wanted.clone()),
        Values::Is(_) => None,
    }
}

/// The family of a model id: the id without a provider prefix (`openai/`, `azure/`,
/// `anthropic.`), a snapshot date (`-2024-08-06`, `-20241022`), an `@version` or a `-latest`
/// suffix, as the price table resolves dated ids. `gpt-4o-2024-08-06` → `gpt-4o`.
pub fn model_family(model: &str) -> String {
    let mut name = model.to_ascii_lowercase();
    // Each step strips one layer; a handful is the most any real id has.
    for _ in 0..8 {
        match crate::pricing::strip_once(&name) {
            Some(shorter) if shorter != name && !shorter.is_empty() => name = shorter,
            _ => break,
        }
    }
    name
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scope = |s: &Values| match s {
            Values::Each => "each".to_string(),
            Values::Is(v) => v.to_string(),
        };
        match self {
            Selector::Global => f.write_str("global"),
            Selector::Agent(s) => write!(f, "agent={}", scope(s)),
            Selector::Task(s) => write!(f, "task={}", scope(s)),
            Selector::User(s) => write!(f, "user={}", scope(s)),
            Selector::Model(s) => write!(f, "model={}", scope(s)),
            Selector::Tag { key, value } => write!(f, "tag:{key}={}", scope(value)),
        }
    }
}

/// A calendar period, in the budget's configured time zone. Weeks start on Monday (ISO 8601).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// A clock hour.
    Hour,
    /// A calendar day.
    Day,
    /// A Monday-to-Sunday week.
    Week,
    /// A calendar month.
    Month,
}

impl Period {
    /// The period containing `now` in `tz`, as `[start, end)`.
    pub fn bounds(
        self,
        now: Timestamp,
        tz: &TimeZone,
    ) -> Result<(Timestamp, Timestamp), jiff::Error> {
        let zoned = now.to_zoned_datetime(tz.clone());
        let (start, end) = match self {
            Period::Hour => {
                let start = zoned
                    .with()
                    .minute(0)
                    .second(0)
                    .subsec_nanosecond(0)
                    .build()?
                    .timestamp();
                (start, start.checked_add(SignedDuration::from_hours(1))?)
            }
            Period::Day => {
                let start = zoned.start_of_day()?;
                let end = start.date().tomorrow()?.to_zoned_datetime(tz.clone())?;
                (start.timestamp(), end.timestamp())
            }
            Period::Week => {
                let back = i64::from(zoned.weekday().to_monday_zero_offset());
                let monday = zoned.date().checked_sub(back.days())?;
                let start = monday.to_zoned_datetime(tz.clone())?;
                let end = monday
                    .checked_add(7.days())?
                    .to_zoned_datetime(tz.clone())?;
                (start.timestamp(), end.timestamp())
            }
            Period::Month => {
                let first = zoned.date().first_of_month();
                let start = first.to_zoned_datetime(tz.clone())?;
                let end = first
                    .checked_add(1.month())?
                    .to_zoned_datetime(tz.clone())?;
                (start.timestamp(), end.timestamp())
            }
        };
        Ok((start, end))
    }

    /// A short name: `hour`, `day`, `week`, `month`.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }
}

/// Over what time a limit's usage adds up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// Each task separately, for its whole life. Calls without a task are not matched.
    PerTask,
    /// The last `duration` before now, measured in [`ROLLING_SLOTS`] slots: usage leaves the
    /// window when its whole slot has, so the count errs on the high (safe) side by at most one
    /// slot.
    Rolling(SignedDuration),
    /// The current calendar period.
    Calendar(Period),
}

/// How many slots a rolling window is measured in.
pub const ROLLING_SLOTS: u32 = 60;

/// How many slots a rolling window's counter keeps: the slot of now and the
/// [`ROLLING_SLOTS`] before it. The oldest of them straddles the window's start, so a slot is
/// only dropped once *all* of it is older than the window: usage leaves up to one slot late,
/// never early (with 60 slots, usage at 10:00:59 in an hour window still counts at 11:00:30).
pub const ROLLING_LIVE_SLOTS: u32 = ROLLING_SLOTS + 1;

/// The concrete window a call falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WindowSpan {
    /// A task's whole life.
    Task,
    /// A rolling window: the slot width in nanoseconds and the current slot number.
    Rolling {
        /// Width of one slot, in nanoseconds.
        slot_nanos: i64,
        /// `now / slot_nanos`.
        slot: i64,
    },
    /// A calendar period `[start, end)`.
    Calendar {
        /// Its first instant.
        start: Timestamp,
        /// The first instant of the next period.
        end: Timestamp,
    },
}

impl WindowSpan {
    /// Whether `now` still falls in this window.
    pub fn contains(&self, now: Timestamp) -> bool {
        match *self {
            WindowSpan::Task => true,
            WindowSpan::Rolling { slot_nanos, slot } => {
                i64::try_from(now.as_nanosecond()).is_ok_and(|n| n.div_euclid(slot_nanos) == slot)
            }
            WindowSpan::Calendar { start, end } => start <= now && now < end,
        }
    }

    /// The number that, with the limit and scope, names this window's counter.
    pub fn id(&self) -> i64 {
        match self {
            WindowSpan::Task | WindowSpan::Rolling { .. } => 0,
            WindowSpan::Calendar { start, .. } => start.as_second(),
        }
    }
}

impl Window {
    /// The window containing `now`.
    pub fn span(&self, now: Timestamp, tz: &TimeZone) -> Result<WindowSpan, jiff::Error> {
        Ok(match *self {
            Window::PerTask => WindowSpan::Task,
            Window::Rolling(duration) => {
                let slot_nanos = i64::try_from(duration.as_nanos() / i128::from(ROLLING_SLOTS))
                    .unwrap_or(i64::MAX)
                    .max(1);
                let now_nanos = i64::try_from(now.as_nanosecond()).unwrap_or(i64::MAX);
                WindowSpan::Rolling {
                    slot_nanos,
                    slot: now_nanos.div_euclid(slot_nanos),
                }
            }
            Window::Calendar(period) => {
                let (start, end) = period.bounds(now, tz)?;
                WindowSpan::Calendar { start, end }
            }
        })
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Window::PerTask => f.write_str("per task"),
            Window::Rolling(d) => write!(f, "rolling {d:#}"),
            Window::Calendar(p) => write!(f, "per {}", p.as_str()),
        }
    }
}

/// A cap in tokens and/or money. A field left `None` is not limited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cap {
    /// Total tokens (input + output).
    pub tokens: Option<u64>,
    /// Money.
    pub money: Option<Money>,
}

/// Whether crossing the cap denies calls or only alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    /// Calls that would cross the cap are denied before they are made.
    Hard,
    /// Calls go through; crossing a threshold is reported.
    Soft,
}

/// One budget rule. Build with [`Limit::new`] and the `tokens` / `money` / `soft` /
/// `alert_at` methods.
///
/// ```
/// use budget_core::limits::{Limit, Period, Selector, Window};
/// use budget_core::Money;
///
/// let daily = Limit::new("researcher-daily", Selector::agent("researcher"), Window::Calendar(Period::Day))
///     .tokens(2_000_000)
///     .money(Money::from_dollars(20))
///     .alert_at(&[70, 90]);
/// assert_eq!(daily.cap.tokens, Some(2_000_000));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limit {
    /// A unique name; counters are keyed by it, so changing a cap keeps the usage so far.
    pub id: Arc<str>,
    /// Whose calls.
    pub selector: Selector,
    /// Over what time.
    pub window: Window,
    /// How much.
    pub cap: Cap,
    /// Deny or only alert.
    pub enforcement: Enforcement,
    /// Percentages of the cap at which a crossing is reported (e.g. 70 and 90).
    pub alert_thresholds: Vec<u8>,
}

impl Limit {
    /// A hard limit with no cap yet; add one with [`Limit::tokens`] and/or [`Limit::money`].
    pub fn new(id: impl Into<Arc<str>>, selector: Selector, window: Window) -> Limit {
        Limit {
            id: id.into(),
            selector,
            window,
            cap: Cap::default(),
            enforcement: Enforcement::Hard,
            alert_thresholds: Vec::new(),
        }
    }

    /// Caps total tokens.
    pub fn tokens(mut self, tokens: u64) -> Limit {
        self.cap.tokens = Some(tokens);
        self
    }

    /// Caps money.
    pub fn money(mut self, money: Money) -> Limit {
        self.cap.money = Some(money);
        self
    }

    /// Makes the limit soft: it alerts but never denies.
    pub fn soft(mut self) -> Limit {
        self.enforcement = Enforcement::Soft;
        self
    }

    /// Sets the alert thresholds, in percent of the cap.
    pub fn alert_at(mut self, percents: &[u8]) -> Limit {
        self.alert_thresholds = percents.to_vec();
        self.alert_thresholds.sort_unstable();
        self.alert_thresholds.dedup();
        self
    }

    /// Whether this limit denies calls.
    pub fn is_hard(&self) -> bool {
        self.enforcement == Enforcement::Hard
    }

    /// The counter a call falls in, or `None` when the limit does not apply to it.
    pub fn counter_for(
        &self,
        who: &Attribution,
        model: &Arc<str>,
        span: WindowSpan,
    ) -> Option<CounterKey> {
        let scope = self.selector.scope_of(who, model)?;
        let task = match self.window {
            Window::PerTask => Some(who.task()?.clone()),
            _ => None,
        };
        Some(CounterKey {
            limit: self.id.clone(),
            scope,
            task,
            window: span.id(),
        })
    }

    fn validate(&self) -> Result<(), LimitError> {
        let bad = |reason: String| LimitError::Invalid {
            limit: self.id.to_string(),
            reason,
        };
        if self.id.is_empty() {
            return Err(bad("the id is empty".into()));
        }
        if self.cap.tokens.is_none() && self.cap.money.is_none() {
            return Err(bad("no cap: set tokens, money or both".into()));
        }
        if self.cap.money.is_some_and(Money::is_negative) {
            return Err(bad("the money cap is negative".into()));
        }
        if let Window::Rolling(d) = self.window
            && (d.is_negative() || d.as_nanos() < i128::from(ROLLING_SLOTS))
        {
            return Err(bad(format!("rolling window {d:#} is too short")));
        }
        if let Some(t) = self.alert_thresholds.iter().find(|&&t| t == 0 || t > 100) {
            return Err(bad(format!("alert threshold {t}% is not in 1..=100")));
        }
        Ok(())
    }
}

/// Names one counter: limit × scope value × (task) × window.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterKey {
    /// The limit's id.
    pub limit: Arc<str>,
    /// The selected value (`*` for global).
    pub scope: Arc<str>,
    /// The task, for per-task windows.
    pub task: Option<TaskId>,
    /// The window's id ([`WindowSpan::id`]).
    pub window: i64,
}

/// A limit definition that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Two limits share an id.
    #[error("two limits are named {0:?}; limit ids must be unique")]
    DuplicateId(String),
    /// A limit is malformed.
    #[error("limit {limit:?}: {reason}")]
    Invalid {
        /// The limit's id.
        limit: String,
        /// What is wrong.
        reason: String,
    },
}

/// A validated set of limits.
#[derive(Debug, Clone, Default)]
pub struct LimitSet {
    limits: Vec<Arc<Limit>>,
}

impl LimitSet {
    /// Validates and collects limits. Two limits with one id are an error
    /// ([`LimitError::DuplicateId`]): counters are keyed by the id, so the second would
    /// silently replace the first, or share its usage.
    pub fn new(limits: impl IntoIterator<Item = Limit>) -> Result<LimitSet, LimitError> {
        let mut set = LimitSet::default();
        for limit in limits {
            set.insert(limit)?;
        }
        Ok(set)
    }

    /// Adds a limit, or replaces the one with the same id.
    pub fn upsert(&mut self, limit: Limit) -> Result<(), LimitError> {
        limit.validate()?;
        let limit = Arc::new(limit);
        match self.limits.iter_mut().find(|l| l.id == limit.id) {
            Some(slot) => *slot = limit,
            None => self.limits.push(limit),
        }
        Ok(())
    }

    /// Adds a limit whose id must be new.
    pub fn insert(&mut self, limit: Limit) -> Result<(), LimitError> {
        if self.get(&limit.id).is_some() {
            return Err(LimitError::DuplicateId(limit.id.to_string()));
        }
        self.upsert(limit)
    }

    /// Removes a limit; returns it if it existed.
    pub fn remove(&mut self, id: &str) -> Option<Arc<Limit>> {
        let at = self.limits.iter().position(|l| &*l.id == id)?;
        Some(self.limits.remove(at))
    }

    /// The limit with this id.
    pub fn get(&self, id: &str) -> Option<&Arc<Limit>> {
        self.limits.iter().find(|l| &*l.id == id)
    }

    /// All limits, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Limit>> {
        self.limits.iter()
    }

    /// How many limits.
    pub fn len(&self) -> usize {
        self.limits.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn calendar_windows_follow_the_time_zone() {
        let ny = TimeZone::get("America/New_York").unwrap();
        // 03:30 UTC on the 30th is still the 29th in New York.
        let (start, end) = Period::Day.bounds(ts("2026-11-30T03:30:00Z"), &ny).unwrap();
        assert_eq!(start, ts("2026-11-29T05:00:00Z"));
        assert_eq!(end, ts("2026-11-30T05:00:00Z"));
        let (start, end) = Period::Day
            .bounds(ts("2026-11-30T03:30:00Z"), &TimeZone::UTC)
            .unwrap();
        assert_eq!(
            (start, end),
            (ts("2026-11-30T00:00:00Z"), ts("2026-12-01T00:00:00Z"))
        );
    }

    #[test]
    fn dst_day_is_23_hours_and_weeks_start_monday() {
        let ny = TimeZone::get("America/New_York").unwrap();
        let (start, end) = Period::Day.bounds(ts("2026-03-08T12:00:00Z"), &ny).unwrap();
        assert_eq!(end.duration_since(start), SignedDuration::from_hours(23));
        // 2026-11-29 is a Sunday; its ISO week began Monday the 23rd.
        let (start, end) = Period::Week
            .bounds(ts("2026-11-29T21:00:00Z"), &TimeZone::UTC)
            .unwrap();
        assert_eq!(
            (start, end),
            (ts("2026-11-23T00:00:00Z"), ts("2026-11-30T00:00:00Z"))
        );
        let (start, end) = Period::Month
            .bounds(ts("2026-02-14T00:00:00Z"), &TimeZone::UTC)
            .unwrap();
        assert_eq!(
            (start, end),
            (ts("2026-02-01T00:00:00Z"), ts("2026-03-01T00:00:00Z"))
        );
        let kolkata = TimeZone::get("Asia/Kolkata").unwrap();
        let (start, _) = Period::Hour
            .bounds(ts("2026-11-29T21:10:00Z"), &kolkata)
            .unwrap();
        assert_eq!(start, ts("2026-11-29T20:30:00Z"));
    }

    #[test]
    fn window_ids_are_stable_within_and_change_across_periods() {
        // The seed keyed period limits inconsistently; ours come from one function of the clock.
        let w = Window::Calendar(Period::Day);
        let tz = TimeZone::UTC;
        let a = w.span(ts("2026-11-29T00:00:00Z"), &tz).unwrap().id();
        let b = w.span(ts("2026-11-29T23:59:59.999Z"), &tz).unwrap().id();
        let c = w.span(ts("2026-11-30T00:00:00Z"), &tz).unwrap().id();
        assert_eq!(a, b);
        assert_ne!(b, c);
    }

    #[test]
    fn selectors_pick_their_scope() {
        let model: Arc<str> = "gpt-4o".into();
        let who = Attribution::agent("r")
            .with_user("alice")
            .with_task(TaskId::new("t1"))
            .with_tag("team", "x");
        let span = WindowSpan::Task;
        let each_agent = Limit::new("a", Selector::Agent(Values::Each), Window::PerTask).tokens(1);
        let key = each_agent.counter_for(&who, &model, span).unwrap();
        assert_eq!(
            (&*key.scope, key.task.as_ref().map(TaskId::as_str)),
            ("r", Some("t1"))
        );
        assert!(
            Limit::new("b", Selector::agent("other"), Window::PerTask)
                .counter_for(&who, &model, span)
                .is_none()
        );
        assert!(
            Limit::new("c", Selector::Agent(Values::Each), Window::PerTask)
                .counter_for(&Attribution::agent("r"), &model, span)
                .is_none(),
            "per-task limits skip calls without a task"
        );
        for (sel, scope) in [
            (Selector::Global, "*"),
            (Selector::user("alice"), "alice"),
            (Selector::model("gpt-4o"), "gpt-4o"),
            (Selector::tag("team", "x"), "x"),
            (Selector::task("t1"), "t1"),
        ] {
            let l = Limit::new("d", sel, Window::Calendar(Period::Day)).tokens(1);
            assert_eq!(&*l.counter_for(&who, &model, span).unwrap().scope, scope);
        }
        assert!(
            Limit::new(
                "e",
                Selector::User(Values::Each),
                Window::Calendar(Period::Day)
            )
            .tokens(1)
            .counter_for(&Attribution::agent("r"), &model, span)
            .is_none()
        );
    }

    #[test]
    fn invalid_limits_are_named() {
        let err = LimitSet::new([Limit::new("x", Selector::Global, Window::PerTask)]).unwrap_err();
        assert!(err.to_string().contains("\"x\": no cap"), "{err}");
        let err = LimitSet::new([Limit::new("y", Selector::Global, Window::PerTask)
            .tokens(5)
            .alert_at(&[0])])
        .unwrap_err();
        assert!(err.to_string().contains("threshold 0%"), "{err}");
        let mut set =
            LimitSet::new([Limit::new("z", Selector::Global, Window::PerTask).tokens(5)]).unwrap();
        assert_eq!(
            set.insert(Limit::new("z", Selector::Global, Window::PerTask).tokens(6)),
            Err(LimitError::DuplicateId("z".into()))
        );
        set.upsert(Limit::new("z", Selector::Global, Window::PerTask).tokens(6))
            .unwrap();
        assert_eq!(set.get("z").unwrap().cap.tokens, Some(6));
    }
}
