//! The control plane's log in the PostgreSQL ledger's schema: table `control_log`, one row per
//! decision (schema version 3).
//!
//! Every process on the namespace appends and reads through its own connection. An append
//! runs in one transaction that takes `LOCK TABLE control_log IN EXCLUSIVE MODE` (writers queue
//! on it; readers do not), reads the last decision on its target, inserts the new one as
//! `MAX(seq) + 1` and notifies the namespace's channel, so concurrent writers get gap-free
//! sequence numbers, each record names the decision it really replaced, and a record is visible
//! only after every record before it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use jiff::Timestamp;
use tokio_postgres::Client;

use super::connect_migrated;
use super::connection::{MAX_RECONNECTS, open};
use super::error::{connection_ended, pg_error};
use crate::control_plane::codec::{NewRecord, StoredRecord, replaced, to_json};
use crate::control_plane::{Actor, AuditRecord, ControlChange, ControlLog};
use crate::ledger::LedgerError;

/// A [`ControlLog`] in a PostgreSQL ledger's schema (created, or brought to this build's
/// schema, on connect). Cheap to clone; clones share one connection, used by one operation at
/// a time.
///
/// # Watching
///
/// Readers poll [`ControlLog::since`] (what [`Budget::watch_control`] does on its timer); a
/// poll with nothing new is one indexed query. Each append also sends `NOTIFY` on the channel
/// named after the namespace, with the record's sequence number as payload, for tools that
/// `LISTEN`; this log does not listen itself.
///
/// # Lost connections
///
/// An operation that finds its connection lost opens a new one and runs again (at most three
/// times). An append is sent again only when the connection was lost before its `COMMIT` was
/// sent (the server then rolled it back); when it is lost during the `COMMIT`, the append fails
/// with [`BackendErrorKind::Unreachable`](crate::BackendErrorKind::Unreachable) and the decision may or may not be in the log —
/// [`ControlLog::since`] tells.
///
/// [`Budget::watch_control`]: crate::Budget::watch_control
#[derive(Clone)]
pub struct PostgresControlLog {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    namespace: String,
    /// The URL as given (with its password), to connect again.
    connect_url: String,
    /// The connection (`None` once lost), held for the length of an operation.
    client: tokio::sync::Mutex<Option<Client>>,
}

impl std::fmt::Debug for PostgresControlLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresControlLog")
            .field("url", &self.inner.name)
            .field("namespace", &self.inner.namespace)
            .finish_non_exhaustive()
    }
}

/// How one attempt at an operation failed.
enum Failed {
    /// The driver failed while doing `what`; `retry` when running the operation again on a
    /// new connection cannot record anything twice.
    Pg {
        what: &'static str,
        error: tokio_postgres::Error,
        retry: bool,
    },
    /// The log refused (a record it cannot read or write): final.
    Log(LedgerError),
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Pins down the closure's signature: an operation borrowing the connection.
fn op<T, F>(f: F) -> F
where
    F: for<'c> Fn(&'c mut Client) -> BoxFuture<'c, Result<T, Failed>>,
{
    f
}

impl PostgresControlLog {
    /// Connects to `url` (as [`PostgresLedger::connect`](super::PostgresLedger::connect)
    /// takes it) and opens the control log of the ledger in the PostgreSQL schema `namespace`,
    /// creating the schema or migrating its tables when needed.
    ///
    /// Must be called within a Tokio runtime. Errors (never panics) when the server cannot be
    /// reached, the namespace is invalid or holds another application's tables, or its schema
    /// version is newer than this build.
    pub async fn connect(url: &str, namespace: &str) -> Result<PostgresControlLog, LedgerError> {
        let (name, client) = connect_migrated(url, namespace).await?;
        Ok(PostgresControlLog {
            inner: Arc::new(Inner {
                name,
                namespace: namespace.to_owned(),
                connect_url: url.to_owned(),
                client: tokio::sync::Mutex::new(Some(client)),
            }),
        })
    }

    /// The URL (password hidden), as shown in errors.
    pub fn url(&self) -> &str {
        &self.inner.name
    }

    /// The PostgreSQL schema holding the log; also the channel each append notifies.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The sequence number of the last decision (0 for none): what a watcher compares.
    pub async fn last_seq(&self) -> Result<u64, LedgerError> {
        let seq = self
            .run(op(|client| {
                Box::pin(async move {
                    client
                        .query_one("SELECT COALESCE(MAX(seq), 0)::BIGINT FROM control_log", &[])
                        .await
                        .and_then(|r| r.try_get::<_, i64>(0))
                        .map_err(read_failed)
                })
            }))
            .await?;
        Ok(u64::try_from(seq).unwrap_or(0))
    }

    /// Runs `op` on the connection, opening a new one when it is lost and `op` may run again.
    async fn run<T>(
        &self,
        op: impl for<'c> Fn(&'c mut Client) -> BoxFuture<'c, Result<T, Failed>>,
    ) -> Result<T, LedgerError> {
        let inner = &*self.inner;
        let mut slot = inner.client.lock().await;
        let mut reconnects = 0;
        loop {
            let client = match &mut *slot {
                Some(client) if !client.is_closed() => client,
                _ => {
                    let client = open(&inner.connect_url, &inner.name, &inner.namespace).await?;
                    slot.insert(client)
                }
            };
            match op(client).await {
                Ok(value) => return Ok(value),
                Err(Failed::Log(e)) => return Err(e),
                Err(Failed::Pg { what, error, retry }) => {
                    let lost = connection_ended(&error) || client.is_closed();
                    if lost {
                        *slot = None;
                        tracing::warn!(ledger = %inner.name, %error, "PostgreSQL connection lost");
                    }
                    if lost && retry && reconnects < MAX_RECONNECTS {
                        reconnects += 1;
                        continue;
                    }
                    let e = pg_error(&inner.name, what, error);
                    return Err(if lost && !retry {
                        let message = format!(
                            "{}; the decision may or may not have been recorded",
                            e.message()
                        );
                        e.with_message(message)
                    } else {
                        e
                    });
                }
            }
        }
    }
}

fn read_failed(error: tokio_postgres::Error) -> Failed {
    Failed::Pg {
        what: "cannot read the control log",
        error,
        retry: true,
    }
}

/// A failure before the append's `COMMIT` was sent: the server rolls the transaction back.
fn before_commit(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Failed {
    move |error| Failed::Pg {
        what,
        error,
        retry: true,
    }
}

/// One append on `client`: lock, read the last decision on the target, insert, notify, commit.
async fn append_on(
    client: &mut Client,
    name: &str,
    channel: &str,
    new: &NewRecord,
) -> Result<(i64, Option<ControlChange>), Failed> {
    let tx = client
        .transaction()
        .await
        .map_err(before_commit("cannot start a control-log write"))?;
    let written = async {
        tx.batch_execute("LOCK TABLE control_log IN EXCLUSIVE MODE")
            .await
            .map_err(before_commit("cannot lock the control log"))?;
        let last = tx
            .query_opt(
                "SELECT seq, change FROM control_log WHERE target = $1 \
                 ORDER BY seq DESC LIMIT 1",
                &[&new.target],
            )
            .await
            .map_err(before_commit("cannot read the control log"))?
            .map(|r| Ok::<_, tokio_postgres::Error>((r.try_get(0)?, r.try_get::<_, String>(1)?)))
            .transpose()
            .map_err(before_commit("cannot read the control log"))?;
        let replaced = replaced(name, last.as_ref().map(|(seq, t)| (*seq, t.as_str())))
            .map_err(Failed::Log)?;
        let replaced_json = replaced
            .as_ref()
            .map(|r| to_json(name, r))
            .transpose()
            .map_err(Failed::Log)?;
        let seq: i64 = tx
            .query_one(
                "INSERT INTO control_log (seq, at_ns, target, actor, change, replaced) \
                 SELECT COALESCE(MAX(seq), 0) + 1, $1, $2, $3, $4, $5 FROM control_log \
                 RETURNING seq",
                &[
                    &new.at_ns,
                    &new.target,
                    &new.actor,
                    &new.change,
                    &replaced_json,
                ],
            )
            .await
            .and_then(|r| r.try_get(0))
            .map_err(before_commit("cannot append to the control log"))?;
        tx.execute("SELECT pg_notify($1, $2)", &[&channel, &seq.to_string()])
            .await
            .map_err(before_commit("cannot notify the control log's watchers"))?;
        Ok((seq, replaced))
    }
    .await;
    match written {
        Ok(done) => {
            tx.commit().await.map_err(|error| Failed::Pg {
                what: "cannot commit a control-log write",
                error,
                retry: false,
            })?;
            Ok(done)
        }
        Err(e) => {
            // Release the lock now, not whenever the connection task next runs.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

impl ControlLog for PostgresControlLog {
    async fn append(
        &self,
        change: ControlChange,
        by: Actor,
        at: Timestamp,
    ) -> Result<AuditRecord, LedgerError> {
        let new = Arc::new(NewRecord::encode(&self.inner.name, &change, &by, at)?);
        let (seq, replaced) = self
            .run(op(|client| {
                let (inner, new) = (self.inner.clone(), new.clone());
                Box::pin(
                    async move { append_on(client, &inner.name, &inner.namespace, &new).await },
                )
            }))
            .await?;
        Ok(AuditRecord {
            seq: u64::try_from(seq).unwrap_or(0),
            at,
            by,
            change,
            replaced,
        })
    }

    async fn since(&self, seq: u64) -> Result<Vec<AuditRecord>, LedgerError> {
        let after = i64::try_from(seq).unwrap_or(i64::MAX);
        let rows = self
            .run(op(|client| {
                Box::pin(async move {
                    let rows = client
                        .query(
                            "SELECT seq, at_ns, actor, change, replaced FROM control_log \
                             WHERE seq > $1 ORDER BY seq",
                            &[&after],
                        )
                        .await
                        .map_err(read_failed)?;
                    rows.iter()
                        .map(|r| {
                            Ok(StoredRecord {
                                seq: r.try_get(0)?,
                                at_ns: r.try_get(1)?,
                                actor: r.try_get(2)?,
                                change: r.try_get(3)?,
                                replaced: r.try_get(4)?,
                            })
                        })
                        .collect::<Result<Vec<_>, tokio_postgres::Error>>()
                        .map_err(read_failed)
                })
            }))
            .await?;
        rows.into_iter()
            .map(|row| row.decode(&self.inner.name))
            .collect()
    }
}
