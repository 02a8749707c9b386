//! `flexctl bench csv`: a CSV → JSONL pipeline end to end through a running stack.
//!
//! Writes a CSV of N rows of 8 columns into the directory granted to the `csv` example
//! plugin (`<state dir>/demo-input`, mounted at `/input`, as `flexctl dev` sets it up),
//! registers the example plugins `csv` and `jsonl` as `flexctl dev` does (a no-op when
//! they are registered already), creates a pipeline csv → jsonl writing to
//! `/output/bench-csv-<id>`, requests one run through the command service and follows it
//! to its end (scheduler/queue → runner → wasm plugins → the loader's files), after a
//! 1-row run of the same kind that has the runner compile and cache the modules. Then it
//! checks that the output holds every row (line count, first and last row) and reports
//! rows/s and the CPU seconds the plugin runner process(es) spent per million rows,
//! read from `/proc/<pid>/stat` before and after (the wasm plugins run inside the runner,
//! so that is the whole cost of moving the data). The input, the output and the
//! pipeline are removed afterwards.
//!
//! Needs a stack with a runner on this machine: `flexctl dev` (its state directory is
//! `--state-dir`, default `.flexcore`) and the modules from `plugins/build.sh`.

use std::io::{BufWriter, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use flexctl::api::Api;
use flexctl::cli::Output;
use flexctl::nats::Nats;
use flexctl::plugin::{Kind, RegisterArgs, Runtime, Submitted};
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

/// Options of the CSV benchmark.
#[derive(Debug, Clone)]
pub struct CsvBench {
    /// Data rows in the CSV (plus a header).
    pub rows: u64,
    /// The stack's state directory (`flexctl dev --state-dir`): the plugins' granted
    /// directories are `demo-input` and `demo-output` in it.
    pub state_dir: PathBuf,
    /// Directory with `csv.wasm` and `jsonl.wasm` (built by `plugins/build.sh`).
    pub plugins_dir: PathBuf,
    /// Source of the example plugins' config schemas.
    pub plugins_src: PathBuf,
    /// How long the run may take.
    pub timeout: Duration,
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct CsvReport {
    /// Data rows.
    pub rows: u64,
    /// Bytes of the CSV file.
    pub csv_bytes: u64,
    /// Bytes of the JSONL output.
    pub jsonl_bytes: u64,
    /// The run.
    pub run_id: Uuid,
    /// Seconds from the request to the run's end, as flexctl saw them.
    pub seconds: f64,
    /// Seconds from the runner's claim to the run's end (by the events' `recorded_at`).
    pub running_seconds: Option<f64>,
    /// Rows per second, request to end.
    pub rows_per_second: f64,
    /// Rows per second, claim to end.
    pub rows_per_second_running: Option<f64>,
    /// CPU seconds (user + system) of the runner process(es) during the run.
    pub runner_cpu_seconds: f64,
    /// Runner CPU seconds per million rows.
    pub runner_cpu_seconds_per_million: f64,
    /// Runner processes found (and measured) on this machine.
    pub runners: usize,
}

/// The version `flexctl dev` registers the example plugins under.
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Clock ticks per second of `/proc/<pid>/stat` (`sysconf(_SC_CLK_TCK)` on Linux).
const USER_HZ: f64 = 100.0;
/// Columns of the generated CSV.
const HEADER: &str = "id,name,email,amount,quantity,created_at,country,note";

/// Writes the header and `rows` rows of 8 columns (one of them quoted, with a comma
/// inside); returns the file's size.
fn write_csv(path: &Path, rows: u64) -> anyhow::Result<u64> {
    const COUNTRIES: [&str; 8] = ["DE", "FR", "US", "JP", "BR", "IN", "NL", "CA"];
    let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    writeln!(out, "{HEADER}")?;
    for i in 1..=rows {
        let cents = (i * 7919) % 1_000_000;
        writeln!(
            out,
            "{i},customer {i},user{i}@example.com,{}.{:02},{},2026-{:02}-{:02}T{:02}:{:02}:{:02}Z,{},\"order {i}, batch {}\"",
            cents / 100,
            cents % 100,
            i % 50 + 1,
            i % 12 + 1,
            i % 28 + 1,
            i % 24,
            i % 60,
            (i / 60) % 60,
            COUNTRIES[(i % 8) as usize],
            i / 1000
        )?;
    }
    out.flush()?;
    Ok(out.get_ref().metadata()?.len())
}

/// Registers `csv` and `jsonl` as `flexctl dev` does (already registered: nothing to do).
async fn register(api: &Api, config: &CsvBench, input: &Path, output: &Path) -> anyhow::Result<()> {
    for (name, kind, grant) in [
        ("csv", Kind::Extractor, format!("dir:{}:/input:ro", input.display())),
        ("jsonl", Kind::Loader, format!("dir:{}:/output:rw", output.display())),
    ] {
        let file = config.plugins_dir.join(format!("{name}.wasm"));
        if !file.is_file() {
            bail!(
                "{} is missing: build the plugins first (plugins/build.sh)",
                file.display()
            );
        }
        let schema = config.plugins_src.join(name).join("config.schema.json");
        let args = RegisterArgs {
            file: Some(file),
            name: name.to_owned(),
            version: VERSION.to_owned(),
            kind,
            runtime: Runtime::Wasm,
            executable: None,
            config_schema: schema.is_file().then_some(schema),
            grants: vec![grant],
            limits: vec!["memory=256MiB".to_owned(), "timeout=10m".to_owned()],
            description: Some(format!("FlexCore example plugin ({name})")),
        };
        match flexctl::plugin::submit(api, &args).await? {
            Submitted::Registered(_) => tracing::info!(plugin = name, "registered"),
            Submitted::AlreadyRegistered => tracing::debug!(plugin = name, "already registered"),
        }
    }
    Ok(())
}

/// The pids of the processes named `flexcore-runner` on this machine.
fn runner_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim_end() == "flexcore-runner")
        })
        .collect()
}

/// User + system CPU seconds of `pid` (fields 14 and 15 of `/proc/<pid>/stat`).
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: count from the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .context("short /proc/<pid>/stat")?
            .parse::<u64>()
            .context("bad /proc/<pid>/stat")
    };
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12,
    // in USER_HZ ticks, which Linux fixes at 100 per second for every user-space ABI.
    Ok((ticks(11)? + ticks(12)?) as f64 / USER_HZ)
}

fn total_cpu(pids: &[u32]) -> anyhow::Result<f64> {
    pids.iter().map(|&pid| cpu_seconds(pid)).sum()
}

/// Checks the loader's file: `rows` lines, the first and last row whole.
fn check_output(path: &Path, rows: u64) -> anyhow::Result<u64> {
    let mut file = std::fs::File::open(path).with_context(|| format!("the run wrote no {}", path.display()))?;
    let (mut lines, mut bytes) = (0u64, 0u64);
    let mut buf = vec![0u8; 1 << 20];
    let mut first = Vec::new();
    let mut tail = Vec::new();
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        if lines == 0 {
            first.extend_from_slice(chunk.split(|&b| b == b'\n').next().unwrap_or_default());
        }
        lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        bytes += n as u64;
        tail.extend_from_slice(chunk);
        if tail.len() > 4096 {
            tail.drain(..tail.len() - 4096);
        }
    }
    ensure!(lines == rows, "{} holds {lines} lines, expected {rows}", path.display());
    let last = tail
        .strip_suffix(b"\n")
        .and_then(|t| t.rsplit(|&b| b == b'\n').next())
        .unwrap_or_default();
    let (first, last): (Value, Value) = (serde_json::from_slice(&first)?, serde_json::from_slice(last)?);
    ensure!(
        first["id"] == json!("1") && first.as_object().is_some_and(|o| o.len() == 8),
        "unexpected first row {first}"
    );
    ensure!(last["id"] == json!(rows.to_string()), "unexpected last row {last}");
    ensure!(
        last["note"] == json!(format!("order {rows}, batch {}", rows / 1000)),
        "unexpected last row {last}"
    );
    Ok(bytes)
}

/// Runs the benchmark against the stack `nats` reaches.
pub async fn run(nats: &Nats, config: &CsvBench) -> anyhow::Result<CsvReport> {
    ensure!(config.rows > 0, "--rows must be at least 1");
    let state_dir = config.state_dir.canonicalize().with_context(|| {
        format!(
            "state directory {} (flexctl dev --state-dir)",
            config.state_dir.display()
        )
    })?;
    let (input, output) = (state_dir.join("demo-input"), state_dir.join("demo-output"));
    std::fs::create_dir_all(&input)?;
    std::fs::create_dir_all(&output)?;
    let api = nats.api().await?;
    register(&api, config, &input, &output).await?;

    let id: String = Uuid::new_v4().simple().to_string().chars().take(8).collect();
    // A 1-row run first (not measured) has the runner compile and cache both modules, as
    // it holds them for every later run: the measured run moves data, it compiles nothing.
    let dirs = (input.as_path(), output.as_path());
    tracing::info!("warm-up: a 1-row run");
    one(&api, config, dirs, &format!("bench-csv-{id}-warmup"), 1).await?;
    one(&api, config, dirs, &format!("bench-csv-{id}"), config.rows).await
}

/// Writes a CSV of `rows` rows, runs it through a pipeline `name`, removes the files.
async fn one(
    api: &Api,
    config: &CsvBench,
    (input, output): (&Path, &Path),
    name: &str,
    rows: u64,
) -> anyhow::Result<CsvReport> {
    let csv_path = input.join(format!("{name}.csv"));
    let out_dir = output.join(name);
    tracing::info!(rows, file = %csv_path.display(), "writing the CSV");
    let csv_bytes = write_csv(&csv_path, rows)?;
    let result = measure(api, config, name, &out_dir, (csv_bytes, rows)).await;
    let _ = std::fs::remove_file(&csv_path);
    let _ = std::fs::remove_dir_all(&out_dir);
    result
}

async fn measure(
    api: &Api,
    config: &CsvBench,
    name: &str,
    out_dir: &Path,
    input: (u64, u64),
) -> anyhow::Result<CsvReport> {
    let body = json!({
        "name": name,
        "owner": "bench",
        "description": "flexctl bench csv: CSV → JSONL end to end",
        "steps": [
            {"plugin": format!("csv@{VERSION}"), "config": {"path": format!("/input/{name}.csv"), "stream": "rows"}},
            {"plugin": format!("jsonl@{VERSION}"), "config": {"directory": format!("/output/{name}"), "append": false}},
        ],
        "max_active_runs": 1,
        "run_timeout_seconds": config.timeout.as_secs().max(1),
    });
    let pipeline_id = api
        .command("pipeline.create", &body)
        .await
        .with_context(|| format!("creating pipeline {name}"))?
        .aggregate_id;
    let result = run_once(api, config, pipeline_id, out_dir, input).await;
    let archive = json!({"pipeline_id": pipeline_id, "reason": "flexctl bench csv finished"});
    if let Err(error) = api.command("pipeline.archive", &archive).await {
        tracing::warn!(%error, pipeline = name, "could not archive the bench pipeline");
    }
    result
}

async fn run_once(
    api: &Api,
    config: &CsvBench,
    pipeline_id: Uuid,
    out_dir: &Path,
    (csv_bytes, rows): (u64, u64),
) -> anyhow::Result<CsvReport> {
    let pids = runner_pids();
    ensure!(
        !pids.is_empty(),
        "no flexcore-runner process on this machine: start the stack with `flexctl dev`"
    );
    let cpu_before = total_cpu(&pids)?;
    let started = Instant::now();
    tracing::info!(rows, "requesting the run");
    let outcome = flexctl::run::start(api, pipeline_id, true, config.timeout, Output::Json).await?;
    let wall = started.elapsed().as_secs_f64();
    let cpu = total_cpu(&pids)? - cpu_before;
    ensure!(
        outcome.state == "succeeded",
        "run {} ended {}: {}",
        outcome.run_id,
        outcome.state,
        outcome.error.as_deref().unwrap_or("")
    );
    let counted: u64 = outcome
        .counters
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
    ensure!(counted == rows, "the runner counted {counted} records, expected {rows}");
    let jsonl_bytes = check_output(&out_dir.join("rows.jsonl"), rows)?;
    let seconds = outcome.seconds.unwrap_or(wall);
    let count = rows;
    let rows = rows as f64;
    Ok(CsvReport {
        rows: count,
        csv_bytes,
        jsonl_bytes,
        run_id: outcome.run_id,
        seconds,
        running_seconds: outcome.running_seconds,
        rows_per_second: rows / seconds,
        rows_per_second_running: outcome.running_seconds.filter(|s| *s > 0.0).map(|s| rows / s),
        runner_cpu_seconds: cpu,
        runner_cpu_seconds_per_million: cpu / rows * 1e6,
        runners: pids.len(),
    })
}

impl CsvReport {
    /// Human-readable lines.
    pub fn text(&self) -> String {
        let running = match (self.running_seconds, self.rows_per_second_running) {
            (Some(s), Some(r)) => format!("; claim → end {s:.2} s, {r:.0} rows/s"),
            _ => String::new(),
        };
        format!(
            "csv → jsonl, {} rows of 8 columns ({:.1} MB CSV → {:.1} MB JSONL), run {}\n\
             request → end {:.2} s: {:.0} rows/s{running}\n\
             runner CPU {:.2} s: {:.2} CPU-s per million rows ({} runner process(es))\n",
            self.rows,
            self.csv_bytes as f64 / 1e6,
            self.jsonl_bytes as f64 / 1e6,
            self.run_id,
            self.seconds,
            self.rows_per_second,
            self.runner_cpu_seconds,
            self.runner_cpu_seconds_per_million,
            self.runners
        )
    }
}
