//! The commands the docs show, run as a reader would run them: every shell line of the
//! fenced `sh`/`bash`/`shell` blocks of README.md's quick start and of docs/flexctl.md,
//! against a live `flexctl dev` stack (the binaries of this build, the example plugins),
//! each of which must exit 0 (and print something; some must print more).
//!
//! Blocks are picked up by themselves, so a command added to those docs is tested the
//! day it is added. What cannot run here is said where it is:
//! - a block right after `<!-- docs-test: skip -->` is not run (its lines must still be
//!   valid `flexctl` command lines, where they are flexctl's);
//! - [`SKIP`] lists single commands that cannot run in a test, with the reason;
//! - placeholders such as `<run id>` are replaced by [`PLACEHOLDERS`] (a shell expression
//!   finding the value as a reader would); an unknown one fails the test;
//! - commands that follow until Ctrl-C ([`follows`]) are stopped after a few seconds and
//!   pass when they printed something.
//!
//! The transcript in docs/flexctl.md (scripts/newcomer-transcript.sh writes it) is checked
//! without a stack: every `$ flexctl …` line in it must parse.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser as _;

use shell::{blocks, flexctl_words, words, Block};
use stack::Stack;

mod shell;
mod stack;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The docs whose commands run, and which part of each: `None` is the whole file, a
/// heading is its section (to the next heading of any level).
const DOCS: &[(&str, Option<&str>)] = &[
    ("README.md", Some("## Quick start")),
    ("docs/flexctl.md", None),
    ("examples/shell/README.md", None),
];

/// Commands (by how they start, comments stripped) that cannot run in a test, and why.
const SKIP: &[(&str, &str)] = &[
    ("scripts/dev.sh", "builds and starts the stack this test already runs"),
    ("scripts/test.sh", "runs every test, this one included"),
    (
        "flexctl plugin register my.wasm",
        "my.wasm stands for the reader's own plugin",
    ),
];

/// Placeholders in commands: the shell expression giving the value a reader would take
/// from the output of the commands before (with `flexctl` and `jq`, as the docs do), and
/// a sample value for when a command line is only parsed.
const PLACEHOLDERS: &[(&str, &str, &str)] = &[
    (
        "<run id>",
        "$(flexctl run list --limit 1 --output json | jq -r '.[0].run_id')",
        "0193a6f1-7c1e-7d3b-9d51-0f3f5a0b7c11",
    ),
    (
        "<schedule id>",
        "$(flexctl schedule list --output json | jq -r 'sort_by(.created_at) | last | .schedule_id')",
        "0193a6f1-7c1e-7d3b-9d51-0f3f5a0b7c12",
    ),
    (
        "<pipeline id>",
        "$(flexctl pipeline list --output json | jq -r '.[0].pipeline_id')",
        "0193a6f1-7c1e-7d3b-9d51-0f3f5a0b7c13",
    ),
];

/// What some commands must print on stdout (by how they start), beyond exiting 0.
const EXPECT: &[(&str, &str)] = &[
    ("flexctl status", "command"),
    ("flexctl pipeline list", "demo"),
    ("flexctl run start demo --follow", "succeeded"),
    ("flexctl plugin list", "generator"),
    ("flexctl pipeline create -f broken.yaml", "not_found"),
    ("examples/shell/walkthrough.sh 100", "run.succeeded: 100 records"),
];

/// Commands that follow until Ctrl-C: stopped after a while, fine when they printed.
fn follows(text: &str) -> bool {
    let words = words(text);
    let has = |w: &str| words.iter().any(|x| x == w);
    (has("events") && has("tail") && !has("--count")) || (has("logs") && has("--follow"))
}

fn skip_reason(text: &str) -> Option<&'static str> {
    SKIP.iter()
        .find(|(prefix, _)| text.starts_with(prefix))
        .map(|(_, why)| *why)
}

/// The placeholders (`<…>`) left in `text` after substitution.
fn unknown_placeholders(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        match after.find('>') {
            Some(close)
                if after[..close]
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == ' ' || c == '-') =>
            {
                found.push(format!("<{}>", &after[..close]));
                rest = &after[close + 1..];
            }
            _ => rest = after,
        }
    }
    found
}

/// `text` with its placeholders replaced by their shell expressions, and the gateway's
/// port the test's.
fn substitute(text: &str, http_port: u16) -> String {
    PLACEHOLDERS
        .iter()
        .fold(text.to_owned(), |t, (placeholder, expression, _)| {
            t.replace(placeholder, expression)
        })
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{http_port}"))
}

/// `text` with its placeholders replaced by sample values.
fn sample(text: &str) -> String {
    PLACEHOLDERS.iter().fold(text.to_owned(), |t, (placeholder, _, value)| {
        t.replace(placeholder, value)
    })
}

/// Every shown command of the docs, with the block it belongs to.
fn shown_blocks() -> Vec<Block> {
    DOCS.iter()
        .flat_map(|(file, section)| {
            let text = std::fs::read_to_string(workspace().join(file)).unwrap();
            blocks(file, &text, *section)
        })
        .collect()
}

/// The `$ flexctl …` lines of the newcomer transcript in docs/flexctl.md.
fn transcript_commands() -> Vec<String> {
    let text = std::fs::read_to_string(workspace().join("docs/flexctl.md")).unwrap();
    let begin = text
        .find("<!-- newcomer-transcript:begin -->")
        .expect("docs/flexctl.md has the newcomer transcript (scripts/newcomer-transcript.sh)");
    let end = text.find("<!-- newcomer-transcript:end -->").unwrap();
    text[begin..end]
        .lines()
        .filter_map(|l| l.strip_prefix("$ "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn shown_commands_are_recognised() {
    assert_eq!(
        flexctl_words("flexctl schedule create --cron '0 3 * * *' --timezone Europe/Berlin").unwrap(),
        [
            "flexctl",
            "schedule",
            "create",
            "--cron",
            "0 3 * * *",
            "--timezone",
            "Europe/Berlin"
        ]
    );
    assert_eq!(
        flexctl_words("mkdir -p d && flexctl completions bash > d/flexctl").unwrap(),
        ["flexctl", "completions", "bash"]
    );
    assert_eq!(flexctl_words("echo flexctl"), None);
    assert_eq!(
        flexctl_words("flexctl status 2>&1 >/dev/null").unwrap(),
        ["flexctl", "status"]
    );
    assert!(follows("flexctl events tail --last 20") && !follows("flexctl events tail --count 3"));
    assert!(follows("flexctl run logs R --follow") && !follows("flexctl run start demo --follow"));
    assert_eq!(
        unknown_placeholders("flexctl run show <run id> <x-y> a<b"),
        ["<run id>", "<x-y>"]
    );
    assert!(unknown_placeholders(&substitute("flexctl run show <run id>", 1)).is_empty());
    assert_eq!(
        skip_reason("scripts/dev.sh"),
        Some("builds and starts the stack this test already runs")
    );
}

/// Without a stack: every flexctl command line the docs show (skipped ones too) and every
/// one in the newcomer transcript is one flexctl accepts.
#[test]
fn every_flexctl_command_shown_parses() {
    let mut checked = 0;
    let shown = shown_blocks()
        .into_iter()
        .flat_map(|b| b.commands)
        .map(|c| (format!("{}:{}", c.file, c.line), c.text));
    let transcript = transcript_commands()
        .into_iter()
        .map(|c| ("docs/flexctl.md (transcript)".to_owned(), c));
    let mut seen_transcript = false;
    for (place, text) in shown.chain(transcript) {
        seen_transcript |= place.ends_with("(transcript)");
        let Some(argv) = flexctl_words(&sample(&text)) else {
            continue;
        };
        // Their options are flexcore-dev's, which checks them (tests of cli/flexcore-dev).
        if matches!(argv.get(1).map(String::as_str), Some("dev" | "bench")) {
            continue;
        }
        if let Err(error) = flexctl::cli::Cli::try_parse_from(&argv) {
            panic!("{place}: `{text}` is no valid flexctl command line:\n{error}");
        }
        checked += 1;
    }
    assert!(seen_transcript, "the transcript shows commands");
    assert!(checked >= 10, "only {checked} flexctl commands found in the docs");
}

#[tokio::test]
async fn the_commands_the_docs_show_run_against_a_live_stack() {
    flexcore_testkit::init_tracing();
    let tools = std::process::Command::new("bash")
        .args(["-c", "command -v jq && command -v curl"])
        .output()
        .unwrap();
    assert!(
        tools.status.success(),
        "the docs' commands use jq and curl (Debian: apt-get install jq curl)"
    );
    let blocks: Vec<Block> = shown_blocks().into_iter().filter(|b| !b.skip).collect();
    for shown in blocks.iter().flat_map(|b| &b.commands) {
        let left = unknown_placeholders(&substitute(&shown.text, 0));
        assert!(
            left.is_empty(),
            "{}:{}: `{}` has placeholders {left:?} the docs test cannot fill: add them to PLACEHOLDERS",
            shown.file,
            shown.line,
            shown.text
        );
    }
    let stack = Stack::start().await;
    // The demo's schedule fires every 5 minutes: paused, so that no slot takes the demo's
    // one active run while the docs start theirs.
    let paused = stack.flexctl(
        "schedule list --pipeline demo --output json | jq -r '.[].schedule_id' | xargs -n1 flexctl schedule pause",
    );
    assert!(paused.status.success(), "{}", String::from_utf8_lossy(&paused.stderr));
    // A slot may have fired before the pause.
    no_demo_run_active(&stack).await;

    let dir = tempfile::tempdir().unwrap();
    let mut problems = Vec::new();
    let mut ran = 0;
    for (b, block) in blocks.iter().enumerate() {
        let block_dir = dir.path().join(b.to_string());
        std::fs::create_dir(&block_dir).unwrap();
        for result in stack.run_block(block, &block_dir) {
            ran += 1;
            eprintln!(
                "{}:{}: `{}` exited {}",
                result.shown.file, result.shown.line, result.shown.text, result.status
            );
            if let Some(problem) = result.problem() {
                problems.push(format!(
                    "{}:{}: `{}` {problem}\n--- stdout\n{}\n--- stderr\n{}",
                    result.shown.file, result.shown.line, result.shown.text, result.stdout, result.stderr
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "commands of the docs failed:\n{}",
        problems.join("\n\n")
    );
    assert!(ran >= 10, "only {ran} commands ran");

    // The docs' backfill may have started a demo run.
    no_demo_run_active(&stack).await;
    run_start_in_json(&stack);
}

/// Waits until no run of the demo is active: it takes one at a time, so a run the docs
/// start would be refused meanwhile.
async fn no_demo_run_active(stack: &Stack) {
    flexcore_testkit::wait_until(Duration::from_secs(120), "no demo run active", || {
        let out = stack.flexctl("run list --pipeline demo --output json");
        let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let active = runs.as_array().is_none_or(|runs| {
            runs.iter()
                .any(|r| matches!(r["state"].as_str(), Some("requested" | "running" | "awaiting_retry")))
        });
        std::future::ready(!active)
    })
    .await
    .unwrap();
}

/// `run start --output json` on the live stack: the time queued and running, a repeat
/// with the same idempotency key, and errors as JSON on stderr.
fn run_start_in_json(stack: &Stack) {
    let start = || stack.flexctl("run start demo --follow --timeout 5m --idempotency-key docs-1 --output json");
    let out = start();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(first["state"], "succeeded", "{first}");
    let (queued, running, total) = (
        first["queued_seconds"].as_f64().unwrap(),
        first["running_seconds"].as_f64().unwrap(),
        first["seconds"].as_f64().unwrap(),
    );
    assert!(queued >= 0.0 && running > 0.0, "{first}");
    assert!(
        queued + running <= total + 1.0,
        "both within the time flexctl waited: {first}"
    );
    // The same key again: the same run, not a second one, followed to its end again.
    let out = start();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["run_id"], first["run_id"], "{again}");
    assert_eq!(again["state"], "succeeded", "{again}");

    let error = |out: &std::process::Output| -> serde_json::Value {
        assert!(!out.status.success());
        assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
        serde_json::from_slice(&out.stderr)
            .unwrap_or_else(|e| panic!("stderr is no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)))
    };
    let missing = error(&stack.flexctl("run show 0193a6f1-7c1e-7d3b-9d51-0f3f5a0b7c11 --output json"));
    assert_eq!(missing["error"]["code"], "not_found", "{missing}");
    assert_eq!(missing["error"]["details"]["reason"], "not_found", "{missing}");
    let out = stack.flexctl("run start --output json");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(error(&out)["error"]["code"], "usage");
}
