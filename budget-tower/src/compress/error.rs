//! The compress layer's error.

/// Why a compressed call failed.
#[derive(Debug, thiserror::Error)]
pub enum CompressLayerError<E> {
    /// Even the turns that must be kept (instructions, the last turns) exceed the target: the
    /// request is not sent.
    #[error("the conversation cannot be compressed to {target} prompt tokens: {needed} must stay")]
    CannotFit {
        /// Prompt tokens that cannot be removed.
        needed: u64,
        /// The target.
        target: u64,
    },
    /// The inner service failed.
    #[error(transparent)]
    Inner(E),
}
