//! Client data comes back exactly as it was sent: every digit of every number (integers
//! beyond 2^53 and u64, long decimals, exponent forms, trailing zeros), and the order of
//! object keys — through the command, the event log, JetStream, the read models, a run's
//! state file, a plugin and the loader's output.

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use flexcore_contracts::events::PipelineStateCommitted;
use flexcore_contracts::queries::QueryReply;
use flexcore_contracts::views::{PipelineView, PluginView};
use flexcore_contracts::EventEnvelope;
use flexcore_system_tests::{Options, Stack};
use serde_json::json;

/// A STATE a float would change: 17 significant digits, a 30-digit integer, an exponent
/// form, trailing zeros, a tiny decimal, keys in no sorted order.
const STATE: &str = r#"{"z_last":524560164915.88403,"big":123456789012345678901234567890,"exp":1.5e3,"tiny":-0.000000000000000000001,"a":{"y":1,"x":[0.1000,18446744073709551616]}}"#;

/// The reply's `data`, decoded from the exact text.
async fn data<T: serde::de::DeserializeOwned>(s: &Stack, name: &str, body: serde_json::Value) -> T {
    let (view, operation) = name.split_once('.').unwrap();
    let subject = flexcore_contracts::subjects::query(view, operation);
    let reply = s
        .client
        .request(subject, serde_json::to_vec(&body).unwrap().into())
        .await
        .unwrap();
    match serde_json::from_slice::<QueryReply>(&reply.payload).unwrap() {
        QueryReply::Ok(ok) => ok.data.decode().unwrap(),
        QueryReply::Err(e) => panic!("{name}: {}", e.error),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_state_and_configs_keep_every_digit_and_key_order_everywhere() {
    let s = Stack::start(Options::default()).await;
    let schema =
        r#"{"type":"object","properties":{"zeta":{"type":"number","maximum":1e308},"alpha":{"type":"integer"}}}"#;
    let register = format!(
        r#"{{"name":"exact","version":"1.0.0","kind":"extractor","module_digest":"sha256:{}","config_schema":{schema}}}"#,
        "a".repeat(64)
    );
    let reply = s.request("flexcore.cmd.plugin.register", register.into_bytes()).await;
    assert_eq!(reply["ok"], json!(true), "{reply}");
    let plugin_id = reply["aggregate_id"].as_str().unwrap().to_owned();
    s.ok(
        "plugin.register",
        json!({"name": "sink", "version": "1.0.0", "kind": "loader", "module_digest": format!("sha256:{}", "b".repeat(64))}),
    )
    .await;
    let config = r#"{"zeta":0.30000000000000004441,"alpha":9007199254740993,"mid":{"b":2,"a":1}}"#;
    let create = format!(
        r#"{{"name":"exact","owner":"o","steps":[{{"plugin":"exact@1.0.0","config":{config}}},{{"plugin":"sink@1.0.0"}}]}}"#
    );
    let reply = s.request("flexcore.cmd.pipeline.create", create.into_bytes()).await;
    assert_eq!(reply["ok"], json!(true), "{reply}");
    let pipeline_id = reply["aggregate_id"].as_str().unwrap().to_owned();
    let commit = format!(r#"{{"pipeline_id":"{pipeline_id}","state":{STATE}}}"#);
    let reply = s
        .request("flexcore.cmd.pipeline.commit_state", commit.into_bytes())
        .await;
    assert_eq!(reply["ok"], json!(true), "{reply}");
    let position = reply["global_position"].as_u64().unwrap();

    // The event log holds the exact text.
    let stored: String = sqlx::query_scalar(
        "SELECT data::text FROM events WHERE aggregate_id = $1::uuid AND event_type = 'pipeline.state_committed'",
    )
    .bind(&pipeline_id)
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(stored, format!(r#"{{"state":{STATE}}}"#));

    // JetStream carries it.
    let stream = s.js.get_stream("FLEXCORE_EVENTS").await.unwrap();
    let subject = format!("flexcore.evt.pipeline.{pipeline_id}.state_committed");
    flexcore_testkit::wait_until(Duration::from_secs(10), "the event is published", || async {
        stream.get_last_raw_message_by_subject(&subject).await.is_ok()
    })
    .await
    .unwrap();
    let message = stream.get_last_raw_message_by_subject(&subject).await.unwrap();
    let envelope: EventEnvelope = serde_json::from_slice(&message.payload).unwrap();
    let event: PipelineStateCommitted = envelope.data.decode().unwrap();
    assert_eq!(event.state.as_str(), STATE);

    // The read models and the audit log answer with it.
    let view: PipelineView = data(&s, "pipeline.get", json!({"id": pipeline_id, "min_position": position})).await;
    assert_eq!(view.bookmark.as_str(), STATE);
    assert_eq!(view.definition.steps[0].config.as_str(), config);
    // Each view has its own position: the plugin view too must have reached the write.
    let plugin: PluginView = data(&s, "plugin.get", json!({"id": plugin_id, "min_position": position})).await;
    assert_eq!(plugin.config_schema.unwrap().as_str(), schema);
    let audit: Vec<EventEnvelope> = data(
        &s,
        "event.list",
        json!({"aggregate_id": pipeline_id, "event_type": "pipeline.state_committed", "min_position": position}),
    )
    .await;
    let event: PipelineStateCommitted = audit[0].data.decode().unwrap();
    assert_eq!(event.state.as_str(), STATE);
    s.stop().await;
}

/// A native tap (a shell script) emits records with ordered keys and long numbers and a
/// STATE; the wasm JSONL loader writes them and echoes the STATE: the file and the
/// pipeline's bookmark hold the exact texts (an exponent spelled with its sign), and the next run's state file is the
/// bookmark, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_and_state_pass_through_a_run_unchanged() {
    let s = Stack::start(Options {
        runner: true,
        ..Options::default()
    })
    .await;
    let tools = tempfile::tempdir().unwrap();
    let seen = tools.path().join("state_seen.json");
    let record_a = r#"{"zulu":1,"alpha":524560164915.88403,"mike":"x","big":123456789012345678901234567890}"#;
    let record_b = r#"{"zulu":2,"alpha":1.5e3,"mike":"y","big":-0.000000000000000000001}"#;
    let script = tools.path().join("tap.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             if [ \"$3\" = --state ]; then cp \"$4\" {seen}; fi\n\
             printf '%s\\n' '{{\"type\":\"SCHEMA\",\"stream\":\"rows\",\"schema\":{{}},\"key_properties\":[]}}'\n\
             printf '%s\\n' '{{\"type\":\"RECORD\",\"stream\":\"rows\",\"record\":{record_a}}}'\n\
             printf '%s\\n' '{{\"type\":\"RECORD\",\"stream\":\"rows\",\"record\":{record_b}}}'\n\
             printf '%s\\n' '{{\"type\":\"STATE\",\"value\":{STATE}}}'\n",
            seen = seen.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    s.ok(
        "plugin.register",
        json!({"name": "tap", "version": "1.0.0", "kind": "extractor", "runtime": "process",
               "executable": script.display().to_string(), "limits": {"timeout_seconds": 60}}),
    )
    .await;
    let grants = json!({"grants": {"dirs": [{"host_path": s.output.path().display().to_string(),
                                           "guest_path": "/out", "access": "read_write"}]}});
    let jsonl = s.register("flexcore-plugin-jsonl", "jsonl", "loader", grants).await;
    let pipeline = s
        .ok(
            "pipeline.create",
            json!({"name": "exact-run", "owner": "o", "steps": [
                {"plugin": "tap@1.0.0"}, {"plugin": jsonl, "config": {"directory": "/out"}}]}),
        )
        .await["aggregate_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let run = s.ok("run.request", json!({"pipeline_id": pipeline})).await;
    let run_id = run["aggregate_id"].as_str().unwrap().to_owned();
    s.wait_run_event(&run_id, "run.succeeded", Duration::from_secs(60))
        .await;
    let written = std::fs::read_to_string(s.output.path().join("rows.jsonl")).unwrap();
    // The JSONL loader writes each record as the JSON text it received (the SDK's raw
    // loader): every digit, the key order, even the spelling of an exponent.
    assert_eq!(
        written,
        format!("{record_a}\n{record_b}\n"),
        "the loader keeps the records' text"
    );
    let bookmark: String = sqlx::query_scalar(
        "SELECT data->>'state' FROM events WHERE aggregate_id = $1::uuid AND event_type = 'run.checkpointed'",
    )
    .bind(&run_id)
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    // The loader echoes the STATE through the same SDK.
    let echoed = STATE.replace("e3", "e+3");
    assert_eq!(bookmark, echoed);
    let stored: String = sqlx::query_scalar(
        "SELECT data::text FROM events WHERE aggregate_id = $1::uuid AND event_type = 'pipeline.state_committed'",
    )
    .bind(&pipeline)
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(stored, format!(r#"{{"state":{echoed},"run_id":"{run_id}"}}"#));

    // The next run's extractor gets the bookmark as its state file, byte for byte.
    let run = s.ok("run.request", json!({"pipeline_id": pipeline})).await;
    let run_id = run["aggregate_id"].as_str().unwrap().to_owned();
    s.wait_run_event(&run_id, "run.succeeded", Duration::from_secs(60))
        .await;
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), echoed);
    s.stop().await;
}
