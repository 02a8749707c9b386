//! Runs the native generator binary and counts what it emits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use serde_json::{json, Value};

#[test]
fn emits_schema_records_and_states() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, r#"{"records": 2500, "state_every": 1000}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flexcore-plugin-generator"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["type"], "SCHEMA");
    assert_eq!(lines[0]["stream"], "gen");
    let records: Vec<&Value> = lines.iter().filter(|m| m["type"] == "RECORD").collect();
    assert_eq!(records.len(), 2500);
    assert_eq!(
        records[2499]["record"],
        json!({"id": 2500, "name": "name-2500", "value": 500, "ts": "2026-01-01T00:00:00Z"})
    );
    let states: Vec<&Value> = lines
        .iter()
        .filter(|m| m["type"] == "STATE")
        .map(|m| &m["value"]["generated"])
        .collect();
    assert_eq!(states, [&json!(1000), &json!(2000), &json!(2500)]);
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains(r#"INFO METRIC: {"type":"counter","metric":"record_count","value":2500"#));
}

#[test]
fn missing_config_fails_clearly() {
    let out = Command::new(env!("CARGO_BIN_EXE_flexcore-plugin-generator"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "a missing config is EX_CONFIG (permanent)");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "ERROR no --config file given\n");
}

#[test]
fn closed_stdout_ends_the_plugin_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    // Far more than the pipe can hold, so the generator is still writing when we hang up.
    std::fs::write(&config, r#"{"records": 100000000}"#).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flexcore-plugin-generator"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with(r#"{"type":"SCHEMA""#));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}
