//! A `flexctl dev` stack standing for the reader's checkout, and a shell in it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use flexcore_testkit::TestDb;

use super::shell::{words, Block, Shown};
use super::{follows, skip_reason, substitute, workspace, EXPECT};

/// A `flexctl dev` stack in a directory of its own that stands for the reader's checkout:
/// its state in `.flexcore/` there (the paths the docs use), `examples/` linked in.
pub(super) struct Stack {
    pub(super) home: tempfile::TempDir,
    pub(super) nats_url: String,
    pub(super) http_port: u16,
    pub(super) process: std::process::Child,
    pub(super) _db: TestDb,
}

impl Stack {
    pub(super) async fn start() -> Self {
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

    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(self.home.path().join("dev.log")).unwrap_or_default()
    }

    /// A shell as the reader's second terminal: in the checkout, flexctl on PATH, the
    /// NATS URL and the operator identity `flexctl dev` printed exported.
    pub(super) fn shell(&self, script: &str) -> Command {
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
    pub(super) fn flexctl(&self, args: &str) -> std::process::Output {
        self.shell(&format!("flexctl {args}")).output().unwrap()
    }

    /// Runs a block's commands in one shell (so its variables and exports carry on), each
    /// with its output in files of `dir`; returns what each did.
    pub(super) fn run_block(&self, block: &Block, dir: &Path) -> Vec<Ran> {
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
                (Some("flexctl"), true) => format!("timeout -s INT 20 {text}"),
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
pub(super) struct Ran {
    pub(super) shown: Shown,
    pub(super) follower: bool,
    pub(super) status: i32,
    pub(super) stdout: String,
    pub(super) stderr: String,
}

impl Ran {
    /// Why it did not do what the docs promise, if it did not.
    pub(super) fn problem(&self) -> Option<String> {
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
