//! The ledger: every usage event, and the totals users ask for.
//!
//! A [`UsageEvent`] is written once per call that reached a provider (or was served from cache,
//! or summarised a conversation), with who, which model, the usage by price class, the exact
//! cost and whether the counts were estimated. Usage *accumulates*: totals are sums of events,
//! never a last value (the seed sketch overwrote per-agent usage on each call).
//!
//! Queries group by any of agent, task, user, session, model (priced or requested), step, tag,
//! kind and calendar bucket, over a time range; [`Ledger::top`] ranks spenders.
//!
//! Which ledger a program uses can be configuration: [`AnyLedger`] opens the one a
//! [`LedgerUrl`] names (`memory:`, a SQLite file path, a `postgres://` URL), by default the
//! embedded SQLite file at [`default_ledger_path`].

mod any;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use jiff::Timestamp;
use jiff::tz::TimeZone;

pub use any::{
    AnyLedger, DEFAULT_POSTGRES_NAMESPACE, HOME_VAR, LEDGER_URL_VAR, LedgerUrl, LedgerUrlError,
    OpenLedgerError, default_ledger_path,
};
pub use memory::MemoryLedger;

pub use crate::backend_error::BackendErrorKind;
#[cfg(feature = "postgres")]
pub use postgres::{POSTGRES_SCHEMA_VERSION, PostgresControlLog, PostgresLedger};
#[cfg(feature = "sqlite")]
pub use sqlite::{
    Durability, SQLITE_SCHEMA_VERSION, SqliteControlLog, SqliteLedger, SqliteOptions,
};

use crate::admission::Amount;
use crate::attribution::Attribution;
use crate::limits::Period;
use crate::{Money, Usage};

/// What kind of spend an event records.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A call that reached a provider.
    Call,
    /// A response served from the response cache: no provider call, `saved` says what it spared.
    CacheHit,
    /// A call made to summarise a conversation for context compression.
    Summary,
}

impl EventKind {
    /// A short name: `call`, `cache_hit`, `summary`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Call => "call",
            EventKind::CacheHit => "cache_hit",
            EventKind::Summary => "summary",
        }
    }
}

/// One recorded spend.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UsageEvent {
    /// Unique within the budget that recorded it.
    pub id: u64,
    /// When it was committed.
    pub at: Timestamp,
    /// Who spent it.
    pub attribution: Attribution,
    /// The model it was priced as (the price table's canonical id, or the id as served).
    pub model: Arc<str>,
    /// The model the caller asked for, when it differs (routing, dated ids).
    pub requested_model: Option<Arc<str>>,
    /// Tokens by price class.
    pub usage: Usage,
    /// Exact cost.
    pub cost: Money,
    /// `true` when the counts (or the price) were estimated rather than reported.
    pub estimated: bool,
    /// What kind of spend.
    pub kind: EventKind,
    /// Tokens and money this event avoided spending (cache hits, compression).
    pub saved: Amount,
}

/// A grouping (or filtering) dimension.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dimension {
    /// By agent.
    Agent,
    /// By task.
    Task,
    /// By step within a task.
    Step,
    /// By user.
    User,
    /// By session.
    Session,
    /// By priced model.
    Model,
    /// By the model the caller asked for, when it differs from the priced one (routing, dated
    /// ids); [`KeyPart::None`] when the caller got the model it asked for.
    RequestedModel,
    /// By the value of one tag.
    Tag(Arc<str>),
    /// By event kind.
    Kind,
    /// By calendar bucket in the query's time zone.
    Bucket(Period),
}

/// One part of a group's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyPart {
    /// The event has no value for this dimension (no user, no task, ...).
    None,
    /// A text value.
    Text(Arc<str>),
    /// A step number.
    Step(u32),
    /// An event kind.
    Kind(EventKind),
    /// The start of a calendar bucket.
    Bucket(Timestamp),
}

impl fmt::Display for KeyPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyPart::None => f.write_str("-"),
            KeyPart::Text(t) => f.write_str(t),
            KeyPart::Step(s) => write!(f, "{s}"),
            KeyPart::Kind(k) => f.write_str(k.as_str()),
            KeyPart::Bucket(t) => write!(f, "{t}"),
        }
    }
}

impl KeyPart {
    /// A text key part.
    pub fn text(t: impl Into<Arc<str>>) -> KeyPart {
        KeyPart::Text(t.into())
    }
}

impl Dimension {
    /// The event's value on this dimension.
    pub fn key_of(&self, event: &UsageEvent, tz: &TimeZone) -> KeyPart {
        let text = |v: Option<&str>| v.map_or(KeyPart::None, |v| KeyPart::Text(v.into()));
        let who = &event.attribution;
        match self {
            Dimension::Agent => KeyPart::Text(who.agent_arc().clone()),
            Dimension::Task => text(who.task().map(|t| t.as_str())),
            Dimension::Step => who.step().map_or(KeyPart::None, KeyPart::Step),
            Dimension::User => text(who.user()),
            Dimension::Session => text(who.session()),
            Dimension::Model => KeyPart::Text(event.model.clone()),
            Dimension::RequestedModel => event
                .requested_model
                .clone()
                .map_or(KeyPart::None, KeyPart::Text),
            Dimension::Tag(key) => text(who.tag(key)),
            Dimension::Kind => KeyPart::Kind(event.kind),
            Dimension::Bucket(period) => period
                .bounds(event.at, tz)
                .map_or(KeyPart::None, |(start, _)| KeyPart::Bucket(start)),
        }
    }
}

/// What to total.
#[derive(Debug, Clone)]
pub struct LedgerQuery {
    /// Events at or after this instant.
    pub since: Option<Timestamp>,
    /// Events strictly before this instant.
    pub until: Option<Timestamp>,
    /// Group by these, in order; empty = one grand total.
    pub group_by: Vec<Dimension>,
    /// Keep only events whose value on each dimension equals the given part.
    pub filters: Vec<(Dimension, KeyPart)>,
    /// The zone calendar buckets are cut in.
    pub time_zone: TimeZone,
}

impl Default for LedgerQuery {
    fn default() -> LedgerQuery {
        LedgerQuery {
            since: None,
            until: None,
            group_by: Vec::new(),
            filters: Vec::new(),
            time_zone: TimeZone::UTC,
        }
    }
}

impl LedgerQuery {
    /// Totals grouped by the given dimensions, over all time.
    pub fn group_by(dims: impl IntoIterator<Item = Dimension>) -> LedgerQuery {
        LedgerQuery {
            group_by: dims.into_iter().collect(),
            ..LedgerQuery::default()
        }
    }

    /// Restricts to `[since, until)`.
    pub fn between(mut self, since: Timestamp, until: Timestamp) -> LedgerQuery {
        self.since = Some(since);
        self.until = Some(until);
        self
    }

    /// Keeps only events whose `dim` equals `value`.
    pub fn filter(mut self, dim: Dimension, value: KeyPart) -> LedgerQuery {
        self.filters.push((dim, value));
        self
    }

    /// Cuts calendar buckets in `tz`.
    pub fn in_time_zone(mut self, tz: TimeZone) -> LedgerQuery {
        self.time_zone = tz;
        self
    }

    /// Whether an event falls in the query's range and filters.
    pub fn matches(&self, event: &UsageEvent) -> bool {
        self.since.is_none_or(|s| event.at >= s)
            && self.until.is_none_or(|u| event.at < u)
            && self
                .filters
                .iter()
                .all(|(dim, want)| dim.key_of(event, &self.time_zone) == *want)
    }
}

/// The totals of one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupTotal {
    /// The group's value on each `group_by` dimension, in order.
    pub key: Vec<KeyPart>,
    /// Summed usage.
    pub usage: Usage,
    /// Summed cost.
    pub cost: Money,
    /// How many events.
    pub events: u64,
    /// How many of them were estimated.
    pub estimated_events: u64,
    /// Summed savings.
    pub saved: Amount,
}

impl GroupTotal {
    /// Adds one event.
    pub fn add(&mut self, event: &UsageEvent) {
        self.usage.accumulate(&event.usage);
        self.cost += event.cost;
        self.events += 1;
        self.estimated_events += u64::from(event.estimated);
        self.saved = self.saved.saturating_add(event.saved);
    }
}

/// One status line: the group's key (`-` for a dimension without a value, `(all)` for no
/// grouping), its tokens split by kind (cached and reasoning only when present), the exact cost,
/// the events (and how many were estimated) and any savings.
///
/// ```
/// use budget_core::ledger::{GroupTotal, KeyPart};
/// use budget_core::{Amount, Money, Usage};
///
/// let total = GroupTotal {
///     key: vec![KeyPart::text("researcher"), KeyPart::text("gpt-4o")],
///     usage: Usage::new(1200, 300).with_cached_input(200).with_reasoning(40),
///     cost: Money::parse_dollars("0.0087125").unwrap(),
///     events: 3,
///     estimated_events: 1,
///     saved: Amount::new(500, Money::parse_dollars("0.00125").unwrap()),
/// };
/// assert_eq!(
///     total.to_string(),
///     "researcher / gpt-4o: 1500 tokens (1200 in, 200 cached, 300 out, 40 reasoning), \
///      $0.0087125 over 3 events (1 estimated), saved 500 tokens / $0.00125"
/// );
/// let plain = GroupTotal { usage: Usage::new(10, 5), events: 1, ..GroupTotal::default() };
/// assert_eq!(plain.to_string(), "(all): 15 tokens (10 in, 5 out), $0.00 over 1 event");
/// ```
impl fmt::Display for GroupTotal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str("(all)")?;
        }
        for (i, part) in self.key.iter().enumerate() {
            if i > 0 {
                f.write_str(" / ")?;
            }
            write!(f, "{part}")?;
        }
        let u = &self.usage;
        write!(f, ": {} tokens ({} in", u.total(), u.input)?;
        if u.cached_input > 0 {
            write!(f, ", {} cached", u.cached_input)?;
        }
        if u.cache_write > 0 {
            write!(f, ", {} cache-write", u.cache_write)?;
        }
        write!(f, ", {} out", u.output)?;
        if u.reasoning > 0 {
            write!(f, ", {} reasoning", u.reasoning)?;
        }
        let plural = if self.events == 1 { "" } else { "s" };
        write!(f, "), {} over {} event{plural}", self.cost, self.events)?;
        if self.estimated_events > 0 {
            write!(f, " ({} estimated)", self.estimated_events)?;
        }
        if self.saved != Amount::ZERO {
            write!(
                f,
                ", saved {} tokens / {}",
                self.saved.tokens, self.saved.money
            )?;
        }
        Ok(())
    }
}

/// What to rank spenders by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankBy {
    /// Total tokens.
    Tokens,
    /// Cost.
    Cost,
}

crate::backend_error::backend_error! {
    /// A ledger that could not record or answer: what [kind](LedgerError::kind) of failure,
    /// which ledger, what went wrong, and the driver's error as its
    /// [`source`](std::error::Error::source).
    ///
    /// ```
    /// use budget_core::ledger::LedgerError;
    /// use budget_core::BackendErrorKind;
    ///
    /// let e = LedgerError::new(BackendErrorKind::Refused, "/var/lib/tb/ledger.db", "disk full");
    /// assert_eq!(e.to_string(), "ledger /var/lib/tb/ledger.db: disk full");
    /// assert_eq!(e.ledger(), "/var/lib/tb/ledger.db");
    /// ```
    LedgerError, ledger, "ledger", "`memory`, a file path, a URL"
}

/// Where usage events go, and where totals come from.
///
/// # Hand-over at call time
///
/// [`Ledger::record`] takes the event *when it is called*, before its future is first polled:
/// the future only waits for the ledger to say the event is stored. Dropping that future —
/// unpolled, or half-way — loses nothing and stores nothing twice; [`Ledger::flush`] waits for
/// such events. This is what lets a commit that is cancelled (a timeout, a dropped stream, a
/// runtime shutting down) still reach the books without a spawned task. Every ledger here is
/// held to it by the ledger suite.
pub trait Ledger: Send + Sync + 'static {
    /// Records one event: taken at call time (see the trait docs); the future resolves once
    /// the ledger holds it (durable ledgers: once it is durable), or with the reason it could
    /// not.
    fn record(&self, event: UsageEvent) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Waits until every event handed over so far is stored (events whose `record` future was
    /// dropped included). A program calls it (through [`Budget::flush`](crate::Budget::flush))
    /// before it exits.
    fn flush(&self) -> impl Future<Output = Result<(), LedgerError>> + Send {
        std::future::ready(Ok(()))
    }

    /// `true` when the events outlive the process (a file, a database): a budget built on such
    /// a ledger rebuilds its calendar windows from it at start-up unless told not to.
    fn is_durable(&self) -> bool {
        false
    }

    /// Totals per group, sorted by key.
    fn totals(
        &self,
        query: &LedgerQuery,
    ) -> impl Future<Output = Result<Vec<GroupTotal>, LedgerError>> + Send;

    /// The `n` largest groups of `query` by `by`, largest first (ties by key).
    fn top(
        &self,
        query: &LedgerQuery,
        by: RankBy,
        n: usize,
    ) -> impl Future<Output = Result<Vec<GroupTotal>, LedgerError>> + Send {
        async move {
            let mut groups = self.totals(query).await?;
            match by {
                RankBy::Tokens => groups.sort_by(|a, b| {
                    b.usage
                        .total()
                        .cmp(&a.usage.total())
                        .then_with(|| a.key.cmp(&b.key))
                }),
                RankBy::Cost => {
                    groups.sort_by(|a, b| b.cost.cmp(&a.cost).then_with(|| a.key.cmp(&b.key)))
                }
            }
            groups.truncate(n);
            Ok(groups)
        }
    }
}
