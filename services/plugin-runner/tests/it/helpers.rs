//! Shared fixtures: the example plugins built for wasm32-wasip1 once per test binary, WAT
//! modules, one shared sandbox, stage builders and an execution driver that collects events.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use flexcore_contracts::model::{Grants, PluginKind, ResourceLimits};
use flexcore_runner::executor::{execute, ExecEvent, ExecFailure, ExecSummary, Program, Stage};
use flexcore_runner::sandbox::{digest_of, Sandbox, SandboxConfig};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const PLUGINS: [&str; 6] = ["generator", "mapper", "discard", "jsonl", "misbehave", "csv"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds every plugin this suite uses, once, into `target/wasm-tests`.
fn wasm_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = workspace_root();
        let target = root.join("target/wasm-tests");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(&root).env("CARGO_TARGET_DIR", &target).args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip1",
        ]);
        for name in PLUGINS {
            cmd.args(["-p", &format!("flexcore-plugin-{name}")]);
        }
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "building the wasm plugins failed");
        target.join("wasm32-wasip1/release")
    })
}

/// The module of `plugins/<name>`, with its true digest (read and hashed once).
pub fn plugin(name: &str) -> Program {
    static LOADED: Mutex<BTreeMap<String, Program>> = Mutex::new(BTreeMap::new());
    let mut loaded = LOADED.lock().unwrap();
    let program = loaded.entry(name.to_owned()).or_insert_with(|| {
        let bytes = std::fs::read(wasm_dir().join(format!("flexcore-plugin-{name}.wasm"))).expect("plugin built");
        Program::Wasm {
            digest: digest_of(&bytes),
            bytes: bytes.into(),
        }
    });
    program.clone()
}

/// A module written in WAT.
pub fn wat(text: &str) -> Program {
    let bytes = wat::parse_str(text).expect("valid WAT");
    Program::Wasm {
        digest: digest_of(&bytes),
        bytes: bytes.into(),
    }
}

/// One sandbox for the whole binary, as in the runner (one per process).
pub fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| Sandbox::new(SandboxConfig::default()).expect("sandbox"))
}

/// A stage with default limits and no grants.
pub fn stage(name: &str, kind: PluginKind, program: Program, config: Value) -> Stage {
    Stage {
        name: name.to_owned(),
        kind,
        program,
        config: config.into(),
        limits: ResourceLimits::default(),
        grants: Grants::default(),
        secrets: Default::default(),
    }
}

pub fn extractor(name: &str, program: Program, config: Value) -> Stage {
    stage(name, PluginKind::Extractor, program, config)
}

pub fn transformer(name: &str, program: Program, config: Value) -> Stage {
    stage(name, PluginKind::Transformer, program, config)
}

pub fn loader(name: &str, program: Program, config: Value) -> Stage {
    stage(name, PluginKind::Loader, program, config)
}

/// The discard loader.
pub fn discard() -> Stage {
    loader("discard", plugin("discard"), serde_json::json!({}))
}

/// Compiles every wasm stage ahead, so timings measure the execution only.
pub async fn warm(sandbox: &Sandbox, stages: &[Stage]) {
    for stage in stages {
        if let Program::Wasm { digest, bytes } = &stage.program {
            sandbox
                .modules()
                .get_or_compile(digest, Arc::clone(bytes))
                .await
                .expect("compiles");
        }
    }
}

/// What an execution did.
pub struct Ran {
    pub result: Result<ExecSummary, ExecFailure>,
    pub events: Vec<ExecEvent>,
    pub elapsed: Duration,
}

impl Ran {
    pub fn failure(&self) -> &ExecFailure {
        match &self.result {
            Err(f) => f,
            Ok(s) => panic!("expected a failure, got {s:?}; logs: {:?}", self.logs()),
        }
    }

    pub fn summary(&self) -> &ExecSummary {
        match &self.result {
            Ok(s) => s,
            Err(f) => panic!("expected success, got {f:?}; logs: {:?}", self.logs()),
        }
    }

    pub fn logs(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter_map(|e| match e {
                ExecEvent::Log { line, .. } => Some(line.as_str()),
                ExecEvent::Checkpoint { .. } => None,
            })
            .collect()
    }

    /// Every checkpoint: the STATE (parsed) and the counts at it.
    pub fn checkpoints(&self) -> Vec<(Value, &flexcore_contracts::model::StreamCounters)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                ExecEvent::Checkpoint { state, counters } => Some((state.to_value(), counters)),
                ExecEvent::Log { .. } => None,
            })
            .collect()
    }
}

/// Compiles the stages, then runs them on `sandbox`, cancelling after `cancel_after`.
pub async fn run_on(
    sandbox: &Sandbox,
    stages: Vec<Stage>,
    state: Option<Value>,
    cancel_after: Option<Duration>,
) -> Ran {
    warm(sandbox, &stages).await;
    run_cold(sandbox, stages, state, cancel_after).await
}

/// [`run_on`] without compiling first: compilation is part of the run (and its time).
pub async fn run_cold(
    sandbox: &Sandbox,
    stages: Vec<Stage>,
    state: Option<Value>,
    cancel_after: Option<Duration>,
) -> Ran {
    let (tx, mut rx) = mpsc::channel(1024);
    let collector = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(event) = rx.recv().await {
            events.push(event);
        }
        events
    });
    let cancel = CancellationToken::new();
    if let Some(after) = cancel_after {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            cancel.cancel();
        });
    }
    let started = Instant::now();
    let result = execute(sandbox, stages, state.map(Into::into), tx, cancel).await;
    let elapsed = started.elapsed();
    let events = collector.await.expect("collector");
    Ran {
        result,
        events,
        elapsed,
    }
}

/// [`run_on`] the shared sandbox, without cancelling.
pub async fn run(stages: Vec<Stage>) -> Ran {
    run_on(sandbox(), stages, None, None).await
}

/// Fails the test if `elapsed` exceeds `limit` plus one second.
pub fn assert_within_a_second_of(elapsed: Duration, limit: Duration) {
    assert!(
        elapsed < limit + Duration::from_secs(1),
        "took {elapsed:?}, more than a second past {limit:?}"
    );
}
