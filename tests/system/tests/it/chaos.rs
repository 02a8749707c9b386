//! The fault (chaos) suite, issue 14 item 8: the four service binaries over a private
//! Postgres and a private nats-server, under steady load, while every component is made
//! to fail in turn: kill -9 of each service (then started again), a graceful restart and a
//! kill -9 of nats-server, and a crash (immediate stop) of Postgres. Then, once the system
//! has settled:
//!
//! - every command the load sent was answered, and every acknowledged one has exactly its
//!   events in the log, with the stored reply the client got; a refused one wrote nothing
//!   (`log.rs`);
//! - no command's events are in the log twice (one transaction per `command_id`), no run
//!   was requested twice, no attempt claimed or ended twice, nothing follows a run's
//!   final event, no schedule slot was fired twice or both fired and skipped (`log.rs`);
//! - no attempt failed: the pipelines cannot fail, so a `run.failed` means a fault was
//!   taken for the run's own error (an attempt lost to a dead runner ends as
//!   `run.timed_out`, which is retried) (`log.rs`);
//! - every acknowledged command sent again with its `command_id` gets the first reply and
//!   writes nothing;
//! - `FLEXCORE_EVENTS` equals the log: same count, order, ids, headers, exact data bytes
//!   (`stream.rs`);
//! - the read models (get and list of plugins, pipelines, runs, schedules, the statistics
//!   and the audit log) equal the test's own fold of the log (`fold.rs`);
//! - no run is stuck: every run reaches a final state within a bound once the faults
//!   end, and no work is left outstanding in `FLEXCORE_WORK`;
//! - no finished run was executed again, from the plugins' own execution log (`execs.rs`).
//!
//! After each fault a probe measures how long until a command is accepted, a query
//! reflects it and a new run completes (`recovery.rs`; docs/benchmarks.md).
//!
//! The load (`load.rs`): a few clients, each creating pipelines, requesting and cancelling
//! runs, committing STATEs, updating and pausing pipelines and running a schedule of its
//! own, every command with a deterministic `command_id`, retried until answered.
//! Pipelines run a shell tap (a `process` plugin) into the wasm JSONL loader.
//!
//! Knobs (the long form, `scripts/chaos.sh`, is this test with larger values):
//! `FLEXCORE_CHAOS_ROUNDS` (rounds of every fault, default 1), `FLEXCORE_CHAOS_SECONDS`
//! (keep injecting faults at least this long, default 0), `FLEXCORE_CHAOS_CLIENTS`
//! (default 3), `FLEXCORE_CHAOS_FAULTS` (a comma-separated subset of `command`,
//! `projection`, `scheduler`, `runner`, `nats-restart`, `nats-kill`, `postgres`; the
//! cluster fault test, `cluster.rs`, runs this suite on a NATS cluster with replicas and
//! adds `nats-node`, `relay-leader`, `projection-leader`, `scheduler-owner`,
//! `runner-mid-run`: `failover.rs`),
//! `FLEXCORE_CHAOS_LOGS` (keep the services' logs in this directory),
//! `FLEXCORE_CHAOS_REPORT` (append the recovery table to this file).

mod execs;
pub(crate) mod failover;
mod fold;
mod load;
mod log;
mod recovery;
mod stream;

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use flexcore_client::{command_id, Retry};
use flexcore_contracts::commands::{DeleteSchedule, RegisterPlugin};
use flexcore_system_tests::cluster::{Cluster, Fault, Layout};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use failover::Step;
use load::{body, create_pipeline, Outcome, Sender};
use recovery::Recovery;

/// How long a killed component stays away.
const DOWNTIME: Duration = Duration::from_secs(1);
/// Quiet time between two faults, so each recovery is measured on its own.
const CALM: Duration = Duration::from_secs(2);
/// Bound on each recovery step after a fault (not a performance claim: a system that
/// has not recovered by then is broken).
const RECOVERY_BOUND: Duration = Duration::from_secs(90);
/// The runner's lease: short, so that attempts of a killed runner are retried soon.
const LEASE_SECONDS: u64 = 5;

/// The test's knobs.
pub(crate) struct Knobs {
    rounds: usize,
    seconds: u64,
    clients: usize,
    faults: Vec<Step>,
    /// Bound on settling after the load stops: every run final, nothing outstanding.
    settle: Duration,
    logs: Option<PathBuf>,
    report: Option<PathBuf>,
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map_or(default, |v| v.parse().unwrap_or_else(|e| panic!("{name}={v}: {e}")))
}

impl Knobs {
    /// The knobs `<prefix>_ROUNDS`, `_SECONDS`, `_CLIENTS`, `_FAULTS` (default `faults`),
    /// `_SETTLE_SECONDS`, `_LOGS`, `_REPORT` (prefix `FLEXCORE_CHAOS` for this test).
    pub(crate) fn from_env(prefix: &str, faults: &[Step]) -> Self {
        let var = |name: &str| format!("{prefix}_{name}");
        let faults = match std::env::var(var("FAULTS")) {
            Ok(list) => list
                .split(',')
                .map(|name| {
                    Step::parse(name.trim()).unwrap_or_else(|| panic!("{}: unknown fault {name:?}", var("FAULTS")))
                })
                .collect(),
            Err(_) => faults.to_vec(),
        };
        Self {
            rounds: env_number(&var("ROUNDS"), 1) as usize,
            seconds: env_number(&var("SECONDS"), 0),
            clients: env_number(&var("CLIENTS"), 3) as usize,
            faults,
            settle: Duration::from_secs(env_number(&var("SETTLE_SECONDS"), 180)),
            logs: std::env::var_os(var("LOGS")).map(PathBuf::from),
            report: std::env::var_os(var("REPORT")).map(PathBuf::from),
        }
    }
}

/// The services' settings: fast relay and projection fail-over, a short lease, a runner
/// id that survives restarts (as a pod name does), short shutdown graces.
fn settings() -> Vec<(&'static str, String)> {
    let ms = |n: u64| n.to_string();
    vec![
        ("FLEXCORE__DATABASE__MAX_CONNECTIONS", ms(8)),
        ("FLEXCORE__RELAY__IDLE_POLL_MS", ms(50)),
        ("FLEXCORE__RELAY__LEADER_RETRY_MS", ms(200)),
        ("FLEXCORE__PROJECTION__LEADER_RETRY_MS", ms(200)),
        ("FLEXCORE__RUNNER__LEASE_SECONDS", ms(LEASE_SECONDS)),
        ("FLEXCORE__RUNNER__RUNNER_ID", "chaos-runner".to_owned()),
        ("FLEXCORE__RUNNER__SLOTS", ms(4)),
        // The tap (a process plugin) appends to the test's private execution log: it runs
        // as the test's user (root here), not as nobody.
        ("FLEXCORE__RUNNER__PROCESS_UID", ms(0)),
        ("FLEXCORE__RUNNER__PROCESS_GID", ms(0)),
        ("FLEXCORE__COMMAND__SHUTDOWN_GRACE_MS", ms(2000)),
        ("FLEXCORE__PROJECTION__SHUTDOWN_GRACE_MS", ms(2000)),
        ("FLEXCORE__SCHEDULER__SHUTDOWN_GRACE_MS", ms(2000)),
        ("FLEXCORE__RUNNER__SHUTDOWN_GRACE_MS", ms(2000)),
    ]
}

/// Runs whose last event is not final, by SQL over the log.
const UNFINISHED_RUNS: &str = "SELECT r.aggregate_id FROM events r WHERE r.event_type = 'run.requested' \
     AND NOT EXISTS (SELECT 1 FROM events f WHERE f.aggregate_id = r.aggregate_id \
       AND (f.event_type IN ('run.succeeded', 'run.cancelled') \
            OR (f.event_type IN ('run.failed', 'run.timed_out') AND (f.data::jsonb)->>'final' = 'true')))";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_work_survives_every_component_failing_and_nothing_happens_twice() {
    let faults: Vec<Step> = Fault::ALL.into_iter().map(Step::Fault).collect();
    scenario(Layout::SINGLE, Knobs::from_env("FLEXCORE_CHAOS", &faults), "chaos").await;
}

/// The suite: `layout`'s services under load, `knobs.faults` injected in turn, then the
/// checks of the module documentation. `name` heads the report.
pub(crate) async fn scenario(layout: Layout, knobs: Knobs, name: &str) {
    flexcore_testkit::init_tracing();
    let work = tempfile::Builder::new()
        .prefix("flexcore-chaos-work-")
        .tempdir()
        .unwrap();
    let execution_log = work.path().join("executions.log");
    let tap = work.path().join("tap.sh");
    std::fs::write(&tap, execs::tap_script(&execution_log)).unwrap();
    std::fs::set_permissions(&tap, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = work.path().join("out");
    std::fs::create_dir(&output).unwrap();

    let started = Instant::now();
    let mut cluster = Cluster::start_layout(layout, &settings(), knobs.logs.as_deref()).await;
    let hard_deadline = CancellationToken::new();
    let _stop_retries = hard_deadline.clone().drop_guard();
    let sender = Sender {
        api: flexcore_client::Client::new(cluster.client.clone())
            .with_identity(cluster.nats.identity(flexcore_testkit::nats::HARNESS).unwrap())
            .with_timeout(Duration::from_secs(2)),
        ledger: Default::default(),
        deadline: hard_deadline.clone(),
    };
    let setup = Uuid::new_v5(&Uuid::NAMESPACE_OID, b"flexcore-chaos-setup");
    let accepted = |outcome: Outcome| match outcome {
        Outcome::Accepted(a) => a,
        other => panic!("setup: {other:?}"),
    };

    // The plugins, the probe's pipeline and two scheduled pipelines.
    let digest = flexcore_plugin_store::upload(
        &cluster.js,
        &flexcore_system_tests::plugins::wasm("flexcore-plugin-jsonl"),
    )
    .await
    .unwrap();
    let plugins: [RegisterPlugin; 2] = [
        body(
            json!({"name": "chaos-tap", "version": "1.0.0", "kind": "extractor", "runtime": "process",
                    "executable": tap.display().to_string(), "limits": {"timeout_seconds": 120}}),
        ),
        body(
            json!({"name": "jsonl", "version": "1.0.0", "kind": "loader", "module_digest": digest,
                    "grants": {"dirs": [{"host_path": output.display().to_string(), "guest_path": "/out",
                                         "access": "read_write"}]}}),
        ),
    ];
    for (i, plugin) in plugins.iter().enumerate() {
        accepted(sender.send(plugin, command_id(setup, &format!("plugin:{i}"))).await);
    }
    let probe_pipeline = command_id(setup, "pipeline:probe");
    accepted(
        sender
            .send(
                &create_pipeline(probe_pipeline, "probe", 100),
                command_id(setup, "probe"),
            )
            .await,
    );
    for i in 0..2 {
        let pipeline = command_id(setup, &format!("pipeline:sched-{i}"));
        let create = create_pipeline(pipeline, &format!("sched-{i}"), 1);
        accepted(
            sender
                .send(&create, command_id(setup, &format!("create:sched-{i}")))
                .await,
        );
        let schedule = body(json!({"pipeline_id": pipeline, "cron": "*/3 * * * * *", "overlap": "skip"}));
        let schedule: flexcore_contracts::commands::CreateSchedule = schedule;
        accepted(
            sender
                .send(&schedule, command_id(setup, &format!("schedule:sched-{i}")))
                .await,
        );
    }

    // Steady load, until the faults are over.
    let stop_load = CancellationToken::new();
    let clients: Vec<_> = (0..knobs.clients)
        .map(|index| {
            let client = load::Client {
                index,
                sender: sender.clone(),
                pace: Duration::from_millis(300),
                max_pipelines: 4,
                cron: "*/5 * * * * *".to_owned(),
            };
            tokio::spawn(client.run(stop_load.clone()))
        })
        .collect();
    flexcore_testkit::wait_until(Duration::from_secs(120), "a first run succeeded", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'run.succeeded'")
            .fetch_one(&cluster.db)
            .await
            .unwrap_or(0);
        n > 0
    })
    .await
    .unwrap();

    // The faults, each followed by a recovery probe and a calm moment.
    let mut problems: Vec<String> = Vec::new();
    let mut recoveries: Vec<Recovery> = Vec::new();
    let faults_started = Instant::now();
    let mut round = 0;
    while round < knobs.rounds || faults_started.elapsed() < Duration::from_secs(knobs.seconds) {
        for &step in &knobs.faults {
            let injected = failover::inject(&mut cluster, &sender, step, DOWNTIME).await;
            let fault = injected.name.clone();
            let n = recoveries.len();
            let (command, query, run, schedule) =
                recovery::probe(&sender, &cluster.db, probe_pipeline, n, injected.ended, RECOVERY_BOUND).await;
            tracing::info!(
                fault,
                round,
                ?command,
                ?query,
                ?run,
                ?schedule,
                failover = ?injected.failover,
                "recovered"
            );
            recoveries.push(Recovery {
                fault: fault.clone(),
                round,
                ready: injected.ready_after,
                command,
                query,
                run,
                schedule,
                failover: injected.failover,
            });
            for replica in cluster.exited() {
                problems.push(format!("{replica} exited on its own after {fault}"));
                cluster.spawn_replica(replica);
                cluster.wait_replica_ready(replica, RECOVERY_BOUND).await;
            }
            tokio::time::sleep(CALM).await;
        }
        round += 1;
    }
    let faults_took = faults_started.elapsed();

    // Stop the load (each client finishes its command), then the schedules.
    stop_load.cancel();
    let mut sent_by_clients = 0;
    for client in clients {
        sent_by_clients += tokio::time::timeout(Duration::from_secs(120), client)
            .await
            .unwrap()
            .unwrap();
    }
    let schedules: Vec<Uuid> = sender
        .ledger
        .entries()
        .iter()
        .filter(|s| s.name == "schedule.create")
        .filter_map(|s| match &s.outcome {
            Outcome::Accepted(a) => Some(a.aggregate_id),
            _ => None,
        })
        .collect();
    for schedule in &schedules {
        let delete: DeleteSchedule = body(json!({"schedule_id": schedule}));
        sender.send(&delete, command_id(*schedule, "chaos:delete")).await;
    }

    // Settle: every run final, no work outstanding, the relay and every projection at
    // the end of a log that no longer grows.
    let settle_started = Instant::now();
    let last_count = std::cell::Cell::new(-1i64);
    let settled = flexcore_testkit::try_wait_until(knobs.settle, "the system to settle", || async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let unfinished: Vec<Uuid> = sqlx::query_scalar(UNFINISHED_RUNS).fetch_all(&cluster.db).await?;
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&cluster.db)
            .await?;
        let behind: i64 = sqlx::query_scalar(
            "WITH last AS (SELECT transaction_id, global_position FROM events \
                            ORDER BY transaction_id DESC, global_position DESC LIMIT 1) \
             SELECT (SELECT count(*) FROM read.projections p, last \
                      WHERE (p.transaction_id, p.global_position) <> (last.transaction_id, last.global_position)) \
                  + (SELECT count(*) FROM relay_checkpoints c, last \
                      WHERE (c.transaction_id, c.global_position) <> (last.transaction_id, last.global_position))",
        )
        .fetch_one(&cluster.db)
        .await?;
        let outstanding = stream::outstanding_work(&cluster.js).await?;
        // On a cluster: every stream's every replica current.
        let lagging = stream::lagging_replicas(&cluster.js).await?;
        // Unchanged since the previous look, half a second ago.
        let stable = count == last_count.replace(count);
        tracing::info!(
            unfinished = unfinished.len(),
            behind,
            outstanding,
            count,
            ?lagging,
            "settling"
        );
        Ok(unfinished.is_empty() && behind == 0 && outstanding == 0 && lagging.is_empty() && stable)
    })
    .await;
    let settle_took = settle_started.elapsed();

    let log = log::read(&cluster.db).await;
    if let Err(e) = settled {
        let unfinished: Vec<Uuid> = sqlx::query_scalar(UNFINISHED_RUNS)
            .fetch_all(&cluster.db)
            .await
            .unwrap();
        let stuck: Vec<String> = unfinished
            .iter()
            .take(5)
            .map(|run| {
                let history: Vec<String> = log
                    .iter()
                    .filter(|e| e.aggregate_id == *run)
                    .map(|e| format!("{} {} {}", e.recorded_at, e.event_type, e.data))
                    .collect();
                format!("run {run}:\n    {}", history.join("\n    "))
            })
            .collect();
        problems.push(format!(
            "not settled within {:?} ({e:#}): {} runs unfinished, work outstanding {:?}, stream replicas lagging {:?}\n{}",
            knobs.settle,
            unfinished.len(),
            stream::outstanding_work(&cluster.js).await.ok(),
            stream::lagging_replicas(&cluster.js).await.ok(),
            stuck.join("\n")
        ));
    }

    // The checks.
    let commands = log::command_log(&cluster.db).await;
    problems.extend(log::acknowledged(&sender.ledger, &log, &commands));
    problems.extend(log::no_duplicates(&log, &commands));
    problems.extend(log::run_histories(&log));
    problems.extend(log::failed_attempts(&log));
    let entries = sender.ledger.entries();
    for sent in &entries {
        if let Outcome::Accepted(first) = &sent.outcome {
            match sender
                .api
                .command_raw(sent.name, sent.payload.clone(), &Retry::attempts(10))
                .await
            {
                Ok(again) if again == *first => {}
                other => problems.push(format!(
                    "{} {} sent again: {other:?}, first {first:?}",
                    sent.name, sent.command_id
                )),
            }
        }
    }
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&cluster.db)
        .await
        .unwrap();
    if after != log.len() as i64 {
        problems.push(format!(
            "sending acknowledged commands again wrote {} events",
            after - log.len() as i64
        ));
    }
    problems.extend(stream::equals_log(&cluster.js, &log).await);
    problems.extend(fold::compare_views(&sender.api, &log).await);
    let executions = execs::read(&execution_log);
    let verdict = execs::check(&executions, &log);
    problems.extend(verdict.violations.iter().cloned());

    // What happened, and how long recovery took.
    let runs = fold::fold(&log).runs;
    let refused = entries
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Refused(_)))
        .count();
    let longest = entries.iter().map(|s| s.took).max().unwrap_or_default();
    let table = format!(
        "Recovery after each fault, seconds from its end (median / max):\n\n{}\nEach fault:\n\n{}\nFail-over, seconds from the kill (median / max):\n\n{}",
        recovery::summary(&recoveries),
        recovery::table(&recoveries),
        recovery::failover_summary(&recoveries)
    );
    let summary = format!(
        "{name}: {} faults in {:.0} s, {} commands sent ({} by the load clients, {} refused, the longest answered after {:.1} s), {} events, {} runs \
         ({} succeeded), {} plugin executions ({} of an attempt that had already ended), settled in {:.1} s, \
         {:.0} s in all\n\n{table}",
        recoveries.len(),
        faults_took.as_secs_f64(),
        entries.len(),
        sent_by_clients,
        refused,
        longest.as_secs_f64(),
        log.len(),
        runs.len(),
        runs.values().filter(|r| r.state == "succeeded").count(),
        verdict.executions,
        verdict.stale.len(),
        settle_took.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    tracing::info!("{summary}");
    if let Some(report) = &knobs.report {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(report)
            .unwrap();
        writeln!(file, "{summary}").unwrap();
        for stale in &verdict.stale {
            writeln!(file, "- {stale}").unwrap();
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}\n\n{summary}\nservice logs:\n{}",
        problems.len(),
        problems.join("\n"),
        cluster.log_tails(30)
    );
    cluster.stop(Duration::from_secs(10)).await;
}
