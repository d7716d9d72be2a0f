//! What kind of failure a backend (a budget store, a ledger) reported, and the error type both
//! kinds of backend return it in.
//!
//! [`StoreError`](crate::store::StoreError) and [`LedgerError`](crate::ledger::LedgerError)
//! fail in the same ways — a Redis, a SQLite file or a PostgreSQL server that cannot be reached,
//! answers too late, answers with something unreadable, or is given a value it cannot hold — so
//! they share one [`BackendErrorKind`], defined here once and re-exported at the crate root, in
//! `store` and in `ledger`. Decisions are taken on the kind (the Redis store's fail-open admits
//! a call only when Redis is [unreachable](BackendErrorKind::Unreachable) or [timed
//! out](BackendErrorKind::Timeout), and retries only those), never on an error's text.
//!
//! Both error types keep the driver's error (`redis::RedisError`, `rusqlite::Error`,
//! `tokio_postgres::Error`, an I/O error) as their [`source`](std::error::Error::source), so it
//! can be downcast and its own chain walked. It is held in an `Arc` so that the errors stay
//! `Clone` (a SQLite ledger hands one failed commit to every `record` that waited on it).
//! Because `thiserror` would report that `Arc` rather than the driver's error as the source,
//! `Error` and `Display` are written out here, once, for both types.

use std::error::Error;
use std::sync::Arc;

/// What kind of failure a budget store or a ledger reported.
///
/// Shared by [`StoreError`](crate::store::StoreError) and
/// [`LedgerError`](crate::ledger::LedgerError); see [`StoreError::kind`](crate::store::StoreError::kind).
/// More kinds may be added: match with a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// The backend could not be reached: the connection was refused or dropped, or I/O failed.
    /// Trying again later may succeed.
    Unreachable,
    /// The backend did not answer in time. Trying again later may succeed.
    Timeout,
    /// The backend answered with something this build cannot read: an unexpected reply, a row
    /// that does not decode, a file or schema that is not (or not yet) a token-budget one.
    Corrupt,
    /// A value does not fit what the backend can hold: a count beyond its integers, a time
    /// outside its range, a sum that overflows.
    OutOfRange,
    /// What the caller gave was refused as given: a malformed URL, an unknown or out-of-range
    /// option, a bad key prefix or namespace, credentials the server turned down, a backend
    /// this build does not include.
    RejectedInput,
    /// The backend was reached and refused the operation for a reason of its own: a
    /// permission, a constraint, a full disk, a script error.
    Refused,
    /// The operation gave up after its attempts because other work kept taking what it
    /// needed: a database lock held past the wait, an allowance that kept running out.
    Contended,
    /// The backend, or the part of this process that talks to it (a writer thread, a batcher),
    /// has stopped or been closed: nothing more is accepted.
    Closed,
}

impl BackendErrorKind {
    /// `true` for [`Unreachable`](BackendErrorKind::Unreachable) and
    /// [`Timeout`](BackendErrorKind::Timeout): the backend could not be reached or did not
    /// answer, so the operation may not have run, and trying again later may succeed. What
    /// the Redis store's fail-open admits on, and what it retries settles on.
    pub fn is_outage(self) -> bool {
        matches!(
            self,
            BackendErrorKind::Unreachable | BackendErrorKind::Timeout
        )
    }

    /// A short name: `unreachable`, `timeout`, `corrupt`, `out of range`, `rejected input`,
    /// `refused`, `contended`, `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendErrorKind::Unreachable => "unreachable",
            BackendErrorKind::Timeout => "timeout",
            BackendErrorKind::Corrupt => "corrupt",
            BackendErrorKind::OutOfRange => "out of range",
            BackendErrorKind::RejectedInput => "rejected input",
            BackendErrorKind::Refused => "refused",
            BackendErrorKind::Contended => "contended",
            BackendErrorKind::Closed => "closed",
        }
    }
}

impl std::fmt::Display for BackendErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A driver's error, shared so that the error holding it stays `Clone`.
pub(crate) type Source = Arc<dyn Error + Send + Sync + 'static>;

/// Defines a backend error type: a kind, the backend's name, what went wrong, and the driver's
/// error as its source. `$name` is the accessor of the backend's name, `$label` what `Display`
/// calls the backend.
macro_rules! backend_error {
    (
        $(#[$doc:meta])*
        $Error:ident, $name:ident, $label:literal, $example:literal
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $Error {
            kind: $crate::backend_error::BackendErrorKind,
            $name: String,
            message: String,
            source: Option<$crate::backend_error::Source>,
        }

        impl $Error {
            #[doc = concat!("A ", $label, " error of `kind`: `", stringify!($name), "` names the ")]
            #[doc = concat!($label, " (e.g. ", $example, "), `message` says what went wrong.")]
            pub fn new(
                kind: $crate::backend_error::BackendErrorKind,
                $name: impl Into<String>,
                message: impl Into<String>,
            ) -> $Error {
                $Error {
                    kind,
                    $name: $name.into(),
                    message: message.into(),
                    source: None,
                }
            }

            /// Keeps `source` (the driver's error) as this error's
            /// [`source`](std::error::Error::source).
            pub fn with_source(
                mut self,
                source: impl std::error::Error + Send + Sync + 'static,
            ) -> $Error {
                self.source = Some(std::sync::Arc::new(source));
                self
            }

            /// Keeps a source shared with other errors (one driver error reported to many
            /// callers).
            #[allow(dead_code)]
            pub(crate) fn with_shared_source(
                mut self,
                source: Option<$crate::backend_error::Source>,
            ) -> $Error {
                self.source = source;
                self
            }

            /// What kind of failure this is: decide on it, never on the text.
            pub fn kind(&self) -> $crate::backend_error::BackendErrorKind {
                self.kind
            }

            #[doc = concat!("Which ", $label, " failed (e.g. ", $example, ").")]
            pub fn $name(&self) -> &str {
                &self.$name
            }

            /// What went wrong, as `Display` shows it after the backend's name.
            pub fn message(&self) -> &str {
                &self.message
            }

            /// The same error with another message (context added in front, say): kind and
            /// source are kept.
            #[allow(dead_code)]
            pub(crate) fn with_message(mut self, message: impl Into<String>) -> $Error {
                self.message = message.into();
                self
            }

            #[doc = concat!("The same error, naming the ", $label, " `", stringify!($name), "`.")]
            #[allow(dead_code)]
            pub(crate) fn named(mut self, $name: impl Into<String>) -> $Error {
                self.$name = $name.into();
                self
            }
        }

        impl std::fmt::Display for $Error {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!($label, " {}: {}"), self.$name, self.message)
            }
        }

        impl std::error::Error for $Error {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.source
                    .as_deref()
                    .map(|e| e as &(dyn std::error::Error + 'static))
            }
        }
    };
}

pub(crate) use backend_error;
