//! The response future of [`RouteService`](super::RouteService).

response_future! {
    /// The future [`RouteService`](super::RouteService) returns: the inner service's response or
    /// error, unchanged.
    ResponseFuture<R, E> => Result<R, E>
}
