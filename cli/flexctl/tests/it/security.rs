//! `flexctl security …` honours `--output json` like every other command: one JSON object
//! on stdout saying what was written where.

use std::process::Command;

use serde_json::Value;

fn flexctl_json(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_flexctl"))
        .args(args)
        .args(["--output", "json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {stdout}"))
}

#[test]
fn security_commands_print_json_with_output_json() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let keys = keys.to_str().unwrap();
    let init = flexctl_json(&["security", "init", "--dir", keys]);
    let identities = init["identities_file"].as_str().unwrap().to_owned();
    assert!(std::path::Path::new(&identities).exists(), "{init}");
    let seeds = init["seed_files"].as_array().unwrap();
    assert!(seeds.len() >= 6, "{init}");

    let add = flexctl_json(&["security", "add", "--dir", keys, "runner-2", "runner"]);
    assert_eq!(add["added"], "runner-2");
    assert_eq!(add["role"], "runner");
    assert!(
        std::path::Path::new(add["seed_file"].as_str().unwrap()).exists(),
        "{add}"
    );

    let accounts = flexctl_json(&["security", "accounts", "--identities", &identities]);
    assert!(
        accounts["accounts"].as_str().unwrap().contains("accounts"),
        "{accounts}"
    );

    let remove = flexctl_json(&["security", "remove", "--dir", keys, "runner-2"]);
    assert_eq!(remove["removed"], "runner-2");
}
