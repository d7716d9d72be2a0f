//! What the Redis unit tests share: a store on `REDIS_URL` under a key prefix of its own, one
//! daily limit of 100 tokens, and the removal of the store's keys afterwards.

use std::sync::Arc;

use jiff::Timestamp;

use super::{RedisBudgetStore, RedisStoreOptions, instance_id};
use crate::admission::Amount;
use crate::admission::ReserveRequest;
use crate::limits::CounterKey;
use crate::store::{BudgetStore, CounterSpec, ReserveOutcome, Ticket};
use crate::{Limit, Money, Period, Selector, Window};

/// A store with a daily limit of 100 tokens, for one test.
pub(super) struct Daily {
    pub(super) store: RedisBudgetStore,
    /// The daily limit's counter in the window current at the time given to [`daily`].
    pub(super) specs: [CounterSpec; 1],
    prefix: String,
}

/// A store connected with `options` under a prefix of its own (`tb-unit:{test}:…`), and the
/// daily limit's counter at `now`; `None` after saying that `test` is skipped when
/// `REDIS_URL` is not set.
pub(super) async fn daily(test: &str, options: RedisStoreOptions, now: Timestamp) -> Option<Daily> {
    let Ok(url) = std::env::var("REDIS_URL") else {
        eprintln!("SKIPPED {test}: REDIS_URL is not set");
        return None;
    };
    let prefix = format!("tb-unit:{test}:{}-{}", std::process::id(), instance_id());
    let store = RedisBudgetStore::connect_with(&url, options.prefix(prefix.clone()))
        .await
        .unwrap();
    let limit =
        Arc::new(Limit::new("daily", Selector::Global, Window::Calendar(Period::Day)).tokens(100));
    let span = limit.window.span(now, &jiff::tz::TimeZone::UTC).unwrap();
    let specs = [CounterSpec {
        key: CounterKey {
            limit: limit.id.clone(),
            scope: "*".into(),
            task: None,
            window: span.id(),
        },
        limit,
        span,
    }];
    Some(Daily {
        store,
        specs,
        prefix,
    })
}

impl Daily {
    /// Reserves `n` tokens on the daily counter at `now`; panics when they do not fit.
    pub(super) async fn reserve(&self, n: u64, now: Timestamp) -> Ticket {
        match self
            .store
            .reserve(&self.specs, &ReserveRequest::fixed(tokens(n)), now)
            .await
            .unwrap()
        {
            ReserveOutcome::Reserved(ticket) => ticket,
            denied => panic!("{n} tokens fit: {denied:?}"),
        }
    }

    /// Deletes every key of the store's prefix.
    pub(super) async fn clean_up(self) {
        let names = self
            .store
            .scan(&format!("{{{}}}:*", self.prefix))
            .await
            .unwrap();
        let _: () = redis::cmd("DEL")
            .arg(names)
            .query_async(&mut self.store.inner.conn.clone())
            .await
            .unwrap();
    }
}

/// `n` tokens, no money.
pub(super) fn tokens(n: u64) -> Amount {
    Amount::new(n, Money::ZERO)
}

/// A TCP forwarder to the Redis at `REDIS_URL` that can be cut: its listener and every
/// connection through it closed, so that Redis cannot be reached through it any more.
pub(super) struct Forwarder {
    /// `REDIS_URL` with the forwarder's address in place of Redis's.
    pub(super) url: String,
    tasks: std::sync::Arc<parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Forwarder {
    /// A forwarder to the Redis at `url` (`redis://host:port[/db]`).
    pub(super) async fn start(url: &str) -> Forwarder {
        let target = url::Url::parse(url).unwrap();
        let upstream = format!(
            "{}:{}",
            target.host_str().unwrap(),
            target.port().unwrap_or(6379)
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut through = target.clone();
        through.set_host(Some("127.0.0.1")).unwrap();
        through
            .set_port(Some(listener.local_addr().unwrap().port()))
            .unwrap();
        let tasks = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let accepting = tokio::spawn({
            let tasks = tasks.clone();
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let upstream = upstream.clone();
                    let link = tokio::spawn(async move {
                        if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    tasks.lock().push(link);
                }
            }
        });
        tasks.lock().push(accepting);
        Forwarder {
            url: through.into(),
            tasks,
        }
    }

    /// Closes the listener and every connection through it.
    pub(super) fn cut(&self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
    }
}
