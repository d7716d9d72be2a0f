//! PostgreSQL's errors as ledger errors: what kind each is, with the driver's error as the
//! source.

use crate::backend_error::BackendErrorKind;
use crate::ledger::LedgerError;
use crate::ledger::sql::error;

/// `e` in `what` on the ledger `name` (the server's message and SQLSTATE when it sent one),
/// its kind told by [`kind_of`], `e` kept as the source.
pub(super) fn pg_error(name: &str, what: &str, e: tokio_postgres::Error) -> LedgerError {
    let message = match e.as_db_error() {
        Some(db) => format!("{what}: {} ({})", db.message(), db.code().code()),
        None => format!("{what}: {e}"),
    };
    error(kind_of(&e), name, message).with_source(e)
}

/// Whether `e` says the connection is gone: the client found it closed, or the server sent a
/// connection exception (SQLSTATE class 08) or ended the session (57P01..57P03: shutdown,
/// crash, an administrator) before the client noticed.
pub(super) fn connection_ended(e: &tokio_postgres::Error) -> bool {
    let ended_by_server = e.code().is_some_and(|code| {
        let code = code.code();
        code.starts_with("08") || code.starts_with("57P")
    });
    e.is_closed() || ended_by_server
}

/// What kind of failure a PostgreSQL error is: by its SQLSTATE when the server sent one, by
/// its I/O cause when the connection failed; anything else the client reports is a reply it
/// could not read (an unexpected message, a value that does not decode).
pub(super) fn kind_of(e: &tokio_postgres::Error) -> BackendErrorKind {
    if connection_ended(e) {
        return BackendErrorKind::Unreachable;
    }
    if let Some(code) = e.code() {
        return match code.code() {
            // query_canceled: a statement timeout.
            "57014" => BackendErrorKind::Timeout,
            // numeric_value_out_of_range, datetime_field_overflow.
            "22003" | "22008" => BackendErrorKind::OutOfRange,
            // serialization_failure, deadlock_detected, lock_not_available,
            // object_in_use.
            "40001" | "40P01" | "55P03" | "55006" => BackendErrorKind::Contended,
            // data_corrupted, index_corrupted.
            "XX001" | "XX002" => BackendErrorKind::Corrupt,
            // Class 28 (invalid authorization), invalid_catalog_name (no such database):
            // what the URL says was turned down.
            code if code.starts_with("28") || code == "3D000" => BackendErrorKind::RejectedInput,
            _ => BackendErrorKind::Refused,
        };
    }
    let io = std::iter::successors(std::error::Error::source(e), |s| s.source())
        .find_map(|s| s.downcast_ref::<std::io::Error>());
    match io {
        Some(io) if io.kind() == std::io::ErrorKind::TimedOut => BackendErrorKind::Timeout,
        Some(_) => BackendErrorKind::Unreachable,
        None => BackendErrorKind::Corrupt,
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::super::PostgresLedger;
    use super::super::fixture::database;
    use super::*;

    fn driver_error(e: &LedgerError) -> Option<&tokio_postgres::Error> {
        e.source()?.downcast_ref::<tokio_postgres::Error>()
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_and_keeps_the_driver_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = format!("postgres://postgres@127.0.0.1:{port}/test");
        let e = PostgresLedger::connect(&url, "tb_closed")
            .await
            .expect_err("nothing listens");
        assert_eq!(e.kind(), BackendErrorKind::Unreachable, "{e}");
        assert!(driver_error(&e).is_some(), "{e:?}");
    }

    #[tokio::test]
    async fn bad_urls_and_namespaces_are_rejected_input() {
        let e = PostgresLedger::connect("postgres://u@127.0.0.1:notaport/db", "tb_ok")
            .await
            .expect_err("not a port");
        assert_eq!(e.kind(), BackendErrorKind::RejectedInput, "{e}");
        assert!(driver_error(&e).is_some(), "{e:?}");
        let e = PostgresLedger::connect("postgres://u@127.0.0.1:1/db", "Bad-Name")
            .await
            .expect_err("not a namespace");
        assert_eq!(e.kind(), BackendErrorKind::RejectedInput, "{e}");
    }

    /// The server's refusals keep their SQLSTATE: a database that does not exist is the URL's
    /// to fix; a schema holding another application's tables is not a ledger.
    #[tokio::test]
    async fn the_servers_answers_are_classified() {
        let Some((url, ns)) = database("kinds") else {
            return;
        };
        let mut missing = url::Url::parse(&url).unwrap();
        missing.set_path(&format!("/{ns}_no_such_database"));
        let e = PostgresLedger::connect(missing.as_str(), &ns)
            .await
            .expect_err("no such database");
        assert_eq!(e.kind(), BackendErrorKind::RejectedInput, "{e}");
        let db = driver_error(&e).and_then(tokio_postgres::Error::as_db_error);
        assert_eq!(db.map(|db| db.code().code()), Some("3D000"), "{e:?}");

        let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        admin
            .batch_execute(&format!(
                "CREATE SCHEMA {ns}; CREATE TABLE {ns}.other (x INT);"
            ))
            .await
            .unwrap();
        let e = PostgresLedger::connect(&url, &ns)
            .await
            .expect_err("another application's schema");
        admin
            .batch_execute(&format!("DROP SCHEMA {ns} CASCADE"))
            .await
            .unwrap();
        assert_eq!(e.kind(), BackendErrorKind::Corrupt, "{e}");
    }
}
