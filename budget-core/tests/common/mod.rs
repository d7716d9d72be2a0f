//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

/// Runs a future that is ready at once (every in-memory store and ledger future is); panics
/// if it is not, which would mean the in-memory path started to wait on something.
pub fn ready<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an in-memory budget future was not ready"),
    }
}

/// A small deterministic PRNG (xorshift64*), so stress runs are reproducible from their seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// One of `items`, uniformly.
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// A name no other test (in this or a concurrent process) uses: pid, time and a counter.
pub fn unique_name(prefix: &str, test: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}_{test}_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A ledger file in the temp dir, removed (with its WAL files) on drop.
pub struct TempDb(PathBuf);

impl TempDb {
    pub fn new(name: &str) -> TempDb {
        TempDb(std::env::temp_dir().join(format!("{}.sqlite", unique_name("tb-ledger", name))))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A directory path in the temp dir, not created here; removed with its contents on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        TempDir(std::env::temp_dir().join(unique_name("tb-dir", name)))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The service URL in the env var `var`, or `None` after printing that the test is skipped.
pub fn service_url(var: &str) -> Option<String> {
    let url = std::env::var(var).ok().filter(|u| !u.is_empty());
    if url.is_none() {
        println!("skipped: {var} not set");
    }
    url
}

/// `DATABASE_URL`, or `None` after printing that the test is skipped.
pub fn database_url() -> Option<String> {
    service_url("DATABASE_URL")
}

/// A PostgreSQL schema for one test: a unique name, dropped (with its tables) on drop, also
/// when the test panics.
#[cfg(feature = "postgres")]
pub struct TempSchema {
    pub url: String,
    pub name: String,
}

#[cfg(feature = "postgres")]
impl TempSchema {
    pub fn new(url: &str, test: &str) -> TempSchema {
        TempSchema {
            url: url.to_owned(),
            name: unique_name("tb", test),
        }
    }
}

#[cfg(feature = "postgres")]
impl Drop for TempSchema {
    fn drop(&mut self) {
        let url = self.url.clone();
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        // Its own thread and runtime: drop may run inside (or outside) an async test.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt");
            rt.block_on(async {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                {
                    let driver = tokio::spawn(conn);
                    let _ = client.batch_execute(&sql).await;
                    drop(client);
                    let _ = driver.await;
                }
            });
        })
        .join();
    }
}

/// `REDIS_URL`, or `None` after printing that the test is skipped.
#[cfg(feature = "redis")]
pub fn redis_url() -> Option<String> {
    service_url("REDIS_URL")
}

/// A Redis key prefix for one test: a unique name whose keys are deleted on drop, also when
/// the test panics.
#[cfg(feature = "redis")]
pub struct TempPrefix {
    pub url: String,
    pub name: String,
}

#[cfg(feature = "redis")]
impl TempPrefix {
    pub fn new(url: &str, test: &str) -> TempPrefix {
        TempPrefix {
            url: url.to_owned(),
            name: unique_name("tb", test),
        }
    }

    /// Options for a store or a control log under this prefix.
    pub fn options(&self) -> budget_core::store::RedisStoreOptions {
        budget_core::store::RedisStoreOptions::new().prefix(self.name.clone())
    }
}

#[cfg(feature = "redis")]
impl Drop for TempPrefix {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{}}}:*", self.name))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}
