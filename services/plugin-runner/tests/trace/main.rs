//! One trace from a client's command to a finished run, across NATS: the four service
//! binaries run as processes (each its own `service.name`) against a fresh database and
//! a private nats-server, exporting spans over OTLP/gRPC to a receiver in the test. The
//! test sends `run.request` (then `run.get`) with a `traceparent` of its own and checks
//! that the run's spans from all four services share that trace id and link parent to
//! child across every NATS hop, back to the test's root span.
//!
//! Then `flexctl --otlp-endpoint … run show` must start a trace whose request span is the
//! parent of the projection's query span.
//!
//! The sibling binaries (`flexcore-command`, `-projection`, `-scheduler`, `flexctl`) are taken from
//! the target directory of this test's own `flexcore-runner`: build them first
//! (`cargo test --workspace` does; alone: `cargo build --bins`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use async_nats::jetstream;
use flexcore_contracts::model::Grants;
use flexcore_contracts::subjects;
use flexcore_testkit::{TestDb, TestNats};
use futures::StreamExt;
use serde_json::{json, Value};
use uuid::Uuid;

use flexcore_telemetry::collector::{Collector, Span};

const SERVICES: [&str; 4] = [
    "flexcore-command",
    "flexcore-projection",
    "flexcore-scheduler",
    "flexcore-runner",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A service binary: this package's own, or its sibling in the same target directory.
fn binary(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_flexcore-runner")).with_file_name(name);
    assert!(
        path.is_file(),
        "{} is missing: build the service binaries first (cargo build --bins)",
        path.display()
    );
    path
}

/// The example plugin `package`'s module (built for wasm32-wasip1 once per test process).
fn wasm(package: &str) -> Vec<u8> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace().join("target"));
            let out = Command::new(env!("CARGO"))
                .current_dir(workspace())
                .env("CARGO_TARGET_DIR", &target)
                .args(["build", "--release", "--target", "wasm32-wasip1"])
                .args(["-p", "flexcore-plugin-generator", "-p", "flexcore-plugin-discard"])
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            Ok(target.join("wasm32-wasip1/release"))
        })
        .as_ref()
        .unwrap_or_else(|e| panic!("building the wasm plugins failed (is wasm32-wasip1 installed?): {e}"));
    let file = dir.join(format!("flexcore-plugin-{package}.wasm"));
    std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The four service processes; killed when dropped. Their output goes to files, shown
/// when the test fails.
struct Services {
    children: Vec<Child>,
    logs: tempfile::TempDir,
}

impl Services {
    fn new() -> Self {
        Self {
            children: Vec::new(),
            logs: tempfile::tempdir().unwrap(),
        }
    }

    fn spawn(&mut self, name: &str, db: &TestDb, nats: &TestNats, otlp: &str) {
        self.spawn_with(name, db, nats, otlp, &[]);
    }

    fn spawn_with(&mut self, name: &str, db: &TestDb, nats: &TestNats, otlp: &str, env: &[(&str, String)]) {
        let log = std::fs::File::create(self.logs.path().join(format!("{name}.log"))).unwrap();
        let child = Command::new(binary(name))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("FLEXCORE_CONFIG_DIR", workspace().join("config"))
            .env("FLEXCORE__DATABASE__URL", &db.url)
            .envs(nats.env_for(name.strip_prefix("flexcore-").unwrap_or(name)))
            .env("FLEXCORE__TELEMETRY__OTLP_ENDPOINT", otlp)
            .env("FLEXCORE__TELEMETRY__SERVICE_INSTANCE", format!("{name}-trace-test"))
            .env("FLEXCORE__TELEMETRY__LOG_FORMAT", "text")
            .env("FLEXCORE__TELEMETRY__LOG_FILTER", "info,sqlx=warn")
            .env("FLEXCORE__RELAY__IDLE_POLL_MS", "50")
            // Export finished spans every 100 ms instead of every 5 s.
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            // A RUST_LOG of the test's environment would replace the filter the spans need.
            .env_remove("RUST_LOG")
            // A start-up error then reads as one line, not a backtrace.
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        self.children.push(child);
    }

    /// The end of every service's log.
    fn tails(&self) -> String {
        SERVICES
            .iter()
            .chain(&["flexcore-gateway"])
            .map(|name| {
                let text = std::fs::read_to_string(self.logs.path().join(format!("{name}.log"))).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(30)..].join("\n");
                format!("--- {name} ---\n{tail}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn command(client: &async_nats::Client, name: &str, body: Value, headers: async_nats::HeaderMap) -> Value {
    let (aggregate, action) = name.split_once('.').unwrap();
    let reply = client
        .request_with_headers(
            subjects::command(aggregate, action),
            headers,
            serde_json::to_vec(&body).unwrap().into(),
        )
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["ok"], json!(true), "{name} {body} -> {reply}");
    reply
}

/// Waits for the first message on `subscriber`.
async fn heard(subscriber: &mut async_nats::Subscriber, what: &str, services: &Services) {
    match tokio::time::timeout(Duration::from_secs(60), subscriber.next()).await {
        Ok(Some(_)) => {}
        _ => panic!("{what} never announced itself\n{}", services.tails()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pipeline_run_is_one_trace_across_the_four_services() {
    flexcore_testkit::init_tracing();
    let collector = Collector::start().await.unwrap();
    let db = TestDb::create().await.unwrap();
    let nats = TestNats::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let js = jetstream::new(client.clone());
    let mut services = Services::new();

    // The command service first, then the others; each is
    // ready once it listens, so none misses the run's messages.
    services.spawn("flexcore-command", &db, &nats, &collector.endpoint);
    let answered = flexcore_testkit::wait_until(Duration::from_secs(60), "the command service answers", || async {
        let probe = client.request(subjects::command("plugin", "enable"), "{}".into());
        matches!(tokio::time::timeout(Duration::from_millis(500), probe).await, Ok(Ok(_)))
    })
    .await;
    if let Err(e) = answered {
        panic!(
            "{e} (a binary older than the code? cargo build --bins)\n{}",
            services.tails()
        );
    }
    let mut schedulers = client.subscribe(subjects::SCHEDULER_PRESENCE).await.unwrap();
    let mut runners = client.subscribe(subjects::RUNNER_PRESENCE).await.unwrap();
    for name in &SERVICES[1..] {
        services.spawn(name, &db, &nats, &collector.endpoint);
    }
    heard(&mut schedulers, "the scheduler", &services).await;
    heard(&mut runners, "the runner", &services).await;
    // A projection service reads the events stream through one durable for all its views.
    let consumers = flexcore_testkit::wait_until(Duration::from_secs(60), "the projection consumer", || async {
        let Ok(stream) = js.get_stream(subjects::EVENTS_STREAM).await else {
            return false;
        };
        stream
            .get_consumer::<jetstream::consumer::pull::Config>("projection-audit")
            .await
            .is_ok()
    })
    .await;
    if let Err(e) = consumers {
        panic!("{e}\n{}", services.tails());
    }

    // Plugins and a pipeline, without trace context of the test's.
    let none = async_nats::HeaderMap::new;
    for (package, name, kind) in [
        ("generator", "generator", "extractor"),
        ("discard", "discard", "loader"),
    ] {
        let digest = flexcore_plugin_store::upload(&js, &wasm(package)).await.unwrap();
        let body = json!({"name": name, "version": "1.0.0", "kind": kind, "module_digest": digest,
                          "grants": Grants::default(), "limits": {}});
        command(&client, "plugin.register", body, none()).await;
    }
    let pipeline = command(
        &client,
        "pipeline.create",
        json!({"name": "traced", "owner": "o", "steps": [
            {"plugin": "generator@1.0.0", "config": {"records": 50}}, {"plugin": "discard@1.0.0"}]}),
        none(),
    )
    .await["aggregate_id"]
        .clone();

    // The client's request, under a span of the test's: the root of the trace.
    let trace_id = Uuid::new_v4().simple().to_string();
    let root = Uuid::new_v4().simple().to_string()[..16].to_owned();
    let correlation = format!("trace-test-{trace_id}");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("traceparent", format!("00-{trace_id}-{root}-01").as_str());
    headers.insert(
        flexcore_contracts::envelope::HEADER_CORRELATION_ID,
        correlation.as_str(),
    );
    let run = command(&client, "run.request", json!({"pipeline_id": pipeline}), headers).await;
    let run_id: Uuid = run["aggregate_id"].as_str().unwrap().parse().unwrap();
    let succeeded = flexcore_testkit::wait_until(Duration::from_secs(180), "run.succeeded", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = 'run.succeeded'",
        )
        .bind(run_id)
        .fetch_one(&db.pool)
        .await
        .unwrap()
            == 1
    })
    .await;
    if let Err(e) = succeeded {
        panic!("{e}\n{}", services.tails());
    }
    // The client then reads the run, in the same trace.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("traceparent", format!("00-{trace_id}-{root}-01").as_str());
    let body = serde_json::to_vec(&json!({"id": run_id})).unwrap();
    let read = client
        .request_with_headers(subjects::query("run", "get"), headers, body.into())
        .await
        .unwrap();
    let read: Value = serde_json::from_slice(&read.payload).unwrap();
    assert_eq!(read["ok"], json!(true), "{read}");

    // Spans arrive in export batches: wait until the whole chain is there.
    let checked = flexcore_testkit::try_wait_until(Duration::from_secs(60), "the run's trace", || {
        let verdict = check(&collector.spans(), &trace_id, &root, &correlation);
        std::future::ready(verdict.map(|_| true).map_err(anyhow::Error::msg))
    })
    .await;
    if let Err(e) = checked {
        let spans: Vec<String> = collector
            .spans()
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .map(|s| {
                format!(
                    "{} {} {} <- {:?} {:?}",
                    s.service, s.name, s.span_id, s.parent, s.attributes
                )
            })
            .collect();
        panic!("{e:#}\nspans of the trace:\n{}\n{}", spans.join("\n"), services.tails());
    }
    let spans = check(&collector.spans(), &trace_id, &root, &correlation).unwrap();
    eprintln!(
        "the run's trace, {spans} spans:\n{}",
        tree(&collector.spans(), &trace_id, &root)
    );

    // flexctl with an OTLP endpoint starts a trace of its own: its request span is the
    // parent of the projection's query span.
    let shown = Command::new(binary("flexctl"))
        .args(["--nats-url", &nats.url, "--otlp-endpoint", &collector.endpoint])
        .args(["run", "show", &run_id.to_string()])
        .envs(nats.env_for("flexctl"))
        .env_remove("RUST_LOG")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .output()
        .unwrap();
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    let linked = flexcore_testkit::wait_until(Duration::from_secs(30), "flexctl's trace", || {
        let spans = collector.spans();
        let linked = spans
            .iter()
            .filter(|s| s.service == "flexctl" && s.name == "flexctl.request")
            .any(|request| {
                request.parent.is_none()
                    && request.attribute("request") == Some("run.get")
                    && spans.iter().any(|query| {
                        query.service == "flexcore-projection"
                            && query.trace_id == request.trace_id
                            && query.parent.as_deref() == Some(request.span_id.as_str())
                    })
            });
        std::future::ready(linked)
    })
    .await;
    if let Err(e) = linked {
        let spans: Vec<String> = collector
            .spans()
            .iter()
            .filter(|s| s.service == "flexctl" || s.name == "query")
            .map(|s| {
                format!(
                    "{} {} {} {} <- {:?}",
                    s.service, s.name, s.trace_id, s.span_id, s.parent
                )
            })
            .collect();
        panic!("{e:#}\n{}", spans.join("\n"));
    }
}

/// An HTTP request through the gateway with the caller's `traceparent` continues the
/// caller's trace: the gateway's request span is the child of the caller's span, and the
/// projection's query span the child of the gateway's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_request_continues_the_callers_trace_through_the_gateway() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    flexcore_testkit::init_tracing();
    let collector = Collector::start().await.unwrap();
    let db = TestDb::create().await.unwrap();
    let nats = TestNats::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let mut services = Services::new();
    services.spawn("flexcore-command", &db, &nats, &collector.endpoint);
    services.spawn("flexcore-projection", &db, &nats, &collector.endpoint);
    let port = flexcore_testkit::unused_port().unwrap();
    services.spawn_with(
        "flexcore-gateway",
        &db,
        &nats,
        &collector.endpoint,
        &[
            ("FLEXCORE__GATEWAY__LISTEN", format!("127.0.0.1:{port}")),
            ("FLEXCORE__GATEWAY__ANONYMOUS_ROLE", "viewer".to_owned()),
            ("FLEXCORE__ADMIN__LISTEN", "127.0.0.1:0".to_owned()),
        ],
    );
    let answered = flexcore_testkit::wait_until(Duration::from_secs(60), "the projection answers", || async {
        let probe = client.request(subjects::query("pipeline", "list"), "{}".into());
        matches!(tokio::time::timeout(Duration::from_millis(500), probe).await, Ok(Ok(m)) if m.payload.starts_with(b"{\"ok\":true"))
    })
    .await;
    if let Err(e) = answered {
        panic!("{e}\n{}", services.tails());
    }
    let trace_id = Uuid::new_v4().simple().to_string();
    let root = Uuid::new_v4().simple().to_string()[..16].to_owned();
    // Anonymous access answers loopback host names only.
    let request = format!(
        "GET /api/v1/flexcore/pipelines HTTP/1.1\r\nHost: 127.0.0.1\r\ntraceparent: 00-{trace_id}-{root}-01\r\nConnection: close\r\n\r\n"
    );
    let status = flexcore_testkit::wait_until(Duration::from_secs(60), "the gateway answers 200", || async {
        let Ok(mut socket) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
            return false;
        };
        if socket.write_all(request.as_bytes()).await.is_err() {
            return false;
        }
        let mut answer = Vec::new();
        let _ = socket.read_to_end(&mut answer).await;
        answer.starts_with(b"HTTP/1.1 200")
    })
    .await;
    if let Err(e) = status {
        panic!("{e}\n{}", services.tails());
    }
    let linked = flexcore_testkit::wait_until(Duration::from_secs(30), "the gateway's spans", || {
        let spans = collector.spans();
        let linked = spans
            .iter()
            .filter(|s| s.service == "flexcore-gateway" && s.name == "http.request" && s.trace_id == trace_id)
            .any(|http| {
                http.parent.as_deref() == Some(root.as_str())
                    && spans.iter().any(|query| {
                        query.service == "flexcore-projection"
                            && query.trace_id == trace_id
                            && query.parent.as_deref() == Some(http.span_id.as_str())
                    })
            });
        std::future::ready(linked)
    })
    .await;
    if let Err(e) = linked {
        let spans: Vec<String> = collector
            .spans()
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .map(|s| format!("{} {} {} <- {:?}", s.service, s.name, s.span_id, s.parent))
            .collect();
        panic!("{e:#}\n{}\n{}", spans.join("\n"), services.tails());
    }
}

/// The trace as an indented tree under `root` (shown with `--nocapture`).
fn tree(all: &[Span], trace_id: &str, root: &str) -> String {
    fn walk(all: &[&Span], parent: &str, depth: usize, out: &mut String) {
        for span in all.iter().filter(|s| s.parent.as_deref() == Some(parent)) {
            let what = ["command_type", "event_type", "projection", "plugin"]
                .iter()
                .filter_map(|k| span.attribute(k))
                .collect::<Vec<_>>()
                .join(" ");
            out.push_str(&format!(
                "{:indent$}{} {} {what}\n",
                "",
                span.service,
                span.name,
                indent = depth * 2
            ));
            walk(all, &span.span_id, depth + 1, out);
        }
    }
    let spans: Vec<&Span> = all.iter().filter(|s| s.trace_id == trace_id).collect();
    let mut out = String::new();
    walk(&spans, root, 0, &mut out);
    out
}

/// Checks the trace `trace_id` under the test's span `root`; the number of its spans, or
/// what is (still) missing.
fn check(all: &[Span], trace_id: &str, root: &str, correlation: &str) -> Result<usize, String> {
    let spans: Vec<&Span> = all.iter().filter(|s| s.trace_id == trace_id).collect();
    let by_id: HashMap<&str, &Span> = spans.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    let services: HashSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    for service in SERVICES {
        if !services.contains(service) {
            return Err(format!("no span of {service} in the trace (have {services:?})"));
        }
    }
    // Every parent link resolves, and every chain ends at the test's span.
    for span in &spans {
        let mut at = *span;
        for _ in 0..64 {
            match at.parent.as_deref() {
                Some(parent) if parent == root => break,
                Some(parent) => match by_id.get(parent) {
                    Some(up) => at = up,
                    None => return Err(format!("{} {}: parent {parent} not received", span.service, span.name)),
                },
                None => return Err(format!("{} {} is a root of the trace", span.service, span.name)),
            }
        }
    }
    let find = |service: &str, name: &str, parent: Option<&str>, attribute: Option<(&str, &str)>| {
        spans
            .iter()
            .filter(|s| s.service == service && s.name == name)
            .filter(|s| parent.is_none_or(|p| s.parent.as_deref() == Some(p)))
            .filter(|s| attribute.is_none_or(|(k, v)| s.attribute(k) == Some(v)))
            .copied()
            .collect::<Vec<&Span>>()
    };
    let one = |what: &str, found: Vec<&Span>| -> Result<String, String> {
        match found.as_slice() {
            [span] => Ok(span.span_id.clone()),
            [] => Err(format!("no {what}")),
            more => Err(format!("{} {what}", more.len())),
        }
    };

    // Client → command handling (its fields) → append, and → relay publish.
    let request = one(
        "command span for run.request under the test's span",
        find(
            "flexcore-command",
            "command",
            Some(root),
            Some(("command_type", "run.request")),
        ),
    )?;
    let command = by_id[request.as_str()];
    if command.attribute("aggregate_id").is_none() || command.attribute("correlation_id") != Some(correlation) {
        return Err(format!("the command span lacks its ids: {:?}", command.attributes));
    }
    one(
        "query span for run.get under the test's span",
        find(
            "flexcore-projection",
            "query",
            Some(root),
            Some(("subject", "flexcore.qry.run.get")),
        ),
    )?;
    one(
        "eventstore.append under the request's command span",
        find("flexcore-command", "eventstore.append", Some(&request), None),
    )?;
    let published = one(
        "relay.publish of run.requested under the command span",
        find(
            "flexcore-command",
            "relay.publish",
            Some(&request),
            Some(("event_type", "run.requested")),
        ),
    )?;
    // Relay → projections and scheduler.
    for (service, name) in [
        ("flexcore-projection", "projection.apply"),
        ("flexcore-scheduler", "scheduler.apply"),
    ] {
        if find(service, name, Some(&published), Some(("event_type", "run.requested"))).is_empty() {
            return Err(format!("no {name} of run.requested under its relay.publish"));
        }
    }
    // Relay → the run: its attempt, the plugin stages, and the runner's commands, which
    // the command service continues (down to the projections of their events).
    let attempt = one(
        "run.attempt under the relay.publish of run.requested",
        find("flexcore-runner", "run.attempt", Some(&published), None),
    )?;
    let under_attempt = |span: &Span| {
        let mut at = span;
        while let Some(parent) = at.parent.as_deref() {
            if parent == attempt {
                return true;
            }
            match by_id.get(parent) {
                Some(up) => at = up,
                None => return false,
            }
        }
        false
    };
    let stages: Vec<_> = find("flexcore-runner", "stage", None, None)
        .into_iter()
        .filter(|s| under_attempt(s))
        .collect();
    if stages.len() != 2 {
        return Err(format!("{} stage spans under run.attempt, not 2", stages.len()));
    }
    // The sandbox's span per WASI call stays out of traces.
    if let Some(call) = spans.iter().find(|s| s.name.starts_with("fd_")) {
        return Err(format!("a WASI call span was exported: {}", call.name));
    }
    let mut succeeded = None;
    for command_type in ["run.claim", "run.succeed"] {
        let id = one(
            &format!("command span for {command_type} under run.attempt"),
            find(
                "flexcore-command",
                "command",
                Some(&attempt),
                Some(("command_type", command_type)),
            ),
        )?;
        succeeded = Some(id);
    }
    let succeeded = succeeded.unwrap_or_default();
    let relayed: Vec<_> = find(
        "flexcore-command",
        "relay.publish",
        None,
        Some(("event_type", "run.succeeded")),
    )
    .into_iter()
    .filter(|s| s.parent.as_deref() == Some(succeeded.as_str()))
    .collect();
    let [relayed] = relayed.as_slice() else {
        return Err("no relay.publish of run.succeeded under the run.succeed command".into());
    };
    if find(
        "flexcore-projection",
        "projection.apply",
        Some(&relayed.span_id),
        Some(("event_type", "run.succeeded")),
    )
    .is_empty()
    {
        return Err("no projection.apply of run.succeeded".into());
    }
    Ok(spans.len())
}
