//! The ledger's connection: opened with the namespace as its search path, found lost and
//! opened again.

use std::sync::Arc;

use tokio_postgres::{Client, NoTls};

use super::PostgresLedger;
use super::error::{connection_ended, pg_error};
use crate::backend_error::BackendErrorKind;
use crate::ledger::LedgerError;
use crate::ledger::sql::error;

/// Runs `$op` (an expression using the connection `$client`) on the ledger's current
/// connection; when that connection turns out to be lost, opens a new one and runs `$op` again
/// on it. (A macro rather than a function taking an async closure: the futures must stay
/// `Send`, which async closures cannot yet promise.)
macro_rules! with_client {
    ($ledger:expr, $what:expr, |$client:ident| $op:expr) => {{
        let ledger = $ledger;
        let mut $client = ledger.client();
        let mut reconnects = 0;
        loop {
            match $op.await {
                Err(e) if reconnects < MAX_RECONNECTS && ledger.lost(&$client, &e) => {
                    reconnects += 1;
                    $client = ledger.reconnect(&$client).await?;
                }
                result => break result.map_err(|e| pg_error(&ledger.name, $what, e)),
            }
        }
    }};
}

/// How many times one operation opens a new connection after losing one: a server that keeps
/// ending sessions gets an error rather than an endless loop.
pub(super) const MAX_RECONNECTS: u32 = 3;

impl PostgresLedger {
    /// The current connection.
    pub(super) fn client(&self) -> Arc<Client> {
        self.client
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Whether `error` on `client` means the connection is lost (rather than the statement
    /// refused).
    pub(super) fn lost(&self, client: &Client, error: &tokio_postgres::Error) -> bool {
        let lost = connection_ended(error) || client.is_closed();
        if lost {
            tracing::warn!(ledger = %self.name, %error, "PostgreSQL connection lost; reconnecting");
        }
        lost
    }

    /// A connection in place of `lost` (opened here, or by a concurrent operation).
    pub(super) async fn reconnect(&self, lost: &Arc<Client>) -> Result<Arc<Client>, LedgerError> {
        let _one_at_a_time = self.reconnecting.lock().await;
        let current = self.client();
        if !Arc::ptr_eq(&current, lost) && !current.is_closed() {
            return Ok(current);
        }
        let client = open(&self.connect_url, &self.name, &self.namespace).await?;
        let client = Arc::new(client);
        *self
            .client
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = client.clone();
        Ok(client)
    }
}

/// Opens a connection, driven by a spawned task.
/// The session's `search_path` is the ledger's namespace from the start (a connection
/// option), so a new connection needs no statement before it can be used.
pub(super) async fn open(url: &str, name: &str, ns: &str) -> Result<Client, LedgerError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
        error(
            BackendErrorKind::RejectedInput,
            name,
            format!("invalid URL {name}: {e}"),
        )
        .with_source(e)
    })?;
    let options = match config.get_options() {
        Some(given) => format!("{given} -c search_path={ns}"),
        None => format!("-c search_path={ns}"),
    };
    config.options(options);
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| pg_error(name, &format!("cannot connect to {name}"), e))?;
    let conn_name = name.to_owned();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::error!(ledger = conn_name, error = %e, "PostgreSQL connection failed");
        }
    });
    Ok(client)
}
