//! Malformed queries get error replies, never a crash; the service keeps answering.

use serde_json::json;
use uuid::Uuid;

use crate::stack;

#[tokio::test]
async fn malformed_queries_get_clear_errors() {
    let s = stack(true).await;
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "flexcore.qry.run.get",
            b"{not json".to_vec(),
            "validation_failed",
            "malformed JSON",
        ),
        (
            "flexcore.qry.run.get",
            b"[]".to_vec(),
            "validation_failed",
            "must be a JSON object",
        ),
        ("flexcore.qry.run.get", b"{}".to_vec(), "validation_failed", "id"),
        (
            "flexcore.qry.run.get",
            br#"{"id": "nope"}"#.to_vec(),
            "validation_failed",
            "id",
        ),
        (
            "flexcore.qry.run.list",
            br#"{"limit": 5000}"#.to_vec(),
            "validation_failed",
            "limit must be 1..=1000",
        ),
        (
            "flexcore.qry.run.list",
            br#"{"limit": 0}"#.to_vec(),
            "validation_failed",
            "limit",
        ),
        (
            "flexcore.qry.run.list",
            br#"{"bogus": 1}"#.to_vec(),
            "validation_failed",
            "bogus",
        ),
        (
            "flexcore.qry.run.list",
            br#"{"kind": "loader"}"#.to_vec(),
            "validation_failed",
            "filter `kind` does not apply to runs",
        ),
        (
            "flexcore.qry.run.list",
            br#"{"sort_by": "name"}"#.to_vec(),
            "validation_failed",
            "cannot be sorted by name",
        ),
        (
            "flexcore.qry.run.list",
            br#"{"cursor": "xyz"}"#.to_vec(),
            "validation_failed",
            "cursor",
        ),
        (
            "flexcore.qry.run.list",
            br#"{"since": "2026-11-24T10:00:00Z", "until": "2026-11-24T09:00:00Z"}"#.to_vec(),
            "validation_failed",
            "until must be after since",
        ),
        (
            "flexcore.qry.pipeline.explode",
            b"{}".to_vec(),
            "validation_failed",
            "not a query this service answers",
        ),
        (
            "flexcore.qry.nothing.get",
            b"{}".to_vec(),
            "validation_failed",
            "not a query this service answers",
        ),
        (
            "flexcore.qry.projection.rebuild",
            br#"{"name": "nope"}"#.to_vec(),
            "validation_failed",
            "no projection named",
        ),
        (
            "flexcore.qry.stats.get",
            vec![b' '; 70_000],
            "payload_too_large",
            "limit",
        ),
    ];
    for (subject, body, code, message) in cases {
        let reply = s.request(subject, body).await;
        assert_eq!(reply["ok"], json!(false), "{subject}: {reply}");
        assert_eq!(reply["error"]["code"], json!(code), "{subject}: {reply}");
        let text = reply["error"]["message"].as_str().unwrap();
        assert!(text.contains(message), "{subject}: {text:?} should mention {message:?}");
    }
    let missing = Uuid::new_v4();
    let reply = s.query("plugin.get", json!({"id": missing})).await;
    assert_eq!(reply["error"]["code"], json!("not_found"), "{reply}");
    // Still serving.
    assert_eq!(s.query("stats.get", json!({})).await["ok"], json!(true));
    s.stop().await;
}
