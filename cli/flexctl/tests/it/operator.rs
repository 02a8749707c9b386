//! The operator's view against the real command and projection services: ids given by
//! unique prefix or name (resolved by the projection service's `id_prefix` range), names
//! next to ids, `--state` refused unless it is a lifecycle state, `schedule show|update`,
//! `pipeline delete`, `projection list|rebuild`, the completion helper, and the operator
//! recorded as `requested_by` apart from the verified actor. The `flexctl` binary is run as
//! an operator runs it where the output matters.

use std::process::Output;
use std::time::Duration;

use flexcore_config::{Secret, Settings, UnsignedCommands};
use flexcore_contracts::commands::RequestRun;
use flexcore_contracts::model::RunTrigger;
use flexcore_testkit::{TestDb, TestNats};
use flexctl::api::{Api, IdKind};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::operator_api;

struct Env {
    db: TestDb,
    nats: TestNats,
    shutdown: CancellationToken,
    /// Signing as the `flexctl` identity (role admin).
    api: Api,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A command service (accepting unsigned commands as role `client`, as a dev stack with
/// anonymous access does) and a projection service on a fresh database and nats-server.
async fn env() -> Env {
    flexcore_testkit::init_tracing();
    let db = TestDb::create().await.unwrap();
    let nats = TestNats::start().await.unwrap();
    let shutdown = CancellationToken::new();
    let mut settings = Settings::default();
    settings.database.url = Secret::new(db.url.clone());
    settings.security.unsigned_commands = UnsignedCommands::Client;
    nats.settings_for("command", &mut settings);
    let (pool, client) = flexcore_command::connect(&settings).await.unwrap();
    let token = shutdown.clone();
    tokio::spawn(async move { flexcore_command::run(&settings, client, pool, token).await });
    let mut settings = Settings::default();
    settings.database.url = Secret::new(db.url.clone());
    settings.database.max_connections = 8;
    nats.settings_for("projection", &mut settings);
    let (pool, client) = flexcore_projection::connect(&settings).await.unwrap();
    let token = shutdown.clone();
    tokio::spawn(async move { flexcore_projection::run(&settings, client, pool, token).await });
    let client = nats.client().await.unwrap();
    flexcore_testkit::nats::commands_answered(&client).await.unwrap();
    let api = operator_api(client);
    Env {
        db,
        nats,
        shutdown,
        api,
    }
}

impl Env {
    /// `flexctl ARGS` logged in as the `flexctl` identity, asking as `alice@example.com`.
    /// (Run without blocking: the services are tasks of this test's runtime.)
    async fn flexctl(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_flexctl"))
            .args(["--nats-url", &format!("nats://127.0.0.1:{}", self.nats.port())])
            .args(args)
            .env("FLEXCORE__NATS__NKEY_SEED_FILE", self.nats.seed_file("flexctl"))
            .env("FLEXCORE__SECURITY__IDENTITIES_FILE", self.nats.identities_file())
            .env("FLEXCTL_PRINCIPAL", "alice@example.com")
            .env_remove("FLEXCORE__NATS__URL")
            .env_remove("FLEXCORE__TELEMETRY__OTLP_ENDPOINT")
            .output()
            .await
            .unwrap()
    }

    /// stdout of a `flexctl` that succeeded.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.flexctl(args).await;
        assert!(
            out.status.success(),
            "flexctl {args:?} failed:\n{}\nnats-server log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.nats.log_path()).unwrap_or_default()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// stderr of a `flexctl` that failed.
    async fn fails(&self, args: &[&str]) -> String {
        let out = self.flexctl(args).await;
        assert!(
            !out.status.success(),
            "flexctl {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    async fn command(&self, name: &str, body: Value) -> Uuid {
        self.api.command(name, &body).await.unwrap().aggregate_id
    }

    /// Plugins `csv@1.0.0` and `jsonl@1.0.0` and pipeline `name` allowing 10 active runs.
    async fn pipeline(&self, name: &str) -> Uuid {
        let digest = format!("sha256:{}", "ab".repeat(32));
        for (plugin, kind) in [("csv", "extractor"), ("jsonl", "loader")] {
            let body = json!({"name": plugin, "version": "1.0.0", "kind": kind, "module_digest": digest});
            let _ = self.api.command("plugin.register", &body).await;
        }
        self.command(
            "pipeline.create",
            json!({"name": name, "owner": "o", "max_active_runs": 10,
                   "steps": [{"plugin": "csv@1.0.0"}, {"plugin": "jsonl@1.0.0"}]}),
        )
        .await
    }

    async fn request_run(&self, pipeline_id: Uuid, run_id: Uuid) {
        self.api
            .send(&RequestRun {
                run_id: Some(run_id),
                pipeline_id,
                trigger: RunTrigger::Manual,
                schedule_id: None,
                scheduled_for: None,
            })
            .await
            .unwrap();
    }

    async fn projected(&self, view: &str, id: Uuid) -> Value {
        let query = format!("{view}.get");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match self.api.query::<Value>(&query, &json!({"id": id})).await {
                Ok(item) => return item,
                Err(error) if tokio::time::Instant::now() > deadline => panic!("{view} {id} not projected: {error}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The reply to command `name` on pipeline `pipeline`, sent unsigned as `app` with the
    /// claim `requested_by` in its `Flexcore-Requested-By` header.
    async fn claiming(&self, name: &str, pipeline: Uuid, requested_by: &str) -> Value {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(flexcore_contracts::envelope::HEADER_REQUESTED_BY, requested_by);
        let body = json!({"pipeline_id": pipeline, "command_id": Uuid::new_v4()});
        let client = self.nats.client_as("app").await.unwrap();
        let subject = format!("flexcore.cmd.{name}");
        let reply = client
            .request_with_headers(subject, headers, serde_json::to_vec(&body).unwrap().into())
            .await
            .unwrap();
        serde_json::from_slice(&reply.payload).unwrap()
    }

    /// The metadata of every event of `aggregate`, in order.
    async fn metadata(&self, aggregate: Uuid) -> Vec<Value> {
        let rows: Vec<(sqlx::types::Json<Value>,)> =
            sqlx::query_as("SELECT metadata FROM events WHERE aggregate_id = $1 ORDER BY version")
                .bind(aggregate)
                .fetch_all(&self.db.pool)
                .await
                .unwrap();
        rows.into_iter().map(|(m,)| m.0).collect()
    }
}

/// Two UUIDv7 ids of the same millisecond: the same first 12 hex digits (and version).
fn same_millisecond() -> (Uuid, Uuid) {
    let at = uuid::Timestamp::from_unix(uuid::NoContext, 1_780_000_000, 123_000_000);
    let a = Uuid::new_v7(at);
    let mut b = Uuid::new_v7(at);
    while b == a {
        b = Uuid::new_v7(at);
    }
    (a, b)
}

#[tokio::test]
async fn ids_are_taken_by_unique_prefix_or_name_and_an_ambiguous_prefix_lists_the_candidates() {
    let e = env().await;
    let pipeline = e.pipeline("orders").await;
    e.projected("pipeline", pipeline).await;
    let (a, b) = same_millisecond();
    e.request_run(pipeline, a).await;
    e.request_run(pipeline, b).await;
    e.projected("run", a).await;
    e.projected("run", b).await;
    let hex = |id: Uuid| id.simple().to_string();
    let common = hex(a).chars().zip(hex(b).chars()).take_while(|(x, y)| x == y).count();
    assert!(common >= 12, "{a} {b}");

    // Whole ids, unique prefixes (hyphenated or not), names.
    assert_eq!(e.api.resolve(IdKind::Run, &a.to_string()).await.unwrap(), a);
    assert_eq!(e.api.resolve(IdKind::Run, &hex(a)[..common + 1]).await.unwrap(), a);
    let shown = flexctl::table::short_ids(&[a, b]);
    assert_eq!(e.api.run_id(&shown[1]).await.unwrap(), b);
    assert_eq!(e.api.pipeline_id("orders").await.unwrap(), pipeline);
    assert_eq!(e.api.pipeline_id(&hex(pipeline)[..14]).await.unwrap(), pipeline);
    assert_eq!(e.api.aggregate_id(&shown[0]).await.unwrap(), a);

    // The first 8 digits are the timestamp's: ambiguous, and the error says between what.
    let error = e.api.run_id(&hex(a)[..8]).await.unwrap_err().to_string();
    assert!(error.contains("ambiguous"), "{error}");
    assert!(
        error.contains(&a.to_string()) && error.contains(&b.to_string()),
        "{error}"
    );
    assert!(error.contains("of orders"), "{error}");
    let error = e.api.run_id("ffffffff").await.unwrap_err().to_string();
    assert!(error.contains("no run with an id starting with"), "{error}");
    let error = e.api.run_id("not-an-id").await.unwrap_err().to_string();
    assert!(error.contains("is not a run id or id prefix"), "{error}");
    let error = e.api.pipeline_id("no-such-pipeline").await.unwrap_err().to_string();
    assert!(error.contains("no pipeline named \"no-such-pipeline\""), "{error}");

    // The same through the binary: `run show` with the short id `run list` shows.
    let list = e.ok(&["run", "list"]).await;
    assert!(list.contains(&shown[0]) && list.contains(&shown[1]), "{list}");
    assert!(list.contains("orders"), "{list}");
    let show = e.ok(&["run", "show", &shown[0], "--output", "json"]).await;
    let run: Value = serde_json::from_str(&show).unwrap();
    assert_eq!(run["run_id"], json!(a));
    let error = e.fails(&["run", "show", &hex(a)[..8]]).await;
    assert!(error.contains("ambiguous") && error.contains(&b.to_string()), "{error}");
    let cancel = e.ok(&["run", "cancel", &shown[1], "--output", "json"]).await;
    assert_eq!(serde_json::from_str::<Value>(&cancel).unwrap()["run_id"], json!(b));

    // The events commands take the same short id for --aggregate.
    let events = e
        .ok(&["events", "list", "--aggregate", &shown[1], "--output", "json"])
        .await;
    let events: Vec<Value> = events.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!events.is_empty(), "no event of run {b}");
    assert!(
        events.iter().all(|event| event["aggregate_id"] == json!(b)),
        "{events:?}"
    );
    let error = e.fails(&["events", "list", "--aggregate", &hex(a)[..8]]).await;
    assert!(error.contains("--aggregate") && error.contains("ambiguous"), "{error}");
}

#[tokio::test]
async fn lists_refuse_unknown_states_and_say_which_there_are() {
    let e = env().await;
    for (list, expected) in [
        (
            "run",
            "requested, running, awaiting_retry, succeeded, failed, cancelled, timed_out",
        ),
        ("pipeline", "active, paused, archived"),
        ("schedule", "active, paused, deleted"),
        ("plugin", "active, deprecated, disabled"),
    ] {
        let error = e.fails(&[list, "list", "--state", "bogus"]).await;
        assert!(error.contains("bogus") && error.contains(expected), "{list}: {error}");
        let help = e.ok(&[list, "list", "--help"]).await;
        assert!(help.contains(expected), "{list} --help: {help}");
        e.ok(&[list, "list", "--state", expected.split(", ").last().unwrap()])
            .await;
    }
}

#[tokio::test]
async fn schedules_show_update_and_list_with_their_pipeline_s_name() {
    let e = env().await;
    let pipeline = e.pipeline("nightly").await;
    e.projected("pipeline", pipeline).await;
    let schedule = e
        .command(
            "schedule.create",
            json!({"pipeline_id": pipeline, "cron": "0 2 * * *", "paused": true}),
        )
        .await;
    e.projected("schedule", schedule).await;
    let short = flexctl::table::short(schedule);

    let list = e.ok(&["schedule", "list"]).await;
    assert!(
        list.contains(&format!("nightly ({})", flexctl::table::short(pipeline))),
        "{list}"
    );
    let show = e.ok(&["schedule", "show", &short]).await;
    assert!(show.contains("0 2 * * * in UTC") && show.contains("nightly"), "{show}");

    e.ok(&["schedule", "update", &short, "--cron", "*/15 * * * *", "--jitter", "5"])
        .await;
    flexcore_testkit::wait_until(Duration::from_secs(20), "update projected", || async {
        let view: Value = e.api.query("schedule.get", &json!({"id": schedule})).await.unwrap();
        view["spec"]["cron"] == json!("*/15 * * * *")
    })
    .await
    .unwrap();
    let shown: Value = serde_json::from_str(&e.ok(&["schedule", "show", &short, "--output", "json"]).await).unwrap();
    assert_eq!(shown["spec"]["jitter_seconds"], json!(5));
    assert_eq!(shown["state"], json!("paused"), "an update leaves the state alone");
    assert_eq!(shown["pipeline_name"], json!("nightly"));
    // Bad input is the domain's refusal, and nothing to change is refused before sending.
    let error = e.fails(&["schedule", "update", &short, "--cron", "not a cron"]).await;
    assert!(error.contains("cron"), "{error}");
    let error = e.fails(&["schedule", "update", &short]).await;
    assert!(error.contains("nothing to update"), "{error}");
}

#[tokio::test]
async fn pipeline_delete_archives() {
    let e = env().await;
    let pipeline = e.pipeline("old").await;
    e.projected("pipeline", pipeline).await;
    let out = e.ok(&["pipeline", "delete", "old", "--output", "json"]).await;
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["action"], json!("archive"));
    flexcore_testkit::wait_until(Duration::from_secs(20), "archived", || async {
        let view: Value = e.api.query("pipeline.get", &json!({"id": pipeline})).await.unwrap();
        view["state"] == json!("archived")
    })
    .await
    .unwrap();
    assert!(e
        .ok(&["pipeline", "delete", "--help"])
        .await
        .contains("immutable event log"));
}

#[tokio::test]
async fn projections_are_listed_and_only_an_admin_rebuilds_them() {
    let e = env().await;
    let pipeline = e.pipeline("replayed").await;
    e.projected("pipeline", pipeline).await;
    let list: Value = serde_json::from_str(&e.ok(&["projection", "list", "--output", "json"]).await).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names.len(), 5, "{list}");
    for name in flexcore_contracts::queries::PROJECTIONS {
        assert!(names.contains(name), "{name} missing: {list}");
    }
    let text = e.ok(&["projection", "list"]).await;
    assert!(text.contains("PROJECTION") && text.contains("pipelines"), "{text}");

    let done = e
        .ok(&["projection", "rebuild", "pipelines", "--wait", "--timeout", "60s"])
        .await;
    assert!(done.contains("rebuild of pipelines done"), "{done}");
    // The rebuilt view still has the pipeline.
    assert_eq!(e.api.pipeline_id("replayed").await.unwrap(), pipeline);

    // An application's identity (role client) may not: the server drops the request.
    let app = Api::new(
        flexcore_client::Client::new(e.nats.client_as("app").await.unwrap()).with_timeout(Duration::from_millis(500)),
    );
    let error = format!("{:#}", flexctl::projection::request(&app, "runs").await.unwrap_err());
    assert!(error.contains("only the admin role may rebuild"), "{error}");
}

#[tokio::test]
async fn the_completion_helper_lists_names_and_ids_from_the_live_read_models() {
    let e = env().await;
    let first = e.pipeline("alpha-orders").await;
    let second = e.pipeline("alpha-refunds").await;
    let other = e.pipeline("beta").await;
    let run = Uuid::now_v7();
    e.request_run(first, run).await;
    for id in [first, second, other] {
        e.projected("pipeline", id).await;
    }
    e.projected("run", run).await;

    let words = |out: String| out.lines().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(
        words(e.ok(&["__complete", "pipelines", "alpha"]).await),
        ["alpha-orders", "alpha-refunds"]
    );
    assert_eq!(words(e.ok(&["__complete", "pipelines"]).await).len(), 3);
    assert_eq!(
        words(e.ok(&["__complete", "runs", &run.simple().to_string()[..10]]).await),
        [flexctl::table::short(run)]
    );
    assert_eq!(words(e.ok(&["__complete", "plugins", "cs"]).await), ["csv@1.0.0"]);
    // Nothing (and success) when nobody answers: completion never prints an error.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_flexctl"))
        .args(["--nats-url", "nats://127.0.0.1:1", "__complete", "pipelines"])
        .env_remove("FLEXCORE__NATS__NKEY_SEED_FILE")
        .output()
        .await
        .unwrap();
    assert!(out.status.success() && out.stdout.is_empty());

    // Bash completes them where a pipeline or run is expected, past global options, and
    // leaves the rest to clap's completion.
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_flexctl")).parent().unwrap();
    let complete = |line: &'static str| {
        let script = format!(
            "source <(flexctl completions bash)\nCOMP_WORDS=({line}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))\n\
             COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}\n_flexctl_items flexctl\nprintf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        let mut bash = tokio::process::Command::new("bash");
        bash.arg("-c")
            .arg(script)
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()),
            )
            .env("FLEXCORE__NATS__URL", format!("nats://127.0.0.1:{}", e.nats.port()))
            .env("FLEXCORE__NATS__NKEY_SEED_FILE", e.nats.seed_file("flexctl"))
            .env("FLEXCORE__SECURITY__IDENTITIES_FILE", e.nats.identities_file());
        async move {
            let out = bash.output().await.unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap()
        }
    };
    assert_eq!(
        words(complete(r#"flexctl --output json run start "alp""#).await),
        ["alpha-orders", "alpha-refunds"]
    );
    assert_eq!(
        words(complete(r#"flexctl run show """#).await),
        [flexctl::table::short(run)]
    );
    assert_eq!(words(complete(r#"flexctl run list --pipeline "b""#).await), ["beta"]);
    let subcommands = complete(r#"flexctl run "s""#).await;
    assert!(
        subcommands.contains("show") && subcommands.contains("start"),
        "{subcommands}"
    );
}

#[tokio::test]
async fn events_record_the_operator_as_a_claim_apart_from_the_verified_actor() {
    let e = env().await;
    let audited = e.pipeline("audited").await;
    e.projected("pipeline", audited).await;
    // Signed (--nkey-seed-file): the actor is the verified identity, the claim is apart.
    let out = e.ok(&["pipeline", "pause", "audited", "--output", "json"]).await;
    let id: Uuid = serde_json::from_str::<Value>(&out).unwrap()["pipeline_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(id, audited);
    let last = e.metadata(id).await.pop().unwrap();
    assert_eq!(last["actor"], json!("flexctl"), "{last}");
    assert_eq!(last["requested_by"], json!("alice@example.com"), "{last}");

    // Unsigned (a dev stack with anonymous access): the actor says so, the claim still names who asked.
    let unsigned = Api::new(flexcore_client::Client::new(e.nats.client_as("app").await.unwrap()));
    unsigned
        .send(&flexcore_contracts::commands::ResumePipeline { pipeline_id: id })
        .await
        .unwrap();
    let last = e.metadata(id).await.pop().unwrap();
    assert_eq!(last["actor"], json!("unsigned"), "{last}");
    assert_eq!(last["requested_by"], json!(flexctl::api::requester()), "{last}");

    // A claim can never stand in for the actor: a forged header changes only itself.
    let reply = e.claiming("pipeline.pause", id, "flexctl").await;
    assert_eq!(reply["ok"], json!(true), "{reply}");
    let last = e.metadata(id).await.pop().unwrap();
    assert_eq!(
        (&last["actor"], &last["requested_by"]),
        (&json!("unsigned"), &json!("flexctl"))
    );

    // A claim is a label: one too long is refused, naming the header.
    let reply = e.claiming("pipeline.resume", id, &"x".repeat(201)).await;
    assert_eq!(reply["error"]["details"]["reason"], json!("invalid_value"), "{reply}");
    assert_eq!(
        reply["error"]["details"]["header"],
        json!("Flexcore-Requested-By"),
        "{reply}"
    );
}
