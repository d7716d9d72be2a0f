//! The clock the limiters read by default: tokio's.

use governor::clock::Clock;
use governor::nanos::Nanos;
use tokio::time::Instant;

/// A governor [`Clock`] that reads tokio's time ([`tokio::time::Instant`]).
///
/// It is the clock [`Policy::Wait`](super::Policy::Wait) sleeps on, so measuring and sleeping
/// agree: in production both are the monotonic clock; in a test that pauses tokio's time
/// (`#[tokio::test(start_paused = true)]`), waits are exact and take no real time. Clones share
/// their origin, so they report the same instants.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: Instant,
}

impl TokioClock {
    /// A clock whose instants count from now.
    pub fn new() -> TokioClock {
        TokioClock {
            origin: Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> TokioClock {
        TokioClock::new()
    }
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        let elapsed = Instant::now().saturating_duration_since(self.origin);
        // Saturates after ~584 years instead of panicking like `Nanos::from(Duration)`.
        Nanos::new(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
    }
}
