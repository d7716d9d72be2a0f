//! The response future of [`CompressService`](super::CompressService).

use super::CompressLayerError;

response_future! {
    /// The future [`CompressService`](super::CompressService) returns: the inner service's response, or its
    /// error wrapped in the layer's.
    ResponseFuture<R, E> => Result<R, CompressLayerError<E>>
}
