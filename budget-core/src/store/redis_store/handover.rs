//! What a store was handed over (settles, releases, their retries) and has not delivered to
//! Redis yet, so that [`flush`](crate::store::BudgetStore::flush) can wait for exactly what
//! was handed over before it was called, however much arrives after.

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

/// Operations handed over and not yet delivered, by sequence number.
#[derive(Debug)]
pub(super) struct Tracker {
    state: Mutex<State>,
    /// Counts deliveries; waiters watch it.
    delivered: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    undelivered: BTreeSet<u64>,
}

impl Tracker {
    pub(super) fn new() -> Arc<Tracker> {
        Arc::new(Tracker {
            state: Mutex::new(State::default()),
            delivered: watch::Sender::new(0),
        })
    }

    /// Notes one operation handed over. It counts as delivered when the guard drops: after
    /// Redis ran it, or when it is given up (refused by a script, or past its retry horizon;
    /// both are logged).
    pub(super) fn hand_over(self: &Arc<Self>) -> Handed {
        let mut state = self.state.lock();
        let seq = state.next;
        state.next += 1;
        state.undelivered.insert(seq);
        Handed {
            tracker: self.clone(),
            seq,
        }
    }

    /// A mark that every operation handed over so far lies before.
    pub(super) fn mark(&self) -> u64 {
        self.state.lock().next
    }

    /// How many operations handed over before `mark` are not delivered yet.
    pub(super) fn undelivered_before(&self, mark: u64) -> usize {
        self.state.lock().undelivered.range(..mark).count()
    }

    /// How many operations were delivered so far (to tell progress from a stall).
    pub(super) fn deliveries(&self) -> u64 {
        *self.delivered.borrow()
    }

    /// Waits until every operation handed over before `mark` is delivered.
    pub(super) async fn delivered_before(&self, mark: u64) {
        // Subscribing before looking: a delivery after the look wakes the wait.
        let mut changes = self.delivered.subscribe();
        loop {
            let done = self
                .state
                .lock()
                .undelivered
                .first()
                .is_none_or(|&oldest| oldest >= mark);
            if done || changes.changed().await.is_err() {
                return;
            }
        }
    }
}

/// One operation handed over; dropping it marks it delivered.
#[derive(Debug)]
pub(super) struct Handed {
    tracker: Arc<Tracker>,
    seq: u64,
}

impl Drop for Handed {
    fn drop(&mut self) {
        self.tracker.state.lock().undelivered.remove(&self.seq);
        self.tracker.delivered.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_what_was_handed_over_before_the_mark_only() {
        let tracker = Tracker::new();
        let first = tracker.hand_over();
        let second = tracker.hand_over();
        let mark = tracker.mark();
        let after = tracker.hand_over();
        assert_eq!(tracker.undelivered_before(mark), 2);
        let wait = tokio::spawn({
            let tracker = tracker.clone();
            async move { tracker.delivered_before(mark).await }
        });
        drop(second);
        tokio::task::yield_now().await;
        assert!(!wait.is_finished(), "the first is still on its way");
        drop(first);
        tokio::time::timeout(std::time::Duration::from_secs(5), wait)
            .await
            .expect("woken by the last delivery")
            .unwrap();
        assert_eq!(tracker.undelivered_before(mark), 0);
        assert_eq!(tracker.deliveries(), 2);
        drop(after);
    }
}
