//! The OpenAPI document against the gateway that serves it: every documented operation is
//! served, and Schemathesis (generated requests, valid and not) finds no server error and
//! no response that breaks the document.

use std::path::PathBuf;
use std::process::Command;

use flexcore_security::ApiRole;
use flexcore_system_tests::Options;
use serde_json::Value;

use crate::Gw;

#[tokio::test]
async fn the_document_and_its_reference_page_are_served_without_credentials() {
    let gw = Gw::start(Options::default()).await;
    let response = reqwest::get(format!("{}/api/v1/openapi.json", gw.base)).await.unwrap();
    assert_eq!(response.status(), 200);
    let served: Value = response.json().await.unwrap();
    assert_eq!(served, flexcore_gateway::openapi::document());
    assert_eq!(served["openapi"], "3.1.0");
    let page = reqwest::get(format!("{}/api/v1/docs", gw.base)).await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("fetch(\"openapi.json\")"),
        "the page reads the served document"
    );
    assert!(!html.contains("src=\"http"), "no asset from elsewhere");
}

#[tokio::test]
async fn every_documented_operation_is_served() {
    let gw = Gw::start(Options::default()).await;
    let document = flexcore_gateway::openapi::document();
    let mut checked = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let url = format!("{}{}", gw.base, path.replace("{id}", &uuid::Uuid::new_v4().to_string()));
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut request = gw
                .http
                .request(method.clone(), &url)
                .bearer_auth(gw.key(ApiRole::Admin));
            if method != reqwest::Method::GET {
                request = request.json(&serde_json::json!({}));
            }
            // Streams answer headers first: the status is all this needs.
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body = if status == 200 {
                Value::Null
            } else {
                response.json().await.unwrap_or(Value::Null)
            };
            assert_ne!(status, 405, "{method} {path} is documented but not routed: {body}");
            let detail = body["detail"].as_str().unwrap_or("");
            assert!(
                !detail.starts_with("no resource at"),
                "{method} {path} is documented but not routed: {body}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 34, "{checked} operations");
}

/// Schemathesis, installed by scripts/test.sh into `.flexcore/schemathesis`
/// (`FLEXCORE_SCHEMATHESIS` overrides the path).
fn schemathesis() -> PathBuf {
    let path = std::env::var_os("FLEXCORE_SCHEMATHESIS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.flexcore/schemathesis/bin/schemathesis"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "{} is missing: scripts/test.sh installs it (python3 -m venv .flexcore/schemathesis && .flexcore/schemathesis/bin/pip install schemathesis==4.32.5)",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_response_outside_the_document() {
    let gw = Gw::start_with(Options::default(), |settings| {
        settings.rate_limit_per_second = 100_000;
        settings.rate_limit_burst = 100_000;
    })
    .await;
    // Something to find: a pipeline (with its plugins) and a run of it.
    let pipeline = gw.pipeline("fuzzed").await;
    let run = gw
        .post(
            ApiRole::Operator,
            &format!("/pipelines/{pipeline}/execute"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(run.status(), 202);
    let report = tempfile::tempdir().unwrap();
    let binary = schemathesis();
    let base = gw.base.clone();
    let admin = gw.key(ApiRole::Admin).to_owned();
    let junit = report.path().join("junit.xml");
    let workdir = report.path().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(binary)
            .args(["run", &format!("{base}/api/v1/openapi.json")])
            .args(["--header", &format!("Authorization: Bearer {admin}")])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
            ])
            // The live event stream never ends by design, a run's log stream not before the
            // run (and a run requested here has no runner); both are checked in api.rs.
            .args(["--exclude-path-regex", "(/events/stream|/logs/stream)$"])
            .args(["--phases", "examples,coverage,fuzzing,stateful"])
            // One worker: CPython 3.11's `ast` module miscounts its recursion depth when
            // two threads parse at once (python/cpython#106905), which Hypothesis does to
            // describe a strategy, and the run then ends in "AST constructor recursion
            // depth mismatch", a failure of the tool rather than of the API.
            .args(["--max-examples", "25", "--seed", "20261205", "--workers", "1"])
            .args(["--request-timeout", "20", "--no-color"])
            .args(["--report", "junit", "--report-junit-path", junit.to_str().unwrap()])
            .args(["--generation-database", "none"])
            .env("SCHEMATHESIS_HOOKS", "")
            .current_dir(workdir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{stdout}\n{stderr}"
    );
    eprintln!("{stdout}");
    assert!(stdout.contains("passed"), "schemathesis ran no operation:\n{stdout}");
    // The services are still healthy after the fuzzing.
    let (status, body) = gw.get(ApiRole::Viewer, &format!("/pipelines/{pipeline}")).await;
    assert_eq!(status, 200, "{body}");
}
