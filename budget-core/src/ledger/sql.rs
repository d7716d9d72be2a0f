//! What the SQL ledgers (SQLite, PostgreSQL) share: the exact money columns, the grouping
//! columns, and folding the rows of a totals query into groups.
//!
//! Money is stored as two integers — nano-dollars and the yocto remainder below a nano-dollar
//! (< 10¹⁵) — and summed by the database in three parts (nanos, the remainder's upper and
//! lower 10⁹), so no float is ever involved and `SUM` cannot overflow a row's range early.

/// The indexes both SQL ledgers create on their events: the same DDL in both dialects, spliced
/// into each one's first migration with `concat!` (a migration is a literal, and never changes
/// once released).
macro_rules! event_indexes {
    () => {
        "CREATE INDEX usage_events_at      ON usage_events(at_ns);
CREATE INDEX usage_events_id      ON usage_events(id);
CREATE INDEX usage_events_agent   ON usage_events(agent, at_ns);
CREATE INDEX usage_events_task    ON usage_events(task, at_ns);
CREATE INDEX usage_events_user    ON usage_events(user_name, at_ns);
CREATE INDEX usage_events_model   ON usage_events(model, at_ns);
CREATE INDEX usage_events_kind    ON usage_events(kind, at_ns);
CREATE INDEX usage_event_tags_kv  ON usage_event_tags(tag_key, tag_value);
"
    };
}
pub(super) use event_indexes;

use foldhash::HashMap;
use jiff::Timestamp;

use super::{
    BackendErrorKind, Dimension, EventKind, GroupTotal, KeyPart, LedgerError, LedgerQuery,
};
use crate::admission::Amount;
use crate::limits::Period;
use crate::{Money, Usage};

/// Money units in one nano-dollar.
pub(super) const UNITS_PER_NANO: i128 = 1_000_000_000_000_000;

/// Nanoseconds in an hour: the unit calendar buckets are grouped by in SQL.
pub(super) const HOUR_NS: i64 = 3_600_000_000_000;

/// Refuses a schema version this build cannot open: newer than the `supported` one (written by
/// a newer token-budget), or negative. `which` adds to the message what names the schema
/// (PostgreSQL's namespace).
pub(super) fn check_schema_version(
    name: &str,
    version: i64,
    supported: i64,
    which: &str,
) -> Result<(), LedgerError> {
    if version > supported {
        return Err(error(
            BackendErrorKind::Corrupt,
            name,
            format!(
                "the ledger's schema version {version}{which} is newer than this build \
                 supports ({supported}); upgrade token-budget to open it"
            ),
        ));
    }
    if version < 0 {
        return Err(error(
            BackendErrorKind::Corrupt,
            name,
            format!("invalid schema version {version}"),
        ));
    }
    Ok(())
}

/// A ledger error of `kind` for the ledger `name`.
pub(super) fn error(
    kind: BackendErrorKind,
    name: &str,
    message: impl std::fmt::Display,
) -> LedgerError {
    LedgerError::new(kind, name, message.to_string())
}

/// A count as the databases' signed 64-bit integer.
pub(super) fn to_i64(v: u64, what: &str) -> Result<i64, String> {
    i64::try_from(v).map_err(|_| format!("{what} {v} exceeds the ledger's range (i64)"))
}

/// Money as (nano-dollars, yocto remainder in `0..10^15`).
pub(super) fn split_money(m: Money, what: &str) -> Result<(i64, i64), String> {
    let units = m.units();
    let nano = i64::try_from(units.div_euclid(UNITS_PER_NANO))
        .map_err(|_| format!("{what} {m} exceeds the ledger's range"))?;
    // In 0..10^15: always fits.
    let rem = units.rem_euclid(UNITS_PER_NANO) as i64;
    Ok((nano, rem))
}

/// A timestamp as nanoseconds, clamped to the `i64` range.
pub(super) fn clamp_ns(t: Timestamp) -> i64 {
    let ns = t.as_nanosecond();
    i64::try_from(ns).unwrap_or(if ns < 0 { i64::MIN } else { i64::MAX })
}

/// The column a dimension groups by (`None` for calendar buckets, folded in Rust).
pub(super) fn column(dim: &Dimension, tag_alias: &str) -> Option<String> {
    Some(match dim {
        Dimension::Agent => "e.agent".into(),
        Dimension::Task => "e.task".into(),
        Dimension::Step => "e.step".into(),
        Dimension::User => "e.user_name".into(),
        Dimension::Session => "e.session".into(),
        Dimension::Model => "e.model".into(),
        Dimension::RequestedModel => "e.requested_model".into(),
        Dimension::Kind => "e.kind".into(),
        Dimension::Tag(_) => format!("{tag_alias}.tag_value"),
        Dimension::Bucket(_) => return None,
    })
}

/// One row of a totals query, read by column index: the group columns, then the aggregates in
/// the order of the backends' `AGGREGATES` (input, cached, cache write, output, reasoning, cost
/// in three parts, count, estimated, saved tokens, saved money in three parts), then — when
/// grouping by calendar bucket — the earliest and latest event time.
pub(super) trait SqlRow {
    /// An integer column.
    fn int(&self, col: usize) -> Result<Option<i64>, LedgerError>;
    /// A text column.
    fn text(&self, col: usize) -> Result<Option<String>, LedgerError>;
}

/// Folds the rows of a totals query into the groups of `query`.
#[derive(Debug)]
pub(super) struct Folder<'q> {
    name: &'q str,
    query: &'q LedgerQuery,
    group_columns: usize,
    with_span: bool,
    groups: HashMap<Vec<KeyPart>, GroupTotal>,
}

impl<'q> Folder<'q> {
    /// A folder for rows with `group_columns` group columns; `with_span` when the rows end
    /// with the earliest and latest event time (grouping by calendar bucket).
    pub(super) fn new(
        name: &'q str,
        query: &'q LedgerQuery,
        group_columns: usize,
        with_span: bool,
    ) -> Folder<'q> {
        Folder {
            name,
            query,
            group_columns,
            with_span,
            groups: HashMap::default(),
        }
    }

    /// Adds one row. `Ok(false)` when the row's events straddle a calendar bucket (the query
    /// grouped too coarsely for this time zone: run it again by exact event time).
    pub(super) fn add(&mut self, row: &impl SqlRow) -> Result<bool, LedgerError> {
        // Non-bucket key parts, in SQL column order.
        let mut sql_keys = Vec::with_capacity(self.group_columns);
        let mut col = 0;
        for dim in &self.query.group_by {
            let part = match dim {
                Dimension::Bucket(_) => continue,
                Dimension::Step => row.int(col)?.map_or(KeyPart::None, |s| {
                    u32::try_from(s).map_or(KeyPart::None, KeyPart::Step)
                }),
                Dimension::Kind => {
                    let k = row.text(col)?.unwrap_or_default();
                    KeyPart::Kind(parse_kind(&k).ok_or_else(|| {
                        error(
                            BackendErrorKind::Corrupt,
                            self.name,
                            format!("unknown event kind {k:?} in the ledger"),
                        )
                    })?)
                }
                _ => row
                    .text(col)?
                    .map_or(KeyPart::None, |s| KeyPart::Text(s.into())),
            };
            sql_keys.push(part);
            col += 1;
        }
        let agg = self.group_columns;
        let int = |i: usize| -> Result<i64, LedgerError> { Ok(row.int(agg + i)?.unwrap_or(0)) };
        if int(8)? == 0 {
            return Ok(true); // the single row of an aggregate over no events
        }
        let count = |i: usize| int(i).map(|v| u64::try_from(v).unwrap_or(0));
        let money = |i: usize| -> Result<Money, LedgerError> {
            let units = i128::from(int(i)?)
                .saturating_mul(UNITS_PER_NANO)
                .saturating_add(i128::from(int(i + 1)?).saturating_mul(1_000_000_000))
                .saturating_add(i128::from(int(i + 2)?));
            Ok(Money::from_units(units))
        };
        let total = GroupTotal {
            key: Vec::new(),
            usage: Usage {
                input: count(0)?,
                cached_input: count(1)?,
                cache_write: count(2)?,
                output: count(3)?,
                reasoning: count(4)?,
            },
            cost: money(5)?,
            events: count(8)?,
            estimated_events: count(9)?,
            saved: Amount {
                tokens: count(10)?,
                money: money(11)?,
            },
        };
        let (min_at, max_at) = if self.with_span {
            (int(14)?, int(15)?)
        } else {
            (0, 0)
        };
        let tz = &self.query.time_zone;
        let mut key = Vec::with_capacity(self.query.group_by.len());
        let mut sql_keys = sql_keys.into_iter();
        for dim in &self.query.group_by {
            match dim {
                Dimension::Bucket(period) => {
                    let first = bucket_key(*period, min_at, tz);
                    if bucket_key(*period, max_at, tz) != first {
                        return Ok(false);
                    }
                    key.push(first);
                }
                _ => key.push(sql_keys.next().unwrap_or(KeyPart::None)),
            }
        }
        let group = self.groups.entry(key).or_insert_with_key(|k| GroupTotal {
            key: k.clone(),
            ..GroupTotal::default()
        });
        merge(group, &total);
        Ok(true)
    }

    /// The groups, sorted by key.
    pub(super) fn finish(self) -> Vec<GroupTotal> {
        let mut out: Vec<_> = self.groups.into_values().collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

fn bucket_key(period: Period, at_ns: i64, tz: &jiff::tz::TimeZone) -> KeyPart {
    Timestamp::from_nanosecond(i128::from(at_ns))
        .ok()
        .and_then(|at| period.bounds(at, tz).ok())
        .map_or(KeyPart::None, |(start, _)| KeyPart::Bucket(start))
}

fn merge(into: &mut GroupTotal, part: &GroupTotal) {
    into.usage.accumulate(&part.usage);
    into.cost += part.cost;
    into.events = into.events.saturating_add(part.events);
    into.estimated_events = into.estimated_events.saturating_add(part.estimated_events);
    into.saved = into.saved.saturating_add(part.saved);
}

fn parse_kind(s: &str) -> Option<EventKind> {
    [EventKind::Call, EventKind::CacheHit, EventKind::Summary]
        .into_iter()
        .find(|k| k.as_str() == s)
}

/// A `record` the ledger refused at hand-over (the ledger has failed, or the event does not fit
/// its columns). The refusal reaches the caller through the record's future; when that future
/// is dropped before it is read, the refusal is logged instead: an event the ledger did not
/// take is never lost without a word.
#[derive(Debug)]
pub(super) struct Refusal {
    error: LedgerError,
    event: u64,
    told: bool,
}

impl Refusal {
    /// The refusal of event `event` (its id) with `error`.
    pub(super) fn new(error: LedgerError, event: u64) -> Refusal {
        Refusal {
            error,
            event,
            told: false,
        }
    }

    /// The error, for the caller who reads it (no log then).
    pub(super) fn into_error(mut self) -> LedgerError {
        self.told = true;
        self.error.clone()
    }
}

impl Drop for Refusal {
    fn drop(&mut self) {
        if !self.told {
            tracing::error!(
                ledger = %self.error.ledger(),
                event = self.event,
                error = %self.error.message(),
                "usage event refused by the ledger; its record future was dropped before the \
                 refusal was read"
            );
        }
    }
}

/// One event as both backends store it: its columns, converted (and checked) before it is
/// queued, so that a value that does not fit reaches the caller, never a writer.
#[derive(Debug, Clone)]
pub(super) struct EventRow {
    pub(super) id: i64,
    pub(super) at_ns: i64,
    pub(super) agent: std::sync::Arc<str>,
    pub(super) task: Option<std::sync::Arc<str>>,
    pub(super) step: Option<i64>,
    pub(super) user: Option<std::sync::Arc<str>>,
    pub(super) session: Option<std::sync::Arc<str>>,
    pub(super) critical: bool,
    pub(super) model: std::sync::Arc<str>,
    pub(super) requested_model: Option<std::sync::Arc<str>>,
    /// Input, cached input, cache write, output, reasoning.
    pub(super) usage: [i64; 5],
    /// The cost as (nano-dollars, remainder in yocto-dollars).
    pub(super) cost: (i64, i64),
    pub(super) estimated: bool,
    pub(super) kind: &'static str,
    pub(super) saved_tokens: i64,
    /// The money saved, split as `cost` is.
    pub(super) saved: (i64, i64),
    /// (key, value) per tag.
    pub(super) tags: Vec<(std::sync::Arc<str>, std::sync::Arc<str>)>,
}

impl EventRow {
    /// The row of `e`; an error names what does not fit.
    pub(super) fn of(e: &super::UsageEvent) -> Result<EventRow, String> {
        use std::sync::Arc;
        let who = &e.attribution;
        let u = &e.usage;
        Ok(EventRow {
            id: to_i64(e.id, "event id")?,
            at_ns: i64::try_from(e.at.as_nanosecond())
                .map_err(|_| format!("event time {} is outside 1677..2262", e.at))?,
            agent: who.agent_arc().clone(),
            task: who.task().map(|t| Arc::from(t.as_str())),
            step: who.step().map(i64::from),
            user: who.user().map(Arc::from),
            session: who.session().map(Arc::from),
            critical: who.is_critical(),
            model: e.model.clone(),
            requested_model: e.requested_model.clone(),
            usage: [
                to_i64(u.input, "input tokens")?,
                to_i64(u.cached_input, "cached input tokens")?,
                to_i64(u.cache_write, "cache-write tokens")?,
                to_i64(u.output, "output tokens")?,
                to_i64(u.reasoning, "reasoning tokens")?,
            ],
            cost: split_money(e.cost, "cost")?,
            estimated: e.estimated,
            kind: e.kind.as_str(),
            saved_tokens: to_i64(e.saved.tokens, "saved tokens")?,
            saved: split_money(e.saved.money, "saved money")?,
            tags: who
                .tags()
                .map(|(k, v)| (Arc::from(k), Arc::from(v)))
                .collect(),
        })
    }
}

/// A query parameter, bound the same way by both backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Param {
    /// An integer.
    Int(i64),
    /// A text.
    Text(String),
}

/// What differs between the SQL the two backends take; everything else is built once, here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    /// SQLite: `?` placeholders, `0` for false, sums as they are.
    #[cfg(feature = "sqlite")]
    Sqlite,
    /// PostgreSQL: `$N` placeholders, `FALSE`, sums cast back to `BIGINT` (PostgreSQL raises
    /// "bigint out of range" rather than wrapping) and a filtered count for booleans.
    #[cfg(feature = "postgres")]
    Postgres,
}

impl Dialect {
    /// The placeholder of the `n`-th parameter (1-based), as sqlx's
    /// `Arguments::format_placeholder` writes it.
    fn placeholder(self, n: usize) -> String {
        match self {
            #[cfg(feature = "sqlite")]
            Dialect::Sqlite => {
                let _ = n; // positional: `?` needs no number
                "?".to_owned()
            }
            #[cfg(feature = "postgres")]
            Dialect::Postgres => format!("${n}"),
        }
    }

    /// A condition that matches nothing.
    fn nothing(self) -> &'static str {
        match self {
            #[cfg(feature = "sqlite")]
            Dialect::Sqlite => "0",
            #[cfg(feature = "postgres")]
            Dialect::Postgres => "FALSE",
        }
    }

    /// The aggregate columns after the group columns (without the bucket time columns), in
    /// the order [`Folder`] reads them.
    fn aggregates(self) -> &'static str {
        match self {
            #[cfg(feature = "sqlite")]
            Dialect::Sqlite => {
                "SUM(e.input), SUM(e.cached_input), SUM(e.cache_write), SUM(e.output), \
                 SUM(e.reasoning), SUM(e.cost_nano), SUM(e.cost_rem / 1000000000), \
                 SUM(e.cost_rem % 1000000000), COUNT(*), SUM(e.estimated), SUM(e.saved_tokens), \
                 SUM(e.saved_nano), SUM(e.saved_rem / 1000000000), SUM(e.saved_rem % 1000000000)"
            }
            #[cfg(feature = "postgres")]
            Dialect::Postgres => {
                "SUM(e.input)::BIGINT, SUM(e.cached_input)::BIGINT, \
                 SUM(e.cache_write)::BIGINT, SUM(e.output)::BIGINT, SUM(e.reasoning)::BIGINT, \
                 SUM(e.cost_nano)::BIGINT, SUM(e.cost_rem / 1000000000)::BIGINT, \
                 SUM(e.cost_rem % 1000000000)::BIGINT, COUNT(*), \
                 COUNT(*) FILTER (WHERE e.estimated), SUM(e.saved_tokens)::BIGINT, \
                 SUM(e.saved_nano)::BIGINT, SUM(e.saved_rem / 1000000000)::BIGINT, \
                 SUM(e.saved_rem % 1000000000)::BIGINT"
            }
        }
    }
}

/// Parameters gathered while SQL text is written, each placeholder written where its value is
/// pushed (sqlx's `QueryBuilder::push_bind`), so text and values cannot drift apart.
#[derive(Debug)]
pub(super) struct Binds {
    dialect: Dialect,
    params: Vec<Param>,
}

impl Binds {
    fn new(dialect: Dialect) -> Binds {
        Binds {
            dialect,
            params: Vec::new(),
        }
    }

    /// Adds a parameter and returns its placeholder.
    fn bind(&mut self, param: Param) -> String {
        self.params.push(param);
        self.dialect.placeholder(self.params.len())
    }

    fn text(&mut self, text: impl Into<String>) -> String {
        self.bind(Param::Text(text.into()))
    }

    fn int(&mut self, int: i64) -> String {
        self.bind(Param::Int(int))
    }
}

/// The totals query of a [`LedgerQuery`], ready for a backend to run and fold with [`Folder`].
#[derive(Debug)]
pub(super) struct TotalsSql {
    /// The statement.
    pub(super) sql: String,
    /// Its parameters, in placeholder order.
    pub(super) params: Vec<Param>,
    /// How many group columns lead each row (the bucket time column included).
    pub(super) group_columns: usize,
}

/// The totals query, with bucket times truncated to `granularity` nanoseconds when given.
pub(super) fn totals_sql(
    dialect: Dialect,
    query: &LedgerQuery,
    granularity: Option<i64>,
) -> TotalsSql {
    let mut binds = Binds::new(dialect);
    let mut joins = String::new();
    let mut group_cols = Vec::new();
    for (i, dim) in query.group_by.iter().enumerate() {
        let alias = format!("t{i}");
        if let Dimension::Tag(key) = dim {
            let k = binds.text(key.to_string());
            joins.push_str(&format!(
                " LEFT JOIN usage_event_tags {alias} ON {alias}.seq = e.seq AND {alias}.tag_key = {k}"
            ));
        }
        if let Some(col) = column(dim, &alias) {
            group_cols.push(col);
        }
    }
    if let Some(g) = granularity {
        group_cols.push(if g == 1 {
            "e.at_ns".into()
        } else {
            format!("(e.at_ns - (((e.at_ns % {g}) + {g}) % {g}))")
        });
    }
    let mut wheres = Vec::new();
    if let Some(s) = query.since {
        let p = binds.int(clamp_ns(s));
        wheres.push(format!("e.at_ns >= {p}"));
    }
    if let Some(u) = query.until {
        // Clamping keeps `< until` right for every storable time; the latest one bounds nothing.
        let u = clamp_ns(u);
        if u != i64::MAX {
            let p = binds.int(u);
            wheres.push(format!("e.at_ns < {p}"));
        }
    }
    for (dim, want) in &query.filters {
        wheres.push(filter_clause(dim, want, &query.time_zone, &mut binds));
    }
    let select_groups = group_cols
        .iter()
        .map(|c| format!("{c}, "))
        .collect::<String>();
    let extra = if granularity.is_some() {
        ", MIN(e.at_ns), MAX(e.at_ns)"
    } else {
        ""
    };
    let aggregates = dialect.aggregates();
    let mut sql = format!("SELECT {select_groups}{aggregates}{extra} FROM usage_events e{joins}");
    if !wheres.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&wheres.join(" AND "));
    }
    if !group_cols.is_empty() {
        sql.push_str(" GROUP BY ");
        sql.push_str(&group_cols.join(", "));
    }
    TotalsSql {
        sql,
        params: binds.params,
        group_columns: group_cols.len(),
    }
}

/// A WHERE clause for one filter, binding its parameters.
fn filter_clause(
    dim: &Dimension,
    want: &KeyPart,
    tz: &jiff::tz::TimeZone,
    binds: &mut Binds,
) -> String {
    let nothing = binds.dialect.nothing().to_owned();
    let text_col = match dim {
        Dimension::Agent | Dimension::Model => {
            // Never absent.
            return match want {
                KeyPart::Text(v) => {
                    let p = binds.text(v.to_string());
                    format!("{} = {p}", column(dim, "").unwrap_or_default())
                }
                _ => nothing,
            };
        }
        Dimension::Task | Dimension::User | Dimension::Session | Dimension::RequestedModel => {
            column(dim, "").unwrap_or_default()
        }
        Dimension::Step => {
            return match want {
                KeyPart::None => "e.step IS NULL".into(),
                KeyPart::Step(s) => {
                    let p = binds.int(i64::from(*s));
                    format!("e.step = {p}")
                }
                _ => nothing,
            };
        }
        Dimension::Kind => {
            return match want {
                KeyPart::Kind(k) => {
                    let p = binds.text(k.as_str());
                    format!("e.kind = {p}")
                }
                _ => nothing,
            };
        }
        Dimension::Tag(key) => {
            return match want {
                KeyPart::None => {
                    let k = binds.text(key.to_string());
                    format!(
                        "NOT EXISTS (SELECT 1 FROM usage_event_tags f \
                         WHERE f.seq = e.seq AND f.tag_key = {k})"
                    )
                }
                KeyPart::Text(v) => {
                    let k = binds.text(key.to_string());
                    let v = binds.text(v.to_string());
                    format!(
                        "EXISTS (SELECT 1 FROM usage_event_tags f WHERE f.seq = e.seq \
                         AND f.tag_key = {k} AND f.tag_value = {v})"
                    )
                }
                _ => nothing,
            };
        }
        Dimension::Bucket(period) => {
            // An event is in bucket `start` exactly when it lies in `[start, end)` of the
            // bucket that begins at `start`; a start that is not a bucket start matches nothing.
            return match want {
                KeyPart::Bucket(start) => match period.bounds(*start, tz) {
                    Ok((s, end)) if s == *start => {
                        let s = binds.int(clamp_ns(s));
                        let end = binds.int(clamp_ns(end));
                        format!("(e.at_ns >= {s} AND e.at_ns < {end})")
                    }
                    _ => nothing,
                },
                _ => nothing,
            };
        }
    };
    match want {
        KeyPart::None => format!("{text_col} IS NULL"),
        KeyPart::Text(v) => {
            let p = binds.text(v.to_string());
            format!("{text_col} = {p}")
        }
        _ => nothing,
    }
}

#[cfg(all(test, feature = "sqlite", feature = "postgres"))]
mod tests {
    use super::*;

    /// One statement, two dialects: only placeholders, `FALSE` and the sums differ, and the
    /// parameters come in placeholder order.
    #[test]
    fn the_dialects_differ_only_where_the_engines_do() {
        let query = LedgerQuery {
            since: Some("2026-12-01T00:00:00Z".parse().unwrap()),
            group_by: vec![Dimension::Tag("team".into()), Dimension::Agent],
            filters: vec![
                (Dimension::Tag("env".into()), KeyPart::Text("prod".into())),
                (Dimension::Kind, KeyPart::Step(1)),
            ],
            ..LedgerQuery::default()
        };
        let lite = totals_sql(Dialect::Sqlite, &query, None);
        let pg = totals_sql(Dialect::Postgres, &query, None);
        assert_eq!(lite.params, pg.params);
        assert_eq!(
            lite.params,
            [
                Param::Text("team".into()),
                Param::Int(clamp_ns("2026-12-01T00:00:00Z".parse().unwrap())),
                Param::Text("env".into()),
                Param::Text("prod".into()),
            ]
        );
        assert_eq!(lite.group_columns, 2);
        assert_eq!(lite.sql.matches('?').count(), 4);
        for n in 1..=4 {
            assert!(pg.sql.contains(&format!("${n}")), "{}", pg.sql);
        }
        assert!(
            lite.sql.ends_with("AND 0 GROUP BY t0.tag_value, e.agent"),
            "{}",
            lite.sql
        );
        assert!(pg.sql.contains("AND FALSE GROUP BY"), "{}", pg.sql);
        assert!(pg.sql.contains("SUM(e.input)::BIGINT"));
    }
}
