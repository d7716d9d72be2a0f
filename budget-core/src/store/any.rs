//! The budget store chosen by configuration: a URL.

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::task::{Context, Poll};

use jiff::Timestamp;

use super::{
    BudgetStore, CounterSpec, CounterUsage, MemoryBudgetStore, ReserveOutcome, StoreError, Ticket,
};
use crate::admission::{Amount, ReserveRequest};
use crate::attribution::TaskId;
use crate::limits::CounterKey;
use crate::redact::redact_url;

#[cfg(feature = "redis")]
use super::{AllowanceOptions, AllowanceStore, RedisBudgetStore, RedisStoreOptions};

/// The environment variable [`AnyBudgetStore::from_env`] reads.
pub const STORE_ENV: &str = "TOKEN_BUDGET_STORE";

/// The budget store chosen by configuration: a URL.
///
/// | URL | store |
/// |---|---|
/// | `memory:` (the default) | [`MemoryBudgetStore`]: this process only; rebuild its windows from the ledger with [`Budget::restore_from_ledger`](crate::Budget::restore_from_ledger) |
/// | `redis://host:port/db?prefix=…&lease_secs=…&fail_open=true` | [`RedisBudgetStore`]: shared by every instance on the same Redis and prefix |
/// | `redis://…?allowance=true` | [`AllowanceStore`]: the same counters, calls admitted locally against allowances |
/// | `rediss://host:port/db?…` | the same over TLS; `tls_ca=/path/ca.pem` trusts that CA instead of the system's roots |
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
        let fail = |message: String| StoreError {
            store: redact_url(url),
            message,
        };
        if url == "memory:" || url == "memory" {
            return Ok(AnyBudgetStore::Memory(MemoryBudgetStore::new()));
        }
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or_default();
        match scheme {
            "redis" | "rediss" | "redis+unix" | "unix" => open_redis(url).await.map_err(fail),
            _ => Err(fail(format!(
                "unknown budget store URL; use `memory:` or `redis://host:port/db` \
                 (options: ?prefix=NAME&lease_secs=N&task_ttl_secs=N&timeout_ms=N&fail_open=true&allowance=true), \
                 e.g. in {STORE_ENV}"
            ))),
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
async fn open_redis(url: &str) -> Result<AnyBudgetStore, String> {
    use std::time::Duration;
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut options = RedisStoreOptions::new();
    let mut allowance = false;
    let mut passed = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("option {name}={value:?} is not a whole number"))
        };
        options = match name {
            "prefix" => options.prefix(value),
            "lease_secs" => options.lease(Duration::from_secs(number()?)),
            "task_ttl_secs" => options.task_ttl(Duration::from_secs(number()?)),
            "timeout_ms" => options.timeout(Duration::from_millis(number()?)),
            "fail_open" => options.fail_open(flag(name, value)?),
            "tls_ca" => {
                let pem = std::fs::read(value)
                    .map_err(|e| format!("option tls_ca: cannot read {value:?}: {e}"))?;
                options.tls_roots(pem)
            }
            "allowance" => {
                allowance = flag(name, value)?;
                options
            }
            // The Redis client's own options (e.g. `protocol=resp3`).
            _ => {
                passed.push(pair);
                options
            }
        };
    }
    let url = if passed.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", passed.join("&"))
    };
    let store = RedisBudgetStore::connect_with(&url, options)
        .await
        .map_err(|e| e.message)?;
    Ok(if allowance {
        AnyBudgetStore::Allowance(AllowanceStore::new(store, AllowanceOptions::new()))
    } else {
        AnyBudgetStore::Redis(store)
    })
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
async fn open_redis(_url: &str) -> Result<AnyBudgetStore, String> {
    Err("this build has no Redis store (budget-core was built without its `redis` feature)".into())
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
                Settling::Waiting(Box::pin(s.settle_now(&ticket, counters, actual, now)))
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
