use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use budget_core::{Budget, BudgetStore, Ledger, MemoryBudgetStore, MemoryLedger};
use tower::Layer;

use super::store::Shared;
use super::{CacheService, DeterministicKey};

/// How long a response stays cached when [`CacheLayer::ttl`] is not set: an hour.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60 * 60);

/// How many responses are kept when [`CacheLayer::max_entries`] is not set.
pub const DEFAULT_MAX_ENTRIES: u64 = 10_000;

/// Serves repeated deterministic requests from a cache: no provider call, a $0 ledger event
/// that says what it saved. See the [module docs](super).
///
/// Clones share one cache (behind one `Arc`). [`ttl`](Self::ttl) and
/// [`max_entries`](Self::max_entries) build a *fresh* cache: configure first, then clone and
/// apply.
pub struct CacheLayer<
    St: BudgetStore = MemoryBudgetStore,
    L: Ledger = MemoryLedger,
    K = DeterministicKey,
> {
    budget: Budget<St, L>,
    shared: Arc<Shared>,
    key: K,
}

impl<St: BudgetStore, L: Ledger, K: Clone> Clone for CacheLayer<St, L, K> {
    fn clone(&self) -> Self {
        CacheLayer {
            budget: self.budget.clone(),
            shared: self.shared.clone(),
            key: self.key.clone(),
        }
    }
}

impl<St: BudgetStore, L: Ledger, K> fmt::Debug for CacheLayer<St, L, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("ttl", &self.shared.ttl)
            .field("max_entries", &self.shared.max_entries)
            .field("entry_count", &self.shared.entries.entry_count())
            .field("key", &std::any::type_name::<K>())
            .finish_non_exhaustive()
    }
}

impl<St: BudgetStore, L: Ledger> CacheLayer<St, L> {
    /// A cache of [`DEFAULT_MAX_ENTRIES`] responses kept [`DEFAULT_TTL`], keyed by
    /// [`ChatRequest::cache_key`](crate::llm::ChatRequest::cache_key) (deterministic requests
    /// only), recording its hits in `budget`'s ledger.
    pub fn new(budget: Budget<St, L>) -> Self {
        CacheLayer {
            budget,
            shared: Arc::new(Shared::new(DEFAULT_TTL, DEFAULT_MAX_ENTRIES)),
            key: DeterministicKey,
        }
    }
}

impl<St: BudgetStore, L: Ledger, K> CacheLayer<St, L, K> {
    /// How long a stored response may be served, counted from when it was stored (default
    /// [`DEFAULT_TTL`]; longer than a century is cut to a century). Builds a fresh cache.
    pub fn ttl(self, ttl: Duration) -> Self {
        let shared = Arc::new(Shared::new(ttl, self.shared.max_entries));
        CacheLayer { shared, ..self }
    }

    /// How many responses the cache holds at most (default [`DEFAULT_MAX_ENTRIES`]). Beyond
    /// it, moka's TinyLFU policy decides which entries stay: a new response may be refused in
    /// favour of ones hit more often. Eviction runs in moka's housekeeping, so the count may
    /// exceed the bound briefly (see [`run_pending_tasks`](Self::run_pending_tasks)). Builds a
    /// fresh cache.
    pub fn max_entries(self, max_entries: u64) -> Self {
        let shared = Arc::new(Shared::new(self.shared.ttl, max_entries));
        CacheLayer { shared, ..self }
    }

    /// Keys requests with `key` instead of
    /// [`ChatRequest::cache_key`](crate::llm::ChatRequest::cache_key): a closure
    /// `Fn(&R) -> Option<u128>` (`None`: do not cache). This is how non-deterministic requests
    /// are cached too, or a request type that is not a `ChatRequest` is keyed. Keeps the
    /// cache.
    pub fn key_with<K2>(self, key: K2) -> CacheLayer<St, L, K2> {
        CacheLayer {
            budget: self.budget,
            shared: self.shared,
            key,
        }
    }

    /// The budget whose ledger records the hits.
    pub fn budget(&self) -> &Budget<St, L> {
        &self.budget
    }

    /// The TTL in force.
    pub fn ttl_value(&self) -> Duration {
        self.shared.ttl
    }

    /// How many responses are cached (approximate until moka's housekeeping ran: see
    /// [`run_pending_tasks`](Self::run_pending_tasks)).
    pub fn entry_count(&self) -> u64 {
        self.shared.entries.entry_count()
    }

    /// Runs moka's pending housekeeping now (evictions, expirations, the entry count), which
    /// otherwise runs as the cache is used.
    pub async fn run_pending_tasks(&self) {
        self.shared.entries.run_pending_tasks().await;
    }

    /// Drops every cached response (e.g. after a price or prompt change).
    pub fn invalidate_all(&self) {
        self.shared.entries.invalidate_all();
    }
}

impl<S, St: BudgetStore, L: Ledger, K: Clone> Layer<S> for CacheLayer<St, L, K> {
    type Service = CacheService<S, St, L, K>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheService::new(
            inner,
            self.budget.clone(),
            self.shared.clone(),
            self.key.clone(),
        )
    }
}
