use serde_json::{json, Value};

use crate::spawn_app;

fn code(reply: &Value) -> &str {
    assert_eq!(reply["ok"], json!(false), "{reply}");
    reply["error"]["code"].as_str().unwrap_or("")
}

/// Every kind of bad input gets an error reply with the right code and writes nothing.
#[tokio::test]
async fn bad_input_gets_a_coded_error_and_writes_nothing() {
    let mut app = spawn_app().await;
    app.register_plugins().await;
    let pipeline = app.create_pipeline("base").await;
    let before = app.event_count().await;
    let steps = json!([{"plugin": "csv@1.0.0"}, {"plugin": "jsonl@1.0.0", "config": {"path": "/o"}}]);

    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        ("malformed JSON", "flexcore.cmd.pipeline.create", b"{\"name\": ".to_vec(), "validation_failed"),
        ("not an object", "flexcore.cmd.pipeline.create", b"[1,2]".to_vec(), "validation_failed"),
        ("unknown subject", "flexcore.cmd.pipeline.explode", b"{}".to_vec(), "validation_failed"),
        ("unknown aggregate", "flexcore.cmd.rocket.launch", b"{}".to_vec(), "validation_failed"),
        (
            "unknown field",
            "flexcore.cmd.pipeline.create",
            serde_json::to_vec(&json!({"name": "x1", "owner": "o", "steps": steps, "colour": "red"})).unwrap(),
            "validation_failed",
        ),
        ("missing field", "flexcore.cmd.pipeline.create", serde_json::to_vec(&json!({"name": "x2", "owner": "o"})).unwrap(), "validation_failed"),
        (
            "wrong type",
            "flexcore.cmd.pipeline.create",
            serde_json::to_vec(&json!({"name": "x3", "owner": "o", "steps": steps, "max_active_runs": "two"})).unwrap(),
            "validation_failed",
        ),
        ("2 MiB payload", "flexcore.cmd.pipeline.create", {
            let mut big = serde_json::to_vec(&json!({"name": "x4", "owner": "o", "steps": steps, "description": "x".repeat(2 << 20)})).unwrap();
            big.truncate(big.len());
            big
        }, "payload_too_large"),
        (
            "invalid cron",
            "flexcore.cmd.schedule.create",
            serde_json::to_vec(&json!({"pipeline_id": pipeline, "cron": "61 * * * *"})).unwrap(),
            "validation_failed",
        ),
        (
            "cron with 4 fields",
            "flexcore.cmd.schedule.create",
            serde_json::to_vec(&json!({"pipeline_id": pipeline, "cron": "* * * *"})).unwrap(),
            "validation_failed",
        ),
        (
            "unknown time zone",
            "flexcore.cmd.schedule.create",
            serde_json::to_vec(&json!({"pipeline_id": pipeline, "cron": "0 * * * *", "timezone": "Mars/Olympus"})).unwrap(),
            "validation_failed",
        ),
        (
            "unknown plugin in a step",
            "flexcore.cmd.pipeline.create",
            serde_json::to_vec(&json!({"name": "x5", "owner": "o", "steps": [{"plugin": "nope@9.9.9"}, {"plugin": "jsonl@1.0.0", "config": {"path": "/o"}}]})).unwrap(),
            "not_found",
        ),
        (
            "literal secret",
            "flexcore.cmd.pipeline.create",
            serde_json::to_vec(&json!({"name": "x6", "owner": "o", "steps": [{"plugin": "csv@1.0.0"}, {"plugin": "jsonl@1.0.0", "config": {"path": "/o", "password": "hunter2"}}]})).unwrap(),
            "validation_failed",
        ),
        (
            "config against schema",
            "flexcore.cmd.pipeline.create",
            serde_json::to_vec(&json!({"name": "x7", "owner": "o", "steps": [{"plugin": "csv@1.0.0"}, {"plugin": "jsonl@1.0.0", "config": {}}]})).unwrap(),
            "validation_failed",
        ),
        (
            "steps out of order",
            "flexcore.cmd.pipeline.create",
            serde_json::to_vec(&json!({"name": "x8", "owner": "o", "steps": [{"plugin": "jsonl@1.0.0", "config": {"path": "/o"}}, {"plugin": "csv@1.0.0"}]})).unwrap(),
            "validation_failed",
        ),
        (
            "duplicate name",
            "flexcore.cmd.pipeline.create",
            serde_json::to_vec(&json!({"name": "base", "owner": "o", "steps": steps})).unwrap(),
            "conflict",
        ),
        ("unknown aggregate id", "flexcore.cmd.pipeline.pause", serde_json::to_vec(&json!({"pipeline_id": uuid::Uuid::new_v4()})).unwrap(), "not_found"),
        ("invalid state", "flexcore.cmd.pipeline.resume", serde_json::to_vec(&json!({"pipeline_id": pipeline})).unwrap(), "invalid_state"),
        (
            "stale expected_version",
            "flexcore.cmd.pipeline.pause",
            serde_json::to_vec(&json!({"pipeline_id": pipeline, "expected_version": 7})).unwrap(),
            "conflict",
        ),
        ("bad command_id", "flexcore.cmd.pipeline.pause", serde_json::to_vec(&json!({"pipeline_id": pipeline, "command_id": "x"})).unwrap(), "validation_failed"),
    ];
    for (what, subject, body, expected) in cases {
        let reply = app.send_raw(subject, body).await;
        assert_eq!(code(&reply), expected, "{what}: {reply}");
        assert!(
            !reply["error"]["message"].as_str().unwrap_or("").is_empty(),
            "{what}: no message"
        );
    }
    assert_eq!(app.event_count().await, before, "a refused command wrote something");
    // The service is still alive and well.
    app.ok("pipeline.pause", json!({"pipeline_id": pipeline})).await;
    app.stop().await;
}

/// A command id is its sender's: the same command under the same id from another sender
/// is refused (`command_id_reused`), not answered with the first sender's reply.
#[tokio::test]
async fn a_command_id_taken_by_another_sender_is_refused_not_answered() {
    let app = spawn_app().await;
    app.register_plugins().await;
    let pipeline = app.create_pipeline("taken").await;
    let command_id = uuid::Uuid::new_v4();
    let body = serde_json::to_vec(&json!({"pipeline_id": pipeline, "command_id": command_id})).unwrap();
    let send_as = |name: &'static str| {
        let body = body.clone();
        let client = app.client.clone();
        async move {
            let subject = "flexcore.cmd.pipeline.pause";
            let mut headers = async_nats::HeaderMap::new();
            flexcore_testkit::nats::test_identity(name)
                .unwrap()
                .sign(subject, &mut headers, &body);
            let reply = client
                .request_with_headers(subject.to_owned(), headers, body.into())
                .await
                .unwrap();
            serde_json::from_slice::<Value>(&reply.payload).unwrap()
        }
    };
    let first = send_as("app").await;
    assert_eq!(first["ok"], json!(true), "{first}");
    // The same sender again: the first reply.
    assert_eq!(send_as("app").await, first);
    // Another sender, same id and body: refused.
    let other = send_as("flexctl").await;
    assert_eq!(other["ok"], json!(false), "{other}");
    assert_eq!(
        other["error"]["details"]["reason"],
        json!("command_id_reused"),
        "{other}"
    );
}
