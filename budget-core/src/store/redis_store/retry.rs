//! Retrying settles and releases that could not reach Redis.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use super::error::kind_of;
use super::handover::Handed;
use super::{Call, RETRY_HORIZON, Shared};

/// Settles and releases waiting to be retried, at most; beyond, an operation is given up
/// (logged; a settle's usage stays in the ledger).
const MAX_PENDING: usize = 100_000;

/// Retries settles and releases that could not reach Redis, and releases of reservations
/// whose reply was lost, oldest first, until they land or pass the horizon. Ends when every
/// store handle is gone and nothing is pending.
pub(super) async fn retry_settles(
    mut conn: ConnectionManager,
    name: String,
    mut incoming: mpsc::UnboundedReceiver<Retry>,
    shared: Arc<Shared>,
) {
    let mut pending: VecDeque<Retry> = VecDeque::new();
    let mut open = true;
    loop {
        if pending.is_empty() {
            match incoming.recv().await {
                Some(job) => pending.push_back(job),
                None => return,
            }
        }
        // Collect what else arrived, and give Redis a moment to come back (a flush cuts the
        // moment short).
        let wait = tokio::time::sleep(Duration::from_millis(500));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                job = incoming.recv(), if open => match job {
                    Some(job) if pending.len() < MAX_PENDING => pending.push_back(job),
                    Some(_) => tracing::error!(store = %name, "retry queue full ({MAX_PENDING}): an operation is not retried (a settle's usage is in the ledger; a reservation waits for its lease)"),
                    None => open = false,
                },
                () = shared.retry_now.notified() => break,
                () = &mut wait => break,
            }
        }
        while let Some(job) = pending.front() {
            if job.since.elapsed() > RETRY_HORIZON {
                tracing::error!(store = %name, "gave up retrying an operation after {RETRY_HORIZON:?} (a settle's usage is in the ledger; a lost reservation waits for its lease)");
                pending.pop_front();
                continue;
            }
            match job.call.run(&mut conn).await {
                Ok(_) => {
                    shared.down.store(false, Ordering::Relaxed);
                    pending.pop_front();
                }
                Err(e) if kind_of(&e).is_outage() => {
                    shared.down.store(true, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    tracing::error!(store = %name, error = %e, "a retried operation failed for good");
                    pending.pop_front();
                }
            }
        }
        if !open && pending.is_empty() {
            return;
        }
    }
}

/// An operation waiting to be retried, and since when.
pub(super) struct Retry {
    pub(super) call: Call,
    pub(super) since: Instant,
    /// Held only to be dropped: the operation counts as delivered once it lands or is given
    /// up.
    pub(super) _handed: Option<Handed>,
}
