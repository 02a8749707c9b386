//! A secret used where a name goes never reaches the read models or `flexctl run show`
//! (issue 15 §3): the hostile `leaky` plugin names its stream after a secret and puts
//! another in its STATE; the runner scrubs both before they become events, so the run and
//! pipeline views (what `flexctl run show` and `pipeline show` print) and every table of
//! the read models hold `[redacted]` and never the values.

use std::time::Duration;

use flexcore_system_tests::{Options, Stack};
use serde_json::json;

#[tokio::test]
async fn secrets_used_as_names_never_reach_the_read_models() {
    let s = Stack::start(Options {
        runner: true,
        ..Default::default()
    })
    .await;
    // The test stack's runner reads secrets from FLEXCORE_TEST_SECRET_<NAME>; names no
    // other test uses (edition 2021: setting a variable is safe).
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let table = format!("tbl_{marker}");
    let password = format!("pw\"/{}", uuid::Uuid::new_v4().simple());
    std::env::set_var("FLEXCORE_TEST_SECRET_SYSTEM_LEAKY_TABLE", &table);
    std::env::set_var("FLEXCORE_TEST_SECRET_SYSTEM_LEAKY_PW", &password);
    let leaky = s
        .register("flexcore-plugin-leaky", "leaky", "extractor", json!({}))
        .await;
    let discard = s
        .register("flexcore-plugin-discard", "discard", "loader", json!({}))
        .await;
    let pipeline = s
        .ok(
            "pipeline.create",
            json!({"name": "named-by-secret", "owner": "o", "steps": [
                {"plugin": leaky, "config": {"mode": "leak", "password": "${secret:SYSTEM_LEAKY_PW}",
                                             "stream": "${secret:SYSTEM_LEAKY_TABLE}"}},
                {"plugin": discard}]}),
        )
        .await["aggregate_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = s.ok("run.request", json!({"pipeline_id": pipeline})).await;
    let run_id = run["aggregate_id"].as_str().unwrap();
    let done = s.wait_run_event(run_id, "run.succeeded", Duration::from_secs(60)).await;
    assert_eq!(done["counters"], json!({"[redacted]": 2}), "{done}");

    let position: i64 = sqlx::query_scalar("SELECT max(global_position) FROM events")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    let view = s
        .query("run.get", json!({"id": run_id, "min_position": position}))
        .await;
    assert_eq!(view["data"]["state"], json!("succeeded"), "{view}");
    let pipeline_view = s
        .query("pipeline.get", json!({"id": pipeline, "min_position": position}))
        .await;
    assert_eq!(
        pipeline_view["data"]["bookmark"],
        json!({"bookmarks": {"[redacted]": 2}, "token": "[redacted]"}),
        "{pipeline_view}"
    );
    for (what, reply) in [("run.get", &view), ("pipeline.get", &pipeline_view)] {
        let text = reply.to_string();
        assert!(text.contains("[redacted]"), "{what}: {text}");
        assert!(
            !text.contains(&marker) && !text.contains("pw\\\""),
            "{what} leaks: {text}"
        );
    }

    // Every table of every read model.
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'read'")
            .fetch_all(&s.db.pool)
            .await
            .unwrap();
    assert!(!tables.is_empty());
    for table_name in &tables {
        for secret in [&table, &password] {
            let rows: i64 = sqlx::query_scalar(&format!(
                "SELECT count(*) FROM read.\"{table_name}\" t WHERE strpos(t::text, $1) > 0"
            ))
            .bind(secret)
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
            assert_eq!(rows, 0, "read.{table_name} holds a secret");
        }
    }
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE strpos(data::text, $1) > 0 OR strpos(data::text, $2) > 0",
    )
    .bind(&marker)
    .bind(&password)
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(leaked, 0, "an event holds a secret");
    s.stop().await;
}
