//! The writer thread: it commits what is handed over in batches, one transaction each, and
//! answers the `record`s that wait.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use rusqlite::{Connection, Transaction};
use tokio::sync::oneshot;

use super::Durability;
use super::error::sql_error;
use crate::ledger::LedgerError;
use crate::ledger::sql::EventRow;

type Reply = oneshot::Sender<Result<(), LedgerError>>;

#[derive(Debug)]
pub(super) enum WriteMsg {
    Event(Box<EventRow>, Option<Reply>),
    Flush(Reply),
}

/// The writer's answer to one `record`. Dropped unread (the `record` future was cancelled), it
/// logs a failure the writer had already delivered; a failure delivered later finds nobody
/// listening and the writer logs it. Either way, never lost without a word.
pub(super) struct Answer<'a> {
    pub(super) rx: oneshot::Receiver<Result<(), LedgerError>>,
    pub(super) event: u64,
    pub(super) ledger: &'a str,
}

impl Drop for Answer<'_> {
    fn drop(&mut self) {
        // Closed first, so that no answer can arrive between this look and the drop.
        self.rx.close();
        if let Ok(Err(e)) = self.rx.try_recv() {
            tracing::error!(
                ledger = self.ledger,
                event = self.event,
                error = %e,
                "usage event could not be written; its record future was dropped before the \
                 error was read"
            );
        }
    }
}

/// The writer thread's state: it commits batches and answers the waiting `record`s.
pub(super) struct Writer {
    pub(super) name: String,
    pub(super) failed: Arc<Mutex<Option<LedgerError>>>,
    pub(super) queued: Arc<AtomicUsize>,
    pub(super) durability: Durability,
    pub(super) max_batch: usize,
}

impl Writer {
    /// Commits what arrives until every sender is gone and the queue is empty: dropping the
    /// ledger commits what it holds.
    pub(super) fn run(&self, mut conn: Connection, rx: &mpsc::Receiver<WriteMsg>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        while let Ok(first) = rx.recv() {
            let deadline = match self.durability {
                Durability::Durable => None,
                Durability::Buffered { max_delay } => Some(Instant::now() + max_delay),
            };
            let mut flushing = matches!(first, WriteMsg::Flush(_));
            batch.push(first);
            while batch.len() < self.max_batch {
                let next = match rx.try_recv() {
                    Ok(msg) => Some(msg),
                    Err(TryRecvError::Disconnected) => None,
                    // A flush is waited for: it ends the gathering at once.
                    Err(TryRecvError::Empty) => match deadline {
                        Some(d) if !flushing => rx
                            .recv_timeout(d.saturating_duration_since(Instant::now()))
                            .ok(),
                        _ => None,
                    },
                };
                let Some(msg) = next else { break };
                flushing |= matches!(msg, WriteMsg::Flush(_));
                batch.push(msg);
            }
            self.commit(&mut conn, &mut batch);
        }
    }

    /// Writes `batch` in one transaction and answers (and empties) it.
    fn commit(&self, conn: &mut Connection, batch: &mut Vec<WriteMsg>) {
        let name = self.name.as_str();
        let known_failure = self
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let result = match known_failure {
            Some(e) => Err(e),
            None => write_batch(conn, batch).map_err(|e| {
                let e = sql_error(name, "write failed; the ledger accepts no more events", e);
                *self.failed.lock().unwrap_or_else(PoisonError::into_inner) = Some(e.clone());
                e
            }),
        };
        let events = batch
            .iter()
            .filter(|m| matches!(m, WriteMsg::Event(..)))
            .count();
        self.queued.fetch_sub(events, Ordering::AcqRel);
        // Events that failed with no one left to tell: their `record` future was dropped (or,
        // buffered, had already returned).
        let mut untold = 0_usize;
        for msg in batch.drain(..) {
            match msg {
                WriteMsg::Event(_, reply) => {
                    let told = reply.is_some_and(|r| r.send(result.clone()).is_ok());
                    untold += usize::from(!told);
                }
                WriteMsg::Flush(reply) => {
                    let _ = reply.send(result.clone());
                }
            }
        }
        if let Err(e) = &result {
            if untold > 0 {
                tracing::error!(
                    ledger = name,
                    lost = untold,
                    error = %e,
                    "usage events could not be written, and no caller is waiting to hear it"
                );
            }
        }
    }
}

fn write_batch(conn: &mut Connection, batch: &[WriteMsg]) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    insert_all(&tx, batch)?;
    tx.commit()
}

fn insert_all(tx: &Transaction<'_>, batch: &[WriteMsg]) -> Result<(), rusqlite::Error> {
    let mut event = tx.prepare_cached(
        "INSERT INTO usage_events (id, at_ns, agent, task, step, user_name, session, critical, \
         model, requested_model, input, cached_input, cache_write, output, reasoning, cost_nano, \
         cost_rem, estimated, kind, saved_tokens, saved_nano, saved_rem) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
         ?20, ?21, ?22)",
    )?;
    let mut tag = tx.prepare_cached(
        "INSERT INTO usage_event_tags (seq, tag_key, tag_value) VALUES (?1, ?2, ?3)",
    )?;
    for msg in batch {
        let WriteMsg::Event(r, _) = msg else { continue };
        event.execute(rusqlite::params![
            r.id,
            r.at_ns,
            &*r.agent,
            r.task.as_deref(),
            r.step,
            r.user.as_deref(),
            r.session.as_deref(),
            r.critical,
            &*r.model,
            r.requested_model.as_deref(),
            r.usage[0],
            r.usage[1],
            r.usage[2],
            r.usage[3],
            r.usage[4],
            r.cost.0,
            r.cost.1,
            r.estimated,
            r.kind,
            r.saved_tokens,
            r.saved.0,
            r.saved.1,
        ])?;
        let seq = tx.last_insert_rowid();
        for (k, v) in &r.tags {
            tag.execute(rusqlite::params![seq, &**k, &**v])?;
        }
    }
    Ok(())
}
