//! Runs the native leaky binary: what it prints is what the runner must scrub.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

fn run(config: Value) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    Command::new(env!("CARGO_BIN_EXE_flexcore-plugin-leaky"))
        .arg("--config")
        .arg(&path)
        .env("LEAKY_CLI_VAR", "visible")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn leak_prints_the_password_in_every_form_and_names_a_stream_after_the_secret() {
    let out = run(
        json!({"mode": "leak", "password": "p\"w", "stream": "tbl", "env": ["LEAKY_CLI_VAR", "LEAKY_CLI_UNSET"], "line_cut": 64}),
    );
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for form in [
        "password is p\"w",
        r#""password":"p\"w""#,
        r#"\"password\":\"p\\\"w\""#,
        "password=p%22w",
        "Basic dXNlcjpwInc=",
    ] {
        assert!(stderr.contains(form), "{form} missing from {stderr}");
    }
    let long = stderr.lines().find(|l| l.contains("xxxx")).unwrap();
    assert_eq!(
        long.find("p\"w"),
        Some(64 - 3),
        "the password starts just before the cut"
    );
    assert!(stderr.contains("env LEAKY_CLI_VAR=visible") && stderr.contains("env LEAKY_CLI_UNSET is not set"));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["stream"], "tbl");
    assert_eq!(lines[3]["value"], json!({"bookmarks": {"tbl": 2}, "token": "p\"w"}));
}

#[test]
fn undeclared_writes_a_record_without_schema() {
    let out = run(json!({"mode": "undeclared", "password": "x", "stream": "tbl"}));
    assert!(out.status.success());
    let line: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(
        (line["type"].as_str(), line["stream"].as_str()),
        (Some("RECORD"), Some("tbl"))
    );
}
