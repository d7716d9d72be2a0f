//! Writes: numbered at hand-over, queued until PostgreSQL confirms them, sent by whichever
//! operation comes next (pipelined), stored once however often sent, and stored on a
//! connection of their own when the ledger is dropped with writes still queued.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use super::PostgresLedger;
use super::connection::{MAX_RECONNECTS, open};
use super::error::pg_error;
use crate::ledger::sql::EventRow;
use crate::ledger::{LedgerError, UsageEvent};

/// One statement inserts the event and its tags (a data-modifying CTE): atomic, one round trip.
/// A write sent again (its connection was lost before the reply) inserts nothing: its
/// `(writer, write_seq)` is already there.
const INSERT: &str = "WITH ev AS (INSERT INTO usage_events (id, at_ns, agent, task, step, \
    user_name, session, critical, model, requested_model, input, cached_input, cache_write, \
    output, reasoning, cost_nano, cost_rem, estimated, kind, saved_tokens, saved_nano, saved_rem, \
    writer, write_seq) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, \
    $20, $21, $22, $25, $26) ON CONFLICT (writer, write_seq) DO NOTHING RETURNING seq) \
    INSERT INTO usage_event_tags (seq, tag_key, tag_value) \
    SELECT ev.seq, t.k, t.v FROM ev, unnest($23::text[], $24::text[]) AS t(k, v)";

/// How long dropping a ledger that still holds unstored events waits for them to be stored.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most `INSERT`s one drain has in flight at once (pipelined on the connection): a long
/// queue is sent in rounds of this size.
const PIPELINE: usize = 256;

/// The most writes of dropped `record` futures that one `record` sends besides its own, so that
/// a backlog slows no single caller much (`flush` and queries send all of it).
const ORPHANS_PER_RECORD: usize = 32;

/// The writes a ledger holds and their numbering.
#[derive(Debug, Default)]
pub(super) struct Pending {
    /// The next write's `write_seq`.
    pub(super) next_seq: i64,
    /// Unstored writes by `write_seq`.
    writes: BTreeMap<i64, Queued>,
}

/// One unstored write.
#[derive(Debug)]
struct Queued {
    write: Arc<Write>,
    /// How many live futures have an `INSERT` of it in flight (each releases it when it ends
    /// or is dropped). Only a `record` looking for writes nobody sends reads it: no one ever
    /// waits for another future's `INSERT`, which might never be polled again.
    senders: u32,
}

/// One event's row, numbered (`write_seq`) when it is handed over.
#[derive(Debug)]
pub(super) struct Write {
    write_seq: i64,
    row: EventRow,
}

impl Write {
    /// The columns of `e` (numbered later, at hand-over); an error names what does not fit.
    pub(super) fn of(e: &UsageEvent) -> Result<Write, String> {
        Ok(Write {
            write_seq: 0,
            row: EventRow::of(e)?,
        })
    }
}

/// Sends `w` on `client` as writer `writer`'s write.
async fn insert_on(client: &Client, w: &Write, writer: i64) -> Result<u64, tokio_postgres::Error> {
    let r = &w.row;
    let agent: &str = &r.agent;
    let task: Option<&str> = r.task.as_deref();
    let user: Option<&str> = r.user.as_deref();
    let session: Option<&str> = r.session.as_deref();
    let model: &str = &r.model;
    let requested_model: Option<&str> = r.requested_model.as_deref();
    let (tag_keys, tag_values): (Vec<&str>, Vec<&str>) =
        r.tags.iter().map(|(k, v)| (&**k, &**v)).unzip();
    let params: [&(dyn ToSql + Sync); 26] = [
        &r.id,
        &r.at_ns,
        &agent,
        &task,
        &r.step,
        &user,
        &session,
        &r.critical,
        &model,
        &requested_model,
        &r.usage[0],
        &r.usage[1],
        &r.usage[2],
        &r.usage[3],
        &r.usage[4],
        &r.cost.0,
        &r.cost.1,
        &r.estimated,
        &r.kind,
        &r.saved_tokens,
        &r.saved.0,
        &r.saved.1,
        &tag_keys,
        &tag_values,
        &writer,
        &w.write_seq,
    ];
    client.execute(INSERT, &params).await
}

/// Runs the futures concurrently (on one connection their requests are pipelined); their
/// outputs, in order.
async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(v) => *output = Some(v),
                    Poll::Pending => waiting = true,
                }
            }
        }
        if waiting {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// The writes one drain is sending. Dropped — also with the drain's future, half-way through
/// its `INSERT`s — it releases those not stored: they stay queued for the next drain.
struct Claim<'a> {
    ledger: &'a PostgresLedger,
    seqs: Vec<i64>,
}

impl Claim<'_> {
    /// `seq` leaves the queue: stored, or handed back to its caller.
    fn remove(&mut self, seq: i64) {
        self.ledger.pending.lock().writes.remove(&seq);
        self.seqs.retain(|s| *s != seq);
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut pending = self.ledger.pending.lock();
        for seq in &self.seqs {
            if let Some(queued) = pending.writes.get_mut(seq) {
                queued.senders = queued.senders.saturating_sub(1);
            }
        }
    }
}

impl PostgresLedger {
    /// Numbers `write` and queues it; its `write_seq`.
    pub(super) fn hand_over(&self, mut write: Write) -> i64 {
        let mut pending = self.pending.lock();
        let seq = pending.next_seq;
        pending.next_seq += 1;
        write.write_seq = seq;
        pending.writes.insert(
            seq,
            Queued {
                write: Arc::new(write),
                senders: 0,
            },
        );
        seq
    }

    /// Stores the queued writes numbered below `upto`, without ever waiting for another
    /// future's `INSERT` (a write sent twice is stored once).
    ///
    /// For a `record` (`mine` is its write): sends its own write and (up to
    /// [`ORPHANS_PER_RECORD`]) older ones no live future is sending, and returns its own write's outcome; when its own `INSERT` fails and
    /// the write was not stored meanwhile, the write leaves the queue (the error hands it
    /// back), while the others' failures leave them queued. Otherwise (`flush`, queries):
    /// sends every write below `upto`; the failed ones stay queued and the first failure is
    /// returned.
    pub(super) async fn drain(&self, upto: i64, mine: Option<i64>) -> Result<(), LedgerError> {
        let batch: Vec<Arc<Write>> = {
            let mut pending = self.pending.lock();
            let mut orphans = 0;
            pending
                .writes
                .range_mut(..upto)
                .filter(|(seq, queued)| match mine {
                    None => true,
                    Some(m) if m == **seq => true,
                    Some(_) => {
                        let take = queued.senders == 0 && orphans < ORPHANS_PER_RECORD;
                        orphans += usize::from(take);
                        take
                    }
                })
                .map(|(_, queued)| {
                    queued.senders += 1;
                    queued.write.clone()
                })
                .collect()
        };
        if batch.is_empty() {
            // A record's own write is gone only once stored.
            return Ok(());
        }
        let mut claim = Claim {
            ledger: self,
            seqs: batch.iter().map(|w| w.write_seq).collect(),
        };
        let mut results = Vec::with_capacity(batch.len());
        for round in batch.chunks(PIPELINE) {
            results.extend(join_all(round.iter().map(|w| self.insert(w))).await);
        }
        let mut own = Ok(());
        let mut failure = None;
        let mut failed = 0_usize;
        for (w, result) in batch.iter().zip(results) {
            let seq = w.write_seq;
            match result {
                Ok(()) => claim.remove(seq),
                Err(e) if mine == Some(seq) => {
                    // Unless another future stored it meanwhile, it is handed back through
                    // the error: never stored later.
                    if self.pending.lock().writes.contains_key(&seq) {
                        claim.remove(seq);
                        own = Err(e);
                    }
                }
                Err(e) => {
                    failed += 1;
                    failure.get_or_insert(e);
                }
            }
        }
        drop(claim);
        match (mine, failure) {
            (Some(_), _) | (None, None) => own,
            (None, Some(e)) => {
                let message = format!(
                    "{failed} usage events stay queued, not yet stored: {}",
                    e.message()
                );
                Err(e.with_message(message))
            }
        }
    }

    /// Sends one queued write (again, after a lost connection).
    async fn insert(&self, w: &Write) -> Result<(), LedgerError> {
        let writer = self.writer;
        with_client!(self, "write failed", |client| insert_on(&client, w, writer))?;
        Ok(())
    }

    /// A drain of every write handed over so far.
    pub(super) fn drain_all(&self) -> impl Future<Output = Result<(), LedgerError>> + Send + '_ {
        let upto = self.pending.lock().next_seq;
        self.drain(upto, None)
    }
}

impl Drop for PostgresLedger {
    /// Stores what is still queued, on a connection and a runtime of its own (see the type
    /// docs); what cannot be stored within 10 seconds is named in an error log.
    fn drop(&mut self) {
        let writes: Vec<Arc<Write>> = std::mem::take(&mut self.pending.get_mut().writes)
            .into_values()
            .map(|q| q.write)
            .collect();
        if writes.is_empty() {
            return;
        }
        let ids: Vec<i64> = writes.iter().map(|w| w.row.id).collect();
        let (url, name, ns, writer) = (
            self.connect_url.clone(),
            self.name.clone(),
            self.namespace.clone(),
            self.writer,
        );
        let (done, outcome) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("postgres-ledger-close".into())
            .spawn(move || {
                let _ = done.send(store_on_close(&url, &name, &ns, writer, &writes));
            });
        let lost = match spawned {
            Err(e) => Err((
                ids.len(),
                format!("cannot start a thread to store them: {e}"),
            )),
            Ok(_) => outcome.recv_timeout(CLOSE_TIMEOUT).unwrap_or_else(|_| {
                Err((
                    ids.len(),
                    format!(
                        "not stored within {CLOSE_TIMEOUT:?}; still being tried in the \
                         background until the process exits"
                    ),
                ))
            }),
        };
        if let Err((lost, reason)) = lost {
            tracing::error!(
                ledger = %self.name,
                lost,
                queued = ids.len(),
                ids = ?ids,
                "usage events handed over to a PostgreSQL ledger dropped before storing them: \
                 {reason}"
            );
        }
    }
}

/// Stores `writes` as writer `writer`'s, on a new connection driven by a runtime of its own.
/// How many were not stored, and why.
fn store_on_close(
    url: &str,
    name: &str,
    ns: &str,
    writer: i64,
    writes: &[Arc<Write>],
) -> Result<(), (usize, String)> {
    let all = writes.len();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| (all, format!("cannot start a runtime: {e}")))?;
    runtime.block_on(async {
        let client = open(url, name, ns)
            .await
            .map_err(|e| (all, e.message().to_owned()))?;
        let mut results = Vec::with_capacity(writes.len());
        for round in writes.chunks(PIPELINE) {
            results.extend(join_all(round.iter().map(|w| insert_on(&client, w, writer))).await);
        }
        let failed = results.iter().filter(|r| r.is_err()).count();
        match results.into_iter().find_map(Result::err) {
            None => Ok(()),
            Some(e) => Err((
                failed,
                pg_error(name, "write failed", e).message().to_owned(),
            )),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{an_event, database};
    use super::*;
    use crate::ledger::Ledger;

    /// A write sent again under the same writer number (as after a connection lost between
    /// the commit and its reply) is stored once, tags included.
    #[tokio::test]
    async fn a_write_sent_twice_is_stored_once() {
        let Some((url, ns)) = database("twice") else {
            return;
        };
        let ledger = PostgresLedger::connect(&url, &ns).await.expect("connect");
        let event = an_event();
        let stored = async || {
            let client = ledger.client();
            let events: i64 = client
                .query_one("SELECT count(*) FROM usage_events", &[])
                .await
                .unwrap()
                .get(0);
            let tags: i64 = client
                .query_one("SELECT count(*) FROM usage_event_tags", &[])
                .await
                .unwrap()
                .get(0);
            (events, tags)
        };
        ledger.record(event.clone()).await.expect("first send");
        ledger.pending.lock().next_seq = 0;
        ledger
            .record(event.clone())
            .await
            .expect("the same write again");
        let once = stored().await;
        ledger
            .record(event)
            .await
            .expect("a new write of the same event");
        let twice = stored().await;
        ledger
            .client()
            .batch_execute(&format!("DROP SCHEMA {ns} CASCADE"))
            .await
            .expect("drop the test schema");
        assert_eq!(once, (1, 1), "the repeated write was stored again");
        assert_eq!(twice, (2, 2), "a new write is not mistaken for a repeat");
    }
}
