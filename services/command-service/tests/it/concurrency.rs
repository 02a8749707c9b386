use serde_json::json;
use uuid::Uuid;

use crate::{spawn_app, spawn_app_on};

#[tokio::test]
async fn the_same_command_id_yields_one_event_and_identical_replies() {
    let mut app = spawn_app().await;
    app.register_plugins().await;
    let pipeline = app.create_pipeline("idem").await;
    let command_id = Uuid::new_v4();
    let body = json!({"command_id": command_id, "pipeline_id": pipeline, "reason": "maintenance"});
    // Concurrently…
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let client = app.client.clone();
            let body = serde_json::to_vec(&body).unwrap();
            tokio::spawn(async move {
                flexcore_testkit::nats::signed_request(&client, "flexcore.cmd.pipeline.pause", body)
                    .await
                    .unwrap()
                    .payload
            })
        })
        .collect();
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(serde_json::from_slice::<serde_json::Value>(&t.await.unwrap()).unwrap());
    }
    // …and sequentially afterwards.
    replies.push(app.send("pipeline.pause", body.clone()).await);
    replies.push(app.send("pipeline.pause", body.clone()).await);
    assert_eq!(replies[0]["ok"], json!(true), "{}", replies[0]);
    assert!(replies.iter().all(|r| *r == replies[0]), "{replies:#?}");
    let paused: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = 'pipeline.paused'")
            .bind(pipeline)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(paused, 1);
    // Reusing the id for another command is refused, not silently answered.
    let reused = app
        .send(
            "pipeline.resume",
            json!({"command_id": command_id, "pipeline_id": pipeline}),
        )
        .await;
    assert_eq!(reused["error"]["code"], json!("conflict"), "{reused}");
    app.stop().await;
}

#[tokio::test]
async fn a_create_retried_without_an_id_creates_one_pipeline() {
    let mut app = spawn_app().await;
    app.register_plugins().await;
    let command_id = Uuid::new_v4();
    let body = json!({"command_id": command_id, "name": "retry-me", "owner": "o", "steps": [
        {"plugin": "csv@1.0.0"}, {"plugin": "jsonl@1.0.0", "config": {"path": "/o"}}]});
    let first = app.send("pipeline.create", body.clone()).await;
    let second = app.send("pipeline.create", body).await;
    assert_eq!(first["ok"], json!(true), "{first}");
    assert_eq!(first, second);
    let created: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'pipeline.created'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(created, 1);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_commands_on_one_expected_version_have_exactly_one_winner() {
    let mut app = spawn_app().await;
    app.register_plugins().await;
    let pipeline = app.create_pipeline("race").await;
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let client = app.client.clone();
            let body = json!({"pipeline_id": pipeline, "expected_version": 1, "description": format!("writer {i}")});
            tokio::spawn(async move {
                let r = flexcore_testkit::nats::signed_request(
                    &client,
                    "flexcore.cmd.pipeline.update",
                    serde_json::to_vec(&body).unwrap(),
                )
                .await
                .unwrap();
                serde_json::from_slice::<serde_json::Value>(&r.payload).unwrap()
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let reply = t.await.unwrap();
        if reply["ok"] == json!(true) {
            ok += 1;
            assert_eq!(reply["version"], json!(2));
        } else {
            assert_eq!(reply["error"]["code"], json!("conflict"), "{reply}");
        }
    }
    assert_eq!(ok, 1);
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM events WHERE aggregate_id = $1 ORDER BY version")
        .bind(pipeline)
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(versions, vec![1, 2]);
    app.stop().await;
}

/// Without expected_version, concurrent commands on one aggregate are serialised by
/// reload-and-retry: all succeed and versions stay gap-free.
#[tokio::test]
async fn concurrent_commands_without_expected_version_all_succeed_in_order() {
    let mut app = spawn_app().await;
    app.register_plugins().await;
    let pipeline = app.create_pipeline("busy").await;
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let client = app.client.clone();
            let body = json!({"pipeline_id": pipeline, "state": {"n": i}});
            tokio::spawn(async move {
                let r = flexcore_testkit::nats::signed_request(
                    &client,
                    "flexcore.cmd.pipeline.commit_state",
                    serde_json::to_vec(&body).unwrap(),
                )
                .await
                .unwrap();
                serde_json::from_slice::<serde_json::Value>(&r.payload).unwrap()
            })
        })
        .collect();
    for t in tasks {
        let reply = t.await.unwrap();
        assert_eq!(reply["ok"], json!(true), "{reply}");
    }
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM events WHERE aggregate_id = $1 ORDER BY version")
        .bind(pipeline)
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(versions, (1..=11).collect::<Vec<i64>>());
    app.stop().await;
}

/// Replicas decide on cached states: one whose cache missed another replica's writes
/// must not act on what it remembers. Replica A caches a pipeline; B changes it; A's run
/// then pins B's definition, and once B pauses it A refuses the run. Aggregates A never
/// saw are decided on fresh state too.
#[tokio::test]
async fn a_replica_never_decides_on_what_another_replica_changed_since() {
    let mut a = spawn_app().await;
    a.register_plugins().await;
    let pipeline = a.create_pipeline("two-replicas").await;
    let mut b = spawn_app_on(a.db.clone()).await;

    b.ok(
        "pipeline.update",
        json!({"pipeline_id": pipeline, "run_timeout_seconds": 77}),
    )
    .await;
    let run = a.ok("run.request", json!({"pipeline_id": pipeline})).await;
    let requested: serde_json::Value =
        sqlx::query_scalar("SELECT data FROM events WHERE aggregate_id = $1 AND event_type = 'run.requested'")
            .bind(run["aggregate_id"].as_str().unwrap().parse::<Uuid>().unwrap())
            .fetch_one(&a.db.pool)
            .await
            .unwrap();
    assert_eq!(requested["definition_version"], json!(2), "{requested}");
    assert_eq!(requested["definition"]["run_timeout_seconds"], json!(77), "{requested}");

    b.ok("pipeline.pause", json!({"pipeline_id": pipeline})).await;
    let refused = a.send("run.request", json!({"pipeline_id": pipeline})).await;
    assert_eq!(refused["ok"], json!(false), "{refused}");
    assert!(
        refused["error"]["message"].as_str().unwrap().contains("paused"),
        "{refused}"
    );

    // A pipeline only B created: A has nothing cached and still finds it.
    let other = b.create_pipeline("made-by-b").await;
    a.ok("pipeline.pause", json!({"pipeline_id": other})).await;
    // A plugin only B registered (its id follows from name@version): A refuses the duplicate.
    let digest = format!("sha256:{}", "cd".repeat(32));
    let register = json!({"name": "only-b", "version": "1.0.0", "kind": "loader", "module_digest": digest});
    b.ok("plugin.register", register.clone()).await;
    let duplicate = a.send("plugin.register", register).await;
    assert_eq!(duplicate["error"]["code"], json!("conflict"), "{duplicate}");
    let registered: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'plugin.registered'")
        .fetch_one(&a.db.pool)
        .await
        .unwrap();
    assert_eq!(registered, 3);
    b.stop().await;
    a.stop().await;
}
