//! `flexctl pipeline create --dry-run`, `pipeline update` and `flexctl apply` against a real
//! command service and projection: the service's validation at the file's lines, dry runs
//! that write nothing, apply's difference, schedules and idempotency, JSON on stdout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use flexcore_config::{Secret, Settings};
use flexctl::apply::{ApplyOptions, Outcome};
use flexctl::pipeline_file::{self, Loaded};
use serde_json::{json, Value};

use crate::{operator_api, spawn_service, Service};

struct Env {
    service: Service,
    api: flexctl::api::Api,
    dir: tempfile::TempDir,
}

async fn env() -> Env {
    let service = spawn_service().await;
    let mut settings = Settings::default();
    settings.database.url = Secret::new(service.db.url.clone());
    service.nats.settings_for("projection", &mut settings);
    settings.database.max_connections = 8;
    let (pool, nats) = flexcore_projection::connect(&settings).await.unwrap();
    let token = service.shutdown.clone();
    tokio::spawn(async move { flexcore_projection::run(&settings, nats, pool, token).await });
    let api = operator_api(service.nats.client().await.unwrap());
    // An extractor whose config schema knows only `path` (a string), and a loader.
    let digest = format!("sha256:{}", "ab".repeat(32));
    let strict = json!({"type": "object", "properties": {"path": {"type": "string"}}, "additionalProperties": false});
    for (name, kind, schema) in [
        ("csv", "extractor", strict),
        ("jsonl", "loader", json!({"type": "object"})),
    ] {
        let body =
            json!({"name": name, "version": "1.0.0", "kind": kind, "module_digest": digest, "config_schema": schema});
        api.command("plugin.register", &body).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    Env { service, api, dir }
}

impl Env {
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load(&self, name: &str, text: &str) -> Loaded {
        pipeline_file::load(&self.file(name, text)).unwrap()
    }

    async fn events(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.service.db.pool)
            .await
            .unwrap()
    }

    async fn apply(&self, loaded: &Loaded, dry_run: bool) -> anyhow::Result<Outcome> {
        let options = ApplyOptions {
            dry_run,
            ..ApplyOptions::default()
        };
        flexctl::apply::apply(&self.api, loaded, None, &options).await
    }

    /// Waits until the projection shows what was applied: a dry run finds nothing to change.
    async fn converged(&self, loaded: &Loaded) {
        flexcore_testkit::wait_until(Duration::from_secs(20), "the projection shows the file", || async {
            self.apply(loaded, true).await.is_ok_and(|o| !o.changed)
        })
        .await
        .unwrap();
    }

    /// `flexctl ARGS` as a process against this service; (success, stdout, stderr).
    async fn flexctl(&self, args: &[&str]) -> (bool, String, String) {
        let keys = flexcore_testkit::nats::kit_dir();
        // Async: the services run on this test's runtime.
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_flexctl"))
            .args(["--nats-url", &self.service.nats.url, "--nkey-seed-file"])
            .arg(keys.join("flexctl.nk"))
            .arg("--identities-file")
            .arg(keys.join("identities.json"))
            .args(args)
            .output()
            .await
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The service's refusals of `create --dry-run` point at the line they concern (a plugin
/// typo on line 4, an unknown config key on line 3, a wrong config type), and a dry run
/// writes nothing.
#[tokio::test]
async fn create_dry_run_is_checked_by_the_service_at_the_right_lines_and_writes_nothing() {
    let env = env().await;
    let before = env.events().await;
    let typo = env.file(
        "typo.yaml",
        "name: orders\nowner: me\nsteps:\n  - plugin: cvs@1.0.0\n  - plugin: jsonl@1.0.0\n",
    );
    let unknown = env.file(
        "unknown.yaml",
        "steps:\n  - plugin: csv@1.0.0\n    config: {path: /in, pth: /x}\n  - plugin: jsonl@1.0.0\nname: orders\nowner: me\n",
    );
    let wrong_type = env.file(
        "type.yaml",
        "name: orders\nowner: me\nsteps:\n  - plugin: csv@1.0.0\n    config:\n      path: 7\n  - plugin: jsonl@1.0.0\n",
    );
    let cases = [
        (&typo, ":4:13: ", "cvs@1.0.0 is not registered"),
        (&unknown, ":3:", "'pth' was unexpected"),
        (&wrong_type, ":6:13: ", "is not of type \"string\""),
    ];
    for (file, at, what) in cases {
        let (ok, stdout, stderr) = env
            .flexctl(&["pipeline", "create", "--dry-run", "-f", path(file)])
            .await;
        assert!(!ok && stdout.is_empty(), "{stdout}");
        let expected = format!("{}{at}", file.display());
        assert!(
            stderr.contains(&expected) && stderr.contains(what),
            "{expected} {what}: {stderr}"
        );
        // The real command is refused at the same place.
        let (ok, _, real) = env.flexctl(&["pipeline", "create", "-f", path(file)]).await;
        assert!(!ok && real.contains(&expected), "{real}");
        // And so is apply, dry or not.
        let (ok, _, applied) = env.flexctl(&["apply", "--dry-run", "-f", path(file)]).await;
        assert!(!ok && applied.contains(&expected), "{applied}");
    }

    // A good file: valid, in JSON on stdout when asked, and still nothing written.
    let good = env.file(
        "good.yaml",
        "name: orders\nowner: me\nsteps:\n  - plugin: csv@1.0.0\n    config: {path: /in}\n  - plugin: jsonl@1.0.0\nschedules:\n  - cron: '0 * * * *'\n",
    );
    let (ok, stdout, stderr) = env
        .flexctl(&["--output", "json", "pipeline", "create", "--dry-run", "-f", path(&good)])
        .await;
    assert!(ok, "{stderr}");
    let checked: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(checked["valid"], json!(true));
    assert_eq!(checked["dry_run"], json!(true));
    assert_eq!(checked["schedules"], json!(1));
    let (ok, stdout, _) = env
        .flexctl(&["--output", "json", "apply", "--dry-run", "-f", path(&good)])
        .await;
    assert!(ok);
    let planned: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(planned["action"], json!("create"));
    assert_eq!(planned["schedules"][0]["action"], json!("create"));
    assert_eq!(env.events().await, before, "dry runs and refusals write nothing");

    // A bad schedule of a new pipeline is found before anything is created.
    let bad_schedule = env.file(
        "bad_schedule.yaml",
        "name: orders\nowner: me\nsteps:\n  - plugin: csv@1.0.0\n  - plugin: jsonl@1.0.0\nschedules:\n  - cron: '0 * * * *'\n    jitter_seconds: 999999\n",
    );
    let (ok, _, stderr) = env.flexctl(&["apply", "-f", path(&bad_schedule)]).await;
    assert!(!ok && stderr.contains("bad_schedule.yaml:8:"), "{stderr}");
    assert_eq!(env.events().await, before);
    env.service.shutdown.cancel();
}

const V1: &str = "\
name: nightly
owner: data-team
tags: [sales]
steps:
  - plugin: csv@1.0.0
    config: {path: /in}
  - plugin: jsonl@1.0.0
schedules:
  - cron: '0 * * * *'
  - cron: '30 2 * * *'
    timezone: Europe/Berlin
  - cron: '0 5 * * 1'
";

#[tokio::test]
async fn apply_creates_then_shows_and_applies_only_the_difference_and_is_idempotent() {
    let env = env().await;
    let v1 = env.load("nightly.yaml", V1);
    let created = env.apply(&v1, false).await.unwrap();
    assert_eq!(created.action, "create");
    assert_eq!(created.schedules.len(), 3);
    assert!(created.pipeline_id.is_some());
    env.converged(&v1).await;

    // The same file again: nothing to do, said so, nothing written.
    let events = env.events().await;
    let again = env.apply(&v1, false).await.unwrap();
    assert!(!again.changed, "{again:?}");
    assert_eq!(again.action, "unchanged");
    assert!(again.text().contains("no changes"), "{}", again.text());
    assert_eq!(env.events().await, events);

    // Tags, a step's config, the retry policy; one schedule changed, one gone, one new.
    let v2_text = V1
        .replace("tags: [sales]", "tags: [sales, eu]\nretry: {max_attempts: 5}")
        .replace("{path: /in}", "{path: /in2}")
        .replace(
            "    timezone: Europe/Berlin\n",
            "    timezone: Europe/Berlin\n    jitter_seconds: 30\n    paused: true\n",
        )
        .replace("  - cron: '0 5 * * 1'\n", "  - cron: '*/15 * * * *'\n");
    let v2 = env.load("nightly.yaml", &v2_text);
    let planned = env.apply(&v2, true).await.unwrap();
    assert!(planned.changed && planned.dry_run);
    let fields: Vec<&str> = planned.changes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, ["tags", "steps[0].config", "retry.max_attempts"], "{planned:?}");
    let actions: Vec<&str> = planned.schedules.iter().map(|s| s.action).collect();
    assert_eq!(actions, ["unchanged", "update", "create", "delete"], "{planned:?}");
    let text = planned.text();
    for line in [
        "~ tags: [\"sales\"] → [\"sales\",\"eu\"]",
        "~ steps[0].config: {\"path\":\"/in\"} → {\"path\":\"/in2\"}",
        "~ retry.max_attempts: 3 → 5",
        "~ schedule \"30 2 * * *\" Europe/Berlin",
        "jitter_seconds: 0 → 30",
        "paused: false → true",
        "+ schedule \"*/15 * * * *\" UTC",
        "- schedule \"0 5 * * 1\" UTC",
        "dry run",
    ] {
        assert!(text.contains(line), "{line:?} in\n{text}");
    }
    assert_eq!(env.events().await, events, "a dry run changes nothing");

    let applied = env.apply(&v2, false).await.unwrap();
    assert!(applied.changed && !applied.dry_run);
    env.converged(&v2).await;
    let view = flexctl::apply::find(&env.api, "nightly").await.unwrap().unwrap();
    assert_eq!(view.tags, ["sales", "eu"]);
    assert_eq!(view.definition.retry.max_attempts, 5);
    let schedules: Vec<flexcore_contracts::views::ScheduleView> = env
        .api
        .list_all(
            "schedule.list",
            &json!({"pipeline_id": view.pipeline_id, "state": "paused"}),
            100,
        )
        .await
        .unwrap();
    assert_eq!(schedules.len(), 1);
    assert_eq!(schedules[0].spec.jitter_seconds, 30);
    let events = env.events().await;
    assert!(!env.apply(&v2, false).await.unwrap().changed);
    assert_eq!(
        env.events().await,
        events,
        "applied twice: the second time changes nothing"
    );

    // Unlisted schedules: kept with the flag, kept when the file says nothing about
    // schedules, deleted otherwise.
    let only_one = v2_text.replace("  - cron: '*/15 * * * *'\n", "");
    let v3 = env.load("nightly.yaml", &only_one);
    let options = ApplyOptions {
        dry_run: true,
        keep_unlisted_schedules: true,
    };
    let kept = flexctl::apply::apply(&env.api, &v3, None, &options).await.unwrap();
    assert!(!kept.changed, "{kept:?}");
    assert_eq!(kept.schedules.last().unwrap().action, "keep");
    let unmanaged = env.load("nightly.yaml", &v2_text[..v2_text.find("schedules:").unwrap()]);
    let outcome = env.apply(&unmanaged, true).await.unwrap();
    assert!(!outcome.changed && outcome.schedules.is_empty(), "{outcome:?}");
    assert_eq!(
        env.apply(&v3, true).await.unwrap().schedules.last().unwrap().action,
        "delete"
    );

    // `pipeline update NAME -f FILE` reconciles the same way, --dry-run and JSON included.
    let file = env.file("nightly.yaml", &only_one.replace("owner: data-team", "owner: ops"));
    let (ok, stdout, stderr) = env
        .flexctl(&[
            "--output",
            "json",
            "pipeline",
            "update",
            "nightly",
            "--dry-run",
            "-f",
            path(&file),
        ])
        .await;
    assert!(ok, "{stderr}");
    let planned: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(planned["dry_run"], json!(true));
    assert_eq!(planned["changes"][0]["field"], json!("owner"));
    assert_eq!(planned["schedules"][2]["action"], json!("delete"));
    assert_eq!(env.events().await, events);
    let (ok, stdout, stderr) = env.flexctl(&["pipeline", "update", "nightly", "-f", path(&file)]).await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("~ owner: \"data-team\" → \"ops\"") && stdout.contains("applied"),
        "{stdout}"
    );
    let v4 = pipeline_file::load(&file).unwrap();
    env.converged(&v4).await;
    let live: Vec<flexcore_contracts::views::ScheduleView> = env
        .api
        .list_all(
            "schedule.list",
            &json!({"pipeline_id": view.pipeline_id, "state": "active"}),
            100,
        )
        .await
        .unwrap();
    assert_eq!(live.len(), 1, "the unlisted schedule was deleted: {live:?}");

    // A refusal while updating points at the file's line, and changes nothing.
    let bad = env.file(
        "nightly.yaml",
        &only_one.replace("{path: /in2}", "{path: /in2, pth: 1}"),
    );
    let (ok, _, stderr) = env.flexctl(&["apply", "-f", path(&bad)]).await;
    assert!(
        !ok && stderr.contains("nightly.yaml:7:") && stderr.contains("pth"),
        "{stderr}"
    );
    env.service.shutdown.cancel();
}

/// `apply` right after the pipeline was created (before the read model shows it): the
/// create it tries is refused as a taken name, and it updates that pipeline instead of
/// failing (the pipeline it names is the one the refusal says holds the name).
#[tokio::test]
async fn apply_right_after_a_create_updates_the_new_pipeline() {
    let env = env().await;
    let loaded = env.load(
        "fresh.yaml",
        "name: fresh\nowner: me\nsteps:\n  - plugin: csv@1.0.0\n    config: {path: /in}\n  - plugin: jsonl@1.0.0\n",
    );
    let created = flexctl::pipeline::create(&env.api, &loaded).await.unwrap();
    let changed = env.load(
        "fresh2.yaml",
        "name: fresh\nowner: someone-else\nsteps:\n  - plugin: csv@1.0.0\n    config: {path: /in}\n  - plugin: jsonl@1.0.0\n",
    );
    let outcome = env.apply(&changed, false).await.unwrap();
    assert_eq!(outcome.pipeline_id, Some(created.pipeline_id));
    assert_eq!(outcome.action, "update");
    env.converged(&changed).await;
}
