//! What the Redis unit tests share: a store on `REDIS_URL` under a key prefix of its own, one
//! daily limit of 100 tokens, and the removal of the store's keys afterwards.

use std::sync::Arc;

use jiff::Timestamp;

use super::{RedisBudgetStore, RedisStoreOptions, instance_id};
use crate::admission::Amount;
use crate::limits::CounterKey;
use crate::store::CounterSpec;
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
