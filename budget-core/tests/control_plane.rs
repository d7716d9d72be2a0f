//! The control plane's log in a SQLite ledger file, in a PostgreSQL ledger's schema and in
//! Redis: shared by every connection (every process) on it, gap-free, and each record names the
//! decision it really replaced.
//!
//! The PostgreSQL tests need `DATABASE_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`),
//! the Redis ones `REDIS_URL` (e.g. `redis://127.0.0.1:6379`); without it they print
//! "skipped: DATABASE_URL not set" (or REDIS_URL) and pass. Each works in a schema or key prefix
//! of its own, dropped at its end.

mod common;

#[cfg(feature = "postgres")]
use budget_core::control_plane::PostgresControlLog;
#[cfg(feature = "redis")]
use budget_core::control_plane::RedisControlLog;
use budget_core::control_plane::{
    Actor, AuditRecord, ControlChange, ControlLog, ControlState, ModelSwitch, SqliteControlLog,
};
#[cfg(feature = "postgres")]
use budget_core::ledger::PostgresLedger;
use budget_core::ledger::{EventKind, Ledger, LedgerQuery, SqliteLedger};
use budget_core::{
    Amount, Attribution, BackendErrorKind, Limit, Money, Period, Selector, TaskId, Usage,
    UsageEvent, Window,
};
use common::TempDb;
#[cfg(feature = "redis")]
use common::TempPrefix;
#[cfg(feature = "postgres")]
use common::TempSchema;
use jiff::Timestamp;

fn at(ts: &str) -> Timestamp {
    ts.parse().unwrap()
}

fn replay(records: &[AuditRecord]) -> ControlState {
    let mut state = ControlState::default();
    for record in records {
        assert_eq!(
            state.apply(&record.change),
            record.replaced,
            "record {} names what it replaced",
            record.seq
        );
    }
    state
}

/// What the tests read of a durable log besides the [`ControlLog`] trait.
trait LastSeq {
    async fn last(&self) -> u64;
}

impl LastSeq for SqliteControlLog {
    async fn last(&self) -> u64 {
        self.last_seq().await.unwrap()
    }
}

#[cfg(feature = "postgres")]
impl LastSeq for PostgresControlLog {
    async fn last(&self) -> u64 {
        self.last_seq().await.unwrap()
    }
}

#[cfg(feature = "redis")]
impl LastSeq for RedisControlLog {
    async fn last(&self) -> u64 {
        self.last_seq().await.unwrap()
    }
}

#[cfg(feature = "postgres")]
async fn pg_log(schema: &TempSchema) -> PostgresControlLog {
    PostgresControlLog::connect(&schema.url, &schema.name)
        .await
        .unwrap()
}

#[cfg(feature = "redis")]
async fn redis_log(prefix: &TempPrefix) -> RedisControlLog {
    RedisControlLog::connect_with(&prefix.url, prefix.options())
        .await
        .unwrap()
}

/// Two connections to one log: a record made on one is read on the other, and 40 writers on
/// both at once, all on the same two targets, get gap-free numbers and exact `replaced`.
async fn two_connections_share_one_gap_free<L: ControlLog + LastSeq + Clone>(one: L, two: L) {
    let day = Limit::new(
        "support/day",
        Selector::agent("support"),
        Window::Calendar(Period::Day),
    )
    .tokens(500_000);
    one.append(
        ControlChange::SetLimit { limit: day.clone() },
        Actor::operator("ana"),
        at("2026-12-06T09:00:00Z"),
    )
    .await
    .unwrap();
    let seen = two.since(0).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].by, Actor::operator("ana"));
    assert_eq!(two.last().await, 1);

    let mut writers = Vec::new();
    for i in 0..40u32 {
        let log = if i % 2 == 0 { one.clone() } else { two.clone() };
        writers.push(tokio::spawn(async move {
            let change = match i % 4 {
                0 => ControlChange::pause("support"),
                1 => ControlChange::resume("support"),
                2 => ControlChange::SwitchModel {
                    agent: "research".into(),
                    to: ModelSwitch::Model("gpt-4o-mini".into()),
                },
                _ => ControlChange::ResetModel {
                    agent: "research".into(),
                },
            };
            log.append(change, Actor::rule("test"), at("2026-12-06T09:01:00Z"))
                .await
                .unwrap()
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let records = one.since(0).await.unwrap();
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=41).collect::<Vec<_>>(), "no gaps, no duplicates");
    assert_eq!(two.since(0).await.unwrap(), records);
    assert_eq!(one.last().await, 41);
    let state = replay(&records);
    assert_eq!(state.limit("support/day"), Some(&day));
    assert_eq!(one.since(40).await.unwrap(), records[40..]);
}

#[tokio::test]
async fn two_connections_share_one_gap_free_log() {
    let db = TempDb::new("control-shared");
    two_connections_share_one_gap_free(
        SqliteControlLog::open(db.path()).unwrap(),
        SqliteControlLog::open(db.path()).unwrap(),
    )
    .await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_postgres_connections_share_one_gap_free_log() {
    let Some(url) = common::database_url() else {
        return;
    };
    let schema = TempSchema::new(&url, "control_shared");
    two_connections_share_one_gap_free(pg_log(&schema).await, pg_log(&schema).await).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_redis_connections_share_one_gap_free_log() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let prefix = TempPrefix::new(&url, "control_shared");
    two_connections_share_one_gap_free(redis_log(&prefix).await, redis_log(&prefix).await).await;
}

/// A kill recorded beside a usage event; both are there after the log and the ledger are
/// opened again.
async fn the_log_survives_a_reopen_beside_the_ledger<L: ControlLog, D: Ledger>(
    open_log: impl AsyncFn() -> L,
    open_ledger: impl AsyncFn() -> D,
) {
    let ledger = open_ledger().await;
    let log = open_log().await;
    let task = TaskId::new("t-9");
    log.append(
        ControlChange::KillTask { task: task.clone() },
        Actor::rule("runaway_detected"),
        at("2026-12-06T10:00:00Z"),
    )
    .await
    .unwrap();
    let event = UsageEvent {
        id: 1,
        at: at("2026-12-06T10:00:01Z"),
        attribution: Attribution::agent("support"),
        model: "gpt-4o-mini".into(),
        requested_model: None,
        usage: Usage::new(10, 5),
        cost: Money::ZERO,
        estimated: false,
        kind: EventKind::Call,
        saved: Amount::ZERO,
    };
    ledger.record(event).await.unwrap();
    drop((ledger, log));

    let log = open_log().await;
    let records = log.since(0).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].at, at("2026-12-06T10:00:00Z"));
    assert_eq!(records[0].by, Actor::rule("runaway_detected"));
    assert!(replay(&records).is_killed(&task));
    let ledger = open_ledger().await;
    let totals = ledger.totals(&LedgerQuery::default()).await.unwrap();
    assert_eq!(
        totals[0].usage.total(),
        15,
        "the ledger's events are intact beside the log"
    );
}

#[tokio::test]
async fn the_log_survives_a_reopen_and_lives_beside_the_ledger() {
    let db = TempDb::new("control-reopen");
    the_log_survives_a_reopen_beside_the_ledger(
        async || SqliteControlLog::open(db.path()).unwrap(),
        async || SqliteLedger::open(db.path()).unwrap(),
    )
    .await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_log_survives_a_reopen_and_lives_beside_the_ledger() {
    let Some(url) = common::database_url() else {
        return;
    };
    let schema = TempSchema::new(&url, "control_reopen");
    the_log_survives_a_reopen_beside_the_ledger(
        async || pg_log(&schema).await,
        async || PostgresLedger::connect(&url, &schema.name).await.unwrap(),
    )
    .await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_log_survives_a_reopen() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let prefix = TempPrefix::new(&url, "control_reopen");
    let db = TempDb::new("control-reopen-redis");
    the_log_survives_a_reopen_beside_the_ledger(
        async || redis_log(&prefix).await,
        // Redis keeps no events: the ledger beside it is another backend's (here a file).
        async || SqliteLedger::open(db.path()).unwrap(),
    )
    .await;
}

/// A record whose change was overwritten with something unreadable: reading it, and
/// appending on its target (which needs it), are `Corrupt` errors naming it.
async fn an_unreadable_record_is_corrupt(log: &impl ControlLog, corrupt: impl AsyncFn()) {
    log.append(
        ControlChange::pause("support"),
        Actor::operator("ana"),
        at("2026-12-06T10:00:00Z"),
    )
    .await
    .unwrap();
    corrupt().await;
    let err = log.since(0).await.unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Corrupt);
    assert!(
        err.to_string()
            .contains("control record 1: its change cannot be read"),
        "{err}"
    );
    // Appending on the same target needs the last decision: refused the same way, not guessed.
    let err = log
        .append(
            ControlChange::resume("support"),
            Actor::operator("ana"),
            at("2026-12-06T10:01:00Z"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Corrupt);
    assert!(err.to_string().contains("control record 1"), "{err}");
}

#[tokio::test]
async fn an_unreadable_record_is_a_corrupt_error_naming_it() {
    let db = TempDb::new("control-corrupt");
    let log = SqliteControlLog::open(db.path()).unwrap();
    an_unreadable_record_is_corrupt(&log, async || {
        let conn = rusqlite::Connection::open(db.path()).unwrap();
        conn.execute("UPDATE control_log SET change = '{\"op\":\"explode\"}'", [])
            .unwrap();
    })
    .await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_postgres_record_is_a_corrupt_error_naming_it() {
    let Some(url) = common::database_url() else {
        return;
    };
    let schema = TempSchema::new(&url, "control_corrupt");
    let log = pg_log(&schema).await;
    an_unreadable_record_is_corrupt(&log, async || {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .execute(
                &format!(
                    "UPDATE {}.control_log SET change = '{{\"op\":\"explode\"}}'",
                    schema.name
                ),
                &[],
            )
            .await
            .unwrap();
    })
    .await;
}

#[test]
fn a_file_that_is_not_a_ledger_is_refused() {
    let db = TempDb::new("control-foreign");
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    conn.execute_batch("CREATE TABLE other (x INTEGER);")
        .unwrap();
    drop(conn);
    let err = SqliteControlLog::open(db.path()).unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Corrupt);
    assert!(
        err.to_string().contains("not a token-budget ledger"),
        "{err}"
    );
}

#[tokio::test]
async fn a_ledger_file_from_before_the_control_log_is_brought_up_to_date() {
    let db = TempDb::new("control-upgrade");
    drop(SqliteLedger::open(db.path()).unwrap());
    // What a schema-1 file looks like: the same, without the control log.
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    conn.execute_batch("DROP TABLE control_log; PRAGMA user_version = 1;")
        .unwrap();
    drop(conn);

    let log = SqliteControlLog::open(db.path()).unwrap();
    log.append(
        ControlChange::pause("support"),
        Actor::operator("ana"),
        at("2026-12-06T10:00:00Z"),
    )
    .await
    .unwrap();
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, budget_core::ledger::SQLITE_SCHEMA_VERSION);
    assert_eq!(version, 2);
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_redis_record_is_a_corrupt_error_naming_it() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let prefix = TempPrefix::new(&url, "control_corrupt");
    let log = redis_log(&prefix).await;
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let records = format!("{{{}}}:ctl:log", prefix.name);
    an_unreadable_record_is_corrupt(&log, async || {
        let _: () = redis::cmd("HSET")
            .arg(&records)
            .arg("1:change")
            .arg("{\"op\":\"explode\"}")
            .query_async(&mut conn.clone())
            .await
            .unwrap();
    })
    .await;

    // A record with a field gone is as unreadable, and says which field.
    let _: () = redis::cmd("HDEL")
        .arg(&records)
        .arg("1:change")
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = log.since(0).await.unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Corrupt);
    assert!(
        err.to_string()
            .contains("control record 1: its change is missing"),
        "{err}"
    );
    let err = log
        .append(
            ControlChange::resume("support"),
            Actor::operator("ana"),
            at("2026-12-06T10:01:00Z"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Corrupt);
    assert!(
        err.to_string()
            .contains("control record 1: its change is missing"),
        "{err}"
    );
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_redis_log_refuses_a_bad_prefix_before_connecting() {
    let options = budget_core::store::RedisStoreOptions::new().prefix("a{b");
    let err = RedisControlLog::connect_with("redis://127.0.0.1:1/0", options)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::RejectedInput, "{err}");
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_ledger_from_before_the_control_log_is_brought_up_to_date() {
    let Some(url) = common::database_url() else {
        return;
    };
    let schema = TempSchema::new(&url, "control_upgrade");
    drop(PostgresLedger::connect(&url, &schema.name).await.unwrap());
    // What a schema-2 namespace looks like: the same, without the control log.
    let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let ns = &schema.name;
    admin
        .batch_execute(&format!(
            "DROP TABLE {ns}.control_log; UPDATE {ns}.token_budget_schema_version SET version = 2;"
        ))
        .await
        .unwrap();

    let log = PostgresControlLog::connect(&url, ns).await.unwrap();
    let record = log
        .append(
            ControlChange::pause("support"),
            Actor::operator("ana"),
            at("2026-12-06T10:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(record.seq, 1);
    let version: i64 = admin
        .query_one(
            &format!("SELECT version FROM {ns}.token_budget_schema_version"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, budget_core::ledger::POSTGRES_SCHEMA_VERSION);
    assert_eq!(version, 3);
}

/// The server ends the log's connection (a restart, a failover, an administrator): the next
/// read and the next append open a new one and go on; nothing is lost or numbered twice.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_log_reconnects_after_the_server_ends_its_connection() {
    let Some(url) = common::database_url() else {
        return;
    };
    let schema = TempSchema::new(&url, "control_reconnect");
    let application = schema.name.clone();
    let sep = if url.contains('?') { '&' } else { '?' };
    let log_url = format!("{url}{sep}application_name={application}");
    let log = PostgresControlLog::connect(&log_url, &schema.name)
        .await
        .unwrap();
    log.append(
        ControlChange::pause("support"),
        Actor::operator("ana"),
        at("2026-12-06T10:00:00Z"),
    )
    .await
    .unwrap();
    let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let ended: i64 = admin
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1) AS ended",
            &[&application],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ended, 1, "the log holds one connection");

    assert_eq!(log.since(0).await.unwrap().len(), 1);
    let second = log
        .append(
            ControlChange::resume("support"),
            Actor::operator("ana"),
            at("2026-12-06T10:01:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(second.seq, 2);
    assert_eq!(second.replaced, Some(ControlChange::pause("support")));
    replay(&log.since(0).await.unwrap());
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn a_postgres_log_refuses_a_bad_namespace_before_connecting() {
    let err = PostgresControlLog::connect("postgres://u@127.0.0.1:1/db", "Bad-Name")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::RejectedInput, "{err}");
}

// ---------------------------------------------------------------------------------------------
// Budgets obeying the log.

fn budget_on(db: &TempDb) -> budget_core::Budget {
    budget_core::Budget::builder()
        .control_log(SqliteControlLog::open(db.path()).unwrap())
        .build()
        .unwrap()
}

/// Waits (10 s at most) until `seen` holds for `budget`; returns how long that took.
async fn until(
    budget: &budget_core::Budget,
    what: &str,
    seen: impl Fn(&budget_core::Budget) -> bool,
) -> std::time::Duration {
    let started = std::time::Instant::now();
    while !seen(budget) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{what}: not obeyed within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_obeys_the_decisions_another_makes_on_the_same_file() {
    let db = TempDb::new("control-obey");
    let (decider, follower) = (budget_on(&db), budget_on(&db));
    let _watch = follower.watch_control(std::time::Duration::from_millis(50));
    let ops = Actor::operator("ops");

    let cap = Limit::new("support/task", Selector::agent("support"), Window::PerTask).tokens(100);
    decider.set_shared_limit(cap, ops.clone()).await.unwrap();
    let waited = until(&follower, "a shared limit", |b| {
        b.limits().get("support/task").is_some()
    })
    .await;
    println!("limit obeyed after {waited:?}");

    decider.pause_agent("writer", ops.clone()).await.unwrap();
    let waited = until(&follower, "a pause", |b| {
        b.controls().is_paused(&Attribution::agent("writer"))
    })
    .await;
    println!("pause obeyed after {waited:?}");

    let task = TaskId::new("t-1");
    decider.kill_task(&task, ops.clone()).await.unwrap();
    let waited = until(&follower, "a kill", |b| b.controls().is_cancelled(&task)).await;
    println!("kill obeyed after {waited:?}");

    decider
        .switch_model("research", ModelSwitch::Cheapest, ops.clone())
        .await
        .unwrap();
    let waited = until(&follower, "a model switch", |b| {
        b.model_switch("research") == Some(ModelSwitch::Cheapest)
    })
    .await;
    println!("switch obeyed after {waited:?}");

    // And the follower's calls are held to them.
    let support = Attribution::agent("support").with_task(TaskId::new("t-2"));
    let err = follower
        .reserve(&support, "gpt-4o-mini", budget_core::Estimate::new(80, 50))
        .await
        .unwrap_err();
    assert!(
        matches!(err, budget_core::BudgetError::ExceedsLimit(_)),
        "{err}"
    );
    let err = follower
        .reserve(
            &Attribution::agent("writer"),
            "gpt-4o-mini",
            budget_core::Estimate::new(1, 1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, budget_core::BudgetError::AgentPaused { .. }),
        "{err}"
    );
    let killed = Attribution::agent("research").with_task(task.clone());
    let err = follower
        .reserve(&killed, "gpt-4o-mini", budget_core::Estimate::new(1, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, budget_core::BudgetError::TaskCancelled { .. }),
        "{err}"
    );

    // The audit trail says who decided what, in order.
    let trail: Vec<String> = follower
        .control_records(0)
        .await
        .unwrap()
        .iter()
        .map(|r| format!("{} {}", r.by, r.change))
        .collect();
    assert_eq!(
        trail,
        [
            "operator ops set limit support/task",
            "operator ops pause agent writer",
            "operator ops kill task t-1",
            "operator ops switch agent research to the cheapest model",
        ]
    );
}

#[tokio::test]
async fn a_restarted_budget_starts_with_every_decision_in_force() {
    let db = TempDb::new("control-restart");
    {
        let before = budget_on(&db);
        before
            .pause_agent("writer", Actor::rule("daily_budget_exceeded"))
            .await
            .unwrap();
        let cap = Limit::new("all/day", Selector::Global, Window::Calendar(Period::Day)).tokens(10);
        before
            .set_shared_limit(cap, Actor::operator("ana"))
            .await
            .unwrap();
    }
    // No watcher: the log is replayed before the first call.
    let after = budget_on(&db);
    let err = after
        .reserve(
            &Attribution::agent("writer"),
            "gpt-4o-mini",
            budget_core::Estimate::new(1, 1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, budget_core::BudgetError::AgentPaused { .. }),
        "{err}"
    );
    let err = after
        .reserve(
            &Attribution::agent("support"),
            "gpt-4o-mini",
            budget_core::Estimate::new(8, 8),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, budget_core::BudgetError::ExceedsLimit(_)),
        "{err}"
    );
}

#[tokio::test]
async fn decisions_override_the_budgets_own_limits_until_reverted() {
    // The default log: this process alone.
    let own = Limit::new("all/day", Selector::Global, Window::Calendar(Period::Day)).tokens(1_000);
    let budget = budget_core::Budget::builder()
        .limit(own.clone())
        .build()
        .unwrap();
    let ops = Actor::operator("ops");
    let tighter = own.clone().tokens(10);
    budget.set_shared_limit(tighter, ops.clone()).await.unwrap();
    assert_eq!(budget.limits().get("all/day").unwrap().cap.tokens, Some(10));

    // An in-process change to the budget's own limit does not undo the decision...
    budget.set_limit(own.clone().tokens(5_000)).unwrap();
    assert_eq!(budget.limits().get("all/day").unwrap().cap.tokens, Some(10));
    // ...until the decision is reverted: then the budget's own limit is in force.
    let record = budget
        .decide(
            ControlChange::RevertLimit {
                id: "all/day".into(),
            },
            ops.clone(),
        )
        .await
        .unwrap();
    assert!(matches!(
        record.replaced,
        Some(ControlChange::SetLimit { .. })
    ));
    assert_eq!(
        budget.limits().get("all/day").unwrap().cap.tokens,
        Some(5_000)
    );

    budget.remove_shared_limit("all/day", ops).await.unwrap();
    assert!(budget.limits().get("all/day").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_opened_from_one_configuration_watch_the_control_log_by_themselves() {
    let db = TempDb::new("control-config");
    let yaml = format!("ledger: sqlite:{}\n", db.path().display());
    let config = budget_core::config::Config::from_yaml(&yaml).unwrap();
    let (one, two) = (
        config.open_budget().await.unwrap(),
        config.open_budget().await.unwrap(),
    );
    one.pause_agent("writer", Actor::operator("ops"))
        .await
        .unwrap();
    // No sync, no watcher started here: the configured budget watches the log itself.
    let started = std::time::Instant::now();
    while !two.controls().is_paused(&Attribution::agent("writer")) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "not obeyed within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    println!("obeyed after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_decided_elsewhere_cancels_a_running_task_scope_and_its_sub_agents() {
    let db = TempDb::new("control-kill-scope");
    let (decider, runner) = (budget_on(&db), budget_on(&db));
    let _watch = runner.watch_control(std::time::Duration::from_millis(20));
    let task = TaskId::new("t-long");
    let scope =
        budget_core::scope::TaskScope::new(Attribution::agent("research").with_task(task.clone()));
    let sub_agent = scope.child(Attribution::agent("helper").with_task(TaskId::new("t-sub")));
    // The scope's first call ties it to the running budget.
    let held = runner
        .reserve_in_scope(&sub_agent, "gpt-4o-mini", 10, 10..=10)
        .await
        .unwrap();
    held.commit(Usage::new(10, 5)).await.unwrap();

    decider
        .kill_task(&task, Actor::rule("runaway_detected"))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    while !scope.cancel_token().is_cancelled() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "not cancelled in 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(
        sub_agent.cancel_token().is_cancelled(),
        "the sub-agent stops with its task"
    );
    assert!(
        sub_agent.step_boundary().is_err(),
        "a #[budgeted] loop stops at its next step"
    );
    let refused = runner
        .reserve_in_scope(&sub_agent, "gpt-4o-mini", 10, 10..=10)
        .await;
    assert!(refused.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_limit_and_remove_limit_on_a_shared_log_reach_every_budget_in_order() {
    let db = TempDb::new("control-set-limit");
    let (origin, other) = (budget_on(&db), budget_on(&db));
    let _watch = other.watch_control(std::time::Duration::from_millis(20));
    let day = Window::Calendar(Period::Day);
    let cap = Limit::new("research/day", Selector::agent("research"), day).tokens(1_000);

    origin.set_limit(cap.clone()).unwrap();
    let here = origin
        .limits()
        .get("research/day")
        .and_then(|l| l.cap.tokens);
    assert_eq!(here, Some(1_000), "it applies here at once");
    origin.flush().await.unwrap();
    until(&other, "set_limit", |b| {
        b.limits().get("research/day").is_some()
    })
    .await;

    origin.set_limit(cap.tokens(500)).unwrap();
    assert!(origin.remove_limit("research/day"));
    origin.flush().await.unwrap();
    until(&other, "remove_limit", |b| {
        b.limits().get("research/day").is_none()
    })
    .await;
    assert!(origin.limits().get("research/day").is_none());

    let trail: Vec<String> = other
        .control_records(0)
        .await
        .unwrap()
        .iter()
        .map(|r| r.change.to_string())
        .collect();
    assert_eq!(
        trail,
        [
            "set limit research/day",
            "set limit research/day",
            "remove limit research/day"
        ],
        "published in the order they were made"
    );
}
