//! `flexctl bench pipeline`: the plugin runner's executor in-process, without NATS.
//!
//! 1. Throughput: generator → mapper → discard for N small records, as wasm modules in
//!    the wasmtime sandbox and, wired the same way (bounded pipes, same host observer),
//!    as the same plugins compiled natively (the `process` runtime).
//! 2. Small-run latency: a 1-record generator → discard execution, repeated; it
//!    includes instantiating both cached modules, their WASI contexts and pipes, so it
//!    bounds the instantiation cost from above.
//! 3. Concurrency: many small runs at once on one sandbox; all must succeed; peak RSS.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _};
use flexcore_contracts::model::{Grants, PluginKind, ResourceLimits};
use flexcore_runner::executor::{execute, ExecSummary, Program, Stage};
use flexcore_runner::sandbox::{digest_of, Sandbox};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Options of the pipeline benchmark.
#[derive(Debug, Clone)]
pub struct PipelineBench {
    /// Records through the throughput pipeline.
    pub records: u64,
    /// Cargo target directory holding `wasm32-wasip1/release/*.wasm` and `release/*`.
    pub target_dir: PathBuf,
    /// Small executions for the latency figure.
    pub small_runs: u32,
    /// Small executions run at once.
    pub concurrent: usize,
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineReport {
    /// Records per run.
    pub records: u64,
    /// wasm records/s (best of 3).
    pub wasm_records_per_second: f64,
    /// native records/s (best of 3).
    pub native_records_per_second: f64,
    /// native ÷ wasm.
    pub native_over_wasm: f64,
    /// 1-record execution latency p50, ms.
    pub small_run_p50_ms: f64,
    /// 1-record execution latency p99, ms.
    pub small_run_p99_ms: f64,
    /// Concurrent small runs that succeeded / started.
    pub concurrent_ok: usize,
    /// Concurrent small runs started.
    pub concurrent: usize,
    /// Wall time of the concurrent batch, ms.
    pub concurrent_ms: f64,
    /// Peak resident set size of this process, MiB.
    pub peak_rss_mib: f64,
    /// Whether the pooling allocator was in use.
    pub pooling: bool,
}

fn wasm(target: &Path, package: &str) -> anyhow::Result<Program> {
    let path = target.join("wasm32-wasip1/release").join(format!("{package}.wasm"));
    let bytes: Arc<[u8]> = std::fs::read(&path)
        .with_context(|| {
            format!(
                "{} is missing: build the plugins first (plugins/build.sh)",
                path.display()
            )
        })?
        .into();
    Ok(Program::Wasm {
        digest: digest_of(&bytes),
        bytes,
    })
}

fn native(target: &Path, package: &str) -> anyhow::Result<Program> {
    let path = target.join("release").join(package);
    if !path.exists() {
        bail!("{} is missing: cargo build --release -p {package}", path.display());
    }
    Ok(Program::Process {
        executable: path,
        args: Vec::new(),
    })
}

fn stage(name: &str, kind: PluginKind, program: Program, config: Value) -> Stage {
    Stage {
        name: name.to_owned(),
        kind,
        program,
        config: config.into(),
        limits: ResourceLimits::default(),
        grants: Grants::default(),
        // The benchmark's configs hold no secrets.
        secrets: Default::default(),
    }
}

async fn run(sandbox: &Sandbox, stages: Vec<Stage>) -> anyhow::Result<ExecSummary> {
    let (tx, mut rx) = mpsc::channel(1024);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let result = execute(sandbox, stages, None, tx, CancellationToken::new()).await;
    drain.abort();
    result.map_err(|f| anyhow::anyhow!("execution failed: {}: {}", f.code, f.message))
}

fn throughput_stages(records: u64, program: &dyn Fn(&str) -> anyhow::Result<Program>) -> anyhow::Result<Vec<Stage>> {
    Ok(vec![
        stage(
            "generator",
            PluginKind::Extractor,
            program("flexcore-plugin-generator")?,
            json!({"records": records, "state_every": 10_000}),
        ),
        stage(
            "mapper",
            PluginKind::Transformer,
            program("flexcore-plugin-mapper")?,
            json!({"streams": {"*": {"rename": {"name": "label"}, "drop": ["ts"]}}}),
        ),
        stage(
            "discard",
            PluginKind::Loader,
            program("flexcore-plugin-discard")?,
            json!({}),
        ),
    ])
}

async fn best_of_three(
    sandbox: &Sandbox,
    records: u64,
    program: &dyn Fn(&str) -> anyhow::Result<Program>,
) -> anyhow::Result<f64> {
    let mut best = 0f64;
    for _ in 0..3 {
        let started = Instant::now();
        let summary = run(sandbox, throughput_stages(records, program)?).await?;
        let seen: u64 = summary.counters.values().sum();
        anyhow::ensure!(seen == records, "the loader received {seen} of {records} records");
        best = best.max(records as f64 / started.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// A 1-record generator → discard execution of already-loaded modules.
fn small(generator: &Program, discard: &Program) -> Vec<Stage> {
    vec![
        stage(
            "generator",
            PluginKind::Extractor,
            generator.clone(),
            json!({"records": 1}),
        ),
        stage("discard", PluginKind::Loader, discard.clone(), json!({})),
    ]
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Runs the benchmark.
pub async fn run_bench(config: &PipelineBench) -> anyhow::Result<PipelineReport> {
    let sandbox = Arc::new(Sandbox::new(Default::default()).context("starting the wasmtime sandbox")?);
    // Native stages run in their own working directory: use absolute paths.
    let target = std::fs::canonicalize(&config.target_dir)
        .with_context(|| format!("target directory {} not found", config.target_dir.display()))?;
    tracing::info!(records = config.records, "throughput: wasm");
    let wasm_rate = best_of_three(&sandbox, config.records, &|p| wasm(&target, p)).await?;
    tracing::info!(records = config.records, "throughput: native (same wiring)");
    let native_rate = best_of_three(&sandbox, config.records, &|p| native(&target, p)).await?;

    tracing::info!(runs = config.small_runs, "latency of 1-record executions");
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (generator, discard) = (
        wasm(&target, "flexcore-plugin-generator")?,
        wasm(&target, "flexcore-plugin-discard")?,
    );
    run(&sandbox, small(&generator, &discard)).await?; // compiles and caches both modules
    for _ in 0..config.small_runs {
        let started = Instant::now();
        run(&sandbox, small(&generator, &discard)).await?;
        latency.record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX).max(1))?;
    }

    tracing::info!(concurrent = config.concurrent, "concurrent small runs");
    let started = Instant::now();
    let tasks: Vec<_> = (0..config.concurrent)
        .map(|_| {
            let sandbox = sandbox.clone();
            let stages = small(&generator, &discard);
            tokio::spawn(async move { run(&sandbox, stages).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await? {
            Ok(_) => ok += 1,
            Err(error) => tracing::warn!(%error, "a concurrent run failed"),
        }
    }
    let concurrent_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(PipelineReport {
        records: config.records,
        wasm_records_per_second: wasm_rate,
        native_records_per_second: native_rate,
        native_over_wasm: native_rate / wasm_rate.max(f64::EPSILON),
        small_run_p50_ms: latency.value_at_quantile(0.5) as f64 / 1000.0,
        small_run_p99_ms: latency.value_at_quantile(0.99) as f64 / 1000.0,
        concurrent_ok: ok,
        concurrent: config.concurrent,
        concurrent_ms,
        peak_rss_mib: peak_rss_mib(),
        pooling: sandbox.uses_pooling(),
    })
}

impl PipelineReport {
    /// Human-readable lines.
    pub fn text(&self) -> String {
        format!(
            "generator → mapper → discard, {} records (best of 3)\n\
             wasm      {:>10.0} records/s\n\
             native    {:>10.0} records/s   (native is {:.2}× wasm)\n\
             1-record execution (2 cached modules instantiated): p50 {:.3} ms, p99 {:.3} ms\n\
             {} of {} concurrent small runs succeeded in {:.0} ms; peak RSS {:.0} MiB; pooling allocator: {}\n",
            self.records,
            self.wasm_records_per_second,
            self.native_records_per_second,
            self.native_over_wasm,
            self.small_run_p50_ms,
            self.small_run_p99_ms,
            self.concurrent_ok,
            self.concurrent,
            self.concurrent_ms,
            self.peak_rss_mib,
            self.pooling
        )
    }
}
