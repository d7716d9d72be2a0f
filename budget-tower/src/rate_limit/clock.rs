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

/// A governor [`Clock`] that reads a budget's clock ([`budget_core::clock::Clock`]), so that
/// one clock drives both budget windows and rate limits.
///
/// With a [`FakeClock`](budget_core::clock::FakeClock) behind it, a test that advances the
/// fake clock refills the rate limiter as it ends budget windows, without sleeping. Instants
/// count from the budget clock's time when this was made; a clock set back before that reads
/// as that origin. [`Policy::Wait`](super::Policy::Wait) still sleeps on tokio's time, so pair
/// a fake budget clock with [`Policy::Reject`](super::Policy::Reject) (the default).
///
/// ```
/// use budget_core::clock::FakeClock;
/// use budget_tower::rate_limit::{BudgetClock, RateLimitLayer};
/// use governor::clock::Clock as _;
/// use jiff::SignedDuration;
///
/// let time = FakeClock::at("2026-12-06T09:00:00Z".parse().unwrap());
/// let clock = BudgetClock::new(time.clone());
/// let start = clock.now();
/// time.advance(SignedDuration::from_secs(30));
/// assert_eq!(clock.now().as_u64() - start.as_u64(), 30_000_000_000);
/// let _rates = RateLimitLayer::with_clock(clock).default_agent_rpm(60);
/// ```
#[derive(Debug, Clone)]
pub struct BudgetClock<C> {
    clock: C,
    origin: jiff::Timestamp,
}

impl<C: budget_core::clock::Clock> BudgetClock<C> {
    /// A governor clock reading `clock`.
    pub fn new(clock: C) -> BudgetClock<C> {
        let origin = clock.now();
        BudgetClock { clock, origin }
    }
}

impl<C: budget_core::clock::Clock + Clone> Clock for BudgetClock<C> {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        let elapsed = self.clock.now().duration_since(self.origin);
        // Negative (a clock set back) reads as the origin; saturates after ~584 years.
        Nanos::new(
            u64::try_from(elapsed.as_nanos()).unwrap_or(if elapsed.is_negative() {
                0
            } else {
                u64::MAX
            }),
        )
    }
}
