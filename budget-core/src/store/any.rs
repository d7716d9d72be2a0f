//! The budget store chosen by configuration: a URL.

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::task::{Context, Poll};

use jiff::Timestamp;

use super::{
    BackendErrorKind, BudgetStore, CounterSpec, CounterUsage, MemoryBudgetStore, ReserveOutcome,
    StoreError, Ticket,
};
use crate::admission::{Amount, ReserveRequest};
use crate::attribution::TaskId;
use crate::limits::CounterKey;
use crate::redact::redact_url;

#[cfg(feature = "redis")]
use super::{AllowanceOptions, AllowanceStore, RedisBudgetStore, RedisStoreOptions};

/// The environment variable [`AnyBudgetStore::from_env`] reads.
pub const STORE_ENV: &str = "TOKEN_BUDGET_STORE";

/// The options a Redis store URL accepts, as error messages list them.
pub(crate) const REDIS_OPTIONS: &str = "prefix=NAME, lease_secs=10..2592000, \
    task_ttl_secs=60..31536000, timeout_ms=1..600000 (the lease must be longer than the \
    timeout), fail_open=true|false, allowance=true|false, tls_ca=PATH (rediss:// only), and the \
    Redis client's protocol=resp2|resp3 (for redis+unix:// and unix:// also db=N, user=NAME, \
    pass=PASSWORD)";

/// The budget store chosen by configuration: a URL.
///
/// | URL | store |
/// |---|---|
/// | `memory:` (the default) | [`MemoryBudgetStore`]: this process only; rebuild its windows from the ledger with [`Budget::restore_from_ledger`](crate::Budget::restore_from_ledger) |
/// | `redis://host:port/db?prefix=…&lease_secs=…&fail_open=true` | [`RedisBudgetStore`]: shared by every instance on the same Redis and prefix |
/// | `redis://…?allowance=true` | [`AllowanceStore`]: the same counters, calls admitted locally against allowances |
/// | `rediss://host:port/db?…` | the same over TLS; `tls_ca=/path/ca.pem` trusts that CA instead of the system's roots |
///
/// Options are checked before anything connects: an unknown option, one given twice, or a
/// number out of its range is an error that names the option and lists what is accepted
/// (`lease_secs` from 10 to 2,592,000 and longer than the timeout, `task_ttl_secs` from 60 to
/// 31,536,000, `timeout_ms` from 1 to 600,000; `tls_ca` only with `rediss://`). Query values are percent-decoded (`+` is a space); the Redis client's
/// own `protocol=` (and, for `redis+unix://` and `unix://`, `db=`, `user=`, `pass=`) go to it.
///
/// `TOKEN_BUDGET_STORE` holds the URL for [`AnyBudgetStore::from_env`].
#[derive(Debug)]
pub enum AnyBudgetStore {
    /// Counters in this process.
    Memory(MemoryBudgetStore),
    /// Counters shared through Redis.
    #[cfg(feature = "redis")]
    Redis(RedisBudgetStore),
    /// Counters shared through Redis, admitted locally against allowances
    /// (`redis://…?allowance=true`).
    #[cfg(feature = "redis")]
    Allowance(AllowanceStore),
}

impl AnyBudgetStore {
    /// Opens the store `url` names. Unknown schemes and malformed options are errors that name
    /// the URL (without its password) and list what is accepted.
    pub async fn open(url: &str) -> Result<AnyBudgetStore, StoreError> {
        let url = url.trim();
        let name = redact_url(url);
        if url == "memory:" || url == "memory" {
            return Ok(AnyBudgetStore::Memory(MemoryBudgetStore::new()));
        }
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or_default();
        match scheme.to_ascii_lowercase().as_str() {
            "redis" | "rediss" | "redis+unix" | "unix" => open_redis(url, &name).await,
            _ => Err(StoreError::new(
                BackendErrorKind::RejectedInput,
                name,
                format!(
                    "unknown budget store URL; use `memory:` or `redis://host:port/db` \
                     (options: {REDIS_OPTIONS}), e.g. in {STORE_ENV}"
                ),
            )),
        }
    }

    /// The store named by `TOKEN_BUDGET_STORE`, or a memory store when it is unset or empty.
    pub async fn from_env() -> Result<AnyBudgetStore, StoreError> {
        match std::env::var(STORE_ENV) {
            Ok(url) if !url.trim().is_empty() => AnyBudgetStore::open(&url).await,
            _ => Ok(AnyBudgetStore::Memory(MemoryBudgetStore::new())),
        }
    }

    /// Which store this is, and where, for logs and reports.
    pub fn describe(&self) -> String {
        match self {
            AnyBudgetStore::Memory(_) => "memory (this process)".into(),
            #[cfg(feature = "redis")]
            AnyBudgetStore::Redis(store) => store.name().to_owned(),
            #[cfg(feature = "redis")]
            AnyBudgetStore::Allowance(store) => format!("{} with local allowances", store.name()),
        }
    }

    /// `true` for a store shared with other processes.
    pub fn is_shared(&self) -> bool {
        !matches!(self, AnyBudgetStore::Memory(_))
    }

    /// Reports what an allowance store has not reported yet and gives its allowances back;
    /// nothing to do for the others. Call it before the process exits.
    pub async fn close(&self) -> Result<(), StoreError> {
        match self {
            #[cfg(feature = "redis")]
            AnyBudgetStore::Allowance(store) => store.close().await,
            _ => Ok(()),
        }
    }
}

#[cfg(feature = "redis")]
async fn open_redis(text: &str, name: &str) -> Result<AnyBudgetStore, StoreError> {
    let (client, options, allowance) = redis_client_and_options(text, name)?;
    let store = RedisBudgetStore::connect_with(&client, options)
        .await
        .map_err(|e| e.named(name))?;
    Ok(if allowance {
        AnyBudgetStore::Allowance(AllowanceStore::new(store, AllowanceOptions::new()))
    } else {
        AnyBudgetStore::Redis(store)
    })
}

/// A Redis store URL's client URL, options (the `tls_ca` file read) and allowance flag.
#[cfg(feature = "redis")]
fn redis_client_and_options(
    text: &str,
    name: &str,
) -> Result<(String, RedisStoreOptions, bool), StoreError> {
    let rejected =
        |message: String| StoreError::new(BackendErrorKind::RejectedInput, name, message);
    let RedisUrl {
        client,
        mut options,
        allowance,
        tls_ca,
    } = parse_redis_url(text).map_err(rejected)?;
    if let Some(path) = tls_ca {
        let pem = std::fs::read(&path).map_err(|e| {
            rejected(format!("option tls_ca: cannot read {path:?}: {e}")).with_source(e)
        })?;
        options = options.tls_roots(pem);
    }
    Ok((client, options, allowance))
}

/// The control log beside the Redis store `url` names (same server, same key prefix), or
/// `None` when `url` names no Redis store.
#[cfg(feature = "redis")]
pub async fn redis_control_log(
    url: &str,
) -> Result<Option<super::RedisControlLog>, crate::ledger::LedgerError> {
    let url = url.trim();
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or_default();
    if !matches!(
        scheme.to_ascii_lowercase().as_str(),
        "redis" | "rediss" | "redis+unix" | "unix"
    ) {
        return Ok(None);
    }
    let name = redact_url(url);
    let as_ledger_error = |e: StoreError| {
        crate::ledger::LedgerError::new(e.kind(), e.store(), e.message()).with_source(e)
    };
    let (client, options, _) = redis_client_and_options(url, &name).map_err(as_ledger_error)?;
    super::RedisControlLog::connect_with(&client, options)
        .await
        .map(Some)
}

/// A Redis store URL taken apart.
#[cfg(feature = "redis")]
#[derive(Debug)]
struct RedisUrl {
    /// The URL for the Redis client: the given one with only the client's own options.
    client: String,
    options: RedisStoreOptions,
    allowance: bool,
    /// The file named by `tls_ca=`, read when the store opens.
    tls_ca: Option<String>,
}

/// Parses a Redis store URL and checks every option (no I/O): unknown options, options given
/// twice and numbers out of range are errors naming the option.
#[cfg(feature = "redis")]
fn parse_redis_url(text: &str) -> Result<RedisUrl, String> {
    use super::redis_store::{
        MAX_LEASE, MAX_TASK_TTL, MAX_TIMEOUT, MIN_LEASE, MIN_TASK_TTL, MIN_TIMEOUT,
    };
    use std::time::Duration;

    let mut url = url::Url::parse(text).map_err(|e| format!("not a valid URL: {e}"))?;
    let tls = url.scheme() == "rediss";
    let unix = matches!(url.scheme(), "redis+unix" | "unix");
    let mut parsed = RedisUrl {
        client: String::new(),
        options: RedisStoreOptions::new(),
        allowance: false,
        tls_ca: None,
    };
    let mut seen: Vec<String> = Vec::new();
    let mut passed: Vec<String> = Vec::new();
    let query = url.query().unwrap_or_default().to_owned();
    for raw in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = url::form_urlencoded::parse(raw.as_bytes())
            .next()
            .unwrap_or_default();
        let (name, value) = (name.into_owned(), value.into_owned());
        if seen.contains(&name) {
            return Err(format!("option {name} is given twice"));
        }
        seen.push(name.clone());
        let options = std::mem::take(&mut parsed.options);
        parsed.options = match name.as_str() {
            "prefix" => options.prefix(value),
            "lease_secs" => options.lease(Duration::from_secs(number(
                &name,
                &value,
                MIN_LEASE.as_secs()..=MAX_LEASE.as_secs(),
                "seconds",
            )?)),
            "task_ttl_secs" => options.task_ttl(Duration::from_secs(number(
                &name,
                &value,
                MIN_TASK_TTL.as_secs()..=MAX_TASK_TTL.as_secs(),
                "seconds",
            )?)),
            "timeout_ms" => options.timeout(Duration::from_millis(number(
                &name,
                &value,
                millis(MIN_TIMEOUT)..=millis(MAX_TIMEOUT),
                "milliseconds",
            )?)),
            "fail_open" => options.fail_open(flag(&name, &value)?),
            "allowance" => {
                parsed.allowance = flag(&name, &value)?;
                options
            }
            "tls_ca" if !tls => {
                return Err("option tls_ca applies to rediss:// URLs only".into());
            }
            "tls_ca" if value.is_empty() => {
                return Err("option tls_ca names no file".into());
            }
            "tls_ca" => {
                parsed.tls_ca = Some(value);
                options
            }
            // The Redis client's own options: it checks their values.
            "protocol" => {
                passed.push(raw.to_owned());
                options
            }
            "db" | "user" | "pass" if unix => {
                passed.push(raw.to_owned());
                options
            }
            _ => {
                return Err(format!(
                    "unknown option {name:?}; accepted: {REDIS_OPTIONS}"
                ));
            }
        };
    }
    url.set_query((!passed.is_empty()).then(|| passed.join("&")).as_deref());
    parsed.client = url.into();
    Ok(parsed)
}

/// A whole number option within `range`, or an error naming the option, the value and the
/// range.
#[cfg(feature = "redis")]
fn number(
    name: &str,
    value: &str,
    range: std::ops::RangeInclusive<u64>,
    unit: &str,
) -> Result<u64, String> {
    let n: u64 = value
        .parse()
        .map_err(|_| format!("option {name}={value:?} is not a whole number"))?;
    if range.contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "option {name}={n} is out of range: use {} to {} ({unit})",
            range.start(),
            range.end()
        ))
    }
}

#[cfg(feature = "redis")]
fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(feature = "redis")]
fn flag(name: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("option {name}={value:?} is not true or false")),
    }
}

#[cfg(not(feature = "redis"))]
async fn open_redis(_url: &str, name: &str) -> Result<AnyBudgetStore, StoreError> {
    Err(StoreError::new(
        BackendErrorKind::RejectedInput,
        name,
        "this build has no Redis store (budget-core was built without its `redis` feature)",
    ))
}

impl BudgetStore for AnyBudgetStore {
    async fn reserve(
        &self,
        counters: &[CounterSpec],
        request: &ReserveRequest,
        now: Timestamp,
    ) -> Result<ReserveOutcome, StoreError> {
        match self {
            AnyBudgetStore::Memory(s) => s.reserve(counters, request, now).await,
            #[cfg(feature = "redis")]
            AnyBudgetStore::Redis(s) => s.reserve(counters, request, now).await,
            #[cfg(feature = "redis")]
            AnyBudgetStore::Allowance(s) => s.reserve(counters, request, now).await,
        }
    }

    fn settle(
        &self,
        ticket: Ticket,
        counters: &[CounterSpec],
        actual: Amount,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<CounterUsage>, StoreError>> + Send {
        // Dispatched now, not when first polled: each store takes the settle at call time.
        match self {
            AnyBudgetStore::Memory(s) => {
                Settling::Done(ready(Ok(s.settle_now(ticket, counters, actual, now))))
            }
            #[cfg(feature = "redis")]
            AnyBudgetStore::Redis(s) => {
                Settling::Waiting(Box::pin(s.settle_now(ticket, counters, actual, now)))
            }
            #[cfg(feature = "redis")]
            AnyBudgetStore::Allowance(s) => {
                Settling::Done(ready(Ok(s.settle_now(ticket, counters, actual, now))))
            }
        }
    }

    fn release(&self, ticket: Ticket) {
        match self {
            AnyBudgetStore::Memory(s) => s.release(ticket),
            #[cfg(feature = "redis")]
            AnyBudgetStore::Redis(s) => s.release(ticket),
            #[cfg(feature = "redis")]
            AnyBudgetStore::Allowance(s) => s.release(ticket),
        }
    }

    async fn usage(
        &self,
        counters: &[CounterSpec],
        now: Timestamp,
    ) -> Result<Vec<CounterUsage>, StoreError> {
        match self {
            AnyBudgetStore::Memory(s) => s.usage(counters, now).await,
            #[cfg(feature = "redis")]
            AnyBudgetStore::Redis(s) => s.usage(counters, now).await,
            #[cfg(feature = "redis")]
            AnyBudgetStore::Allowance(s) => s.usage(counters, now).await,
        }
    }

    async fn snapshot(
        &self,
        now: Timestamp,
    ) -> Result<Vec<(CounterKey, CounterUsage)>, StoreError> {
        match self {
            AnyBudgetStore::Memory(s) => s.snapshot(now).await,
            #[cfg(feature = "redis")]
            AnyBudgetStore::Redis(s) => s.snapshot(now).await,
            #[cfg(feature = "redis")]
            AnyBudgetStore::Allowance(s) => s.snapshot(now).await,
        }
    }

    fn forget_task(&self, task: &TaskId) {
        match self {
            AnyBudgetStore::Memory(s) => s.forget_task(task),
            #[cfg(feature = "redis")]
            AnyBudgetStore::Redis(s) => s.forget_task(task),
            #[cfg(feature = "redis")]
            AnyBudgetStore::Allowance(s) => s.forget_task(task),
        }
    }

    async fn flush(&self) -> Result<(), StoreError> {
        match self {
            AnyBudgetStore::Memory(s) => s.flush().await,
            #[cfg(feature = "redis")]
            AnyBudgetStore::Redis(s) => s.flush().await,
            #[cfg(feature = "redis")]
            AnyBudgetStore::Allowance(s) => s.flush().await,
        }
    }

    fn keeps_counters(&self) -> bool {
        match self {
            AnyBudgetStore::Memory(s) => s.keeps_counters(),
            #[cfg(feature = "redis")]
            AnyBudgetStore::Redis(s) => s.keeps_counters(),
            #[cfg(feature = "redis")]
            AnyBudgetStore::Allowance(s) => s.keeps_counters(),
        }
    }
}

/// A settle the chosen store has already taken: its outcome, or the wait for Redis's answer.
enum Settling {
    Done(Ready<Result<Vec<CounterUsage>, StoreError>>),
    #[cfg(feature = "redis")]
    Waiting(Pin<Box<dyn Future<Output = Result<Vec<CounterUsage>, StoreError>> + Send>>),
}

impl Future for Settling {
    type Output = Result<Vec<CounterUsage>, StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Settling::Done(done) => Pin::new(done).poll(cx),
            #[cfg(feature = "redis")]
            Settling::Waiting(waiting) => waiting.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls_choose_the_store_or_say_what_is_wrong() {
        assert!(matches!(
            AnyBudgetStore::open("memory:").await.unwrap(),
            AnyBudgetStore::Memory(_)
        ));
        let unknown = AnyBudgetStore::open("mongodb://u:pw@db/x")
            .await
            .unwrap_err();
        let text = unknown.to_string();
        assert!(text.contains("mongodb://u:***@db/x"), "{text}");
        assert!(
            text.contains("memory:") && text.contains("redis://"),
            "{text}"
        );
        assert!(!text.contains("pw@"), "{text}");
        let bad = AnyBudgetStore::open("redis://127.0.0.1:6379/0?lease_secs=soon")
            .await
            .unwrap_err();
        assert!(bad.to_string().contains("lease_secs=\"soon\""), "{bad}");
    }

    /// Every option is checked before anything connects (nothing listens on port 1): unknown
    /// ones, ones given twice, numbers out of range. Errors name the option and hide the
    /// password.
    #[cfg(feature = "redis")]
    #[tokio::test]
    async fn every_redis_option_is_checked_before_connecting() {
        let base = "redis://u:hunter2@127.0.0.1:1/0";
        let cases = [
            (
                "?lease=5",
                "unknown option \"lease\"; accepted: prefix=NAME, lease_secs=",
            ),
            ("?foo=bar", "unknown option \"foo\""),
            (
                "?lease_secs=0",
                "option lease_secs=0 is out of range: use 10 to 2592000 (seconds)",
            ),
            ("?lease_secs=9", "option lease_secs=9 is out of range"),
            (
                "?lease_secs=2592001",
                "option lease_secs=2592001 is out of range",
            ),
            (
                "?lease_secs=-1",
                "option lease_secs=\"-1\" is not a whole number",
            ),
            (
                "?timeout_ms=0",
                "option timeout_ms=0 is out of range: use 1 to 600000 (milliseconds)",
            ),
            (
                "?task_ttl_secs=0",
                "option task_ttl_secs=0 is out of range: use 60 to",
            ),
            ("?prefix=a&prefix=b", "option prefix is given twice"),
            (
                "?tls_ca=/etc/tb/ca.pem",
                "option tls_ca applies to rediss:// URLs only",
            ),
            (
                "?fail_open=yes",
                "option fail_open=\"yes\" is not true or false",
            ),
            ("?allowance=", "option allowance=\"\" is not true or false"),
            ("?db=2", "unknown option \"db\""),
            (
                "?lease_secs=10&timeout_ms=20000",
                "must be longer than timeout",
            ),
            ("?prefix=a%7Bb", "the key prefix \"a{b\" contains"),
        ];
        for (query, want) in cases {
            let error = AnyBudgetStore::open(&format!("{base}{query}"))
                .await
                .expect_err(query)
                .to_string();
            assert!(error.contains(want), "{query}: {error}");
            assert!(!error.contains("hunter2"), "{query}: {error}");
        }
    }

    /// Errors name the URL as given (password hidden) and keep the kind the store found.
    #[tokio::test]
    async fn open_errors_keep_their_kind() {
        let unknown = AnyBudgetStore::open("mongodb://db/x").await.unwrap_err();
        assert_eq!(unknown.kind(), BackendErrorKind::RejectedInput, "{unknown}");
        let option = AnyBudgetStore::open("redis://127.0.0.1:1/0?lease_secs=soon")
            .await
            .unwrap_err();
        assert_eq!(option.kind(), BackendErrorKind::RejectedInput, "{option}");
        #[cfg(feature = "redis")]
        {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            drop(listener);
            let url = format!("redis://u:pw@127.0.0.1:{port}/0?timeout_ms=500");
            let closed = AnyBudgetStore::open(&url).await.unwrap_err();
            assert_eq!(closed.kind(), BackendErrorKind::Unreachable, "{closed}");
            assert_eq!(closed.store(), redact_url(&url));
            assert!(std::error::Error::source(&closed).is_some(), "{closed:?}");
        }
    }

    #[cfg(feature = "redis")]
    #[test]
    fn redis_urls_keep_the_client_options_and_take_the_store_options_out() {
        let parsed = parse_redis_url(
            "redis://:p%40ss@cache:6380/2?prefix=fleet&protocol=resp3&lease_secs=60\
             &timeout_ms=500&task_ttl_secs=3600&fail_open=true&allowance=1",
        )
        .unwrap();
        assert_eq!(parsed.client, "redis://:p%40ss@cache:6380/2?protocol=resp3");
        assert!(parsed.allowance);
        let options = format!("{:?}", parsed.options);
        for want in [
            "prefix: \"fleet\"",
            "lease: 60s",
            "task_ttl: 3600s",
            "timeout: 500ms",
            "fail_open: true",
        ] {
            assert!(options.contains(want), "{options} has {want}");
        }
        let unix = parse_redis_url("redis+unix:///run/redis.sock?db=3&pass=x&prefix=p").unwrap();
        assert_eq!(unix.client, "redis+unix:///run/redis.sock?db=3&pass=x");
        let tls = parse_redis_url("rediss://cache/0?tls_ca=%2Fetc%2Ftb%2Fca.pem#insecure").unwrap();
        assert_eq!(tls.client, "rediss://cache/0#insecure");
        assert_eq!(tls.tls_ca.as_deref(), Some("/etc/tb/ca.pem"));
        let plain = parse_redis_url("redis://127.0.0.1:6379").unwrap();
        assert_eq!(plain.client, "redis://127.0.0.1:6379");
        assert!(!plain.allowance && plain.tls_ca.is_none());
    }

    #[tokio::test]
    async fn a_redis_url_with_options_opens_a_shared_store() {
        let Ok(url) = std::env::var("REDIS_URL") else {
            eprintln!(
                "SKIPPED a_redis_url_with_options_opens_a_shared_store: REDIS_URL is not set"
            );
            return;
        };
        let sep = if url.contains('?') { '&' } else { '?' };
        let store = AnyBudgetStore::open(&format!(
            "{url}{sep}prefix=tb-unit:any&lease_secs=30&timeout_ms=500&fail_open=false"
        ))
        .await
        .unwrap();
        assert!(store.is_shared());
        assert!(
            store.describe().contains("prefix tb-unit:any"),
            "{}",
            store.describe()
        );
    }
}
