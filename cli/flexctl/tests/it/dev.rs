//! `flexctl dev` as a user runs it: the real flexctl binary (which hands `dev` and
//! `bench` to the flexcore-dev binary beside it) starts a private nats-server
//! and the four service binaries, registers the example plugins, creates and runs the
//! demo; then every flexctl command is used against that stack as a process (JSON
//! output parsed), Ctrl-C (SIGTERM) stops it all, and a second `flexctl dev` reuses
//! what exists.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use flexcore_testkit::TestDb;
use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `<target>/plugins`, where plugins/build.sh puts the modules (next to `<target>/debug`).
fn plugins_dir() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_flexctl"));
    let dir = exe.parent().and_then(Path::parent).unwrap().join("plugins");
    assert!(
        dir.join("generator.wasm").is_file(),
        "{} has no example plugins: run `bash plugins/build.sh` first",
        dir.display()
    );
    dir
}

fn free_port() -> u16 {
    flexcore_testkit::unused_port().unwrap()
}

struct Dev {
    nats_url: String,
    http_port: u16,
    db: TestDb,
    state: tempfile::TempDir,
}

impl Dev {
    /// A stack of its own: a nats-server it starts, an empty database, a state directory.
    async fn private() -> Self {
        Self {
            nats_url: format!("nats://127.0.0.1:{}", free_port()),
            http_port: free_port(),
            db: TestDb::create_empty().await.unwrap(),
            state: tempfile::tempdir().unwrap(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_flexctl"));
        // flexctl's identity as `flexctl dev` generated it (and prints it to export).
        let keys = self.state.path().join("keys");
        c.args(["--nats-url", &self.nats_url])
            .args(args)
            .env("FLEXCORE_CONFIG_DIR", workspace().join("config"))
            .env("FLEXCORE__NATS__NKEY_SEED_FILE", keys.join("flexctl.nk"))
            .env("FLEXCORE__SECURITY__IDENTITIES_FILE", keys.join("identities.json"))
            .env_remove("FLEXCORE__NATS__URL")
            // `dev`'s --database-url (bench commands' too).
            .env("FLEXCORE__DATABASE__URL", &self.db.url)
            .current_dir(workspace());
        c
    }

    fn dev(&self, extra: &[&str], log: &Path) -> Command {
        let plugins = plugins_dir();
        let state = self.state.path().to_str().unwrap().to_owned();
        let http = self.http_port.to_string();
        let mut args = vec![
            "dev",
            "--database-url",
            &self.db.url,
            "--state-dir",
            &state,
            "--plugins-dir",
            plugins.to_str().unwrap(),
            // Any free port: four consecutive ones picked here could be taken by the time
            // the services bind them (outgoing connections use the same range).
            "--admin-port",
            "0",
            "--http-port",
            &http,
        ];
        args.extend_from_slice(extra);
        let mut c = self.command(&args);
        let file = std::fs::File::create(log).unwrap();
        c.stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file));
        c
    }

    /// Runs flexctl with `--output json`; returns the parsed stdout, or panics with stderr.
    fn json(&self, args: &[&str]) -> Value {
        let out = self.run(&[args, &["--output", "json"]].concat());
        assert!(
            out.status.success(),
            "flexctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "flexctl {args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// `GET path` on the stack's HTTP gateway: the status and the body.
    fn http_get(&self, path: &str, bearer: Option<&str>) -> (u16, String) {
        use std::io::{Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.http_port)).unwrap();
        let auth = bearer
            .map(|b| format!("Authorization: Bearer {b}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    flexcore_testkit::wait_until(timeout, what, || std::future::ready(check()))
        .await
        .unwrap();
}

/// Waits until the `flexctl dev` logging to `log` says what to try next (it is up).
async fn wait_up(log: &Path, within: Duration) {
    wait_for("flexctl dev to be up", within, || {
        let text = log_text(log);
        assert!(!text.contains("Error:"), "flexctl dev failed:\n{text}");
        text.contains("try next")
    })
    .await;
}

/// Ctrl-C (SIGINT) to a `flexctl dev`, which must then stop everything and exit cleanly.
async fn interrupt(mut stack: std::process::Child, log: &Path) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(stack.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let status = tokio::task::spawn_blocking(move || stack.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "flexctl dev exited {status}:\n{}", log_text(log));
}

/// The stderr of a flexctl run that must have failed.
fn failed(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "flexctl succeeded: {stderr}");
    stderr
}

fn log_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test]
async fn flexctl_dev_runs_the_stack_and_every_command_works_against_it() {
    flexcore_testkit::init_tracing();
    let dev = Dev::private().await;
    let log = dev.state.path().join("dev.log");
    let stack = dev.dev(&[], &log).spawn().unwrap();

    // The demo run ends, then flexctl dev says what to try next.
    wait_up(&log, Duration::from_secs(240)).await;
    let text = log_text(&log);
    assert!(text.contains("starting"), "a private nats-server was started:\n{text}");
    assert!(text.contains("demo run") && text.contains("succeeded"), "{text}");
    for service in ["command |", "projection |", "scheduler |", "runner |", "gateway |"] {
        assert!(text.contains(service), "{service} lines are prefixed:\n{text}");
    }
    let output = dev.state.path().join("demo-output/demo/orders.jsonl");
    let lines = std::fs::read_to_string(&output).unwrap().lines().count();
    assert_eq!(lines, 10_000, "the demo wrote every record to {}", output.display());

    // status: every service seen.
    let status = dev.json(&["status"]);
    assert_eq!(status["command"]["up"], Value::Bool(true), "{status}");
    assert_eq!(status["projection"]["up"], Value::Bool(true), "{status}");
    assert_eq!(status["schedulers"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(status["runners"][0]["slots"], 4, "{status}");
    assert!(status["projections"].as_array().unwrap().len() >= 4, "{status}");

    // The HTTP API: anonymous (admin) in dev; a key made with `flexctl api-key` works, a
    // revoked one does not.
    let (status, body) = dev.http_get("/api/v1/flexcore/pipelines", None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"name\":\"demo\""), "{body}");
    let keys = dev.state.path().join("api-keys.json");
    let created = dev.json(&[
        "api-key",
        "create",
        "ci",
        "--role",
        "viewer",
        "--file",
        keys.to_str().unwrap(),
    ]);
    let key = created["key"].as_str().unwrap().to_owned();
    let listed = dev.json(&["api-key", "list", "--file", keys.to_str().unwrap()]);
    assert_eq!(listed[0]["name"], "ci");
    assert!(!listed.to_string().contains(&key), "the list never shows a key");
    wait_for("the gateway to accept the new key", Duration::from_secs(10), || {
        dev.http_get("/api/v1/flexcore/status", Some(&key)).0 == 200
    })
    .await;
    dev.json(&["api-key", "revoke", "ci", "--file", keys.to_str().unwrap()]);
    wait_for("the gateway to refuse the revoked key", Duration::from_secs(10), || {
        dev.http_get("/api/v1/flexcore/status", Some(&key)).0 == 401
    })
    .await;

    // plugins
    let plugins = dev.json(&["plugin", "list"]);
    let names: Vec<&str> = plugins
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["csv", "discard", "generator", "jsonl", "mapper"]);
    let shown = dev.json(&["plugin", "show", "jsonl@0.1.0"]);
    assert_eq!(shown["grants"]["dirs"][0]["guest_path"], "/output");
    dev.json(&["plugin", "deprecate", "csv@0.1.0", "--reason", "test"]);
    wait_for("csv deprecated", Duration::from_secs(10), || {
        dev.json(&["plugin", "show", "csv@0.1.0"])["state"] == "deprecated"
    })
    .await;

    // pipelines
    let pipelines = dev.json(&["pipeline", "list"]);
    assert_eq!(pipelines[0]["name"], "demo");
    let shown = dev.json(&["pipeline", "show", "demo"]);
    assert_eq!(shown["schedules"][0]["spec"]["timezone"], "Europe/Berlin");
    assert_eq!(shown["pipeline"]["definition"]["steps"].as_array().unwrap().len(), 3);

    // A bad file: refused locally with its line, nothing sent.
    let bad = dev.state.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "name: broken\nowner: me\nsteps:\n  - plugin: generator@0.1.0\n    confg: {}\n",
    )
    .unwrap();
    let out = dev.run(&["pipeline", "create", "-f", bad.to_str().unwrap()]);
    let stderr = failed(&out);
    assert!(stderr.contains("bad.yaml:5:") && stderr.contains("confg"), "{stderr}");
    // A file the service refuses (config not matching the plugin's schema): the line too.
    std::fs::write(
        &bad,
        "name: wrong-config\nowner: me\nsteps:\n  - plugin: generator@0.1.0\n    config:\n      records: many\n  - plugin: discard@0.1.0\n",
    )
    .unwrap();
    let out = dev.run(&["pipeline", "create", "-f", bad.to_str().unwrap()]);
    let stderr = failed(&out);
    assert!(stderr.contains("bad.yaml:6:") && stderr.contains("records"), "{stderr}");

    // A good file: created, then updated, paused, resumed.
    let good = dev.state.path().join("small.yaml");
    let small = "name: small\nowner: me\nsteps:\n  - plugin: generator@0.1.0\n    config: {records: 5}\n  - plugin: discard@0.1.0\n";
    std::fs::write(&good, small).unwrap();
    let created = dev.json(&["pipeline", "create", "-f", good.to_str().unwrap()]);
    assert_eq!(created["name"], "small");
    let again = dev.run(&["pipeline", "create", "-f", good.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("pipeline update small"));
    std::fs::write(&good, small.replace("records: 5", "records: 7")).unwrap();
    dev.json(&["pipeline", "update", "small", "-f", good.to_str().unwrap()]);
    dev.json(&["pipeline", "pause", "small", "--reason", "test"]);
    let refused = dev.run(&["run", "start", "small"]);
    assert!(!refused.status.success(), "a paused pipeline starts no run");
    dev.json(&["pipeline", "resume", "small"]);

    // runs: start and follow to the end.
    let run = dev.json(&["run", "start", "small", "--follow", "--timeout", "2m"]);
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["counters"]["gen"], 7, "{run}");
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    wait_for("run projected", Duration::from_secs(10), || {
        dev.run(&["run", "show", &run_id, "--output", "json"]).status.success()
    })
    .await;
    let shown = dev.json(&["run", "show", &run_id]);
    assert_eq!(shown["records_total"], 7);
    let runs = dev.json(&["run", "list", "--pipeline", "small"]);
    assert_eq!(runs.as_array().unwrap().len(), 1);
    let logs = dev.run(&["run", "logs", &run_id]);
    assert!(logs.status.success(), "{}", String::from_utf8_lossy(&logs.stderr));

    // events: the last events of that run, then stop.
    let tail = dev.run(&[
        "events",
        "tail",
        "--aggregate",
        &run_id,
        "--all",
        "--count",
        "3",
        "--output",
        "json",
    ]);
    let events: Vec<Value> = String::from_utf8_lossy(&tail.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types[0], "run.requested", "{types:?}");

    // schedules
    let schedules = dev.json(&["schedule", "list", "--pipeline", "demo"]);
    let schedule = schedules[0]["schedule_id"].as_str().unwrap().to_owned();
    dev.json(&["schedule", "pause", &schedule]);
    dev.json(&["schedule", "resume", &schedule]);
    let created = dev.json(&[
        "schedule",
        "create",
        "--pipeline",
        "small",
        "--cron",
        "0 3 * * *",
        "--paused",
    ]);
    let bad = dev.run(&[
        "schedule",
        "create",
        "--pipeline",
        "small",
        "--cron",
        "0 3 * * *",
        "--timezone",
        "Mars/Base",
    ]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("Mars/Base"));
    dev.json(&["schedule", "delete", created["schedule_id"].as_str().unwrap()]);

    // Ctrl-C: everything stops, cleanly.
    interrupt(stack, &log).await;
    let port = dev.nats_url.rsplit(':').next().unwrap();
    assert!(
        std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err(),
        "the private nats-server stopped"
    );

    // Again, to the end of the demo: what exists is reused.
    let log2 = dev.state.path().join("dev2.log");
    let status = dev.dev(&["--exit-after-demo"], &log2).status().unwrap();
    let text = log_text(&log2);
    assert!(status.success(), "{text}");
    assert!(
        text.contains("already registered") && text.contains("pipeline demo already exists"),
        "{text}"
    );
}

#[tokio::test]
async fn a_missing_service_binary_is_explained() {
    let dev = Dev {
        nats_url: "nats://127.0.0.1:4222".to_owned(),
        http_port: free_port(),
        db: TestDb::create_empty().await.unwrap(),
        state: tempfile::tempdir().unwrap(),
    };
    let empty = tempfile::tempdir().unwrap();
    let out = dev
        .command(&["dev", "--bin-dir", empty.path().to_str().unwrap(), "--state-dir"])
        .arg(dev.state.path())
        .output()
        .unwrap();
    let stderr = failed(&out);
    assert!(stderr.contains("cargo build --release --bins"), "{stderr}");
}

#[test]
fn dev_and_bench_are_flexcore_devs_and_a_missing_one_is_explained() {
    // Help and errors name the command as typed: flexcore-dev runs as flexctl.
    let out = Command::new(env!("CARGO_BIN_EXE_flexctl"))
        .args(["bench", "commands", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", failed(&out));
    assert!(help.contains("Usage: flexctl bench commands"), "{help}");
    assert!(help.contains("--database-url"), "{help}");
    // A flexctl alone, with nothing on PATH either.
    let alone = tempfile::tempdir().unwrap();
    let flexctl = alone.path().join("flexctl");
    std::fs::copy(env!("CARGO_BIN_EXE_flexctl"), &flexctl).unwrap();
    let out = Command::new(&flexctl)
        .args(["dev", "--no-demo"])
        .env("PATH", alone.path())
        .output()
        .unwrap();
    let stderr = failed(&out);
    assert!(
        stderr.contains("run by flexcore-dev") && stderr.contains("cargo build --release -p flexcore-dev"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_nats_server_without_jetstream_is_explained() {
    let port = free_port();
    let mut server = Command::new(if Path::new("/usr/sbin/nats-server").is_file() {
        "/usr/sbin/nats-server"
    } else {
        "nats-server"
    })
    .args(["-a", "127.0.0.1", "-p", &port.to_string()])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let dev = Dev {
        nats_url: format!("nats://127.0.0.1:{port}"),
        http_port: free_port(),
        db: TestDb::create_empty().await.unwrap(),
        state: tempfile::tempdir().unwrap(),
    };
    wait_for("nats-server up", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    let out = dev
        .command(&["dev", "--state-dir"])
        .arg(dev.state.path())
        .output()
        .unwrap();
    server.kill().unwrap();
    let _ = server.wait();
    let stderr = failed(&out);
    assert!(stderr.contains("JetStream is off"), "{stderr}");
}

#[tokio::test]
async fn without_a_reachable_postgres_flexctl_dev_starts_a_private_one_and_stops_it() {
    let pg_port = free_port();
    let mut dev = Dev {
        nats_url: format!("nats://127.0.0.1:{}", free_port()),
        http_port: free_port(),
        db: TestDb::create_empty().await.unwrap(),
        state: tempfile::tempdir().unwrap(),
    };
    dev.db.url = format!("postgres://postgres@127.0.0.1:{pg_port}/flexcore");
    for round in ["first", "second"] {
        let log = dev.state.path().join(format!("{round}.log"));
        let status = dev.dev(&["--no-demo", "--exit-after-demo"], &log).status().unwrap();
        let text = log_text(&log);
        assert!(status.success(), "{round} run:\n{text}");
        assert!(text.contains("starting a private one"), "{text}");
        assert!(text.contains("stopped the private Postgres"), "{text}");
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", pg_port)).is_err(),
            "the private Postgres stopped"
        );
    }
    assert!(dev.state.path().join("postgres/PG_VERSION").is_file());
}

/// Issue 7: a secret referenced by a pipeline never appears in any log line of any
/// service, even at debug level, while the plugin did receive it (its own stderr line,
/// stored as a run log line, shows it redacted); every service logs JSON lines naming
/// the service.
#[tokio::test]
async fn a_referenced_secret_never_appears_in_any_log_line() {
    let secret = format!("/nonexistent/s3cr3t-{}", uuid::Uuid::new_v4().simple());
    let dev = Dev::private().await;
    let log = dev.state.path().join("dev.log");
    let mut stack = dev
        .dev(&["--no-demo", "--log-format", "json"], &log)
        .env("FLEXCORE_SECRET_API_PATH", &secret)
        .env(
            "RUST_LOG",
            "debug,h2=info,hyper=info,tower=info,sqlx=info,async_nats=info",
        )
        .spawn()
        .unwrap();
    wait_up(&log, Duration::from_secs(120)).await;
    let plugins = plugins_dir();
    for (file, name, kind) in [("misbehave", "leaky", "extractor"), ("discard", "discard", "loader")] {
        let module = plugins.join(format!("{file}.wasm"));
        let out = dev.run(&[
            "plugin",
            "register",
            module.to_str().unwrap(),
            "--name",
            name,
            "--version",
            "1.0.0",
            "--kind",
            kind,
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let file = dev.state.path().join("leaky.yaml");
    std::fs::write(
        &file,
        "name: leaky\nowner: me\nsteps:\n  - plugin: leaky@1.0.0\n    config: {mode: escape, path: '${secret:API_PATH}'}\n  - plugin: discard@1.0.0\n",
    )
    .unwrap();
    dev.json(&["pipeline", "create", "-f", file.to_str().unwrap()]);
    // A name is found in the read model, which a busy machine updates a moment later.
    wait_for("the pipeline projected", Duration::from_secs(10), || {
        dev.run(&["pipeline", "show", "leaky"]).status.success()
    })
    .await;
    let out = dev.run(&[
        "run",
        "start",
        "leaky",
        "--follow",
        "--timeout",
        "2m",
        "--output",
        "json",
    ]);
    let run: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(run["state"], "failed", "escape mode fails on the missing path: {run}");
    let run_id = run["run_id"].as_str().unwrap();
    let logs = dev.run(&["run", "logs", run_id]);
    let run_log = String::from_utf8_lossy(&logs.stdout);
    assert!(run_log.contains("[redacted]"), "the plugin saw the value: {run_log}");

    let pid = rustix::process::Pid::from_raw(i32::try_from(stack.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    tokio::task::spawn_blocking(move || stack.wait())
        .await
        .unwrap()
        .unwrap();

    let text = log_text(&log);
    let leaks: Vec<&str> = text.lines().filter(|l| l.contains("s3cr3t")).collect();
    assert!(leaks.is_empty(), "log lines leaked the secret: {leaks:#?}");
    assert!(!run_log.contains("s3cr3t") && !String::from_utf8_lossy(&out.stderr).contains("s3cr3t"));
    // The services' lines are JSON naming the service; the attempt's lines carry its run id.
    let mut services = std::collections::BTreeSet::new();
    let mut with_run_id = 0;
    for line in text.lines() {
        let Some((_, json)) = line.split_once(" |\u{1b}[0m ") else {
            continue;
        };
        let Ok(entry) = serde_json::from_str::<Value>(json) else {
            continue;
        };
        if let Some(service) = entry["service"].as_str() {
            services.insert(service.to_owned());
        }
        if entry.to_string().contains(run_id) {
            with_run_id += 1;
        }
    }
    assert_eq!(
        services.into_iter().collect::<Vec<_>>(),
        [
            "flexcore-command",
            "flexcore-gateway",
            "flexcore-projection",
            "flexcore-runner",
            "flexcore-scheduler",
            // `flexcore-command setup`: the streams, before the services.
            "flexcore-setup"
        ]
    );
    assert!(with_run_id > 0, "no log line names the run");
}

#[tokio::test]
async fn flexctl_bench_console_seeds_a_stack_without_a_runner_and_times_every_page() {
    let dev = Dev::private().await;
    let log = dev.state.path().join("dev.log");
    let stack = dev.dev(&["--no-runner"], &log).spawn().unwrap();
    wait_up(&log, Duration::from_secs(240)).await;
    let text = log_text(&log);
    assert!(
        text.contains("gateway |") && !text.contains("runner |") && !text.contains("demo run"),
        "no runner, no demo:\n{text}"
    );

    let runner_seed = dev.state.path().join("keys/runner.nk");
    let url = format!("http://127.0.0.1:{}", dev.http_port);
    let bench = |requests: &str, seed: bool| {
        let mut args = vec!["bench", "console", "--url", &url, "--pipelines", "12", "--runs", "40"];
        args.extend(["--schedules", "3", "--requests", requests]);
        if seed {
            args.extend(["--runner-seed-file", runner_seed.to_str().unwrap()]);
        }
        dev.json(&args)
    };
    let report = bench("2", true);
    assert_eq!(
        (&report["pipelines"], &report["runs"], &report["schedules"]),
        (&Value::from(12), &Value::from(40), &Value::from(3)),
        "{report}"
    );
    let pages = report["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 14, "{report}");
    for page in pages {
        assert_eq!(
            (&page["operations"], &page["errors"]),
            (&Value::from(2), &Value::from(0)),
            "{page}"
        );
    }
    // The runs were taken through their lives by the runner's commands: 70 % succeeded,
    // 15 % failed, 5 % each cancelled, running and still queued.
    let (status, body) = dev.http_get("/api/v1/flexcore/status", None);
    assert_eq!(status, 200, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    let runs = &status["stats"]["runs"];
    assert_eq!(
        [
            &runs["succeeded"],
            &runs["failed"],
            &runs["cancelled"],
            &runs["running"],
            &runs["requested"]
        ],
        [28, 6, 2, 2, 2].map(Value::from).each_ref(),
        "{status}"
    );
    assert_eq!(status["stats"]["runs_last_hour"], 40, "{status}");
    assert_eq!(status["stats"]["failed_last_day"], 6, "{status}");
    // A second run seeds nothing more.
    let again = bench("1", false);
    assert_eq!(again["runs"], 40, "{again}");

    interrupt(stack, &log).await;
}
