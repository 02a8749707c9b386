//! Runs the native JSONL loader: the records are in the file by the time their STATE
//! is echoed; append and truncate modes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

fn spawn(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_flexcore-plugin-jsonl"))
        .arg("--config")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn record(stream: &str, id: u32) -> String {
    json!({"type": "RECORD", "stream": stream, "record": {"id": id}}).to_string()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn state_is_echoed_only_once_records_are_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let config = dir.path().join("config.json");
    std::fs::write(&config, json!({"directory": out_dir}).to_string()).unwrap();
    let mut child = spawn(&config);
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());

    writeln!(
        stdin,
        r#"{{"type":"SCHEMA","stream":"users","schema":{{}},"key_properties":["id"]}}"#
    )
    .unwrap();
    for id in 1..=3 {
        writeln!(stdin, "{}", record("users", id)).unwrap();
    }
    writeln!(stdin, "{}", record("a/b", 9)).unwrap();
    writeln!(stdin, r#"{{"type":"STATE","value":{{"n":1}}}}"#).unwrap();
    stdin.flush().unwrap();

    // Block until the STATE comes back; the loader is still running (stdin open).
    let mut echoed = String::new();
    stdout.read_line(&mut echoed).unwrap();
    assert_eq!(echoed, "{\"type\":\"STATE\",\"value\":{\"n\":1}}\n");
    assert_eq!(
        lines(&out_dir.join("users.jsonl")),
        [json!({"id": 1}), json!({"id": 2}), json!({"id": 3})]
    );
    assert_eq!(lines(&out_dir.join("a_b.jsonl")), [json!({"id": 9})]);

    // Records after the last STATE are flushed at the end, and that STATE is echoed then.
    writeln!(stdin, "{}", record("users", 4)).unwrap();
    writeln!(stdin, r#"{{"type":"STATE","value":{{"n":2}}}}"#).unwrap();
    writeln!(stdin, "{}", record("users", 5)).unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(rest, "{\"type\":\"STATE\",\"value\":{\"n\":2}}\n");
    assert_eq!(lines(&out_dir.join("users.jsonl")).len(), 5);
}

fn run_once(config: &Path, input: &str) {
    let mut child = spawn(config);
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn append_and_truncate_modes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    let input = format!("{}\n{}\n", record("s", 1), record("s", 2));

    std::fs::write(
        &config,
        json!({"directory": dir.path(), "file_per_stream": false}).to_string(),
    )
    .unwrap();
    run_once(&config, &input);
    run_once(&config, &input);
    let shared = lines(&dir.path().join("records.jsonl"));
    assert_eq!(shared.len(), 4);
    assert_eq!(shared[0], json!({"type": "RECORD", "stream": "s", "record": {"id": 1}}));

    std::fs::write(
        &config,
        json!({"directory": dir.path(), "file_per_stream": false, "append": false}).to_string(),
    )
    .unwrap();
    run_once(&config, &input);
    assert_eq!(lines(&dir.path().join("records.jsonl")).len(), 2);
}
