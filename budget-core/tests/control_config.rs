//! Budgets opened from one configuration share its ledger's control log and watch it by
//! themselves (PostgreSQL; the SQLite case is in `control_plane.rs`).

mod common;

use std::time::{Duration, Instant};

use budget_core::Attribution;
use budget_core::config::Config;
use budget_core::control_plane::Actor;

/// Opens two budgets from `yaml`; one pauses an agent, the other must obey without being told
/// to read the log (10 s at most). Returns the second budget's audit trail length.
#[allow(dead_code)] // not every feature set runs a test that calls it
async fn two_budgets_from_one_configuration_share_decisions(yaml: &str) -> usize {
    let config = Config::from_yaml(yaml).unwrap();
    let (one, two) = (
        config.open_budget().await.unwrap(),
        config.open_budget().await.unwrap(),
    );
    one.pause_agent("writer", Actor::operator("ops"))
        .await
        .unwrap();
    // Nothing here syncs `two`: the configured budget watches the log itself.
    let started = Instant::now();
    while !two.controls().is_paused(&Attribution::agent("writer")) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not obeyed within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("obeyed after {:?}", started.elapsed());
    two.control_records(0).await.unwrap().len()
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_on_one_postgres_ledger_obey_each_others_decisions_by_themselves() {
    let Some(url) = common::database_url() else {
        return;
    };
    let schema = common::TempSchema::new(&url, "control_config");
    let sep = if url.contains('?') { '&' } else { '?' };
    let yaml = format!("ledger: \"{url}{sep}namespace={}\"\n", schema.name);
    assert_eq!(
        two_budgets_from_one_configuration_share_decisions(&yaml).await,
        1
    );
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_on_one_redis_store_obey_each_others_decisions_by_themselves() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let prefix = common::TempPrefix::new(&url, "control_config");
    let sep = if url.contains('?') { '&' } else { '?' };
    // Each process keeps its own ledger; the Redis store is what they share.
    let yaml = format!(
        "ledger: \"memory:\"\nstore: \"{url}{sep}prefix={}\"\n",
        prefix.name
    );
    assert_eq!(
        two_budgets_from_one_configuration_share_decisions(&yaml).await,
        1
    );
}
