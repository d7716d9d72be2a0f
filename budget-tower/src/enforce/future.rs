//! The response future of [`BudgetService`](super::BudgetService).

use super::BudgetLayerError;

response_future! {
    /// The future [`BudgetService`](super::BudgetService) returns: the inner service's response, or its
    /// error wrapped in the layer's.
    ResponseFuture<R, E> => Result<R, BudgetLayerError<E>>
}
