//! Valid bodies of every command.

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde_json::{json, Map, Value};

use super::super::values::{
    config_schema, counters, cron, digest, int, label, name, opaque, semver, text, timestamp, MAX_SAFE, ZONES,
};
use super::{maybe, Corpus, Plugin};

impl Corpus {
    /// A step of a plugin of `kind`, with a config its schema accepts.
    fn step(&mut self, kind: &str) -> Value {
        let plugins: Vec<Plugin> = self.world.of_kind(kind).into_iter().cloned().collect();
        let plugin = self.settled(&plugins).choose(&mut self.rng).cloned();
        let (reference, config) = match plugin {
            Some(p) => (p.reference, p.config),
            None => (format!("{kind}@1.0.0"), json!({})),
        };
        let mut step = Map::new();
        step.insert("plugin".into(), reference.into());
        let empty = config.as_object().is_none_or(Map::is_empty);
        if !empty || self.rng.random_bool(0.5) {
            step.insert("config".into(), config);
        }
        Value::Object(step)
    }

    /// An extractor, up to two transformers and a loader.
    fn steps(&mut self) -> Value {
        let mut steps = vec![self.step("extractor")];
        for _ in 0..self.rng.random_range(0..=2) {
            steps.push(self.step("transformer"));
        }
        steps.push(self.step("loader"));
        Value::Array(steps)
    }

    /// A retry policy, any of its fields given.
    fn retry(&mut self) -> Value {
        let rng = &mut self.rng;
        let mut retry = Map::new();
        maybe(&mut retry, rng, 0.5, "max_attempts", |r| int(r, 1, 100));
        maybe(&mut retry, rng, 0.5, "initial_backoff_seconds", |r| int(r, 1, 3600));
        maybe(&mut retry, rng, 0.5, "max_backoff_seconds", |r| int(r, 1, MAX_SAFE));
        maybe(&mut retry, rng, 0.5, "multiplier", |r| {
            json!(1.0 + r.random::<f64>() * 3.0)
        });
        Value::Object(retry)
    }

    /// Up to three distinct labels.
    fn tags(&mut self) -> Value {
        let mut tags: Vec<String> = (0..self.rng.random_range(0..4)).map(|_| label(&mut self.rng)).collect();
        tags.sort();
        tags.dedup();
        json!(tags)
    }

    /// `plugin.register`: wasm or process, with or without a config schema, limits, grants.
    fn register(&mut self) -> Value {
        let rng = &mut self.rng;
        let (name, version) = (name(rng, 64), semver(rng));
        let kind = *["extractor", "transformer", "loader"].choose(rng).unwrap_or(&"loader");
        let mut body = Map::new();
        body.insert("name".into(), name.clone().into());
        body.insert("version".into(), version.clone().into());
        body.insert("kind".into(), kind.into());
        if rng.random_bool(0.15) {
            body.insert("runtime".into(), "process".into());
            body.insert("executable".into(), "/usr/local/bin/tap-é".into());
            maybe(&mut body, rng, 0.3, "module_digest", |_| Value::Null);
        } else {
            maybe(&mut body, rng, 0.3, "runtime", |_| "wasm".into());
            body.insert("module_digest".into(), digest(rng).into());
            maybe(&mut body, rng, 0.2, "executable", |_| Value::Null);
        }
        let usable = !rng.random_bool(0.1);
        let (schema, config) = config_schema(rng, usable);
        if rng.random_bool(0.4) {
            body.insert("config_schema".into(), serde_json::from_str(schema).unwrap_or_default());
        }
        maybe(&mut body, rng, 0.3, "limits", |r| {
            let mut limits = Map::new();
            for key in ["memory_bytes", "fuel", "timeout_seconds", "max_output_bytes"] {
                maybe(&mut limits, r, 0.5, key, |r| int(r, 1, MAX_SAFE));
            }
            Value::Object(limits)
        });
        maybe(&mut body, rng, 0.3, "grants", |r| {
            let mut grants = Map::new();
            maybe(&mut grants, r, 0.5, "allowed_hosts", |_| {
                json!(["db.internal:5432", "h".repeat(255)])
            });
            maybe(&mut grants, r, 0.5, "env", |_| json!(["HOME", "ÜBER"]));
            maybe(
                &mut grants,
                r,
                0.5,
                "dirs",
                |_| json!([{"host_path": "/data", "guest_path": "/in", "access": "read_only"}]),
            );
            Value::Object(grants)
        });
        maybe(&mut body, rng, 0.3, "description", |r| text(r, 4000).into());
        let has_schema = body.contains_key("config_schema");
        let config = if has_schema { config } else { "{}" };
        if self.record && usable {
            self.world.add_plugin(&name, &version, kind, config);
        }
        Value::Object(body)
    }

    /// `pipeline.create`.
    fn create_pipeline(&mut self) -> Value {
        let mut body = Map::new();
        if self.rng.random_bool(0.8) {
            body.insert("pipeline_id".into(), self.fresh(|w| &mut w.pipelines));
        }
        let rng = &mut self.rng;
        body.insert("name".into(), format!("p-{}", name(rng, 20)).into());
        body.insert("owner".into(), label(rng).into());
        maybe(&mut body, rng, 0.3, "description", |r| text(r, 4000).into());
        if self.rng.random_bool(0.4) {
            body.insert("tags".into(), self.tags());
        }
        body.insert("steps".into(), self.steps());
        let rng = &mut self.rng;
        maybe(&mut body, rng, 0.6, "max_active_runs", |r| {
            if r.random_bool(0.7) {
                1000.into()
            } else {
                int(r, 1, 1000)
            }
        });
        if self.rng.random_bool(0.3) {
            body.insert("retry".into(), self.retry());
        }
        maybe(&mut body, &mut self.rng, 0.3, "run_timeout_seconds", |r| {
            int(r, 1, MAX_SAFE)
        });
        Value::Object(body)
    }

    /// `pipeline.update`: at least one field.
    fn update_pipeline(&mut self) -> Value {
        let mut body = Map::new();
        body.insert("pipeline_id".into(), self.pick(|w| &w.pipelines));
        let fields = [
            "owner",
            "description",
            "tags",
            "steps",
            "max_active_runs",
            "retry",
            "run_timeout_seconds",
        ];
        let first = self.rng.random_range(0..fields.len());
        for (i, field) in fields.iter().enumerate() {
            if i != first && !self.rng.random_bool(0.25) {
                continue;
            }
            let value = match *field {
                "owner" => label(&mut self.rng).into(),
                "description" => text(&mut self.rng, 4000).into(),
                "tags" => self.tags(),
                "steps" => self.steps(),
                "max_active_runs" => int(&mut self.rng, 1, 1000),
                "retry" => self.retry(),
                _ => int(&mut self.rng, 1, MAX_SAFE),
            };
            body.insert((*field).into(), value);
        }
        Value::Object(body)
    }

    /// `run.request`: by hand, by API, or for a schedule's slot (with both its fields).
    fn request_run(&mut self) -> Value {
        let mut body = Map::new();
        if self.rng.random_bool(0.7) {
            body.insert("run_id".into(), self.fresh(|w| &mut w.runs));
        }
        body.insert("pipeline_id".into(), self.pick(|w| &w.pipelines));
        let scheduled = match self.rng.random_range(0..10) {
            0 => {
                body.insert("trigger".into(), "schedule".into());
                true
            }
            1 => {
                body.insert("trigger".into(), "backfill".into());
                true
            }
            2 => true,
            3 | 4 => {
                body.insert("trigger".into(), "manual".into());
                false
            }
            5 => {
                body.insert("trigger".into(), "api".into());
                false
            }
            _ => false,
        };
        if scheduled {
            body.insert("schedule_id".into(), self.pick(|w| &w.schedules));
            body.insert("scheduled_for".into(), timestamp(&mut self.rng).into());
        }
        Value::Object(body)
    }

    /// `schedule.create`.
    fn create_schedule(&mut self) -> Value {
        let mut body = Map::new();
        if self.rng.random_bool(0.8) {
            body.insert("schedule_id".into(), self.fresh(|w| &mut w.schedules));
        }
        body.insert("pipeline_id".into(), self.pick(|w| &w.pipelines));
        self.schedule_fields(&mut body, true);
        maybe(&mut body, &mut self.rng, 0.2, "paused", |r| Value::Bool(r.random()));
        Value::Object(body)
    }

    /// The timing fields of a schedule: all of them sometimes, or (an update) at least one.
    fn schedule_fields(&mut self, body: &mut Map<String, Value>, create: bool) {
        let rng = &mut self.rng;
        let fields = [
            "cron",
            "timezone",
            "overlap",
            "catchup_window_seconds",
            "catchup_cap",
            "jitter_seconds",
            "start_at",
            "end_at",
        ];
        let first = if create { 0 } else { rng.random_range(0..fields.len()) };
        for (i, field) in fields.iter().enumerate() {
            if i != first && !rng.random_bool(0.3) {
                continue;
            }
            let value = match *field {
                "cron" => cron(rng).into(),
                "timezone" => (*ZONES.choose(rng).unwrap_or(&"UTC")).into(),
                "overlap" => (*["skip", "buffer_one", "allow"].choose(rng).unwrap_or(&"skip")).into(),
                "catchup_window_seconds" => int(rng, 0, MAX_SAFE),
                "catchup_cap" => int(rng, 0, 1000),
                "jitter_seconds" => int(rng, 0, 86_400),
                "start_at" => "2000-01-01T00:00:00Z".into(),
                _ => timestamp(rng).into(),
            };
            body.insert((*field).into(), value);
        }
    }

    /// A valid body of command `name` (without the meta fields).
    pub(super) fn command(&mut self, name: &str) -> Value {
        let reason = |rng: &mut StdRng, body: &mut Map<String, Value>| {
            maybe(body, rng, 0.5, "reason", |r| text(r, 1000).into());
        };
        let mut body = Map::new();
        match name {
            "plugin.register" => return self.register(),
            "plugin.deprecate" | "plugin.disable" => {
                body.insert("plugin_id".into(), self.plugin_id());
                reason(&mut self.rng, &mut body);
            }
            "plugin.enable" => {
                body.insert("plugin_id".into(), self.plugin_id());
            }
            "pipeline.create" => return self.create_pipeline(),
            "pipeline.update" => return self.update_pipeline(),
            "pipeline.pause" | "pipeline.archive" => {
                body.insert("pipeline_id".into(), self.pick(|w| &w.pipelines));
                reason(&mut self.rng, &mut body);
            }
            "pipeline.resume" => {
                body.insert("pipeline_id".into(), self.pick(|w| &w.pipelines));
            }
            "pipeline.commit_state" => {
                body.insert("pipeline_id".into(), self.pick(|w| &w.pipelines));
                body.insert("state".into(), opaque(&mut self.rng, 4));
            }
            "run.request" => return self.request_run(),
            "run.claim" => {
                body.insert("run_id".into(), self.pick(|w| &w.runs));
                body.insert("attempt".into(), self.attempt());
                body.insert("runner_id".into(), label(&mut self.rng).into());
                maybe(&mut body, &mut self.rng, 0.5, "lease_seconds", |r| int(r, 1, 86_400));
            }
            "run.checkpoint" => {
                body.insert("run_id".into(), self.pick(|w| &w.runs));
                body.insert("attempt".into(), self.attempt());
                body.insert("state".into(), opaque(&mut self.rng, 4));
                maybe(&mut body, &mut self.rng, 0.5, "counters", counters);
            }
            "run.succeed" => {
                body.insert("run_id".into(), self.pick(|w| &w.runs));
                body.insert("attempt".into(), self.attempt());
                maybe(&mut body, &mut self.rng, 0.5, "counters", counters);
            }
            "run.fail" => {
                body.insert("run_id".into(), self.pick(|w| &w.runs));
                body.insert("attempt".into(), self.attempt());
                let rng = &mut self.rng;
                let mut error = Map::new();
                error.insert(
                    "code".into(),
                    (*["trap", "timeout", "protocol", "x"].choose(rng).unwrap_or(&"trap")).into(),
                );
                error.insert("message".into(), text(rng, 8000).into());
                maybe(&mut error, rng, 0.5, "step", |r| int(r, 0, u64::from(u32::MAX)));
                body.insert("error".into(), Value::Object(error));
                body.insert("retryable".into(), Value::Bool(rng.random()));
                maybe(&mut body, rng, 0.5, "counters", counters);
            }
            "run.retry" => {
                body.insert("run_id".into(), self.pick(|w| &w.runs));
                body.insert("failed_attempt".into(), self.attempt());
            }
            "run.cancel" => {
                body.insert("run_id".into(), self.pick(|w| &w.runs));
                reason(&mut self.rng, &mut body);
            }
            "run.time_out" => {
                body.insert("run_id".into(), self.pick(|w| &w.runs));
                body.insert("attempt".into(), self.attempt());
                let why = *["lease_expired", "run_timeout"]
                    .choose(&mut self.rng)
                    .unwrap_or(&"run_timeout");
                body.insert("reason".into(), why.into());
            }
            "schedule.create" => return self.create_schedule(),
            "schedule.update" => {
                body.insert("schedule_id".into(), self.pick(|w| &w.schedules));
                self.schedule_fields(&mut body, false);
            }
            "schedule.pause" => {
                body.insert("schedule_id".into(), self.pick(|w| &w.schedules));
                reason(&mut self.rng, &mut body);
            }
            "schedule.resume" | "schedule.delete" => {
                body.insert("schedule_id".into(), self.pick(|w| &w.schedules));
            }
            "schedule.skip_slot" => {
                body.insert("schedule_id".into(), self.pick(|w| &w.schedules));
                body.insert("slot".into(), timestamp(&mut self.rng).into());
                body.insert("reason".into(), label(&mut self.rng).into());
            }
            "schedule.miss_slots" => {
                body.insert("schedule_id".into(), self.pick(|w| &w.schedules));
                let n = self.rng.random_range(1..=4);
                let slots: Vec<String> = (0..n).map(|_| timestamp(&mut self.rng)).collect();
                body.insert("slots".into(), json!(slots));
            }
            other => panic!("no corpus for command {other}: add one to support/corpus.rs"),
        }
        Value::Object(body)
    }
}
