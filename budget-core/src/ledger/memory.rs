//! The in-memory ledger: a vector of events behind a read-write lock.

use std::future::{Future, ready};

use parking_lot::RwLock;

use super::{GroupTotal, Ledger, LedgerError, LedgerQuery, UsageEvent};

/// Events in this process's memory; queries scan them. For tests, demos and short-lived
/// processes; durable ledgers keep the same contract.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    events: RwLock<Vec<UsageEvent>>,
}

impl MemoryLedger {
    /// An empty ledger.
    pub fn new() -> MemoryLedger {
        MemoryLedger::default()
    }

    /// How many events are recorded.
    pub fn len(&self) -> usize {
        self.events.read().len()
    }

    /// Whether no event is recorded.
    pub fn is_empty(&self) -> bool {
        self.events.read().is_empty()
    }

    /// A copy of every event, in recording order.
    pub fn events(&self) -> Vec<UsageEvent> {
        self.events.read().clone()
    }

    /// The synchronous core of [`Ledger::record`]: the event is stored when this returns.
    pub(super) fn record_now(&self, event: UsageEvent) {
        self.events.write().push(event);
    }

    /// The synchronous core of [`Ledger::totals`]. Takes the read lock exactly once (the seed
    /// sketch took its lock twice in its top-N report and deadlocked).
    pub fn totals_now(&self, query: &LedgerQuery) -> Vec<GroupTotal> {
        let events = self.events.read();
        let mut groups: foldhash::HashMap<Vec<super::KeyPart>, GroupTotal> = Default::default();
        for event in events.iter().filter(|e| query.matches(e)) {
            let key: Vec<_> = query
                .group_by
                .iter()
                .map(|d| d.key_of(event, &query.time_zone))
                .collect();
            groups
                .entry(key)
                .or_insert_with_key(|k| GroupTotal {
                    key: k.clone(),
                    ..GroupTotal::default()
                })
                .add(event);
        }
        drop(events);
        let mut out: Vec<_> = groups.into_values().collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

impl Ledger for MemoryLedger {
    fn record(&self, event: UsageEvent) -> impl Future<Output = Result<(), LedgerError>> + Send {
        self.record_now(event);
        ready(Ok(()))
    }

    fn totals(
        &self,
        query: &LedgerQuery,
    ) -> impl Future<Output = Result<Vec<GroupTotal>, LedgerError>> + Send {
        ready(Ok(self.totals_now(query)))
    }
}
