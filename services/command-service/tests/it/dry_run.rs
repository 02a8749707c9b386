//! `dry_run: true`: the same decision as the real command, nothing written.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::spawn_app;

/// Rows of every table a command can write.
async fn written(app: &crate::App) -> (i64, i64, i64) {
    let count = |table: &'static str| {
        let pool = app.db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM {table}"))
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    (
        count("events").await,
        count("command_log").await,
        count("unique_keys").await,
    )
}

fn pipeline(name: &str, loader_config: Value) -> Value {
    json!({"name": name, "owner": "data-team", "steps": [
        {"plugin": "csv@1.0.0"},
        {"plugin": "jsonl@1.0.0", "config": loader_config}
    ]})
}

fn dry(mut body: Value) -> Value {
    body["dry_run"] = json!(true);
    body["command_id"] = json!(Uuid::new_v4());
    body
}

#[tokio::test]
async fn a_dry_run_decides_like_the_command_and_writes_nothing() {
    let mut app = spawn_app().await;
    app.register_plugins().await;
    let before = written(&app).await;

    // Accepted: the reply the command would get, marked, at no position.
    let reply = app
        .send("pipeline.create", dry(pipeline("orders", json!({"path": "/out"}))))
        .await;
    assert_eq!(reply["ok"], json!(true), "{reply}");
    assert_eq!(reply["dry_run"], json!(true));
    assert_eq!(reply["global_position"], json!(0));
    assert_eq!(reply["version"], json!(1));
    assert_eq!(reply["events"][0]["type"], json!("pipeline.created"));

    // Refused exactly as the command is: a misspelt plugin, a wrong config type, an
    // unknown key (the plugin's schema forbids them), with the field's pointer.
    let refusals = [
        (
            json!({"name": "o", "owner": "t", "steps": [{"plugin": "cvs@1.0.0"}, {"plugin": "jsonl@1.0.0", "config": {"path": "/o"}}]}),
            "/steps/0/plugin",
            "not_found",
        ),
        (
            pipeline("o", json!({"path": 7})),
            "/steps/1/config/path",
            "validation_failed",
        ),
        (pipeline("o", json!({})), "/steps/1/config", "validation_failed"),
    ];
    for (body, path, code) in refusals {
        let real = app.send("pipeline.create", body.clone()).await;
        let dry_reply = app.send("pipeline.create", dry(body.clone())).await;
        assert_eq!(dry_reply["error"]["code"], json!(code), "{body} -> {dry_reply}");
        assert_eq!(dry_reply["error"]["details"]["path"], json!(path), "{dry_reply}");
        assert_eq!(
            dry_reply["error"], real["error"],
            "the same refusal as the real command"
        );
    }
    assert_eq!(
        written(&app).await,
        before,
        "nothing written by dry runs (nor by refusals)"
    );

    // A name taken is found without appending.
    app.create_pipeline("taken").await;
    let after_create = written(&app).await;
    let reply = app
        .send("pipeline.create", dry(pipeline("taken", json!({"path": "/o"}))))
        .await;
    assert_eq!(reply["error"]["details"]["reason"], json!("unique"), "{reply}");

    // Dry updates, and the command id of a dry run stays free for the real command.
    let command_id = Uuid::new_v4();
    let body = json!({"name": "orders", "owner": "t", "command_id": command_id,
                      "steps": [{"plugin": "csv@1.0.0"}, {"plugin": "jsonl@1.0.0", "config": {"path": "/o"}}]});
    let mut dry_body = body.clone();
    dry_body["dry_run"] = json!(true);
    assert_eq!(app.send("pipeline.create", dry_body).await["dry_run"], json!(true));
    assert_eq!(written(&app).await, after_create, "a dry run writes nothing");
    let real = app.ok("pipeline.create", body).await;
    assert!(real.get("dry_run").is_none(), "{real}");
    assert!(real["global_position"].as_u64().unwrap() > 0);
    let pipeline_id = real["aggregate_id"].as_str().unwrap().to_owned();
    let events = written(&app).await.0;
    let update = app
        .send(
            "pipeline.update",
            json!({"pipeline_id": pipeline_id, "tags": ["x"], "dry_run": true}),
        )
        .await;
    assert_eq!(update["ok"], json!(true), "{update}");
    assert_eq!(update["version"], json!(2));
    let bad = app
        .send(
            "pipeline.update",
            json!({"pipeline_id": pipeline_id, "dry_run": true,
                   "steps": [{"plugin": "csv@1.0.0"}, {"plugin": "jsonl@1.0.0", "config": {"path": "/o", "extra": {"a": 1}, "password": "hunter2"}}]}),
        )
        .await;
    assert_eq!(bad["error"]["details"]["reason"], json!("literal_secret"), "{bad}");
    assert_eq!(written(&app).await.0, events);
    app.stop().await;
}
