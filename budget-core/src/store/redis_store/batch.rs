//! The batcher: operations of many concurrent callers go to Redis together, one script call
//! per batch; callers that went away get their reservations released.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use redis::Value;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};

use super::call::run_batch;
use super::error::{OpError, kind_of};
use super::handover::Handed;
use super::retry::Retry;
use super::wire::Reply;
use super::{Call, RedisBudgetStore, Shared, Which};

/// Operations whose caller waits for the reply, queued for the batcher at most; beyond,
/// callers wait. Settles and releases are handed over on a queue without bound.
pub(super) const OP_QUEUE: usize = 4096;

/// Operations per script call, at most.
const MAX_BATCH: usize = 128;

/// Batches on their way at once per store: while Redis runs one, the next is on the wire.
const BATCHES_IN_FLIGHT: usize = 2;

/// What the batcher hands back: the call (emptied when it went to the retry queue) and its
/// outcome.
pub(super) type Answer = (Call, Result<Value, OpError>);

/// An operation handed to the batcher, and where its reply goes (nowhere for a release).
pub(super) struct Pending {
    pub(super) call: Call,
    pub(super) reply: Option<oneshot::Sender<Answer>>,
    /// For a settle or release handed over: delivered once the batch ran, or once its retry
    /// landed.
    pub(super) handed: Option<Handed>,
}

impl RedisBudgetStore {
    /// Runs `call` in the next batch; gives the call back with its reply.
    pub(in crate::store) async fn run(&self, call: Call) -> (Call, Result<Reply, OpError>) {
        let (reply, answer) = oneshot::channel();
        if let Err(refused) = self
            .inner
            .ops
            .send(Pending {
                call,
                reply: Some(reply),
                handed: None,
            })
            .await
        {
            return (refused.0.call, Err(OpError::closed()));
        }
        let mut awaiting = AwaitedReply {
            answer,
            ops: &self.inner.handover,
        };
        match (&mut awaiting.answer).await {
            Ok((call, result)) => (call, result.map(Reply::new)),
            Err(_) => (Call::new(Which::Usage), Err(OpError::closed())),
        }
    }

    /// Queues `call` for the next batch without waiting, counted for [`BudgetStore::flush`];
    /// returns where its reply goes. Fails only when the store's batcher has stopped.
    pub(super) fn hand_over(&self, call: Call) -> Result<oneshot::Receiver<Answer>, OpError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            call,
            reply: Some(reply),
            handed: Some(self.inner.shared.tracker.hand_over()),
        };
        self.inner
            .handover
            .send(pending)
            .map_err(|_| OpError::closed())?;
        Ok(answer)
    }
}

/// The caller's end of a queued operation. A caller can go away (its future dropped by a
/// timeout) just after the batcher handed it a reserve's reply: the batcher saw the hand-over
/// succeed, so it is the caller that must give that reservation back.
struct AwaitedReply<'a> {
    answer: oneshot::Receiver<Answer>,
    ops: &'a mpsc::UnboundedSender<Pending>,
}

impl Drop for AwaitedReply<'_> {
    fn drop(&mut self) {
        // Closing first settles the race: a reply sent after this fails to send, and the
        // batcher releases it; a reply sent before it is read here.
        self.answer.close();
        if let Ok((call, Ok(value))) = self.answer.try_recv() {
            if let Some(release) = release_for_orphan(&call, &value) {
                queue_orphan_release(self.ops, release);
            }
        }
    }
}

/// Queues the release of a reservation whose caller went away.
fn queue_orphan_release(ops: &mpsc::UnboundedSender<Pending>, release: Call) {
    let queued = ops
        .send(Pending {
            call: release,
            reply: None,
            handed: None,
        })
        .is_ok();
    if !queued {
        tracing::warn!(
            "could not queue the release of an abandoned reservation; its lease holds the \
             budget until it expires"
        );
    }
}

/// Sends the operations of many concurrent callers to Redis together: whatever queued while
/// the previous batch ran goes in the next script call. Redis's time goes into the budget
/// decisions rather than into starting scripts, and a counter many calls share (an agent's
/// day, the fleet's hour) is read and written once per batch instead of once per call.
///
/// A reserve whose caller went away before its reply came (a dropped future) is released in
/// the next batch, so cancelled callers do not hold budget until their lease runs out.
pub(super) async fn run_batches(
    batcher: Batcher,
    mut queued: mpsc::Receiver<Pending>,
    mut handed: mpsc::UnboundedReceiver<Pending>,
) {
    let batcher = Arc::new(batcher);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        // Operations handed over go first: a caller hands a settle over before it reserves
        // again, and its reserve must see the settle.
        let first = tokio::select! {
            biased;
            Some(op) = handed.recv() => op,
            Some(op) = queued.recv() => op,
            else => return,
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match handed.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        while batch.len() < MAX_BATCH {
            match queued.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let batcher = batcher.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let orphans = batcher.run_and_answer(batch).await;
            if orphans.is_empty() {
                return;
            }
            match batcher.requeue.upgrade() {
                Some(ops) => orphans
                    .into_iter()
                    .for_each(|release| queue_orphan_release(&ops, release)),
                None => tracing::warn!(
                    abandoned = orphans.len(),
                    "the store closed before abandoned reservations were released; their \
                     leases hold the budget until they expire"
                ),
            }
        });
    }
}

/// What the batcher works with.
pub(super) struct Batcher {
    pub(super) conn: ConnectionManager,
    pub(super) name: String,
    /// Where releases of abandoned reservations go (weak: the batcher must not keep its own
    /// queue open).
    pub(super) requeue: mpsc::WeakUnboundedSender<Pending>,
    pub(super) retries: mpsc::UnboundedSender<Retry>,
    pub(super) shared: Arc<Shared>,
}

impl Batcher {
    /// Runs one batch and hands each caller its reply; settles and releases that could not
    /// reach Redis go to the retry queue. Returns the releases of reserves whose caller is
    /// gone.
    async fn run_and_answer(&self, batch: Vec<Pending>) -> Vec<Call> {
        let calls: Vec<&Call> = batch.iter().map(|p| &p.call).collect();
        let result = run_batch(&mut self.conn.clone(), &calls).await;
        match &result {
            Ok(_) => self.shared.down.store(false, Ordering::Relaxed),
            Err(e) if kind_of(e).is_outage() => self.shared.down.store(true, Ordering::Relaxed),
            Err(_) => {}
        }
        let mut replies = match result {
            Ok(values) if values.len() == batch.len() => values.into_iter().map(Ok).collect(),
            Ok(values) => {
                let e = OpError::miscounted(values.len(), batch.len());
                vec![Err(e); batch.len()]
            }
            Err(e) => vec![Err(OpError::from_redis(&e)); batch.len()],
        }
        .into_iter();
        let mut orphans = Vec::new();
        for mut pending in batch {
            let mut result = replies.next().unwrap_or_else(|| Err(OpError::closed()));
            if let Err(e) = &mut result {
                let which = pending.call.script;
                if e.kind.is_outage() && which.retried() {
                    let call = std::mem::replace(&mut pending.call, Call::new(which));
                    let retry = Retry {
                        call,
                        since: Instant::now(),
                        _handed: pending.handed.take(),
                    };
                    e.queued = self.retries.send(retry).is_ok();
                } else if pending.handed.is_some() {
                    tracing::error!(store = %self.name, error = %e, "a {which:?} handed over failed for good (a settle's usage is in the ledger)");
                }
            }
            // Delivered (or given up, and said so): a flush waits no longer for it.
            drop(pending.handed.take());
            let Some(reply) = pending.reply else {
                continue;
            };
            if let Err((call, Ok(value))) = reply.send((pending.call, result)) {
                orphans.extend(release_for_orphan(&call, &value));
            }
        }
        orphans
    }
}

/// The release of a reserve that succeeded after its caller went away.
fn release_for_orphan(reserve: &Call, reply: &Value) -> Option<Call> {
    if reserve.script != Which::Reserve {
        return None;
    }
    let Value::Array(values) = reply else {
        return None;
    };
    if !matches!(values.first(), Some(Value::Int(1))) {
        return None;
    }
    let Some(Value::Int(tokens)) = values.get(3) else {
        return None;
    };
    let money = match values.get(4)? {
        Value::BulkString(text) => String::from_utf8(text.clone()).ok()?,
        _ => return None,
    };
    // The reserve's keys are (counter, leases) pairs, its last argument the reservation's id.
    let mut call = Call::new(Which::Release);
    for key in &reserve.keys {
        call.key(key.clone());
    }
    let id = reserve.args.last()?;
    call.arg(format!("{id}|{tokens}|{money}"))
        .arg(tokens)
        .arg(money);
    Some(call)
}
