//! Time, injected.
//!
//! Budget windows, resets and "retry after" times all read a [`Clock`], so tests drive them with
//! a [`FakeClock`] instead of sleeping (governor's pattern).

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use jiff::{SignedDuration, Timestamp};

/// A source of the current time.
pub trait Clock: Debug + Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told to. Clones share the same time.
///
/// ```
/// use budget_core::clock::{Clock, FakeClock};
/// use jiff::SignedDuration;
///
/// let clock = FakeClock::at("2026-11-29T23:59:00Z".parse().unwrap());
/// let other = clock.clone();
/// clock.advance(SignedDuration::from_secs(120));
/// assert_eq!(other.now().to_string(), "2026-11-30T00:01:00Z");
/// ```
#[derive(Debug, Clone)]
pub struct FakeClock {
    nanos: Arc<AtomicI64>,
}

impl FakeClock {
    /// A clock stopped at `start`.
    pub fn at(start: Timestamp) -> FakeClock {
        FakeClock {
            nanos: Arc::new(AtomicI64::new(saturating_nanos(start))),
        }
    }

    /// Moves the clock forward (or back, with a negative duration).
    pub fn advance(&self, by: SignedDuration) {
        let delta = i64::try_from(by.as_nanos()).unwrap_or(i64::MAX);
        self.nanos.fetch_add(delta, Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set(&self, to: Timestamp) {
        self.nanos.store(saturating_nanos(to), Ordering::SeqCst);
    }
}

fn saturating_nanos(t: Timestamp) -> i64 {
    i64::try_from(t.as_nanosecond()).unwrap_or(i64::MAX)
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        let nanos = self.nanos.load(Ordering::SeqCst);
        Timestamp::from_nanosecond(i128::from(nanos)).unwrap_or(Timestamp::MAX)
    }
}
