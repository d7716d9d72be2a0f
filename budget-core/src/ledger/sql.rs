//! What the SQL ledgers (SQLite, PostgreSQL) share: the exact money columns, the grouping
//! columns, and folding the rows of a totals query into groups.
//!
//! Money is stored as two integers — nano-dollars and the yocto remainder below a nano-dollar
//! (< 10¹⁵) — and summed by the database in three parts (nanos, the remainder's upper and
//! lower 10⁹), so no float is ever involved and `SUM` cannot overflow a row's range early.

use foldhash::HashMap;
use jiff::Timestamp;

use super::{Dimension, EventKind, GroupTotal, KeyPart, LedgerError, LedgerQuery};
use crate::admission::Amount;
use crate::limits::Period;
use crate::{Money, Usage};

/// Money units in one nano-dollar.
pub(super) const UNITS_PER_NANO: i128 = 1_000_000_000_000_000;

/// Nanoseconds in an hour: the unit calendar buckets are grouped by in SQL.
pub(super) const HOUR_NS: i64 = 3_600_000_000_000;

/// A ledger error for the ledger `name`.
pub(super) fn error(name: &str, message: impl std::fmt::Display) -> LedgerError {
    LedgerError {
        ledger: name.to_owned(),
        message: message.to_string(),
    }
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
                        error(self.name, format!("unknown event kind {k:?} in the ledger"))
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
                ledger = %self.error.ledger,
                event = self.event,
                error = %self.error.message,
                "usage event refused by the ledger; its record future was dropped before the \
                 refusal was read"
            );
        }
    }
}
