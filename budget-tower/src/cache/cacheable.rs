//! What makes a response cacheable.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use budget_core::Usage;

use super::store::Shared;
use crate::llm::LlmResponse;

/// A response the cache layer can store and serve again.
///
/// The cache keeps a response's [`Cached`](Self::Cached) form (for a complete response,
/// typically a copy of it) and rebuilds a response from it on every hit, complete or as a
/// stream — whichever the hitting request asks for.
pub trait CacheableResponse: LlmResponse {
    /// The stored form of a response.
    type Cached: Send + Sync + 'static;

    /// The form to store, or `None` for a response that cannot be stored (a stream: see
    /// [`cache_stream`](Self::cache_stream)). The cache layer stores only responses that also
    /// report their [`usage`](LlmResponse::usage): a hit records what it saved.
    fn to_cached(&self) -> Option<Self::Cached>;

    /// A response rebuilt from its stored form: a stream when `as_stream` (the hitting request
    /// asked for one), else a complete response.
    fn from_cached(cached: &Self::Cached, as_stream: bool) -> Self;

    /// Called on a streamed response of a cacheable request: may wrap the stream so that,
    /// when it has ended without an error, the assembled response is stored with
    /// [`CacheSink::store`]. The default leaves the stream as it is, uncached.
    fn cache_stream(self, sink: CacheSink<Self::Cached>) -> Self {
        drop(sink);
        self
    }
}

/// Where a streamed response, once assembled, is stored: under the key of the request that
/// asked for it. See [`CacheableResponse::cache_stream`].
pub struct CacheSink<C> {
    shared: Arc<Shared>,
    key: u128,
    _cached: PhantomData<fn(C)>,
}

impl<C: Send + Sync + 'static> CacheSink<C> {
    pub(super) fn new(shared: Arc<Shared>, key: u128) -> CacheSink<C> {
        CacheSink {
            shared,
            key,
            _cached: PhantomData,
        }
    }

    /// Stores the assembled response with the usage the provider reported for it and the
    /// model it said it served.
    pub async fn store(self, cached: C, usage: Usage, served_model: Option<&str>) {
        self.shared
            .insert(self.key, cached, usage, served_model)
            .await;
    }
}

impl<C> fmt::Debug for CacheSink<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheSink")
            .field("key", &format_args!("{:032x}", self.key))
            .finish_non_exhaustive()
    }
}
