//! SQLite's errors as ledger errors: what kind each is, with the driver's error as the source.

use rusqlite::ErrorCode;

use crate::backend_error::BackendErrorKind;
use crate::ledger::LedgerError;
use crate::ledger::sql::error;

/// `e` in `what` on the ledger `name`, its kind told by SQLite's code, `e` kept as the source.
pub(super) fn sql_error(name: &str, what: &str, e: rusqlite::Error) -> LedgerError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        if f.code == ErrorCode::NotADatabase {
            return error(
                BackendErrorKind::Corrupt,
                name,
                format!("{what}: the file is not a SQLite database ({e})"),
            )
            .with_source(e);
        }
    }
    error(kind_of(&e), name, format!("{what}: {e}")).with_source(e)
}

/// What kind of failure a SQLite error is.
fn kind_of(e: &rusqlite::Error) -> BackendErrorKind {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt | ErrorCode::TypeMismatch => {
                BackendErrorKind::Corrupt
            }
            // The lock was still held when the busy timeout ran out.
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => BackendErrorKind::Contended,
            // The file (or its directory) cannot be opened, or the disk failed under it.
            ErrorCode::CannotOpen | ErrorCode::SystemIoFailure => BackendErrorKind::Unreachable,
            ErrorCode::TooBig => BackendErrorKind::OutOfRange,
            // Permissions, a read-only file, a full disk, a constraint, a statement SQLite
            // refused (an integer overflow in a sum among them: SQLite gives it no code of
            // its own).
            _ => BackendErrorKind::Refused,
        },
        rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::ToSqlConversionFailure(_) => BackendErrorKind::OutOfRange,
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::Utf8Error(..)
        | rusqlite::Error::InvalidColumnIndex(_)
        | rusqlite::Error::InvalidColumnName(_) => BackendErrorKind::Corrupt,
        rusqlite::Error::InvalidPath(_) | rusqlite::Error::NulError(_) => {
            BackendErrorKind::RejectedInput
        }
        _ => BackendErrorKind::Refused,
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::super::SqliteLedger;
    use super::*;
    use crate::ledger::{EventKind, Ledger, UsageEvent};
    use crate::{Attribution, Money, Usage};

    fn dir(test: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tb-sqlite-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_file_that_is_not_sqlite_is_corrupt_and_keeps_rusqlite_error() {
        let path = dir("corrupt").join("ledger.db");
        std::fs::write(&path, vec![0x5a_u8; 8192]).unwrap();
        let e = SqliteLedger::open(&path).expect_err("not a database");
        assert_eq!(e.kind(), BackendErrorKind::Corrupt, "{e}");
        let source = e.source().expect("the driver's error is kept");
        assert!(
            source.downcast_ref::<rusqlite::Error>().is_some(),
            "{source:?}"
        );
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_file_in_a_missing_directory_is_unreachable() {
        let path = dir("missing").join("no-such-dir").join("ledger.db");
        let e = SqliteLedger::open(&path).expect_err("cannot open");
        assert_eq!(e.kind(), BackendErrorKind::Unreachable, "{e}");
        assert!(e.source().is_some(), "{e:?}");
        std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap()).unwrap();
    }

    #[test]
    fn a_newer_schema_is_corrupt() {
        let path = dir("newer").join("ledger.db");
        drop(SqliteLedger::open(&path).unwrap());
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA user_version = 99").unwrap();
        drop(conn);
        let e = SqliteLedger::open(&path).expect_err("newer than this build");
        assert_eq!(e.kind(), BackendErrorKind::Corrupt, "{e}");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[tokio::test]
    async fn an_event_that_does_not_fit_is_out_of_range() {
        let path = dir("range").join("ledger.db");
        let ledger = SqliteLedger::open(&path).unwrap();
        let event = UsageEvent {
            id: u64::MAX,
            at: jiff::Timestamp::from_second(1_780_000_000).unwrap(),
            attribution: Attribution::agent("a"),
            model: "gpt-4o".into(),
            requested_model: None,
            usage: Usage::new(1, 1),
            cost: Money::ZERO,
            estimated: false,
            kind: EventKind::Call,
            saved: Default::default(),
        };
        let e = ledger.record(event).await.expect_err("the id exceeds i64");
        assert_eq!(e.kind(), BackendErrorKind::OutOfRange, "{e}");
        drop(ledger);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
