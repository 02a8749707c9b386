//! `POST /plugins` as a multipart upload (module and metadata, the digest checked, nothing
//! stored for a refused request) and `GET /plugins/{id}/status` counting a plugin's runs.

use std::time::Duration;

use flexcore_security::ApiRole;
use flexcore_system_tests::{plugins, Options};
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};

use crate::{problem, Gw};

/// The largest module this test's gateway takes.
const MAX_MODULE: u64 = 3_500_000;

fn form(metadata: &Value, module: Option<Vec<u8>>) -> Form {
    let form = Form::new().part(
        "metadata",
        Part::text(metadata.to_string()).mime_str("application/json").unwrap(),
    );
    match module {
        Some(bytes) => form.part(
            "module",
            Part::bytes(bytes)
                .file_name("plugin.wasm")
                .mime_str("application/wasm")
                .unwrap(),
        ),
        None => form,
    }
}

async fn upload(gw: &Gw, role: ApiRole, metadata: &Value, module: Option<Vec<u8>>) -> reqwest::Response {
    gw.as_role(role, reqwest::Method::POST, "/plugins")
        .multipart(form(metadata, module))
        .send()
        .await
        .unwrap()
}

/// Whether the plugin store holds a module with these bytes.
async fn stored(gw: &Gw, bytes: &[u8]) -> bool {
    let digest = flexcore_plugin_store::digest_of(bytes);
    flexcore_plugin_store::stored_size(&gw.stack.js, &digest)
        .await
        .unwrap()
        .is_some()
}

#[tokio::test]
async fn a_module_is_uploaded_with_its_metadata_run_and_counted_in_the_plugins_status() {
    let gw = Gw::start_with(
        Options {
            runner: true,
            ..Options::default()
        },
        |g| g.max_module_bytes = MAX_MODULE,
    )
    .await;
    let generator = plugins::wasm("flexcore-plugin-generator");
    let discard = plugins::wasm("flexcore-plugin-discard");
    let gen_meta = json!({"name": "up-gen", "version": "1.0.0", "kind": "extractor"});

    // Only admins upload; a viewer's upload is refused before anything is stored.
    let (status, _) = problem(upload(&gw, ApiRole::Operator, &gen_meta, Some(generator.clone())).await).await;
    assert_eq!(status, 403);
    assert!(!stored(&gw, &generator).await, "a refused caller stores nothing");

    // Refusals, each naming the part at fault; none stores the module.
    let mut other = generator.clone();
    other.extend_from_slice(b"not registered");
    let cases = [
        (
            json!({"name": "up-x", "version": "1.0.0", "kind": "bogus"}),
            Some(other.clone()),
            422,
            "/kind",
        ),
        (
            json!({"name": "up-x", "version": "1.0.0", "kind": "extractor", "module_digest": format!("sha256:{}", "0".repeat(64))}),
            Some(other.clone()),
            400,
            "part:metadata/module_digest",
        ),
        (
            json!({"name": "up-x", "version": "1.0.0", "kind": "extractor", "runtime": "process"}),
            Some(other.clone()),
            400,
            "part:metadata/runtime",
        ),
        (
            gen_meta.clone(),
            Some(b"MZ\x90\x00 not wasm".to_vec()),
            400,
            "part:module",
        ),
        (gen_meta.clone(), None, 400, "part:module"),
    ];
    for (metadata, module, want, field) in cases {
        let (status, body) = problem(upload(&gw, ApiRole::Admin, &metadata, module).await).await;
        assert_eq!(
            (status, body["errors"][0]["field"].as_str()),
            (want, Some(field)),
            "{body}"
        );
    }
    assert!(!stored(&gw, &other).await, "nothing refused is stored");
    let mut huge = b"\0asm".to_vec();
    huge.resize(usize::try_from(MAX_MODULE).unwrap() + 1, 0);
    let (status, body) = problem(upload(&gw, ApiRole::Admin, &gen_meta, Some(huge)).await).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );
    let no_metadata = gw
        .as_role(ApiRole::Admin, reqwest::Method::POST, "/plugins")
        .multipart(Form::new().part("module", Part::bytes(generator.clone())))
        .send()
        .await
        .unwrap();
    let (status, body) = problem(no_metadata).await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (400, Some("part:metadata"))
    );

    // The upload: stored under its digest and registered with it (201, Location).
    let created = upload(&gw, ApiRole::Admin, &gen_meta, Some(generator.clone())).await;
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let position = created.headers()["consistency-position"].to_str().unwrap().to_owned();
    let gen_id = location.rsplit('/').next().unwrap().to_owned();
    let view: Value = gw
        .http
        .get(format!("{}{location}", gw.base))
        .bearer_auth(gw.key(ApiRole::Viewer))
        .header("Consistency-Position", &position)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        view["module_digest"],
        flexcore_plugin_store::digest_of(&generator).to_string(),
        "{view}"
    );
    assert!(stored(&gw, &generator).await);
    // Versions are immutable: the same name@version again is a conflict.
    let (status, body) = problem(upload(&gw, ApiRole::Admin, &gen_meta, Some(generator.clone())).await).await;
    assert_eq!(status, 409, "{body}");
    // A declared digest that is right is taken.
    let discard_meta = json!({"name": "up-discard", "version": "1.0.0", "kind": "loader",
        "module_digest": flexcore_plugin_store::digest_of(&discard).to_string()});
    assert_eq!(
        upload(&gw, ApiRole::Admin, &discard_meta, Some(discard)).await.status(),
        201
    );

    // Its status before any run: nothing counted.
    let (status, before) = gw.get(ApiRole::Viewer, &format!("/plugins/{gen_id}/status")).await;
    assert_eq!(status, 200, "{before}");
    assert_eq!(
        (before["name"].as_str(), before["runs_total"].as_u64()),
        (Some("up-gen"), Some(0))
    );

    // A pipeline of the uploaded plugins, run once: counted with its duration.
    let created = gw
        .post(
            ApiRole::Admin,
            "/pipelines",
            json!({"name": "uploaded", "owner": "o", "steps": [
                {"plugin": "up-gen@1.0.0", "config": {"records": 10}}, {"plugin": "up-discard@1.0.0"}]}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let pipeline: Value = created.json().await.unwrap();
    let pipeline = pipeline["aggregate_id"].as_str().unwrap().to_owned();
    let run = gw
        .post(ApiRole::Operator, &format!("/pipelines/{pipeline}/execute"), json!({}))
        .await;
    assert_eq!(run.status(), 202);
    let run: Value = run.json().await.unwrap();
    let run_id = run["aggregate_id"].as_str().unwrap().to_owned();
    gw.stack
        .wait_run_event(&run_id, "run.succeeded", Duration::from_secs(60))
        .await;
    let status_path = format!("/plugins/{gen_id}/status");
    flexcore_testkit::wait_until(Duration::from_secs(10), "the run counted", || async {
        gw.get(ApiRole::Viewer, &status_path).await.1["runs"]["succeeded"]["count"] == 1
    })
    .await
    .unwrap();
    let after = gw.get(ApiRole::Viewer, &status_path).await.1;
    assert_eq!(after["runs_total"], 1, "{after}");
    assert!(after["average_duration_ms"].is_u64(), "{after}");
    assert_eq!(
        after["runs"]["succeeded"]["average_duration_ms"],
        after["average_duration_ms"]
    );
    assert_eq!(after["failure_rate"], 0.0);
    assert!(after["last_requested_at"].is_string(), "{after}");
    // The run names the plugins it ran.
    let (_, run) = gw.get(ApiRole::Viewer, &format!("/runs/{run_id}")).await;
    assert_eq!(run["plugin_ids"].as_array().map(Vec::len), Some(2), "{run}");

    // An unknown plugin's status is a 404, as is a malformed id.
    let unknown = gw
        .as_role(
            ApiRole::Viewer,
            reqwest::Method::GET,
            &format!("/plugins/{}/status", uuid::Uuid::new_v4()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(problem(unknown).await.0, 404);
    let malformed = gw
        .as_role(ApiRole::Viewer, reqwest::Method::GET, "/plugins/..%2f..%2fetc/status")
        .send()
        .await
        .unwrap();
    assert_eq!(problem(malformed).await.0, 404);
}
