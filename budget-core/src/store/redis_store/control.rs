//! The control plane's log in Redis, under the store's key prefix: the records in one hash,
//! their sequence, and an index of each target's last record.

use std::sync::LazyLock;

use jiff::Timestamp;
use redis::aio::ConnectionManager;
use redis::{RedisError, Script, Value};

use super::error::kind_of;
use super::keys::KeySpace;
use super::options::{RedisStoreOptions, connection};
use crate::backend_error::BackendErrorKind;
use crate::control_plane::codec::{NewRecord, StoredRecord, replaced, to_json};
use crate::control_plane::{Actor, AuditRecord, ControlChange, ControlLog};
use crate::ledger::LedgerError;
use crate::redact::redact_url;
use crate::store::StoreError;

/// The last record on a target: KEYS = index, records; ARGV = target. Replies `{}` (none) or
/// `{seq, change}` (change nil when the record is missing).
static LAST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local s = redis.call('HGET', KEYS[1], ARGV[1])
if not s then return {} end
return { tonumber(s), redis.call('HGET', KEYS[2], s .. ':change') or false }
",
    )
});

/// Appends a record if the target's last record is still the one the caller read: KEYS =
/// sequence, records, index; ARGV = target, expected last seq ('' for none), at_ns, actor,
/// change, replaced ('' for none), channel. Replies the new seq, or 0 when another append on
/// the target came first.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if (redis.call('HGET', KEYS[3], ARGV[1]) or '') ~= ARGV[2] then return 0 end
local seq = redis.call('INCR', KEYS[1])
local f = { seq .. ':at', ARGV[3], seq .. ':actor', ARGV[4], seq .. ':change', ARGV[5] }
if ARGV[6] ~= '' then
  f[#f + 1] = seq .. ':replaced'
  f[#f + 1] = ARGV[6]
end
redis.call('HSET', KEYS[2], unpack(f))
redis.call('HSET', KEYS[3], ARGV[1], seq)
redis.call('PUBLISH', ARGV[7], seq)
return seq
",
    )
});

/// The records after a seq: KEYS = sequence, records; ARGV = seq. Replies seq, at, actor,
/// change, replaced per record (nil for a missing field).
static SINCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local out = {}
for s = tonumber(ARGV[1]) + 1, last do
  local v = redis.call('HMGET', KEYS[2], s .. ':at', s .. ':actor', s .. ':change', s .. ':replaced')
  out[#out + 1] = s
  for k = 1, 4 do out[#out + 1] = v[k] or false end
end
return out
",
    )
});

/// How many times an append reads its target again after other appends on it came first.
const MAX_ATTEMPTS: u32 = 100;

/// A [`ControlLog`] in Redis, under a [`RedisBudgetStore`](super::RedisBudgetStore)'s key
/// prefix (the store's keys and the log's share the hash tag `{prefix}`, so one cluster slot).
/// Cheap to clone; clones share the connection.
///
/// # Keys
///
/// * `{prefix}:ctl:seq`: the number of the last record (`INCR`ed by each append);
/// * `{prefix}:ctl:log`: the records, one hash with fields `<seq>:at` (nanoseconds),
///   `<seq>:actor`, `<seq>:change`, `<seq>:replaced` (JSON, as the SQL logs store them);
/// * `{prefix}:ctl:last`: each target's key → the number of its last record.
///
/// No key expires: the log is the audit trail.
///
/// # Appends
///
/// An append reads its target's last record (one script call), works out in Rust what it
/// replaces, then appends with a second script that first checks the target's last record is
/// still that one: if another append on the target came first, it reads again (at most 100
/// times, then [`BackendErrorKind::Contended`]). The second script numbers the record
/// (`INCR`), stores it and the index, and publishes its number on the channel `{prefix}:ctl`,
/// all at once (Redis runs one script at a time), so numbers are gap-free and each record
/// names the decision it really replaced. A reply lost with the connection leaves the decision
/// recorded or not; the error says so.
///
/// # Watching
///
/// Readers poll [`ControlLog::since`] (one script call; nothing new is one `GET`), as
/// [`Budget::watch_control`](crate::Budget::watch_control) does; the channel is for tools
/// that subscribe.
#[derive(Clone)]
pub struct RedisControlLog {
    conn: ConnectionManager,
    name: String,
    keys: KeySpace,
}

impl std::fmt::Debug for RedisControlLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisControlLog")
            .field("log", &self.name)
            .finish_non_exhaustive()
    }
}

fn ledger_error(e: StoreError) -> LedgerError {
    LedgerError::new(e.kind(), e.store(), e.message()).with_source(e)
}

impl RedisControlLog {
    /// Connects with the default options (prefix `token-budget`).
    pub async fn connect(url: &str) -> Result<RedisControlLog, LedgerError> {
        RedisControlLog::connect_with(url, RedisStoreOptions::default()).await
    }

    /// Connects with `options`: its prefix (the store's, to keep the log beside the counters),
    /// its timeout and TLS roots (the other options are the store's alone). Fails, naming the
    /// log, when the URL is malformed, the prefix is not allowed, or Redis cannot be reached.
    pub async fn connect_with(
        url: &str,
        options: RedisStoreOptions,
    ) -> Result<RedisControlLog, LedgerError> {
        let name = format!("redis {} (prefix {})", redact_url(url), options.prefix);
        let keys = KeySpace::new(&options.prefix)
            .map_err(|m| LedgerError::new(BackendErrorKind::RejectedInput, &name, m))?;
        let conn = connection(url, &options, &name)
            .await
            .map_err(ledger_error)?;
        Ok(RedisControlLog { conn, name, keys })
    }

    /// The log's name as errors give it: the URL without password, and the prefix.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sequence number of the last decision (0 for none): what a watcher compares.
    pub async fn last_seq(&self) -> Result<u64, LedgerError> {
        let seq: Option<u64> = redis::cmd("GET")
            .arg(self.keys.control_seq())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| self.redis_error("cannot read the control log", e))?;
        Ok(seq.unwrap_or(0))
    }

    fn redis_error(&self, what: &str, e: RedisError) -> LedgerError {
        LedgerError::new(kind_of(&e), &self.name, format!("{what}: {e}")).with_source(e)
    }

    fn corrupt(&self, message: String) -> LedgerError {
        LedgerError::new(BackendErrorKind::Corrupt, &self.name, message)
    }

    /// The last record on `target`: its number and change text.
    async fn last_on(&self, target: &str) -> Result<Option<(i64, String)>, LedgerError> {
        let reply: Vec<Value> = LAST
            .key(self.keys.control_last())
            .key(self.keys.control_records())
            .arg(target)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| self.redis_error("cannot read the control log", e))?;
        let [seq, change] = match reply.as_slice() {
            [] => return Ok(None),
            [seq, change] => [seq, change],
            other => {
                return Err(self.corrupt(format!(
                    "the control log's index answered {other:?} for {target}"
                )));
            }
        };
        let seq = match seq {
            Value::Int(seq) => *seq,
            other => {
                return Err(self.corrupt(format!(
                    "the control log's index holds {other:?} for {target}"
                )));
            }
        };
        let change = self
            .text(seq, "change", change)?
            .ok_or_else(|| self.corrupt(format!("control record {seq}: its change is missing")))?;
        Ok(Some((seq, change)))
    }

    /// A field of record `seq` as text (`None` when missing).
    fn text(&self, seq: i64, field: &str, value: &Value) -> Result<Option<String>, LedgerError> {
        match value {
            Value::Nil => Ok(None),
            Value::BulkString(bytes) => String::from_utf8(bytes.clone()).map(Some).map_err(|e| {
                self.corrupt(format!(
                    "control record {seq}: its {field} is not UTF-8: {e}"
                ))
            }),
            other => Err(self.corrupt(format!("control record {seq}: its {field} is {other:?}"))),
        }
    }

    /// A field every record has.
    fn required(&self, seq: i64, field: &str, value: &Value) -> Result<String, LedgerError> {
        self.text(seq, field, value)?
            .ok_or_else(|| self.corrupt(format!("control record {seq}: its {field} is missing")))
    }
}

impl ControlLog for RedisControlLog {
    async fn append(
        &self,
        change: ControlChange,
        by: Actor,
        at: Timestamp,
    ) -> Result<AuditRecord, LedgerError> {
        let new = NewRecord::encode(&self.name, &change, &by, at)?;
        for _ in 0..MAX_ATTEMPTS {
            let last = self.last_on(&new.target).await?;
            let replaced = replaced(&self.name, last.as_ref().map(|(s, t)| (*s, t.as_str())))?;
            let replaced_json = match &replaced {
                Some(old) => to_json(&self.name, old)?,
                None => String::new(),
            };
            let expected = last.map(|(seq, _)| seq.to_string()).unwrap_or_default();
            let seq: i64 = APPEND
                .key(self.keys.control_seq())
                .key(self.keys.control_records())
                .key(self.keys.control_last())
                .arg(&new.target)
                .arg(expected)
                .arg(new.at_ns)
                .arg(&new.actor)
                .arg(&new.change)
                .arg(replaced_json)
                .arg(self.keys.control_channel())
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(|e| {
                    self.redis_error(
                        "cannot append to the control log (the decision may or may not have \
                         been recorded)",
                        e,
                    )
                })?;
            if seq > 0 {
                return Ok(AuditRecord {
                    seq: u64::try_from(seq).unwrap_or(0),
                    at,
                    by,
                    change,
                    replaced,
                });
            }
        }
        Err(LedgerError::new(
            BackendErrorKind::Contended,
            &self.name,
            format!(
                "cannot append to the control log: {MAX_ATTEMPTS} other appends on {} came first",
                new.target
            ),
        ))
    }

    async fn since(&self, seq: u64) -> Result<Vec<AuditRecord>, LedgerError> {
        let after = i64::try_from(seq).unwrap_or(i64::MAX);
        let reply: Vec<Value> = SINCE
            .key(self.keys.control_seq())
            .key(self.keys.control_records())
            .arg(after)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| self.redis_error("cannot read the control log", e))?;
        let mut out = Vec::with_capacity(reply.len() / 5);
        for fields in reply.chunks(5) {
            let [Value::Int(seq), at, actor, change, replaced] = fields else {
                return Err(
                    self.corrupt(format!("the control log answered {fields:?} for a record"))
                );
            };
            let seq = *seq;
            let at = self.required(seq, "time", at)?;
            let at_ns = at.parse().map_err(|e| {
                self.corrupt(format!(
                    "control record {seq}: its time {at:?} is not a number: {e}"
                ))
            })?;
            let record = StoredRecord {
                seq,
                at_ns,
                actor: self.required(seq, "actor", actor)?,
                change: self.required(seq, "change", change)?,
                replaced: self.text(seq, "replaced", replaced)?,
            };
            out.push(record.decode(&self.name)?);
        }
        Ok(out)
    }
}
