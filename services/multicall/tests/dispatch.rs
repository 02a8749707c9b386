//! The multi-call binary runs the program it is named as, the runner's compile check
//! under any name, and refuses a name it does not know.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the binary through a link named `name`, with `args` and `stdin`.
fn run_as(dir: &Path, name: &str, args: &[&str], stdin: &[u8]) -> Output {
    let link = dir.join(name);
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_flexcore"), &link).unwrap();
    }
    let mut child = Command::new(&link)
        .args(args)
        .env("FLEXCORE_CONFIG_DIR", workspace().join("config"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn each_name_runs_its_program() {
    let dir = tempfile::tempdir().unwrap();
    // flexctl: clap's version line, named after the link.
    let out = run_as(dir.path(), "flexctl", &["--version"], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("flexctl {}", env!("CARGO_PKG_VERSION"))
    );
    // The command service: its own refusal of an unknown argument.
    let out = run_as(dir.path(), "flexcore-command", &["bogus"], b"");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("`flexcore-command setup` creates the JetStream streams"),
        "{}",
        text(&out.stderr)
    );
    // The runner's compile check, as the runner re-runs its own executable: a module that
    // compiles, and bytes that are none.
    let module = b"\0asm\x01\0\0\0";
    for name in ["flexcore-runner", "flexcore"] {
        let out = run_as(
            dir.path(),
            name,
            &["__flexcore-compile-check", "30", "4294967296", "0", "4294967296"],
            module,
        );
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        let out = run_as(
            dir.path(),
            name,
            &["__flexcore-compile-check", "30", "4294967296", "0", "4294967296"],
            b"nope",
        );
        assert!(!out.status.success(), "{name}: not a module, yet it compiled");
    }
}

#[test]
fn an_unknown_name_is_refused_with_the_names_it_answers_to() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_as(dir.path(), "flexcore", &[], b"");
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("`flexcore` is not a FlexCore program"), "{stderr}");
    for name in [
        "flexcore-command",
        "flexcore-projection",
        "flexcore-scheduler",
        "flexcore-runner",
        "flexcore-gateway",
        "flexctl",
    ] {
        assert!(stderr.contains(name), "{stderr}");
    }
}
