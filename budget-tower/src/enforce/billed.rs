//! Whether a failed call was billed anyway.
//!
//! Most failures cost nothing: the provider refused (429, 5xx) or was never reached. But an
//! answer can arrive and still fail to be read — a 200 with a malformed body: the provider
//! billed it, and releasing its reservation would lose that usage. The budget layer asks a
//! [`BilledFailure`] (tower-http's callback pattern: a closure, or `()` for "never billed").

use budget_core::Usage;

/// What a failed call cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Billed {
    /// Nothing: release the reservation.
    No,
    /// Something, unknown: commit the reservation's worst case (prompt + granted output),
    /// flagged estimated.
    Unknown,
    /// What the provider reported in the answer that could not otherwise be read.
    Reported(Usage),
}

/// Decides whether (and how much) a failed call was billed.
pub trait BilledFailure<E>: Clone + Send + Sync + 'static {
    /// What the failed call cost.
    fn billed(&self, error: &E) -> Billed;
}

/// Failures are never billed (the default).
impl<E> BilledFailure<E> for () {
    fn billed(&self, _: &E) -> Billed {
        Billed::No
    }
}

impl<E, F> BilledFailure<E> for F
where
    F: Fn(&E) -> Billed + Clone + Send + Sync + 'static,
{
    fn billed(&self, error: &E) -> Billed {
        self(error)
    }
}
