//! How the durable logs (SQLite, PostgreSQL, Redis) store a record: its actor, change and
//! replaced change as JSON text, its time as nanoseconds; and the errors every one of them
//! gives for a record it cannot encode or read back.

use jiff::Timestamp;

use super::{Actor, AuditRecord, ControlChange};
use crate::backend_error::BackendErrorKind;
use crate::ledger::LedgerError;

/// `value` as JSON; a value that cannot be encoded is rejected input of the log `name`.
pub(crate) fn to_json<T: serde::Serialize>(name: &str, value: &T) -> Result<String, LedgerError> {
    serde_json::to_string(value).map_err(|e| {
        LedgerError::new(
            BackendErrorKind::RejectedInput,
            name,
            format!("cannot encode a control record: {e}"),
        )
        .with_source(e)
    })
}

/// The `column` of record `seq`, read back from JSON; unreadable text is a
/// [`BackendErrorKind::Corrupt`] error naming the record.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    name: &str,
    seq: i64,
    column: &str,
    text: &str,
) -> Result<T, LedgerError> {
    serde_json::from_str(text).map_err(|e| {
        LedgerError::new(
            BackendErrorKind::Corrupt,
            name,
            format!("control record {seq}: its {column} cannot be read: {e}"),
        )
        .with_source(e)
    })
}

/// A decision to append, encoded as the logs store it.
#[derive(Debug, Clone)]
pub(crate) struct NewRecord {
    /// [`Target::key`](super::Target::key) of the change.
    pub(crate) target: String,
    /// When it was decided: nanoseconds since the epoch, clamped to `i64`.
    pub(crate) at_ns: i64,
    pub(crate) actor: String,
    pub(crate) change: String,
}

impl NewRecord {
    /// `change`, made `at` by `by`, for the log `name`.
    pub(crate) fn encode(
        name: &str,
        change: &ControlChange,
        by: &Actor,
        at: Timestamp,
    ) -> Result<NewRecord, LedgerError> {
        Ok(NewRecord {
            target: change.target().key(),
            at_ns: i64::try_from(at.as_nanosecond()).unwrap_or(i64::MAX),
            actor: to_json(name, by)?,
            change: to_json(name, change)?,
        })
    }
}

/// What a new decision replaces, given the last one on its target as stored (`seq`, change
/// text): that one, unless it only took earlier decisions back.
pub(crate) fn replaced(
    name: &str,
    last: Option<(i64, &str)>,
) -> Result<Option<ControlChange>, LedgerError> {
    let Some((seq, text)) = last else {
        return Ok(None);
    };
    let old: ControlChange = from_json(name, seq, "change", text)?;
    Ok((!old.reverts()).then_some(old))
}

/// One record's columns as a log stores them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredRecord {
    pub(crate) seq: i64,
    pub(crate) at_ns: i64,
    pub(crate) actor: String,
    pub(crate) change: String,
    pub(crate) replaced: Option<String>,
}

impl StoredRecord {
    /// The record, read back; any column that cannot be read is a `Corrupt` error naming it.
    pub(crate) fn decode(self, name: &str) -> Result<AuditRecord, LedgerError> {
        let StoredRecord {
            seq,
            at_ns,
            actor,
            change,
            replaced,
        } = self;
        let at = Timestamp::from_nanosecond(i128::from(at_ns)).map_err(|e| {
            LedgerError::new(
                BackendErrorKind::Corrupt,
                name,
                format!("control record {seq}: its time {at_ns} is out of range: {e}"),
            )
        })?;
        Ok(AuditRecord {
            seq: u64::try_from(seq).unwrap_or(0),
            at,
            by: from_json::<Actor>(name, seq, "actor", &actor)?,
            change: from_json(name, seq, "change", &change)?,
            replaced: replaced
                .map(|r| from_json(name, seq, "replaced", &r))
                .transpose()?,
        })
    }
}
