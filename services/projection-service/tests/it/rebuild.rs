//! Rebuild while queries are being served: no query fails or sees a half-built model.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use flexcore_testkit::db::table_exists;
use serde_json::json;

use crate::consistency::assert_read_models_match;
use crate::{projection, stack};

#[tokio::test]
async fn a_rebuild_swaps_in_while_queries_keep_being_answered() {
    let s = stack(true).await;
    s.register_plugins().await;
    crate::burst(&s, "r", 30, 10).await;
    s.caught_up().await;
    let before = s.data("run.list", json!({"limit": 1000})).await;
    assert_eq!(before.as_array().unwrap().len(), 45);

    let done = AtomicBool::new(false);
    let answered = AtomicUsize::new(0);
    let readers = async {
        while !done.load(Ordering::Relaxed) {
            // Every answer is whole: all 45 runs and 30 pipelines, identical documents.
            let runs = s.data("run.list", json!({"limit": 1000})).await;
            assert_eq!(runs, before, "a run list during the rebuild differs");
            let pipelines = s.data("pipeline.list", json!({"limit": 1000})).await;
            assert_eq!(pipelines.as_array().unwrap().len(), 30);
            answered.fetch_add(1, Ordering::Relaxed);
        }
    };
    let rebuild = async {
        s.rebuild(&["runs", "pipelines"]).await;
        done.store(true, Ordering::Relaxed);
    };
    tokio::join!(readers, rebuild);
    assert!(answered.load(Ordering::Relaxed) > 0);

    let list = s.data("projection.list", json!({})).await;
    for name in ["runs", "pipelines"] {
        let p = projection(&list, name);
        assert_eq!(p["generation"], json!(2), "{p}");
        assert_eq!(p["rebuild"]["processed"], p["events_applied"]);
        assert!(p["rebuild"]["events_per_second"].as_f64().unwrap() > 0.0);
    }
    // The old generation is dropped (right after the swap commits, so it may still be
    // there for a moment), the new one serves and keeps being updated.
    flexcore_testkit::wait_until(Duration::from_secs(10), "read.runs_g1 dropped", || async {
        !table_exists(&s.db.pool, "read.runs_g1").await.unwrap()
    })
    .await
    .unwrap();
    crate::burst(&s, "r2", 4, 4).await;
    s.caught_up().await;
    assert_read_models_match(&s).await;
    s.stop().await;
}

#[tokio::test]
async fn a_read_model_lacking_a_column_or_table_gets_it_and_is_rebuilt_to_fill_it() {
    let s = stack(false).await;
    s.register_plugins().await;
    crate::burst(&s, "c", 6, 6).await;
    let mut first = s.spawn_projection_process();
    s.caught_up().await;
    first.kill().unwrap();
    first.wait().unwrap();
    // The runs model as an older version laid it out: without plugin_ids, without its
    // per-minute activity table.
    for statement in [
        "ALTER TABLE read.runs_g1 DROP COLUMN plugin_ids CASCADE",
        "CREATE VIEW read.runs AS SELECT * FROM read.runs_g1",
        "DROP TABLE read.runs_minutes_g1 CASCADE",
    ] {
        sqlx::query(statement).execute(&s.db.pool).await.unwrap();
    }

    // Started again: the column is added at once, and a rebuild fills it.
    let mut second = s.spawn_projection_process();
    s.caught_up().await;
    let list = s.rebuilt(&["runs"]).await;
    assert_eq!(projection(&list, "runs")["generation"], json!(2));
    let unfilled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM read.runs WHERE plugin_ids IS NULL OR plugin_ids = '{}'")
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert_eq!(unfilled, 0, "every run names its plugins after the rebuild");
    let runs = s.data("run.list", json!({"limit": 1000})).await;
    assert!(runs
        .as_array()
        .unwrap()
        .iter()
        .all(|r| !r["plugin_ids"].as_array().unwrap().is_empty()));
    // Live events keep being applied to the new generation.
    crate::burst(&s, "c2", 2, 2).await;
    s.caught_up().await;
    assert_read_models_match(&s).await;
    second.kill().unwrap();
    second.wait().unwrap();
    s.stop().await;
}

#[tokio::test]
async fn a_read_model_built_to_another_layout_is_rebuilt_and_records_this_one() {
    let s = stack(false).await;
    s.register_plugins().await;
    crate::burst(&s, "l", 4, 4).await;
    let mut first = s.spawn_projection_process();
    s.caught_up().await;
    first.kill().unwrap();
    first.wait().unwrap();
    let layout = |name: &'static str| {
        let pool = s.db.pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<String>>("SELECT layout FROM read.projections WHERE name = $1")
                .bind(name)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let current = layout("schedules").await.expect("a layout recorded at set-up");
    // The schedules model as built by a version with another layout; the runs model as
    // built before layouts were recorded.
    sqlx::query("UPDATE read.projections SET layout = 'an-older-layout' WHERE name = 'schedules'")
        .execute(&s.db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE read.projections SET layout = NULL WHERE name = 'runs'")
        .execute(&s.db.pool)
        .await
        .unwrap();

    let mut second = s.spawn_projection_process();
    s.caught_up().await;
    let list = s.rebuilt(&["schedules"]).await;
    assert_eq!(projection(&list, "schedules")["generation"], json!(2));
    assert_eq!(
        layout("schedules").await,
        Some(current),
        "the rebuild recorded this build's layout"
    );
    // A model from before layouts were recorded, complete as it is: its layout is recorded
    // and it is not rebuilt.
    assert!(layout("runs").await.is_some());
    assert_eq!(projection(&list, "runs")["generation"], json!(1));
    crate::burst(&s, "m", 2, 2).await;
    s.caught_up().await;
    assert_read_models_match(&s).await;
    second.kill().unwrap();
    second.wait().unwrap();
    s.stop().await;
}

#[tokio::test]
async fn a_rebuilt_audit_log_holds_exactly_the_rows_the_live_worker_wrote() {
    let s = stack(true).await;
    s.register_plugins().await;
    crate::burst(&s, "a", 6, 6).await;
    // Text the rebuild's COPY rows must escape: backslashes (a quote in JSON is one) and
    // characters beyond ASCII.
    s.ok(
        "pipeline.create",
        json!({"name": "escaped", "owner": "data-team", "description": r#"back\slash "quoted" é ✓"#,
            "steps": [{"plugin": "csv@1.0.0"}, {"plugin": "jsonl@1.0.0"}]}),
    )
    .await;
    s.caught_up().await;
    let rows = || async {
        sqlx::query_scalar::<_, String>("SELECT row_to_json(e)::text FROM read.events e ORDER BY global_position")
            .fetch_all(&s.db.pool)
            .await
            .unwrap()
    };
    let live = rows().await;
    assert!(live.len() > 50, "{} audit rows", live.len());
    assert!(live.iter().any(|r| r.contains(r#"back\\slash \"quoted\""#)), "{live:?}");

    let list = s.rebuild(&["audit"]).await;
    assert_eq!(projection(&list, "audit")["generation"], json!(2));
    assert_eq!(rows().await, live, "the rebuilt audit rows differ from the live ones");
    crate::burst(&s, "a2", 2, 2).await;
    s.caught_up().await;
    assert_read_models_match(&s).await;
    s.stop().await;
}

/// A projection service in-process with a stop of its own (a leader the test stops), its
/// rebuilds replaying `replay_batch_size` events per transaction; caught up.
async fn own_leader(
    s: &crate::Stack,
    replay_batch_size: i64,
) -> (
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let mut settings = s.projection_settings();
    settings.projection.replay_batch_size = replay_batch_size;
    let (databases, nats) = flexcore_projection::connect(&settings).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let leader = tokio::spawn({
        let stop = stop.clone();
        async move { flexcore_projection::run(&settings, nats, databases, stop).await }
    });
    s.caught_up().await;
    (stop, leader)
}

/// Stops a leader of [`own_leader`] and waits (bounded) until it has ended.
async fn stop_leader(
    (stop, leader): (
        tokio_util::sync::CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ),
) {
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), leader)
        .await
        .expect("the leader stops with its rebuild")
        .unwrap()
        .unwrap();
}

/// The audit projection's rebuild record.
async fn audit_rebuild(pool: &sqlx::PgPool) -> serde_json::Value {
    sqlx::query_scalar::<_, Option<serde_json::Value>>("SELECT rebuild FROM read.projections WHERE name = 'audit'")
        .fetch_one(pool)
        .await
        .unwrap()
        .unwrap_or_default()
}

/// Waits until the audit rebuild's record says `running`; the record then.
async fn audit_rebuild_running(pool: &sqlx::PgPool) -> serde_json::Value {
    flexcore_testkit::wait_until(Duration::from_secs(30), "the rebuild running", || async {
        audit_rebuild(pool).await["state"] == json!("running")
    })
    .await
    .unwrap();
    audit_rebuild(pool).await
}

/// A leader that stops while its rebuild runs stops the rebuild between two batches (it is
/// not aborted mid-statement, which could leave a pooled connection inside a transaction),
/// leaves it `running`, and the next leader restarts it from the start.
#[tokio::test]
async fn a_rebuild_stopped_with_its_leader_is_restarted_by_the_next_one() {
    let mut s = stack(false).await;
    s.register_plugins().await;
    crate::burst(&s, "i", 40, 8).await;
    // The first leader replays one event per transaction: its rebuild takes a while.
    let first = own_leader(&s, 1).await;
    let pool = s.db.pool.clone();
    let status = s.data("projection.rebuild", json!({"name": "audit"})).await;
    assert_eq!(status["state"], json!("requested"));
    audit_rebuild_running(&pool).await;

    stop_leader(first).await;
    assert_eq!(
        audit_rebuild(&pool).await["state"],
        json!("running"),
        "left for the next leader"
    );
    let in_transaction: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(in_transaction, 0, "a connection was left inside a transaction");

    s.spawn_projection().await;
    let list = s.rebuilt(&["audit"]).await;
    // Built past the stopped run's generation 2, whose tables are dropped.
    assert_eq!(projection(&list, "audit")["generation"], json!(3));
    assert!(
        !table_exists(&pool, "read.events_g2").await.unwrap(),
        "the stopped run's tables are left"
    );
    crate::burst(&s, "i2", 2, 2).await;
    s.caught_up().await;
    assert_read_models_match(&s).await;
    s.stop().await;
}

/// A rebuild taken over while its run still goes on (the run's leader lost its lock and
/// has not noticed yet; here the takeover is made by hand while the leader lives): the run
/// is held at its first locked step by a session holding the rebuild's lock, as a new
/// leader's takeover holds it; once let go, the run finds the record no longer its own and
/// stops before building anything. The next leader's run builds past its generation.
#[tokio::test]
async fn a_rebuild_taken_over_stops_its_old_run() {
    use flexcore_projection::projection::Kind;

    let mut s = stack(false).await;
    s.register_plugins().await;
    crate::burst(&s, "t", 6, 6).await;
    let first = own_leader(&s, 5000).await;
    let pool = s.db.pool.clone();
    let mut session = pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(Kind::Audit.rebuild_lock_key())
        .execute(&mut *session)
        .await
        .unwrap();
    s.data("projection.rebuild", json!({"name": "audit"})).await;
    let claimed = audit_rebuild_running(&pool).await;
    assert_eq!(claimed["generation"], json!(2), "{claimed}");

    // The takeover, as a new leader makes it (`rebuild::resume_interrupted`), then the
    // old leader stops (awaiting its rebuild's end).
    sqlx::query(
        "UPDATE read.projections SET rebuild = jsonb_set(rebuild, '{state}', '\"requested\"') WHERE name = 'audit'",
    )
    .execute(&mut *session)
    .await
    .unwrap();
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(Kind::Audit.rebuild_lock_key())
        .execute(&mut *session)
        .await
        .unwrap();
    drop(session);
    stop_leader(first).await;
    assert!(
        !table_exists(&pool, "read.events_g2").await.unwrap(),
        "the old run built its tables after the takeover"
    );
    let after = audit_rebuild(&pool).await;
    assert_eq!(
        after["state"],
        json!("requested"),
        "the old run wrote over the takeover: {after}"
    );
    assert_eq!(after["started_at"], claimed["started_at"]);

    s.spawn_projection().await;
    let list = s.rebuilt(&["audit"]).await;
    let audit = projection(&list, "audit");
    assert_eq!(audit["generation"], json!(3), "{audit}");
    assert!(!table_exists(&pool, "read.events_g2").await.unwrap());
    crate::burst(&s, "t2", 2, 2).await;
    s.caught_up().await;
    assert_read_models_match(&s).await;
    s.stop().await;
}
