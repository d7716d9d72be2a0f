//! How a [`RedisBudgetStore`](super::RedisBudgetStore) behaves (its options and their ranges), and the Redis client
//! its URL and TLS roots make.

use std::time::Duration;

use redis::RedisError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::error::kind_of;

use crate::backend_error::BackendErrorKind;
use crate::store::StoreError;

/// The shortest lease: a call holds its reservation at least this long.
pub(crate) const MIN_LEASE: Duration = Duration::from_secs(10);
/// The longest lease (its holder may have died: the budget stays blocked that long).
pub(crate) const MAX_LEASE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The shortest life of per-task counters after their last use.
pub(crate) const MIN_TASK_TTL: Duration = Duration::from_secs(60);
/// The longest life of per-task counters after their last use.
pub(crate) const MAX_TASK_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// The shortest timeout.
pub(crate) const MIN_TIMEOUT: Duration = Duration::from_millis(1);
/// The longest timeout.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// How a [`RedisBudgetStore`](super::RedisBudgetStore) behaves.
#[derive(Clone)]
pub struct RedisStoreOptions {
    pub(super) prefix: String,
    pub(super) lease: Duration,
    pub(super) task_ttl: Duration,
    pub(super) timeout: Duration,
    pub(super) fail_open: bool,
    /// PEM certificates to trust for `rediss://` instead of the system's roots.
    pub(super) tls_roots: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisStoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStoreOptions")
            .field("prefix", &self.prefix)
            .field("lease", &self.lease)
            .field("task_ttl", &self.task_ttl)
            .field("timeout", &self.timeout)
            .field("fail_open", &self.fail_open)
            .field(
                "tls_roots",
                &self
                    .tls_roots
                    .as_ref()
                    .map(|pem| format!("{} bytes of PEM", pem.len())),
            )
            .finish()
    }
}

impl Default for RedisStoreOptions {
    fn default() -> Self {
        RedisStoreOptions {
            prefix: "token-budget".into(),
            lease: Duration::from_secs(15 * 60),
            task_ttl: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(2),
            fail_open: false,
            tls_roots: None,
        }
    }
}

impl RedisStoreOptions {
    /// The defaults: prefix `token-budget`, 15-minute leases, per-task counters kept 24 hours
    /// after their last use, 2-second timeouts, fail closed.
    pub fn new() -> RedisStoreOptions {
        RedisStoreOptions::default()
    }

    /// The key prefix (ASCII letters, digits, `_ - . :`). Stores with the same Redis and prefix
    /// share their counters; give each deployment (and each test) its own.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a reservation holds without being settled or released. Make it longer than
    /// your slowest call: a call that outlives its lease keeps running, but its reservation is
    /// given back and its usage counts as overshoot. From 10 seconds to 30 days, and longer
    /// than [`timeout`](RedisStoreOptions::timeout) ([`RedisBudgetStore::connect_with`](super::RedisBudgetStore::connect_with) says
    /// otherwise).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long per-task counters live after their last use when a task is never
    /// [forgotten](crate::store::BudgetStore::forget_task) (its process died). From a minute to a year.
    pub fn task_ttl(mut self, ttl: Duration) -> Self {
        self.task_ttl = ttl;
        self
    }

    /// How long to wait for Redis to connect or answer before the operation fails. From 1 ms
    /// to 10 minutes.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Admit calls when Redis cannot be reached, instead of refusing them. Off by default:
    /// with it on, an outage means calls run without a budget.
    pub fn fail_open(mut self, fail_open: bool) -> Self {
        self.fail_open = fail_open;
        self
    }

    /// For `rediss://` URLs: trust the certificate authorities in `pem` (one or more PEM
    /// certificates, e.g. a private CA's) instead of the system's root certificates. Without
    /// it, the server's certificate must chain to a root the system trusts.
    pub fn tls_roots(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_roots = Some(pem.into());
        self
    }

    /// Checks every duration against its range: a zero lease, for one, would let the next
    /// reserve purge every reservation and concurrent calls cross the cap.
    pub(super) fn validate(&self) -> Result<(), String> {
        let check = |what: &str, value: Duration, min: Duration, max: Duration| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(format!(
                    "{what} {value:?} is out of range: it must be from {min:?} to {max:?}"
                ))
            }
        };
        check("lease", self.lease, MIN_LEASE, MAX_LEASE)?;
        check("task_ttl", self.task_ttl, MIN_TASK_TTL, MAX_TASK_TTL)?;
        check("timeout", self.timeout, MIN_TIMEOUT, MAX_TIMEOUT)?;
        if self.lease <= self.timeout {
            return Err(format!(
                "lease {:?} must be longer than timeout {:?}: a reservation could lapse before \
                 its reply arrives",
                self.lease, self.timeout
            ));
        }
        Ok(())
    }
}

/// A connection to `url` as `options` say (TLS roots, timeouts), reconnecting by itself when
/// lost. Errors name the store (or log) `name`: the URL's and the options' are
/// [`RejectedInput`](BackendErrorKind::RejectedInput); no answer within twice the timeout is a
/// [`Timeout`](BackendErrorKind::Timeout); the rest as [`kind_of`] tells.
pub(super) async fn connection(
    url: &str,
    options: &RedisStoreOptions,
    name: &str,
) -> Result<ConnectionManager, StoreError> {
    let fail = |kind, message: String| StoreError::new(kind, name, message);
    let client = redis_client(url, options.tls_roots.as_deref(), name)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.timeout))
        .set_response_timeout(Some(options.timeout))
        .set_number_of_retries(1);
    tokio::time::timeout(
        options.timeout.saturating_mul(2),
        ConnectionManager::new_with_config(client, config),
    )
    .await
    .map_err(|_| fail(BackendErrorKind::Timeout, "timed out connecting".into()))?
    .map_err(|e| fail(kind_of(&e), format!("cannot connect: {e}")).with_source(e))
}

/// The Redis client for `url`, with TLS when the URL asks for it.
/// Errors name the store `name`; they are all [`RejectedInput`](BackendErrorKind::RejectedInput)
/// (nothing is sent yet), with the client's error as their source.
fn redis_client(
    url: &str,
    tls_roots: Option<&[u8]>,
    name: &str,
) -> Result<redis::Client, StoreError> {
    let rejected =
        |message: String| StoreError::new(BackendErrorKind::RejectedInput, name, message);
    let not_a_url = |e: RedisError| rejected(format!("not a Redis URL: {e}")).with_source(e);
    if !url.starts_with("rediss:") {
        return redis::Client::open(url).map_err(not_a_url);
    }
    // rustls needs a process-wide crypto provider; keep one the application installed.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let Some(pem) = tls_roots else {
        return redis::Client::open(url).map_err(not_a_url);
    };
    const CERTIFICATE: &[u8] = b"-----BEGIN CERTIFICATE-----";
    if !pem.windows(CERTIFICATE.len()).any(|w| w == CERTIFICATE) {
        return Err(rejected("the TLS roots hold no PEM certificate".into()));
    }
    let certificates = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.to_vec()),
    };
    redis::Client::build_with_tls(url, certificates)
        .map_err(|e| rejected(format!("cannot use the TLS roots: {e}")).with_source(e))
}

#[cfg(test)]
mod tests {
    use super::super::RedisBudgetStore;
    use super::*;

    /// Durations out of range are refused before anything connects (nothing listens on port
    /// 1): a zero lease would let every reserve purge every reservation.
    #[tokio::test]
    async fn options_out_of_range_are_refused_before_connecting() {
        let url = "redis://127.0.0.1:1/0";
        let cases = [
            (
                RedisStoreOptions::new().lease(Duration::ZERO),
                "lease 0ns is out of range",
            ),
            (
                RedisStoreOptions::new().lease(Duration::from_secs(9)),
                "lease 9s is out of range",
            ),
            (
                RedisStoreOptions::new().task_ttl(Duration::ZERO),
                "task_ttl 0ns is out of range",
            ),
            (
                RedisStoreOptions::new().timeout(Duration::ZERO),
                "timeout 0ns is out of range",
            ),
            (
                RedisStoreOptions::new()
                    .lease(Duration::from_secs(30))
                    .timeout(Duration::from_secs(30)),
                "lease 30s must be longer than timeout 30s",
            ),
        ];
        for (options, want) in cases {
            let error = RedisBudgetStore::connect_with(url, options)
                .await
                .expect_err(want)
                .to_string();
            assert!(error.contains(want), "{error}");
        }
    }
}
