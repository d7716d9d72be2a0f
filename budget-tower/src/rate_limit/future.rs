//! The response future of [`RateLimitService`](super::RateLimitService).

use super::RateLimitError;

response_future! {
    /// The future [`RateLimitService`](super::RateLimitService) returns: the inner service's response, or its
    /// error wrapped in the layer's.
    ResponseFuture<R, E> => Result<R, RateLimitError<E>>
}
