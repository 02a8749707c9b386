//! The aggregates the fuzz starts from, made through the API: plugins of every kind (with
//! real-looking digests, config schemas with required and secret properties, a process
//! plugin, a deprecated and a disabled one), pipelines (one paused, one archived),
//! schedules (one paused) and runs in every state (pending, running, checkpointed,
//! retried, succeeded, cancelled, timed out, one of a schedule's slot). Mutated bodies
//! that refer to them reach the domain's decisions, not only `not_found`.

use flexcore_system_tests::Stack;
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};
use uuid::Uuid;

use super::support::corpus::World;
use super::support::values::config_schema;

/// A module digest that looks like one (nothing runs these plugins).
fn digest(rng: &mut StdRng) -> String {
    let hex: String = (0..32).map(|_| format!("{:02x}", rng.random::<u8>())).collect();
    format!("sha256:{hex}")
}

fn id(reply: &Value) -> Uuid {
    reply["aggregate_id"].as_str().unwrap().parse().unwrap()
}

/// Registers plugin `name@1.0.0` of `kind` with `extra` fields, adds it to `world`.
async fn plugin(s: &Stack, world: &mut World, rng: &mut StdRng, name: &str, kind: &'static str, extra: Value) -> Uuid {
    let (schema, config) = config_schema(rng, true);
    let mut body = json!({"name": name, "version": "1.0.0", "kind": kind, "config_schema": serde_json::from_str::<Value>(schema).unwrap()});
    if extra.get("runtime").is_none() {
        body["module_digest"] = json!(digest(rng));
    }
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let reply = s.ok("plugin.register", body).await;
    world.add_plugin(name, "1.0.0", kind, config);
    id(&reply)
}

/// Builds the world; returns it.
pub async fn build(s: &Stack, rng: &mut StdRng) -> World {
    let mut world = World::default();
    for (name, kind) in [
        ("tap-csv", "extractor"),
        ("tap-gen", "extractor"),
        ("map", "transformer"),
        ("target-jsonl", "loader"),
        ("target-null", "loader"),
    ] {
        plugin(s, &mut world, rng, name, kind, json!({})).await;
    }
    let process = json!({"runtime": "process", "executable": "/usr/bin/true"});
    plugin(s, &mut world, rng, "tap-proc", "extractor", process).await;
    let old = plugin(s, &mut world, rng, "target-old", "loader", json!({})).await;
    s.ok(
        "plugin.deprecate",
        json!({"plugin_id": old, "reason": "use target-jsonl"}),
    )
    .await;
    let off = plugin(s, &mut world, rng, "tap-off", "extractor", json!({})).await;
    s.ok("plugin.disable", json!({"plugin_id": off})).await;

    let [tap, _, map, target, ..] = &world.plugins[..] else {
        unreachable!()
    };
    let steps = json!([
        {"plugin": tap.reference, "config": tap.config},
        {"plugin": map.reference, "config": map.config},
        {"plugin": target.reference, "config": target.config},
    ]);
    for i in 0..6 {
        let body = json!({"name": format!("world-{i}"), "owner": "fuzz", "steps": steps, "max_active_runs": 1000});
        let pipeline = id(&s.ok("pipeline.create", body).await);
        world.pipelines.push(pipeline);
    }
    let p = world.pipelines.clone();
    s.ok("pipeline.pause", json!({"pipeline_id": p[4]})).await;
    s.ok("pipeline.archive", json!({"pipeline_id": p[5]})).await;
    for pipeline in &p[..3] {
        let body = json!({"pipeline_id": pipeline, "cron": "*/5 * * * *", "timezone": "Europe/Berlin"});
        world.schedules.push(id(&s.ok("schedule.create", body).await));
    }
    s.ok("schedule.pause", json!({"schedule_id": world.schedules[2]})).await;

    let mut runs = Vec::new();
    for _ in 0..7 {
        runs.push(id(&s.ok("run.request", json!({"pipeline_id": p[0]})).await));
    }
    let slot = json!({"pipeline_id": p[0], "trigger": "backfill", "schedule_id": world.schedules[0], "scheduled_for": "2026-01-01T00:00:00Z"});
    runs.push(id(&s.ok("run.request", slot).await));
    for run in &runs[1..5] {
        s.ok(
            "run.claim",
            json!({"run_id": run, "attempt": 1, "runner_id": "runner-1"}),
        )
        .await;
    }
    s.ok(
        "run.checkpoint",
        json!({"run_id": runs[2], "attempt": 1, "state": {"bookmarks": {"s": 1}}, "counters": {"s": 10}}),
    )
    .await;
    s.ok(
        "run.fail",
        json!({"run_id": runs[3], "attempt": 1, "error": {"code": "trap", "message": "boom", "step": 0}, "retryable": true}),
    )
    .await;
    s.ok("run.retry", json!({"run_id": runs[3], "failed_attempt": 1})).await;
    s.ok("run.succeed", json!({"run_id": runs[4], "attempt": 1})).await;
    s.ok("run.cancel", json!({"run_id": runs[5], "reason": "fuzz"})).await;
    s.ok(
        "run.claim",
        json!({"run_id": runs[6], "attempt": 1, "runner_id": "runner-2"}),
    )
    .await;
    s.ok(
        "run.time_out",
        json!({"run_id": runs[6], "attempt": 1, "reason": "lease_expired"}),
    )
    .await;
    world.runs = runs;
    world
}
