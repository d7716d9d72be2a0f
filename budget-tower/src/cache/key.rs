//! What a request is cached under.

use crate::llm::ChatRequest;

/// Tells the cache layer under which key a request's response is stored, or that it must not
/// be cached at all (`None`): such a request always goes to the inner service.
///
/// Implemented by [`DeterministicKey`] (the default: the request's own
/// [`ChatRequest::cache_key`]) and by every `Fn(&R) -> Option<u128>` closure (tower-http's
/// callback pattern). A closure is the way to cache requests `cache_key` refuses, e.g.
/// non-deterministic ones, or to key a request type that is not a [`ChatRequest`].
pub trait CacheKey<R>: Clone + Send + Sync + 'static {
    /// The key of `request`, or `None` when its response must not be cached. Two requests
    /// with the same key must be answered alike.
    fn key(&self, request: &R) -> Option<u128>;
}

/// The default key: [`ChatRequest::cache_key`], so the request decides what is deterministic
/// (OpenAI chat requests: temperature 0 or a seed set) and only such requests are cached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeterministicKey;

impl<R: ChatRequest> CacheKey<R> for DeterministicKey {
    fn key(&self, request: &R) -> Option<u128> {
        request.cache_key()
    }
}

impl<R, F> CacheKey<R> for F
where
    F: Fn(&R) -> Option<u128> + Clone + Send + Sync + 'static,
{
    fn key(&self, request: &R) -> Option<u128> {
        self(request)
    }
}
