//! Runs the native discard loader: STATEs are echoed at once, records counted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

#[test]
fn echoes_each_state_immediately_and_counts() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flexcore-plugin-discard"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    writeln!(
        stdin,
        r#"{{"type":"SCHEMA","stream":"s","schema":{{}},"key_properties":[]}}"#
    )
    .unwrap();
    for i in 0..3 {
        writeln!(stdin, r#"{{"type":"RECORD","stream":"s","record":{{"i":{i}}}}}"#).unwrap();
    }
    writeln!(stdin, r#"{{"type":"STATE","value":{{"n":3}}}}"#).unwrap();
    stdin.flush().unwrap();
    // The STATE comes back while stdin is still open: nothing waits for the end.
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "{\"type\":\"STATE\",\"value\":{\"n\":3}}\n");
    writeln!(stdin, r#"{{"type":"RECORD","stream":"s","record":{{"i":4}}}}"#).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(r#""metric":"record_count","value":4,"tags":{"stream":"s"}"#),
        "{stderr}"
    );
    assert!(stderr.contains("discarded 4 records"), "{stderr}");
}

#[test]
fn invalid_input_fails() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flexcore-plugin-discard"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"{not json\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(65),
        "input that is not Singer is EX_DATAERR (permanent)"
    );
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("ERROR line 1: line is not JSON"));
}
