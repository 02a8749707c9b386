//! The contract as a client in another language meets it: the cases of issue 14 that were
//! answered `internal`, accepted by position or normalised, each refused with
//! `validation_failed`, the documented `reason` and the JSON pointer of the field, and
//! nothing written; what the schemas allow (integers written `1.0`, `min_position` on
//! every query) accepted; header values never stored unless valid.

use async_nats::HeaderMap;
use flexcore_system_tests::{Options, Stack};
use serde_json::{json, Value};
use uuid::Uuid;

/// Registers `x` (extractor) and `y` (loader) with fake digests and creates a pipeline.
async fn world(s: &Stack) -> String {
    for (name, kind) in [("x", "extractor"), ("y", "loader")] {
        s.ok(
            "plugin.register",
            json!({"name": name, "version": "1.0.0", "kind": kind, "module_digest": format!("sha256:{}", "a".repeat(64))}),
        )
        .await;
    }
    s.ok(
        "pipeline.create",
        json!({"name": "base", "owner": "o", "steps": [{"plugin": "x@1.0.0"}, {"plugin": "y@1.0.0"}]}),
    )
    .await["aggregate_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn event_count(s: &Stack) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&s.db.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_are_refused_with_the_reason_and_the_field() {
    let s = Stack::start(Options::default()).await;
    let pipeline = world(&s).await;
    let id = Uuid::new_v4();
    let simple = id.simple().to_string();
    let steps = r#"[{"plugin":"x@1.0.0"},{"plugin":"y@1.0.0"}]"#;
    // (what, subject, raw body, reason, path)
    let cases: Vec<(&str, String, String, &str, &str)> = vec![
        (
            "U+0000 in a STATE string",
            "flexcore.cmd.pipeline.commit_state".into(),
            format!(r#"{{"pipeline_id":"{pipeline}","state":{{"a":["ok","x\u0000y"]}}}}"#),
            "invalid_character",
            "/state/a/1",
        ),
        (
            "U+0000 in a STATE key",
            "flexcore.cmd.pipeline.commit_state".into(),
            format!(r#"{{"pipeline_id":"{pipeline}","state":{{"k\u0000":1}}}}"#),
            "invalid_character",
            "/state/k\u{0}",
        ),
        (
            "U+0000 in a description",
            "flexcore.cmd.pipeline.create".into(),
            format!(r#"{{"name":"n1","owner":"o","description":"\u0000","steps":{steps}}}"#),
            "invalid_character",
            "/description",
        ),
        (
            "U+0000 in a query filter",
            "flexcore.qry.plugin.list".into(),
            r#"{"kind":"\u0000"}"#.into(),
            "invalid_character",
            "/kind",
        ),
        (
            "retry as an array",
            "flexcore.cmd.pipeline.create".into(),
            format!(r#"{{"name":"n2","owner":"o","steps":{steps},"retry":[2,5,60,1.5]}}"#),
            "invalid_type",
            "/retry",
        ),
        (
            "a step as an array",
            "flexcore.cmd.pipeline.create".into(),
            r#"{"name":"n3","owner":"o","steps":[["x@1.0.0",{}],["y@1.0.0",{}]]}"#.into(),
            "invalid_type",
            "/steps/0",
        ),
        (
            "a UUID without hyphens",
            "flexcore.cmd.pipeline.pause".into(),
            format!(r#"{{"pipeline_id":"{pipeline}","command_id":"{simple}"}}"#),
            "invalid_value",
            "/command_id",
        ),
        (
            "a UUID in braces",
            "flexcore.cmd.pipeline.pause".into(),
            format!(r#"{{"pipeline_id":"{{{pipeline}}}"}}"#),
            "invalid_value",
            "/pipeline_id",
        ),
        (
            "a urn:uuid",
            "flexcore.qry.pipeline.get".into(),
            format!(r#"{{"id":"urn:uuid:{pipeline}"}}"#),
            "invalid_value",
            "/id",
        ),
        (
            "a timestamp with a leading space",
            "flexcore.cmd.schedule.create".into(),
            format!(r#"{{"pipeline_id":"{pipeline}","cron":"0 * * * *","start_at":" 2027-01-01T00:00:00Z"}}"#),
            "invalid_value",
            "/start_at",
        ),
        (
            "a timestamp with a trailing space",
            "flexcore.qry.run.list".into(),
            r#"{"since":"2026-01-01T00:00:00Z "}"#.into(),
            "invalid_value",
            "/since",
        ),
        (
            "a missing field",
            "flexcore.cmd.pipeline.create".into(),
            format!(r#"{{"name":"n4","steps":{steps}}}"#),
            "missing_field",
            "/owner",
        ),
        (
            "an invalid cron",
            "flexcore.cmd.schedule.create".into(),
            format!(r#"{{"pipeline_id":"{pipeline}","cron":"61 * * * *"}}"#),
            "invalid_value",
            "/cron",
        ),
        (
            "an unknown time zone",
            "flexcore.cmd.schedule.create".into(),
            format!(r#"{{"pipeline_id":"{pipeline}","cron":"0 * * * *","timezone":"Mars/Olympus"}}"#),
            "invalid_value",
            "/timezone",
        ),
        (
            "a repeated key",
            "flexcore.cmd.pipeline.pause".into(),
            format!(r#"{{"pipeline_id":"{pipeline}","reason":"a","reason":"b"}}"#),
            "duplicate_key",
            "/reason",
        ),
        (
            "min_position beyond 2^63",
            "flexcore.qry.stats.get".into(),
            r#"{"min_position":9223372036854775808}"#.into(),
            "invalid_value",
            "/min_position",
        ),
        (
            "limit 0",
            "flexcore.qry.run.list".into(),
            r#"{"limit":0}"#.into(),
            "invalid_value",
            "/limit",
        ),
        (
            "a fractional integer",
            "flexcore.cmd.pipeline.create".into(),
            format!(r#"{{"name":"n5","owner":"o","steps":{steps},"max_active_runs":1.5}}"#),
            "invalid_type",
            "/max_active_runs",
        ),
    ];
    let before = event_count(&s).await;
    for (what, subject, body, reason, path) in cases {
        let reply = s.request(&subject, body.into_bytes()).await;
        assert_eq!(reply["ok"], json!(false), "{what}: accepted: {reply}");
        let error = &reply["error"];
        assert_eq!(error["code"], "validation_failed", "{what}: {error}");
        assert_eq!(error["details"]["reason"], reason, "{what}: {error}");
        assert_eq!(error["details"]["path"], path, "{what}: {error}");
        assert!(
            error["details"].get("field").is_none(),
            "{what}: one detail shape: {error}"
        );
        assert!(!error["message"].as_str().unwrap().is_empty(), "{what}");
    }
    assert_eq!(event_count(&s).await, before, "a refused request wrote something");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_schemas_allow_is_accepted() {
    let s = Stack::start(Options::default()).await;
    let pipeline = world(&s).await;
    // An integer written with a fraction of zero is an integer (JSON Schema says so).
    let reply = s
        .request(
            "flexcore.cmd.pipeline.update",
            format!(r#"{{"pipeline_id":"{pipeline}","max_active_runs":3.0,"expected_version":1.0}}"#),
        )
        .await;
    assert_eq!(reply["ok"], json!(true), "{reply}");
    let position = reply["global_position"].as_u64().unwrap();
    let view = s
        .query("pipeline.get", json!({"id": pipeline, "min_position": position}))
        .await;
    assert_eq!(view["data"]["definition"]["max_active_runs"], json!(3), "{view}");
    // Upper-case hex UUIDs are canonical too.
    let upper = pipeline.to_uppercase();
    let reply = s.query("pipeline.get", json!({"id": upper})).await;
    assert_eq!(reply["ok"], json!(true), "{reply}");
    // Every query may carry min_position, the projection ones too.
    for name in ["projection.list", "stats.get", "plugin.list", "event.list"] {
        let reply = s.query(name, json!({"min_position": position})).await;
        assert_eq!(reply["ok"], json!(true), "{name}: {reply}");
    }
    let reply = s
        .query("projection.rebuild", json!({"name": "runs", "min_position": position}))
        .await;
    assert_eq!(reply["ok"], json!(true), "projection.rebuild: {reply}");
    s.stop().await;
}

/// Sends `body` to `subject` with `headers`; the reply.
async fn with_headers(s: &Stack, subject: &str, headers: &[(&str, &str)], body: Value) -> Value {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(*name, *value);
    }
    let reply = s
        .client
        .request_with_headers(subject.to_owned(), map, serde_json::to_vec(&body).unwrap().into())
        .await
        .unwrap();
    serde_json::from_slice(&reply.payload).unwrap()
}

async fn metadata(s: &Stack, position: u64) -> Value {
    sqlx::query_scalar("SELECT metadata FROM events WHERE global_position = $1")
        .bind(i64::try_from(position).unwrap())
        .fetch_one(&s.db.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_valid_header_values_reach_the_events() {
    let s = Stack::start(Options::default()).await;
    let pipeline = world(&s).await;
    let subject = "flexcore.cmd.pipeline.pause";
    // A traceparent that is not W3C is ignored (a new trace), never stored.
    for garbage in [
        "garbage",
        "00-00000000000000000000000000000000-0000000000000000-01",
        "zz-1-2-3",
    ] {
        let reply = with_headers(
            &s,
            subject,
            &[("traceparent", garbage)],
            json!({"pipeline_id": pipeline}),
        )
        .await;
        assert_eq!(reply["ok"], json!(true), "{reply}");
        let stored = metadata(&s, reply["global_position"].as_u64().unwrap()).await;
        assert_ne!(stored["traceparent"], json!(garbage), "{stored}");
        s.ok("pipeline.resume", json!({"pipeline_id": pipeline})).await;
    }
    // A valid one is continued: the stored trace id is the sender's.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let reply = with_headers(
        &s,
        subject,
        &[
            ("traceparent", &format!("00-{trace}-00f067aa0ba902b7-01")),
            ("Flexcore-Actor", "alice"),
            ("Flexcore-Correlation-Id", "req-42"),
        ],
        json!({"pipeline_id": pipeline}),
    )
    .await;
    assert_eq!(reply["ok"], json!(true), "{reply}");
    let stored = metadata(&s, reply["global_position"].as_u64().unwrap()).await;
    assert!(stored["traceparent"].as_str().unwrap().contains(trace), "{stored}");
    // Who acts is never a header's say: the command went unsigned.
    assert_eq!(stored["actor"], "unsigned");
    assert_eq!(stored["correlation_id"], "req-42");
    // The correlation header must be a label: refused, naming the header.
    let before = event_count(&s).await;
    for (name, value) in [
        ("Flexcore-Correlation-Id", "x".repeat(300)),
        ("Flexcore-Correlation-Id", "   ".to_owned()),
    ] {
        let reply = with_headers(
            &s,
            "flexcore.cmd.pipeline.resume",
            &[(name, &value)],
            json!({"pipeline_id": pipeline}),
        )
        .await;
        assert_eq!(reply["error"]["details"]["reason"], "invalid_value", "{name}: {reply}");
        assert_eq!(reply["error"]["details"]["header"], name, "{reply}");
    }
    assert_eq!(event_count(&s).await, before);
    s.stop().await;
}
