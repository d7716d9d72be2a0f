//! Reading counters (usage, snapshots) and forgetting a finished task's.

use std::future::Future;

use jiff::Timestamp;
use redis::RedisError;

use super::{Call, RedisBudgetStore, Which};
use crate::attribution::TaskId;
use crate::limits::{CounterKey, WindowSpan};
use crate::store::{CounterUsage, StoreError};

/// Counters per script call when scanning (snapshot, forget).
const SCAN_CHUNK: usize = 256;

impl RedisBudgetStore {
    pub(super) async fn usage_of(
        &self,
        counters: &[(CounterKey, WindowSpan)],
        now: Timestamp,
    ) -> Result<Vec<CounterUsage>, StoreError> {
        if counters.is_empty() {
            return Ok(Vec::new());
        }
        let keys = &self.inner.keys;
        let mut call = Call::new(Which::Usage);
        call.arg(now.as_millisecond());
        for (key, span) in counters {
            call.key(keys.counter(key)).key(keys.leases(key));
            match *span {
                WindowSpan::Rolling { slot, slot_nanos } => call.arg("r").arg(slot).arg(slot_nanos),
                WindowSpan::Calendar { .. } => call.arg("c").arg(0).arg(0),
                WindowSpan::Task => call.arg("t").arg(0).arg(0),
            };
        }
        let mut reply = self
            .run(call)
            .await
            .1
            .map_err(|e| self.op_error("usage", e))?;
        counters
            .iter()
            .map(|_| reply.usage())
            .collect::<Result<_, _>>()
            .map_err(|e| self.unexpected("usage: unexpected reply", e))
    }

    /// Every counter hash name of this store matching `pattern`.
    pub(super) async fn scan(&self, pattern: &str) -> Result<Vec<String>, RedisError> {
        let mut conn = self.inner.conn.clone();
        let mut cursor: u64 = 0;
        let mut names = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            names.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    pub(super) async fn snapshot_in_redis(
        &self,
        now: Timestamp,
    ) -> Result<Vec<(CounterKey, CounterUsage)>, StoreError> {
        let names = self
            .scan(&self.inner.keys.all_counters())
            .await
            .map_err(|e| self.redis_error("snapshot", e))?;
        let now_ms = now.as_millisecond();
        let now_nanos = i64::try_from(now.as_nanosecond()).unwrap_or(i64::MAX);
        let mut counters = Vec::with_capacity(names.len());
        for chunk in names.chunks(SCAN_CHUNK) {
            let mut pipe = redis::pipe();
            for name in chunk {
                pipe.cmd("HMGET").arg(name).arg("kind").arg("sn").arg("e");
            }
            let metas: Vec<(Option<String>, Option<i64>, Option<i64>)> = pipe
                .query_async(&mut self.inner.conn.clone())
                .await
                .map_err(|e| self.redis_error("snapshot", e))?;
            for (name, (kind, sn, end)) in chunk.iter().zip(metas) {
                let Some(key) = self.inner.keys.parse_counter(name) else {
                    continue;
                };
                let span = match (kind.as_deref(), sn) {
                    (Some("r"), Some(sn)) if sn > 0 => WindowSpan::Rolling {
                        slot_nanos: sn,
                        slot: now_nanos.div_euclid(sn),
                    },
                    (Some("c"), _) if end.is_some_and(|e| e <= now_ms) => continue,
                    (Some("c"), _) => WindowSpan::Calendar {
                        start: now,
                        end: now,
                    },
                    (Some("t"), _) => WindowSpan::Task,
                    // Expired between the scan and the read.
                    _ => continue,
                };
                counters.push((key, span));
            }
        }
        let mut out = Vec::with_capacity(counters.len());
        for chunk in counters.chunks(SCAN_CHUNK) {
            let usages = self.usage_of(chunk, now).await?;
            out.extend(chunk.iter().map(|(k, _)| k.clone()).zip(usages));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    pub(super) async fn forget_in_redis(
        &self,
        task: TaskId,
        now: Timestamp,
    ) -> Result<(), RedisError> {
        let names = self.scan(&self.inner.keys.task_counters(&task)).await?;
        for chunk in names.chunks(SCAN_CHUNK) {
            let mut call = Call::new(Which::Forget);
            call.arg(now.as_millisecond());
            for name in chunk {
                if let Some(leases) = self.inner.keys.leases_of(name) {
                    call.key(name.clone()).key(leases);
                }
            }
            self.run(call).await.1?;
        }
        Ok(())
    }

    pub(super) fn spawn(
        &self,
        what: &'static str,
        job: impl Future<Output = Result<(), RedisError>> + Send + 'static,
    ) {
        let name = self.inner.name.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = job.await {
                        tracing::warn!(store = %name, error = %e, "{what} failed; leases and TTLs clean up");
                    }
                });
            }
            Err(_) => {
                tracing::warn!(store = %name, "{what} skipped outside a Tokio runtime; leases and TTLs clean up");
            }
        }
    }
}
