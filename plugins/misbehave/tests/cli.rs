//! Runs the native misbehave binary in the modes that terminate on their own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

fn run(config: Value) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    Command::new(env!("CARGO_BIN_EXE_flexcore-plugin-misbehave"))
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn exit_error_and_trap_fail() {
    let out = run(json!({"mode": "exit_error"}));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "ERROR misbehave: failing on purpose\n"
    );
    let out = run(json!({"mode": "trap"}));
    assert!(!out.status.success());
}

#[test]
fn escape_reports_success_or_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s").unwrap();
    let out = run(json!({"mode": "escape", "path": secret}));
    assert!(out.status.success());
    assert_eq!(stdout(&out), "ESCAPED\n");
    let out = run(json!({"mode": "escape", "path": dir.path().join("missing")}));
    assert_eq!(out.status.code(), Some(3));
    assert!(stdout(&out).is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("ERROR cannot open"));
}

#[test]
fn protocol_violations() {
    let out = run(json!({"mode": "bad_json"}));
    assert!(out.status.success());
    assert_eq!(stdout(&out), "{not json\n");
    let out = run(json!({"mode": "undeclared_stream"}));
    let lines: Vec<Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["type"], "RECORD");
    assert_eq!(lines[1]["type"], "STATE");
}

#[test]
fn bounded_flood_alloc_and_sleep_end() {
    let out = run(json!({"mode": "flood", "bytes": 10_000}));
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.len() >= 10_000 && text.len() < 11_000, "{}", text.len());
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["type"], "SCHEMA");
    assert!(lines[1..]
        .iter()
        .all(|m| m["type"] == "RECORD" && m["stream"] == "flood"));
    let out = run(json!({"mode": "alloc", "bytes": 4 << 20}));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("allocated 4194304 bytes"));
    assert!(run(json!({"mode": "sleep", "seconds": 0})).status.success());
}

#[test]
fn early_state_comes_before_any_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, json!({"mode": "early_state"}).to_string()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flexcore-plugin-misbehave"))
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "{\"type\":\"STATE\",\"value\":{\"early\":true}}\n");
    writeln!(stdin, r#"{{"type":"RECORD","stream":"s","record":{{}}}}"#).unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success());
}
