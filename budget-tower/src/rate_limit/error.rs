//! Errors of the rate-limit layer.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Whose limit refused a call: an agent's or a model's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateLimitKey {
    /// The limit of this agent (the agent name of the call's attribution).
    Agent(Arc<str>),
    /// The limit of this model (the model the request asks for).
    Model(Arc<str>),
}

impl RateLimitKey {
    /// The agent or model name.
    pub fn name(&self) -> &str {
        match self {
            RateLimitKey::Agent(name) | RateLimitKey::Model(name) => name,
        }
    }

    /// The name, as the limiters key it.
    pub(super) fn arc(&self) -> &Arc<str> {
        match self {
            RateLimitKey::Agent(name) | RateLimitKey::Model(name) => name,
        }
    }
}

impl fmt::Display for RateLimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RateLimitKey::Agent(name) => write!(f, "agent `{name}`"),
            RateLimitKey::Model(name) => write!(f, "model `{name}`"),
        }
    }
}

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// Requests per minute: every call weighs 1.
    Requests,
    /// Tokens per minute: a call weighs its prompt tokens plus its output cap.
    Tokens,
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitKind::Requests => "requests per minute",
            LimitKind::Tokens => "tokens per minute",
        })
    }
}

/// Why a rate-limited call failed: not now, never, or the inner service failed.
///
/// `Limited` and `NeverFits` are returned before the request is sent: the provider never saw
/// it.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError<E> {
    /// Not now: the limit is spent for the moment (under [`Policy::Reject`], or under
    /// [`Policy::Wait`] when the wait would exceed its `max_wait`). The same call can pass
    /// after `retry_after`, if nobody else takes the room first.
    ///
    /// [`Policy::Reject`]: super::Policy::Reject
    /// [`Policy::Wait`]: super::Policy::Wait
    #[error("{kind} limit of {key} reached; retry after {retry_after:?}")]
    Limited {
        /// Whose limit refused the call.
        key: RateLimitKey,
        /// Which of its limits.
        kind: LimitKind,
        /// How long until that limit could admit this call.
        retry_after: Duration,
    },
    /// Never: the call weighs more than the limit's burst capacity, so no amount of waiting
    /// lets it through. Returned at once under both policies; no limit was charged.
    #[error(
        "a call weighing {weight} can never pass the {kind} limit of {key}: its capacity is {capacity}"
    )]
    NeverFits {
        /// Whose limit can never admit the call.
        key: RateLimitKey,
        /// Which of its limits ([`LimitKind::Tokens`], or [`LimitKind::Requests`] for a limit
        /// of zero requests per minute).
        kind: LimitKind,
        /// The call's weight: prompt tokens plus output cap (1 for a request limit).
        weight: u64,
        /// The most the limit can ever admit at once (its burst size; 0 for a rate of zero).
        capacity: u32,
    },
    /// The inner service (the provider) failed.
    #[error("LLM service failed: {0}")]
    Inner(#[source] E),
}

impl<E> RateLimitError<E> {
    /// How long to wait before trying again, for a `Limited` error.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RateLimitError::Limited { retry_after, .. } => Some(*retry_after),
            RateLimitError::NeverFits { .. } | RateLimitError::Inner(_) => None,
        }
    }

    /// Whose limit refused the call, unless the inner service failed.
    pub fn key(&self) -> Option<&RateLimitKey> {
        match self {
            RateLimitError::Limited { key, .. } | RateLimitError::NeverFits { key, .. } => {
                Some(key)
            }
            RateLimitError::Inner(_) => None,
        }
    }

    /// The inner service's error, if that is what this is.
    pub fn as_inner(&self) -> Option<&E> {
        match self {
            RateLimitError::Inner(e) => Some(e),
            RateLimitError::Limited { .. } | RateLimitError::NeverFits { .. } => None,
        }
    }
}
