//! The entries behind the layer: one moka cache shared by every clone.

use std::any::Any;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use budget_core::Usage;

/// One cached response, type-erased so that the layer needs no type parameter for it (a
/// response of another type under the same key is a miss, never a wrong answer).
pub(super) struct Entry {
    /// The response's `CacheableResponse::Cached` form.
    pub(super) value: Box<dyn Any + Send + Sync>,
    /// What the original call consumed: a hit saved this much.
    pub(super) usage: Usage,
    /// The model the provider said it served on the original call.
    pub(super) served_model: Option<Arc<str>>,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("usage", &self.usage)
            .field("served_model", &self.served_model)
            .finish_non_exhaustive()
    }
}

/// Keys are already well-mixed 128-bit hashes of the request: folding them is enough, SipHash
/// on top would only add time to every lookup. The fold is multiplied by an odd constant so
/// that keys from a poor key function (small integers) still spread over moka's segments.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys hashed through `write` (not `write_u128`): FNV-1a.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u128(&mut self, key: u128) {
        // Truncations are the point: the two halves are folded together.
        let folded = (key as u64) ^ ((key >> 64) as u64);
        self.0 = (self.0 ^ folded).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 ^= self.0 >> 32;
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct BuildKeyHasher;

impl BuildHasher for BuildKeyHasher {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher::default()
    }
}

pub(super) type Entries = moka::future::Cache<u128, Arc<Entry>, BuildKeyHasher>;

/// The longest TTL the layer passes to moka (which panics beyond 1,000 years).
pub(super) const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// The cache and the settings it was built with, shared by the layer's clones and services.
pub(super) struct Shared {
    pub(super) entries: Entries,
    pub(super) ttl: Duration,
    pub(super) max_entries: u64,
}

impl Shared {
    pub(super) fn new(ttl: Duration, max_entries: u64) -> Shared {
        let ttl = ttl.min(MAX_TTL);
        let entries = moka::future::Cache::builder()
            .max_capacity(max_entries)
            .time_to_live(ttl)
            .build_with_hasher(BuildKeyHasher);
        Shared {
            entries,
            ttl,
            max_entries,
        }
    }

    /// Stores a response's cached form with what it cost.
    pub(super) async fn insert<C: Send + Sync + 'static>(
        &self,
        key: u128,
        value: C,
        usage: Usage,
        served_model: Option<&str>,
    ) {
        let entry = Entry {
            value: Box::new(value),
            usage,
            served_model: served_model.map(Arc::from),
        };
        self.entries.insert(key, Arc::new(entry)).await;
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("ttl", &self.ttl)
            .field("max_entries", &self.max_entries)
            .field("entry_count", &self.entries.entry_count())
            .finish()
    }
}
