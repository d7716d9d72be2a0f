//! The response future of [`CacheService`](super::CacheService).

response_future! {
    /// The future [`CacheService`](super::CacheService) returns: the inner service's response or
    /// error, unchanged.
    ResponseFuture<R, E> => Result<R, E>
}
