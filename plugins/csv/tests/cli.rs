//! Runs the native CSV extractor: full sync, then an incremental sync from the first
//! run's STATE that reads only the new rows.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

fn run(config: &Path, state: Option<&Path>, extra: &[&str]) -> Vec<Value> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flexcore-plugin-csv"));
    cmd.arg("--config").arg(config).args(extra);
    if let Some(state) = state {
        cmd.arg("--state").arg(state);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn of_type<'a>(messages: &'a [Value], kind: &str) -> Vec<&'a Value> {
    messages.iter().filter(|m| m["type"] == kind).collect()
}

#[test]
fn full_then_incremental_csv() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("users.csv");
    let mut csv = String::from("id,name,updated\r\n");
    for i in 1..=1500 {
        csv.push_str(&format!("{i},\"user, {i}\",{}\r\n", i * 2));
    }
    std::fs::write(&data, &csv).unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        json!({"path": dir.path().join("users.csv"), "replication_key": "id", "key_properties": ["id"]}).to_string(),
    )
    .unwrap();

    let first = run(&config, None, &[]);
    let schema = of_type(&first, "SCHEMA");
    assert_eq!(schema.len(), 1);
    assert_eq!(schema[0]["stream"], "users");
    assert_eq!(schema[0]["key_properties"], json!(["id"]));
    assert_eq!(schema[0]["schema"]["properties"]["name"], json!({"type": "string"}));
    let records = of_type(&first, "RECORD");
    assert_eq!(records.len(), 1500);
    assert_eq!(
        records[9]["record"],
        json!({"id": "10", "name": "user, 10", "updated": "20"})
    );
    let states = of_type(&first, "STATE");
    // One mid-run checkpoint after 1000 records (rows up to 999 are complete), one at the end.
    assert_eq!(states.len(), 2);
    assert_eq!(states[0]["value"]["bookmarks"]["users"]["replication_key_value"], "999");
    let last = &states[1]["value"];
    assert_eq!(
        *last,
        json!({"bookmarks": {"users": {"replication_key": "id", "replication_key_value": "1500"}}})
    );

    // New rows arrive (numerically larger, lexically smaller than "1500" for 2..).
    csv.push_str("1501,new,1\r\n20000,newer,2\r\n");
    std::fs::write(&data, &csv).unwrap();
    let state = dir.path().join("state.json");
    std::fs::write(&state, last.to_string()).unwrap();
    let second = run(&config, Some(&state), &[]);
    let ids: Vec<&Value> = of_type(&second, "RECORD").iter().map(|r| &r["record"]["id"]).collect();
    assert_eq!(ids, [&json!("1501"), &json!("20000")]);
    let states = of_type(&second, "STATE");
    assert_eq!(states.len(), 1);
    assert_eq!(
        states[0]["value"]["bookmarks"]["users"]["replication_key_value"],
        "20000"
    );

    // Nothing new: no records, the bookmark stays.
    std::fs::write(&state, states[0]["value"].to_string()).unwrap();
    let third = run(&config, Some(&state), &[]);
    assert!(of_type(&third, "RECORD").is_empty());
    assert_eq!(
        of_type(&third, "STATE")[0]["value"]["bookmarks"]["users"]["replication_key_value"],
        "20000"
    );
}

#[test]
fn jsonl_directory_with_inferred_schema_and_discovery() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("b.jsonl"),
        "{\"id\":1,\"x\":\"a\"}\n{\"id\":2,\"x\":null}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("a.csv"), "k\nv\n").unwrap();
    std::fs::write(dir.path().join("ignored.txt"), "nope").unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, json!({"path": dir.path()}).to_string()).unwrap();

    let messages = run(&config, None, &[]);
    let streams: Vec<&Value> = of_type(&messages, "SCHEMA").iter().map(|s| &s["stream"]).collect();
    assert_eq!(streams, [&json!("a"), &json!("b")]);
    assert_eq!(
        of_type(&messages, "SCHEMA")[1]["schema"]["properties"]["x"],
        json!({"type": ["null", "string"]})
    );
    assert_eq!(of_type(&messages, "RECORD").len(), 3);
    assert_eq!(of_type(&messages, "STATE")[0]["value"], json!({}));

    let catalog = run(&config, None, &["--discover"]);
    let ids: Vec<&Value> = catalog[0]["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["tap_stream_id"])
        .collect();
    assert_eq!(ids, [&json!("a"), &json!("b")]);
}

#[test]
fn missing_file_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, json!({"path": dir.path().join("nope.csv")}).to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flexcore-plugin-csv"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(66),
        "a missing input file is EX_NOINPUT (permanent)"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("ERROR ") && stderr.contains("nope.csv"), "{stderr}");
}
