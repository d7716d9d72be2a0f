//! The control plane's log in one process's memory.

use jiff::Timestamp;
use parking_lot::Mutex;
use tokio::sync::watch;

use super::{Actor, AuditRecord, ControlChange, ControlLog, ControlState};
use crate::ledger::LedgerError;

/// A [`ControlLog`] kept in memory: the decisions of one process, lost when it exits. Its
/// [`MemoryControlLog::changes`] channel says when a record was appended.
#[derive(Debug)]
pub struct MemoryControlLog {
    inner: Mutex<Log>,
    appended: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Log {
    records: Vec<AuditRecord>,
    state: ControlState,
}

impl MemoryControlLog {
    /// An empty log.
    pub fn new() -> MemoryControlLog {
        MemoryControlLog {
            inner: Mutex::new(Log::default()),
            appended: watch::Sender::new(0),
        }
    }

    /// The sequence number of the last record, as it changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// The decisions in force.
    pub fn state(&self) -> ControlState {
        self.inner.lock().state.clone()
    }
}

impl Default for MemoryControlLog {
    fn default() -> Self {
        MemoryControlLog::new()
    }
}

impl ControlLog for MemoryControlLog {
    async fn append(
        &self,
        change: ControlChange,
        by: Actor,
        at: Timestamp,
    ) -> Result<AuditRecord, LedgerError> {
        let record = {
            let mut log = self.inner.lock();
            let replaced = log.state.apply(&change);
            let record = AuditRecord {
                seq: log.records.len() as u64 + 1,
                at,
                by,
                change,
                replaced,
            };
            log.records.push(record.clone());
            record
        };
        self.appended.send_replace(record.seq);
        Ok(record)
    }

    async fn since(&self, seq: u64) -> Result<Vec<AuditRecord>, LedgerError> {
        let log = self.inner.lock();
        let from = usize::try_from(seq)
            .unwrap_or(usize::MAX)
            .min(log.records.len());
        Ok(log.records[from..].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn at(ts: &str) -> Timestamp {
        ts.parse().unwrap()
    }

    #[tokio::test]
    async fn records_are_numbered_in_order_and_say_what_they_replaced() {
        let log = MemoryControlLog::new();
        let mut changes = log.changes();
        let first = log
            .append(
                ControlChange::pause("support"),
                Actor::operator("ana"),
                at("2026-12-06T09:00:00Z"),
            )
            .await
            .unwrap();
        assert_eq!((first.seq, first.replaced.clone()), (1, None));
        assert!(changes.has_changed().unwrap());
        assert_eq!(*changes.borrow_and_update(), 1);

        let second = log
            .append(
                ControlChange::resume("support"),
                Actor::rule("budget_recovered"),
                at("2026-12-06T09:05:00Z"),
            )
            .await
            .unwrap();
        assert_eq!(second.seq, 2);
        assert_eq!(second.replaced, Some(ControlChange::pause("support")));
        assert_eq!(*changes.borrow_and_update(), 2);

        assert_eq!(log.since(0).await.unwrap(), [first, second.clone()]);
        assert_eq!(log.since(1).await.unwrap(), [second]);
        assert!(log.since(2).await.unwrap().is_empty());
        assert!(log.since(u64::MAX).await.unwrap().is_empty());
        assert!(!log.state().is_paused("support"));
    }

    #[tokio::test]
    async fn concurrent_writers_each_see_the_decision_they_replaced_once() {
        let log = Arc::new(MemoryControlLog::new());
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move {
                    let change = if i % 2 == 0 {
                        ControlChange::pause("support")
                    } else {
                        ControlChange::resume("support")
                    };
                    log.append(change, Actor::operator("ops"), at("2026-12-06T09:00:00Z"))
                        .await
                        .unwrap()
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        let records = log.since(0).await.unwrap();
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=8).collect::<Vec<_>>());
        // Replaying the log in order gives each record's `replaced` back.
        let mut state = ControlState::default();
        for record in &records {
            assert_eq!(
                state.apply(&record.change),
                record.replaced,
                "record {}",
                record.seq
            );
        }
        assert_eq!(state, log.state());
    }
}
