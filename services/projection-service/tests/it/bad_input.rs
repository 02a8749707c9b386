//! Malformed queries get error replies, never a crash; the service keeps answering.

use serde_json::json;
use uuid::Uuid;

use crate::stack;

#[tokio::test]
async fn malformed_queries_get_clear_errors() {
    let s = stack(true).await;
    // (subject, body, code, reason, path): every refusal says which rule and where.
    type Case<'a> = (&'a str, Vec<u8>, &'a str, &'a str, Option<&'a str>);
    let cases: Vec<Case<'_>> = vec![
        (
            "flexcore.qry.run.get",
            b"{not json".to_vec(),
            "validation_failed",
            "malformed_json",
            Some(""),
        ),
        (
            "flexcore.qry.run.get",
            b"[]".to_vec(),
            "validation_failed",
            "not_an_object",
            Some(""),
        ),
        (
            "flexcore.qry.run.get",
            b"{}".to_vec(),
            "validation_failed",
            "missing_field",
            Some("/id"),
        ),
        (
            "flexcore.qry.run.get",
            br#"{"id": "nope"}"#.to_vec(),
            "validation_failed",
            "invalid_value",
            Some("/id"),
        ),
        (
            "flexcore.qry.run.list",
            br#"{"limit": 5000}"#.to_vec(),
            "validation_failed",
            "invalid_value",
            Some("/limit"),
        ),
        (
            "flexcore.qry.run.list",
            br#"{"limit": 0}"#.to_vec(),
            "validation_failed",
            "invalid_value",
            Some("/limit"),
        ),
        (
            "flexcore.qry.run.list",
            br#"{"bogus": 1}"#.to_vec(),
            "validation_failed",
            "unknown_field",
            Some("/bogus"),
        ),
        // A filter or sort a view does not have is not in its schema.
        (
            "flexcore.qry.run.list",
            br#"{"kind": "loader"}"#.to_vec(),
            "validation_failed",
            "unknown_field",
            Some("/kind"),
        ),
        (
            "flexcore.qry.run.list",
            br#"{"sort_by": "name"}"#.to_vec(),
            "validation_failed",
            "invalid_value",
            Some("/sort_by"),
        ),
        (
            "flexcore.qry.run.list",
            br#"{"cursor": "xyz"}"#.to_vec(),
            "validation_failed",
            "invalid_value",
            Some("/cursor"),
        ),
        (
            "flexcore.qry.run.list",
            br#"{"cursor": "abcd"}"#.to_vec(),
            "validation_failed",
            "not_applicable",
            Some("/cursor"),
        ),
        (
            "flexcore.qry.plugin.list",
            br#"{"kind": "\u0000"}"#.to_vec(),
            "validation_failed",
            "invalid_character",
            Some("/kind"),
        ),
        (
            "flexcore.qry.pipeline.explode",
            b"{}".to_vec(),
            "validation_failed",
            "unknown_subject",
            None,
        ),
        (
            "flexcore.qry.nothing.get",
            b"{}".to_vec(),
            "validation_failed",
            "unknown_subject",
            None,
        ),
        (
            "flexcore.qry.projection.rebuild",
            br#"{"name": "nope"}"#.to_vec(),
            "validation_failed",
            "invalid_value",
            Some("/name"),
        ),
        (
            "flexcore.qry.stats.get",
            vec![b' '; 70_000],
            "payload_too_large",
            "too_large",
            None,
        ),
    ];
    for (subject, body, code, reason, path) in cases {
        let reply = s.request(subject, body).await;
        assert_eq!(reply["ok"], json!(false), "{subject}: {reply}");
        assert_eq!(reply["error"]["code"], json!(code), "{subject}: {reply}");
        assert_eq!(reply["error"]["details"]["reason"], json!(reason), "{subject}: {reply}");
        assert_eq!(reply["error"]["details"]["path"].as_str(), path, "{subject}: {reply}");
        assert!(!reply["error"]["message"].as_str().unwrap().is_empty());
    }
    // An empty window is an empty page, not an error.
    let window = json!({"since": "2026-11-24T10:00:00Z", "until": "2026-11-24T09:00:00Z"});
    let reply = s.query("run.list", window).await;
    assert_eq!(reply["data"], json!([]), "{reply}");
    let missing = Uuid::new_v4();
    let reply = s.query("plugin.get", json!({"id": missing})).await;
    assert_eq!(reply["error"]["code"], json!("not_found"), "{reply}");
    // It says how an operator lists them, not which NATS query would.
    assert_eq!(
        reply["error"]["message"],
        json!(format!(
            "no plugin with id {missing}; list them: `flexctl plugin list` or GET /api/v1/flexcore/plugins"
        )),
        "{reply}"
    );
    let reply = s.query("run.get", json!({"id": missing})).await;
    assert_eq!(
        reply["error"]["message"],
        json!(format!(
            "no run with id {missing}; list them: `flexctl run list` or GET /api/v1/flexcore/runs"
        )),
        "{reply}"
    );
    // Still serving.
    assert_eq!(s.query("stats.get", json!({})).await["ok"], json!(true));
    s.stop().await;
}
