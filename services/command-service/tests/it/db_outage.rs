use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::json;
use sqlx::Connection as _;

use crate::spawn_app;

/// The service's Postgres connections are terminated again and again
/// (`pg_terminate_backend`, what a restart or an administrator does to them) while clients
/// send commands: every command is answered `ok` or `unavailable` (retry later), never
/// `internal`, and commands succeed again once the connections are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_connections_answer_unavailable_not_internal() {
    let mut app = spawn_app().await;
    app.register_plugins().await;
    // A pipeline per writer: no optimistic-concurrency races between them.
    let mut pipelines = Vec::new();
    for w in 0..6 {
        pipelines.push(app.create_pipeline(&format!("terminated-{w}")).await);
    }
    // Replies by outcome: `ok`, or the error's code and reason (with one message).
    let outcomes: Arc<Mutex<BTreeMap<String, (usize, String)>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let senders: Vec<_> = pipelines
        .into_iter()
        .enumerate()
        .map(|(w, pipeline)| {
            let client = app.client.clone();
            let outcomes = outcomes.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.is_cancelled() {
                    i += 1;
                    let body = json!({"pipeline_id": pipeline, "state": {"writer": w, "n": i}});
                    let reply = tokio::time::timeout(
                        Duration::from_secs(10),
                        flexcore_testkit::nats::signed_request(
                            &client,
                            "flexcore.cmd.pipeline.commit_state",
                            serde_json::to_vec(&body).unwrap(),
                        ),
                    )
                    .await;
                    let v: serde_json::Value = match reply {
                        Ok(Ok(reply)) => serde_json::from_slice(&reply.payload).unwrap(),
                        other => json!({"ok": false, "error": {"code": "no reply", "message": format!("{other:?}")}}),
                    };
                    let (key, message) = if v["ok"] == json!(true) {
                        ("ok".to_owned(), String::new())
                    } else {
                        (
                            format!("{}/{}", v["error"]["code"], v["error"]["details"]["reason"]),
                            v["error"]["message"].to_string(),
                        )
                    };
                    let mut outcomes = outcomes.lock();
                    let entry = outcomes.entry(key).or_insert((0, message));
                    entry.0 += 1;
                }
            })
        })
        .collect();
    let count = |key: &str| outcomes.lock().get(key).map_or(0, |(n, _)| *n);
    flexcore_testkit::wait_until(Duration::from_secs(10), "commands flowing", || async {
        count("ok") > 20
    })
    .await
    .unwrap();

    // Terminate every other backend of the test database (the service's pool, its relay's
    // connections) every 20 ms for 4 s, from a connection of our own.
    let mut killer = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    let mut terminated = 0i64;
    let until = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < until {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut killer)
        .await
        .unwrap();
        terminated += n;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(terminated > 0, "no backend was terminated");

    // Left alone, the service recovers.
    let ok_before = count("ok");
    flexcore_testkit::wait_until(Duration::from_secs(30), "commands flowing again", || async {
        count("ok") > ok_before + 20
    })
    .await
    .unwrap();
    stop.cancel();
    for s in senders {
        s.await.unwrap();
    }
    let outcomes = outcomes.lock().clone();
    tracing::info!(?outcomes, terminated, "terminations done");
    let wrong: Vec<_> = outcomes
        .iter()
        .filter(|(key, _)| *key != "ok" && !key.starts_with("\"unavailable\"/"))
        .collect();
    assert!(
        wrong.is_empty(),
        "replies other than ok/unavailable: {wrong:?} (all: {outcomes:?})"
    );
    app.stop().await;
}
