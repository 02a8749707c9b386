//! Runs the native mapper over a small Singer stream: rename, drop, filter, pass-through.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

#[test]
fn renames_drops_filters_and_passes_state_through() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        json!({"streams": {"users": {
            "rename": {"name": "full_name"}, "drop": ["password"],
            "filter": {"field": "active", "op": "eq", "value": "true"}}}})
        .to_string(),
    )
    .unwrap();
    let input = [
        json!({"type": "SCHEMA", "stream": "users", "key_properties": ["id"], "schema": {"type": "object",
            "properties": {"id": {}, "name": {}, "password": {}, "active": {}}}}),
        json!({"type": "RECORD", "stream": "users", "record": {"id": 1, "name": "a", "password": "x", "active": "true"}}),
        json!({"type": "RECORD", "stream": "users", "record": {"id": 2, "name": "b", "password": "y", "active": "false"}}),
        json!({"type": "record", "stream": "other", "record": {"name": "kept"}}),
        json!({"type": "STATE", "value": {"bookmarks": {"users": 2}}}),
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_flexcore-plugin-mapper"))
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for message in &input {
        writeln!(stdin, "{message}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), 4);
    assert_eq!(
        got[0]["schema"]["properties"],
        json!({"id": {}, "full_name": {}, "active": {}})
    );
    assert_eq!(got[1]["record"], json!({"id": 1, "full_name": "a", "active": "true"}));
    assert_eq!(
        got[2],
        json!({"type": "RECORD", "stream": "other", "record": {"name": "kept"}})
    );
    assert_eq!(got[3], input[4]);
}

#[test]
fn bad_config_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        r#"{"streams": {"s": {"filter": {"field": "a", "op": "like"}}}}"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flexcore-plugin-mapper"))
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(78),
        "a config that does not parse is EX_CONFIG (permanent)"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown variant `like`"));
}
