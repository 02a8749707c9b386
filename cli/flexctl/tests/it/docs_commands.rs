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
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Parser as _;
use flexcore_testkit::TestDb;

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

/// One command shown in the docs: where, and its text (continuation lines joined,
/// comment stripped).
#[derive(Debug, Clone, PartialEq)]
struct Shown {
    file: String,
    line: usize,
    text: String,
}

/// A fenced shell block: its commands, and whether it is marked not to run.
#[derive(Debug, Clone, PartialEq)]
struct Block {
    skip: bool,
    commands: Vec<Shown>,
}

/// The shell blocks of `markdown` (in `section`, if given).
fn blocks(file: &str, markdown: &str, section: Option<&str>) -> Vec<Block> {
    let mut found = Vec::new();
    let mut in_section = section.is_none();
    let mut lines = markdown.lines().enumerate().peekable();
    let mut skip_next = false;
    while let Some((i, line)) = lines.next() {
        if let Some(heading) = section {
            if line.starts_with('#') && !line.starts_with("#!") {
                in_section = line.trim() == heading;
                continue;
            }
        }
        if !in_section {
            continue;
        }
        if line.trim() == "<!-- docs-test: skip -->" {
            skip_next = true;
            continue;
        }
        let fence = line.trim_start();
        let Some(lang) = fence.strip_prefix("```") else {
            if !line.trim().is_empty() {
                skip_next = false;
            }
            continue;
        };
        let shell = matches!(lang.trim(), "sh" | "bash" | "shell");
        let mut body = Vec::new();
        for (j, inner) in lines.by_ref() {
            if inner.trim_start().starts_with("```") {
                break;
            }
            body.push((j + 1, inner));
        }
        if shell {
            found.push(Block {
                skip: skip_next,
                commands: commands(file, &body),
            });
        }
        skip_next = false;
        let _ = i;
    }
    found
}

/// The commands of a block's lines: a line continued by `\` or by an open quote joins the
/// next, comments go, and `;` outside quotes and `$(…)` separates commands; a here-document
/// (`<<'EOF'` … `EOF`) belongs to its command as it is.
fn commands(file: &str, lines: &[(usize, &str)]) -> Vec<Shown> {
    let mut out: Vec<Shown> = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    let mut scan = Scan::default();
    let mut here_document: Option<String> = None;
    for &(number, line) in lines {
        if let Some(end) = &here_document {
            if let Some(command) = out.last_mut() {
                command.text.push('\n');
                command.text.push_str(line);
            }
            if line.trim() == end {
                here_document = None;
            }
            continue;
        }
        if current.is_empty() {
            start = number;
        }
        let (pieces, continued) = scan.split(line);
        for (k, piece) in pieces.iter().enumerate() {
            current.push_str(piece);
            let last = k + 1 == pieces.len();
            if !last || !continued {
                let text = current.trim().to_owned();
                if !text.is_empty() {
                    here_document = here_document_end(&text);
                    out.push(Shown {
                        file: file.to_owned(),
                        line: start,
                        text,
                    });
                }
                current.clear();
                start = number;
            }
        }
        if continued {
            current.push('\n');
        }
    }
    out
}

/// The word that ends the here-document `text` starts (`cat > f <<'EOF'`: `EOF`).
fn here_document_end(text: &str) -> Option<String> {
    let (_, rest) = text.split_once("<<")?;
    if rest.starts_with('<') {
        return None;
    }
    let word = rest.trim_start_matches('-').split_whitespace().next()?;
    Some(word.trim_matches(|c| c == '\'' || c == '"').to_owned())
}

/// Where a scan of shell text is: inside which quotes and how deep in `$(…)`.
#[derive(Debug, Default)]
struct Scan {
    quote: Option<char>,
    depth: usize,
}

impl Scan {
    /// `line` cut at its top-level `;`s, without its comment; and whether the command
    /// goes on on the next line (a trailing `\`, an open quote or `$(`).
    fn split(&mut self, line: &str) -> (Vec<String>, bool) {
        let mut pieces = vec![String::new()];
        let mut chars = line.chars().peekable();
        let mut previous = ' ';
        while let Some(c) = chars.next() {
            let piece = pieces.last_mut().unwrap_or_else(|| unreachable!());
            match (self.quote, c) {
                (Some(q), c) if c == q => {
                    self.quote = None;
                    piece.push(c);
                }
                (Some('"'), '\\') => {
                    piece.push(c);
                    if let Some(next) = chars.next() {
                        piece.push(next);
                    }
                }
                (Some(_), c) => piece.push(c),
                (None, '\'' | '"') => {
                    self.quote = Some(c);
                    piece.push(c);
                }
                (None, '#') if previous.is_whitespace() => break,
                (None, '(') => {
                    self.depth += 1;
                    piece.push(c);
                }
                (None, ')') => {
                    self.depth = self.depth.saturating_sub(1);
                    piece.push(c);
                }
                (None, ';') if self.depth == 0 => pieces.push(String::new()),
                (None, c) => piece.push(c),
            }
            previous = c;
        }
        let last = pieces.last_mut().unwrap_or_else(|| unreachable!());
        let trimmed = last.trim_end().to_owned();
        let backslash = self.quote.is_none() && trimmed.ends_with('\\');
        if backslash {
            *last = trimmed.trim_end_matches('\\').to_owned();
        }
        (pieces, backslash || self.quote.is_some() || self.depth > 0)
    }
}

/// `text` as words, as a shell without expansions would split it (quotes removed).
fn words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => word.get_or_insert_with(String::new).extend(chars.next()),
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, '\\') => word.get_or_insert_with(String::new).extend(chars.next()),
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// The flexctl command line of `text`, when it is one (up to a redirection or a pipe).
fn flexctl_words(text: &str) -> Option<Vec<String>> {
    let all = words(text);
    let start = all.iter().position(|w| w == "flexctl" || w.ends_with("/flexctl"))?;
    // Only when flexctl is the command itself (`mkdir -p … && flexctl …` too).
    if start > 0 && !matches!(all[start - 1].as_str(), "&&" | "||" | "|") {
        return None;
    }
    let end = all[start..]
        .iter()
        .position(|w| {
            // A redirection (`>f`, `2>&1`, `<in`) or what joins the next command.
            w.trim_start_matches(|c: char| c.is_ascii_digit())
                .starts_with(['>', '<'])
                || matches!(w.as_str(), "|" | "&&" | "||")
        })
        .map_or(all.len(), |n| start + n);
    Some(all[start..end].to_vec())
}

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
fn blocks_split_into_commands_as_a_shell_would() {
    let md = "# T\n## Quick start\nx\n```sh\na --b 'c; d' # note\ne; f \"g\\\" #h\" \\\n  --i\nX=$(curl -d '{\"a\":\n 1}' | jq .a)\n```\n<!-- docs-test: skip -->\n```bash\nflexctl dev\n```\n```yaml\nk: v\n```\n## Next\n```sh\nnot me\n```\n";
    let found = blocks("f.md", md, Some("## Quick start"));
    assert_eq!(found.len(), 2, "{found:?}");
    let texts: Vec<&str> = found[0].commands.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "a --b 'c; d'",
            "e",
            "f \"g\\\" #h\" \n  --i",
            "X=$(curl -d '{\"a\":\n 1}' | jq .a)"
        ]
    );
    assert_eq!(found[0].commands[0].line, 5);
    assert_eq!(found[0].commands[2].line, 6);
    assert_eq!(found[0].commands[3].line, 8);
    assert!(!found[0].skip && found[1].skip);

    let here = "```sh\ncat > p.yaml <<'EOF'\nname: x # not a comment\nEOF\nflexctl x -f p.yaml\n```\n";
    let found = blocks("f.md", here, None);
    let texts: Vec<&str> = found[0].commands.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "cat > p.yaml <<'EOF'\nname: x # not a comment\nEOF",
            "flexctl x -f p.yaml"
        ]
    );
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

/// A `flexctl dev` stack in a directory of its own that stands for the reader's checkout:
/// its state in `.flexcore/` there (the paths the docs use), `examples/` linked in.
struct Stack {
    home: tempfile::TempDir,
    nats_url: String,
    http_port: u16,
    process: std::process::Child,
    _db: TestDb,
}

impl Stack {
    async fn start() -> Self {
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_flexctl"));
        let plugins = exe.parent().and_then(Path::parent).unwrap().join("plugins");
        assert!(
            plugins.join("generator.wasm").is_file(),
            "{} has no example plugins: run `bash plugins/build.sh` first",
            plugins.display()
        );
        let home = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(workspace().join("examples"), home.path().join("examples")).unwrap();
        let db = TestDb::create_empty().await.unwrap();
        let nats_url = format!("nats://127.0.0.1:{}", flexcore_testkit::unused_port().unwrap());
        let http_port = flexcore_testkit::unused_port().unwrap();
        let log = std::fs::File::create(home.path().join("dev.log")).unwrap();
        let process = Command::new(&exe)
            .args([
                "--nats-url",
                &nats_url,
                "dev",
                "--database-url",
                &db.url,
                "--state-dir",
                ".flexcore",
            ])
            .args(["--plugins-dir", plugins.to_str().unwrap(), "--admin-port", "0"])
            .args(["--http-port", &http_port.to_string()])
            .env("FLEXCORE_CONFIG_DIR", workspace().join("config"))
            .env_remove("FLEXCORE__NATS__URL")
            .current_dir(home.path())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let stack = Self {
            home,
            nats_url,
            http_port,
            process,
            _db: db,
        };
        flexcore_testkit::wait_until(Duration::from_secs(240), "flexctl dev to be up", || {
            let text = stack.log();
            assert!(!text.contains("Error:"), "flexctl dev failed:\n{text}");
            std::future::ready(text.contains("try next"))
        })
        .await
        .unwrap();
        stack
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.home.path().join("dev.log")).unwrap_or_default()
    }

    /// A shell as the reader's second terminal: in the checkout, flexctl on PATH, the
    /// NATS URL and the operator identity `flexctl dev` printed exported.
    fn shell(&self, script: &str) -> Command {
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_flexctl"))
            .parent()
            .unwrap()
            .to_owned();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        let keys = self.home.path().join(".flexcore/keys");
        let mut c = Command::new("bash");
        c.args(["-c", script])
            .current_dir(self.home.path())
            .env("PATH", path)
            .env("HOME", self.home.path())
            .env("FLEXCORE_CONFIG_DIR", workspace().join("config"))
            .env("FLEXCORE__NATS__URL", &self.nats_url)
            .env("FLEXCORE__NATS__NKEY_SEED_FILE", keys.join("flexctl.nk"))
            .env("FLEXCORE__SECURITY__IDENTITIES_FILE", keys.join("identities.json"));
        c
    }

    /// flexctl with `args` in that shell.
    fn flexctl(&self, args: &str) -> std::process::Output {
        self.shell(&format!("flexctl {args}")).output().unwrap()
    }

    /// Runs a block's commands in one shell (so its variables and exports carry on), each
    /// with its output in files of `dir`; returns what each did.
    fn run_block(&self, block: &Block, dir: &Path) -> Vec<Ran> {
        let mut script = String::from("set -u -o pipefail\n");
        let mut planned = Vec::new();
        for (i, shown) in block.commands.iter().enumerate() {
            if let Some(why) = skip_reason(&shown.text) {
                eprintln!("{}:{}: skipped `{}`: {why}", shown.file, shown.line, shown.text);
                continue;
            }
            let text = substitute(&shown.text, self.http_port);
            let follower = follows(&text);
            // flexctl itself is stopped when it takes too long (a follower after a while).
            let command = match (words(&text).first().map(String::as_str), follower) {
                (Some("flexctl"), true) => format!("timeout -s INT 8 {text}"),
                (Some("flexctl"), false) => format!("timeout -s INT 300 {text}"),
                _ => text.clone(),
            };
            let base = dir.join(i.to_string());
            script.push_str(&format!(
                "{{ {command}\n}} >'{0}.out' 2>'{0}.err'; echo $? >'{0}.status'\n",
                base.display()
            ));
            planned.push((shown.clone(), base, follower));
        }
        let out = self.shell(&script).output().unwrap();
        assert!(
            out.status.success(),
            "the block's shell failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        planned
            .into_iter()
            .map(|(shown, base, follower)| {
                let read = |ext: &str| std::fs::read_to_string(base.with_extension(ext)).unwrap_or_default();
                Ran {
                    status: read("status").trim().parse().unwrap_or(-1),
                    stdout: read("out"),
                    stderr: read("err"),
                    shown,
                    follower,
                }
            })
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Ctrl-C, as a reader stops it; it stops its services and servers.
        if let Ok(pid) = i32::try_from(self.process.id()) {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
            }
        }
        let _ = self.process.wait();
    }
}

/// What a shown command did.
#[derive(Debug)]
struct Ran {
    shown: Shown,
    follower: bool,
    status: i32,
    stdout: String,
    stderr: String,
}

impl Ran {
    /// Why it did not do what the docs promise, if it did not.
    fn problem(&self) -> Option<String> {
        let text = &self.shown.text;
        let ok = self.status == 0 || (self.follower && self.status == 124 && !self.stdout.is_empty());
        if !ok {
            return Some(format!("exited {}", self.status));
        }
        // Assignments, exports and redirections print nothing; everything else something.
        let quiet = text.starts_with("export ")
            || words(text)
                .first()
                .is_some_and(|w| w.contains('=') && !w.starts_with('-'))
            || text.contains(" > ");
        if !quiet && self.stdout.trim().is_empty() {
            return Some("printed nothing on stdout".to_owned());
        }
        EXPECT
            .iter()
            .filter(|(prefix, _)| text.starts_with(prefix))
            .find(|(_, expected)| !self.stdout.contains(expected))
            .map(|(_, expected)| format!("did not print {expected:?}"))
    }
}

#[tokio::test]
async fn the_commands_the_docs_show_run_against_a_live_stack() {
    flexcore_testkit::init_tracing();
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

    run_start_in_json(&stack);
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
