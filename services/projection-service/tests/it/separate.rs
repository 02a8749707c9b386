//! The read models in a database of their own (`projection.database_url`), the event store
//! read through a role that may only `SELECT` from `events`: the same read models, live
//! and rebuilt, the same positions and lag, and nothing written to the event store.

use serde_json::json;

use crate::consistency::assert_read_models_match;
use crate::{burst, projection, stack_in, Layout};

#[tokio::test]
async fn read_models_in_their_own_database_follow_the_log_through_a_read_only_role() {
    let s = stack_in(Layout::Separate, true).await;
    s.register_plugins().await;
    burst(&s, "sep", 24, 8).await;
    s.caught_up().await;
    assert_read_models_match(&s).await;

    // Each database holds only its own part: the event store's read schema (created by
    // the command service's migrations) has no projection, the read database no event.
    let in_store: i64 = sqlx::query_scalar("SELECT count(*) FROM read.projections")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(
        in_store, 0,
        "the projection service wrote to the event store's database"
    );
    let in_read: (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM read.projections), (SELECT count(*) FROM events)")
            .fetch_one(s.read_pool())
            .await
            .unwrap();
    assert_eq!(in_read, (5, 0), "the read database: five projections, no events");

    // A query waiting for a position finds it in the event store.
    let (pipeline, position) = s.create_pipeline("sep-after").await;
    let reply = s
        .query("pipeline.get", json!({"id": pipeline, "min_position": position}))
        .await;
    assert_eq!(reply["ok"], json!(true), "{reply}");
    assert_eq!(reply["data"]["name"], json!("sep-after"));
    let unknown = s
        .query(
            "pipeline.get",
            json!({"id": pipeline, "min_position": position + 1_000_000}),
        )
        .await;
    assert_eq!(unknown["error"]["code"], json!("not_found"), "{unknown}");

    // Rebuilds read the whole log through the read-only role.
    let list = s.rebuild(&["runs", "audit"]).await;
    for name in ["runs", "audit"] {
        let p = projection(&list, name);
        assert_eq!(p["generation"], json!(2), "{p}");
        assert_eq!(p["lag_events"], json!(0), "{p}");
    }
    burst(&s, "sep2", 4, 4).await;
    s.caught_up().await;
    assert_read_models_match(&s).await;
    s.stop().await;
}

#[tokio::test]
async fn the_event_store_connections_of_a_separate_layout_cannot_write() {
    let s = stack_in(Layout::Separate, false).await;
    // Even as a role that could write (the test server's superuser), the projection
    // service's event-store connections refuse to.
    let mut settings = s.projection_settings();
    settings.database.url = flexcore_config::Secret::new(s.db.url.clone());
    let (databases, _nats) = flexcore_projection::connect(&settings).await.unwrap();
    let log = databases.separate_log.as_ref().expect("a separate event-store pool");
    let error = sqlx::query("DELETE FROM events").execute(log).await.unwrap_err();
    assert!(error.to_string().contains("read-only transaction"), "{error}");
    // The read models' connections write.
    sqlx::query("CREATE TABLE scratch (x int)")
        .execute(&databases.read)
        .await
        .unwrap();

    // Without projection.database_url, one pool serves both.
    let mut shared = s.settings.clone();
    s.nats.settings_for("projection", &mut shared);
    let (databases, _nats) = flexcore_projection::connect(&shared).await.unwrap();
    assert!(databases.separate_log.is_none());
    s.stop().await;
}

/// The whole event log, at least `expected` events (`what` they are). Every command was
/// answered after its commit, so all its events are in the log; the global reader returns
/// them once no older transaction is open anywhere on the server (the other tests'
/// databases too), so it is asked until it does.
async fn whole_log(s: &crate::Stack, expected: usize, what: &str) -> Vec<flexcore_eventstore::RecordedEvent> {
    let read = || flexcore_eventstore::read_all_with(&s.db.pool, flexcore_eventstore::Checkpoint::default(), 100);
    let all_read = flexcore_testkit::wait_until(std::time::Duration::from_secs(10), "the log read", || async {
        read().await.is_ok_and(|events| events.len() >= expected)
    })
    .await;
    let events = read().await.unwrap();
    assert!(all_read.is_ok(), "{what}: {events:?}");
    events
}

#[tokio::test]
async fn a_batch_from_the_stream_with_a_gap_is_refused_when_the_log_is_in_another_database() {
    use flexcore_eventstore::Checkpoint;
    use flexcore_projection::projection::Kind;
    use flexcore_projection::store::{self, Committed};

    let s = stack_in(Layout::Separate, false).await;
    s.register_plugins().await;
    s.create_pipeline("gap").await;
    let events = whole_log(&s, 3, "two plugins and a pipeline").await;
    let n = events.len();

    let settings = s.projection_settings();
    let (databases, _nats) = flexcore_projection::connect(&settings).await.unwrap();
    flexcore_eventstore::MIGRATOR.run(&databases.read).await.unwrap();
    store::init(&databases.read).await.unwrap();
    let separate = databases.separate_log.as_ref();
    let mut conn = databases.read.acquire().await.unwrap();
    let mut live = store::load(&mut conn, Kind::Audit, false).await.unwrap();
    drop(conn);

    // The first event missing: nothing is applied, the checkpoint stays.
    let committed = store::commit_batch(&databases.read, separate, Kind::Audit, &mut live, &events[1..], false)
        .await
        .unwrap();
    assert_eq!(committed, Committed::Gap);
    assert_eq!(live.checkpoint, Checkpoint::default());
    // All of them: applied, and the checkpoint is the last one's.
    let committed = store::commit_batch(&databases.read, separate, Kind::Audit, &mut live, &events, false)
        .await
        .unwrap();
    assert_eq!(committed, Committed::Applied(n as u64));
    assert_eq!(live.checkpoint, events[n - 1].checkpoint());
    let audit: i64 = sqlx::query_scalar("SELECT count(*) FROM read.events")
        .fetch_one(&databases.read)
        .await
        .unwrap();
    assert_eq!(audit, n as i64);
    s.stop().await;
}

/// A batch after a hole whose events refer to a row the hole would have created (here a
/// pipeline paused whose creation is missing, as after a rebuild's last stretch held the
/// pipelines model from a chunk) is refused as a gap, before anything is applied: the
/// projection's own check ("no pipeline row") must not stop the worker first.
#[tokio::test]
async fn a_batch_after_a_hole_is_a_gap_even_when_it_refers_to_what_the_hole_creates() {
    use flexcore_eventstore::Checkpoint;
    use flexcore_projection::projection::Kind;
    use flexcore_projection::store::{self, Committed};

    let s = stack_in(Layout::Shared, false).await;
    s.register_plugins().await;
    let (pipeline, _) = s.create_pipeline("hole").await;
    s.ok(
        "pipeline.pause",
        json!({"pipeline_id": pipeline, "reason": "maintenance"}),
    )
    .await;
    let events = whole_log(&s, 4, "two plugins, a pipeline and its pause").await;
    let created = events
        .iter()
        .position(|e| e.event_type == "pipeline.created")
        .expect("the pipeline's creation");
    assert!(events[created + 1..].iter().any(|e| e.event_type == "pipeline.paused"));
    let mut holed = events.clone();
    holed.remove(created);

    let settings = s.projection_settings();
    let (databases, _nats) = flexcore_projection::connect(&settings).await.unwrap();
    store::init(&databases.read).await.unwrap();
    let mut conn = databases.read.acquire().await.unwrap();
    let mut live = store::load(&mut conn, Kind::Pipelines, false).await.unwrap();
    drop(conn);

    let committed = store::commit_batch(&databases.read, None, Kind::Pipelines, &mut live, &holed, false).await;
    assert!(
        matches!(committed, Ok(Committed::Gap)),
        "a batch with a hole: {committed:?}"
    );
    assert_eq!(live.checkpoint, Checkpoint::default());
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM read.pipelines")
        .fetch_one(&databases.read)
        .await
        .unwrap();
    assert_eq!(rows, 0, "nothing of the refused batch was applied");

    // The whole log: applied, the pipeline paused.
    let committed = store::commit_batch(&databases.read, None, Kind::Pipelines, &mut live, &events, false)
        .await
        .unwrap();
    assert!(matches!(committed, Committed::Applied(_)), "{committed:?}");
    let state: String = sqlx::query_scalar("SELECT state FROM read.pipelines WHERE pipeline_id = $1")
        .bind(pipeline)
        .fetch_one(&databases.read)
        .await
        .unwrap();
    assert_eq!(state, "paused");
    s.stop().await;
}
