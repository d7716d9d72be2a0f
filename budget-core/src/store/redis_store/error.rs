//! Redis's errors as budget store errors: what kind each is, and why an operation got no reply.

use std::sync::Arc;

use redis::RedisError;

use super::RedisBudgetStore;
use crate::backend_error::{BackendErrorKind, Source};
use crate::store::StoreError;

/// What kind of failure a Redis error is. Redis could not be reached (I/O failed, the
/// connection was refused or dropped) or did not answer in time: an outage, on which the
/// store fails open (when told to) and retries settles; anything else Redis said is not.
pub(super) fn kind_of(e: &RedisError) -> BackendErrorKind {
    if e.is_timeout() {
        BackendErrorKind::Timeout
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        BackendErrorKind::Unreachable
    } else {
        match e.kind() {
            redis::ErrorKind::InvalidClientConfig | redis::ErrorKind::AuthenticationFailed => {
                BackendErrorKind::RejectedInput
            }
            redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType => {
                BackendErrorKind::Corrupt
            }
            _ => BackendErrorKind::Refused,
        }
    }
}

/// Why an operation got no reply.
#[derive(Debug, Clone)]
pub(in crate::store) struct OpError {
    /// What kind of failure: Redis could not be reached or did not answer (an outage), as
    /// opposed to a script that refused, a reply that made no sense, a stopped batcher.
    pub(super) kind: BackendErrorKind,
    /// The operation went to the retry queue.
    pub(super) queued: bool,
    message: String,
    /// Redis's error, when there was one.
    source: Option<RedisError>,
}

impl OpError {
    pub(super) fn from_redis(e: &RedisError) -> OpError {
        OpError {
            kind: kind_of(e),
            queued: false,
            message: e.to_string(),
            source: Some(e.clone()),
        }
    }

    pub(super) fn closed() -> OpError {
        OpError {
            kind: BackendErrorKind::Closed,
            queued: false,
            message: "the store's batcher has stopped".into(),
            source: None,
        }
    }

    /// A batch answered with `replies` replies for `operations` operations.
    pub(super) fn miscounted(replies: usize, operations: usize) -> OpError {
        OpError {
            kind: BackendErrorKind::Corrupt,
            queued: false,
            message: format!("{replies} replies for {operations} operations"),
            source: None,
        }
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<OpError> for RedisError {
    fn from(e: OpError) -> RedisError {
        RedisError::from((redis::ErrorKind::Io, "batched operation failed", e.message))
    }
}

impl RedisBudgetStore {
    /// A failure of `kind` in `what`.
    pub(in crate::store) fn error(
        &self,
        kind: BackendErrorKind,
        what: &str,
        e: impl std::fmt::Display,
    ) -> StoreError {
        StoreError::new(kind, self.inner.name.clone(), format!("{what}: {e}"))
    }

    /// An operation that got no reply, with Redis's error as the source.
    pub(in crate::store) fn op_error(&self, what: &str, e: OpError) -> StoreError {
        let source = e.source.clone().map(|s| Arc::new(s) as Source);
        self.error(e.kind, what, &e).with_shared_source(source)
    }

    /// A Redis error in `what`, kept as the source.
    pub(super) fn redis_error(&self, what: &str, e: RedisError) -> StoreError {
        self.error(kind_of(&e), what, &e).with_source(e)
    }

    /// A reply that is not what the script sends.
    pub(in crate::store) fn unexpected(&self, what: &str, e: impl std::fmt::Display) -> StoreError {
        self.error(BackendErrorKind::Corrupt, what, e)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::time::Duration;

    use jiff::Timestamp;

    use super::super::fixture::{Forwarder, daily, tokens};
    use super::super::{RedisBudgetStore, RedisStoreOptions};
    use super::*;
    use crate::admission::ReserveRequest;
    use crate::store::{BudgetStore, ReserveOutcome};

    /// A port nothing listens on (bound, then closed).
    async fn closed_port() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    }

    /// Redis's own error, when the store error kept it.
    fn redis_source(e: &StoreError) -> Option<&RedisError> {
        e.source()?.downcast_ref::<RedisError>()
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_and_keeps_redis_error() {
        let url = format!("redis://127.0.0.1:{}/0", closed_port().await);
        let options = RedisStoreOptions::new().timeout(Duration::from_millis(500));
        let e = RedisBudgetStore::connect_with(&url, options)
            .await
            .expect_err("nothing listens");
        assert_eq!(e.kind(), BackendErrorKind::Unreachable, "{e}");
        assert!(e.kind().is_outage());
        assert!(e.to_string().contains("cannot connect"), "{e}");
        assert!(redis_source(&e).is_some(), "{e:?}");
    }

    /// Nothing is sent for these: each is the caller's to fix.
    #[tokio::test]
    async fn bad_urls_and_options_are_rejected_input() {
        let port = closed_port().await;
        let cases = [
            (
                "redis://127.0.0.1:1/0",
                RedisStoreOptions::new().lease(Duration::ZERO),
            ),
            (
                "redis://127.0.0.1:1/0",
                RedisStoreOptions::new().prefix("a{b"),
            ),
            (
                "rediss://127.0.0.1:1/0",
                RedisStoreOptions::new().tls_roots("no PEM here"),
            ),
            ("http://127.0.0.1:1/0", RedisStoreOptions::new()),
        ];
        for (url, options) in cases {
            let e = RedisBudgetStore::connect_with(url, options)
                .await
                .expect_err(url);
            assert_eq!(e.kind(), BackendErrorKind::RejectedInput, "{e}");
        }
        let e =
            RedisBudgetStore::connect_with(&format!("redis://:{port}"), RedisStoreOptions::new())
                .await
                .expect_err("no host");
        assert_eq!(e.kind(), BackendErrorKind::RejectedInput, "{e}");
        assert!(
            redis_source(&e).is_some(),
            "the client's error is kept: {e:?}"
        );
    }

    /// Fail-open admits a call when Redis cannot be reached, and only then: a script that Redis
    /// ran and that failed is an error, fail-open or not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fail_open_admits_on_an_outage_only() {
        let now: Timestamp = "2026-04-01T08:00:00Z".parse().unwrap();
        let options = RedisStoreOptions::new()
            .fail_open(true)
            .timeout(Duration::from_millis(300));
        let Some(direct) = daily("fail-open", options.clone(), now).await else {
            return;
        };
        let (store, specs) = (&direct.store, &direct.specs);
        // The counter holds a string: the reserve script fails in Redis.
        let counter = store.keys().counter(&specs[0].key);
        let _: () = redis::cmd("SET")
            .arg(&counter)
            .arg("not a hash")
            .query_async(&mut store.inner.conn.clone())
            .await
            .unwrap();
        let e = store
            .reserve(specs, &ReserveRequest::fixed(tokens(5)), now)
            .await
            .expect_err("the script fails on a string");
        assert_eq!(e.kind(), BackendErrorKind::Refused, "{e}");
        assert!(redis_source(&e).is_some(), "{e:?}");
        assert_eq!(store.failed_open(), 0, "a refusal is not an outage");

        let url = std::env::var("REDIS_URL").unwrap();
        let forwarder = Forwarder::start(&url).await;
        let prefix = format!("tb-unit:fail-open-cut:{}", std::process::id());
        let cut_off = RedisBudgetStore::connect_with(&forwarder.url, options.prefix(prefix))
            .await
            .unwrap();
        forwarder.cut();
        tokio::time::sleep(Duration::from_millis(50)).await;
        match cut_off
            .reserve(specs, &ReserveRequest::fixed(tokens(5)), now)
            .await
            .unwrap()
        {
            ReserveOutcome::Reserved(t) => assert!(t.keys().is_empty(), "no reservation"),
            other => panic!("fail-open admits on an outage: {other:?}"),
        }
        assert_eq!(cut_off.failed_open(), 1);
        let e = cut_off.usage(specs, now).await.expect_err("Redis is gone");
        assert!(e.kind().is_outage(), "{:?}: {e}", e.kind());
        direct.clean_up().await;
    }
}
