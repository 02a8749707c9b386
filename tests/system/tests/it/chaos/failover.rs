//! The faults a step of the suite injects: those of [`Cluster::inject`] (a service killed
//! and restarted, NATS or Postgres down, on a cluster the NATS node leading the events
//! stream, the relay leader, a projection leader), and two that need the test's own
//! pipelines: the scheduler replica that owns a schedule killed, and a runner killed in
//! the middle of a run. Each measures its fail-over from the kill: until another
//! scheduler replica fires a slot of the schedule the killed one owned, until the run the
//! killed runner was executing is retried and succeeds elsewhere.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use flexcore_client::command_id;
use flexcore_contracts::commands::{CreateSchedule, DeleteSchedule, RequestRun};
use flexcore_system_tests::cluster::{Cluster, Fault, Replica, Service, FAILOVER_BOUND};
use serde_json::json;
use uuid::Uuid;

use super::load::{body, create_slow_pipeline, Outcome, Sender};

/// One step of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A fault [`Cluster::inject`] knows.
    Fault(Fault),
    /// kill -9 of the scheduler replica that owns a schedule firing every second.
    KillSchedulerOwner,
    /// kill -9 of the runner replica executing a run (its tap pauses [`SLOW_TAP`]).
    KillRunnerMidRun,
}

/// How long the slow pipeline's tap pauses: a kill lands inside the attempt.
const SLOW_TAP: f64 = 3.0;

impl Step {
    /// The step named `name` (the knob `…_FAULTS`).
    pub fn parse(name: &str) -> Option<Step> {
        Some(match name {
            "command" => Step::Fault(Fault::Kill(Service::Command)),
            "projection" => Step::Fault(Fault::Kill(Service::Projection)),
            "scheduler" => Step::Fault(Fault::Kill(Service::Scheduler)),
            "runner" => Step::Fault(Fault::Kill(Service::Runner)),
            "nats-restart" => Step::Fault(Fault::NatsRestart),
            "nats-kill" => Step::Fault(Fault::NatsKill),
            "postgres" => Step::Fault(Fault::PostgresKill),
            "nats-node" => Step::Fault(Fault::NatsNodeKill),
            "relay-leader" => Step::Fault(Fault::KillRelayLeader),
            "projection-leader" => Step::Fault(Fault::KillProjectionLeader),
            "scheduler-owner" => Step::KillSchedulerOwner,
            "runner-mid-run" => Step::KillRunnerMidRun,
            _ => return None,
        })
    }
}

/// What a step did.
pub struct Injected {
    /// The fault's name.
    pub name: String,
    /// Recovery is measured from here (see [`flexcore_system_tests::cluster::Injected`]).
    pub ended: Instant,
    /// When the restarted replica was ready, after it was started.
    pub ready_after: Option<Duration>,
    /// Fail-over times from the kill.
    pub failover: Vec<(String, Duration)>,
}

/// Injects `step`; the killed component is started again `downtime` after the kill (or
/// once the fail-over is seen, whichever is later).
pub async fn inject(cluster: &mut Cluster, sender: &Sender, step: Step, downtime: Duration) -> Injected {
    match step {
        Step::Fault(fault) => {
            let injected = cluster.inject(fault, downtime).await;
            Injected {
                name: fault.name(),
                ended: injected.ended,
                ready_after: injected.ready_after,
                failover: injected.failover,
            }
        }
        Step::KillSchedulerOwner => kill_scheduler_owner(cluster, sender, downtime).await,
        Step::KillRunnerMidRun => kill_runner_mid_run(cluster, sender, downtime).await,
    }
}

/// Numbers the steps, so each creates pipelines and schedules of its own.
static STEP: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn scope() -> (Uuid, usize) {
    let n = STEP.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    (Uuid::new_v5(&Uuid::NAMESPACE_OID, b"flexcore-chaos-failover"), n)
}

fn accepted(what: &str, outcome: Outcome) -> Uuid {
    match outcome {
        Outcome::Accepted(a) => a.aggregate_id,
        other => panic!("{what}: {other:?}"),
    }
}

/// The acts of the schedule's slots so far: (actor, slot), in log order.
async fn slot_acts(cluster: &Cluster, schedule: Uuid) -> Vec<(String, DateTime<Utc>)> {
    let rows: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT metadata->>'actor', COALESCE((data::jsonb)->>'scheduled_for', (data::jsonb)->>'slot') FROM events \
          WHERE (event_type = 'run.requested' AND (data::jsonb)->>'schedule_id' = $1) \
             OR (event_type = 'schedule.slot_skipped' AND aggregate_id = $2) \
          ORDER BY global_position",
    )
    .bind(schedule.to_string())
    .bind(schedule)
    .fetch_all(&cluster.db)
    .await
    .unwrap_or_default();
    rows.into_iter()
        .filter_map(|(actor, slot)| {
            let slot = DateTime::parse_from_rfc3339(&slot?).ok()?.with_timezone(&Utc);
            Some((actor.unwrap_or_default(), slot))
        })
        .collect()
}

/// A schedule firing every second on a pipeline of its own; once one replica acted on
/// three slots in a row (the owner: the others act only after the takeover grace, when
/// the owner has not), that replica is killed. Fail-over: until a slot after the
/// kill was acted on by another replica (the time includes the wait for that slot, at
/// most a second); also how late past its slot that act came.
async fn kill_scheduler_owner(cluster: &mut Cluster, sender: &Sender, downtime: Duration) -> Injected {
    let (scope, n) = scope();
    let pipeline = command_id(scope, &format!("owner-pipeline:{n}"));
    accepted(
        "owner pipeline",
        sender
            .send(
                &create_slow_pipeline(pipeline, &format!("owner-{n}"), 1, 0.1),
                command_id(scope, &format!("owner-create:{n}")),
            )
            .await,
    );
    let create: CreateSchedule = body(json!({"pipeline_id": pipeline, "cron": "* * * * * *", "overlap": "skip"}));
    let schedule = accepted(
        "owner schedule",
        sender
            .send(&create, command_id(scope, &format!("owner-schedule:{n}")))
            .await,
    );
    let started = Instant::now();
    // The owner: the replica that acted on the last three slots (a takeover of an early
    // slot, before every replica had read the schedule, is another replica's).
    let owner = loop {
        let acts = slot_acts(cluster, schedule).await;
        if let [.., a, b, c] = acts.as_slice() {
            if a.0 == b.0 && b.0 == c.0 {
                break c.0.clone();
            }
        }
        assert!(
            started.elapsed() < FAILOVER_BOUND,
            "schedule {schedule} was not acted on three times in a row by one replica: {acts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let names = flexcore_testkit::nats::SCHEDULER_REPLICAS;
    let index = names
        .iter()
        .position(|r| owner == format!("scheduler-{r}"))
        .unwrap_or_else(|| panic!("schedule {schedule} fired by {owner:?}, not a scheduler replica"));
    let victim = Replica {
        service: Service::Scheduler,
        index,
    };
    let killed_at = Utc::now();
    let killed = cluster.kill_replica(victim);
    let (took, late) = loop {
        let acts = slot_acts(cluster, schedule).await;
        if let Some((_, slot)) = acts.iter().find(|(actor, slot)| *actor != owner && *slot > killed_at) {
            let late = (Utc::now() - *slot).to_std().unwrap_or_default();
            break (killed.elapsed(), late);
        }
        assert!(
            killed.elapsed() < FAILOVER_BOUND,
            "no other scheduler replica fired schedule {schedule} within {FAILOVER_BOUND:?} of killing its owner {owner}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let delete: DeleteSchedule = body(json!({"schedule_id": schedule}));
    sender
        .send(&delete, command_id(scope, &format!("owner-delete:{n}")))
        .await;
    tokio::time::sleep_until((killed + downtime).into()).await;
    cluster.spawn_replica(victim);
    let restarted = Instant::now();
    cluster.wait_replica_ready(victim, Duration::from_secs(120)).await;
    Injected {
        name: "kill -9 a schedule's owning scheduler".to_owned(),
        ended: killed,
        ready_after: Some(restarted.elapsed()),
        failover: vec![
            ("slot fired by another replica".to_owned(), took),
            ("that slot, late past its time".to_owned(), late),
        ],
    }
}

/// A run of a pipeline whose tap pauses; once a runner has claimed it, that runner is
/// killed. Fail-over: until the run is claimed again (the lease expired, the scheduler
/// timed the attempt out and retried it) and until it succeeded.
async fn kill_runner_mid_run(cluster: &mut Cluster, sender: &Sender, downtime: Duration) -> Injected {
    let (scope, n) = scope();
    let pipeline = command_id(scope, &format!("slow-pipeline:{n}"));
    accepted(
        "slow pipeline",
        sender
            .send(
                &create_slow_pipeline(pipeline, &format!("slow-{n}"), 1, SLOW_TAP),
                command_id(scope, &format!("slow-create:{n}")),
            )
            .await,
    );
    let run = command_id(scope, &format!("slow-run:{n}"));
    let request: RequestRun = body(json!({"run_id": run, "pipeline_id": pipeline}));
    accepted(
        "slow run",
        sender
            .send(&request, command_id(scope, &format!("slow-request:{n}")))
            .await,
    );
    let claims = move |db: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, String>(
            "SELECT (data::jsonb)->>'runner_id' FROM events WHERE aggregate_id = $1 \
              AND event_type = 'run.claimed' ORDER BY global_position",
        )
        .bind(run)
        .fetch_all(&db)
        .await
        .unwrap_or_default()
    };
    let started = Instant::now();
    let runner = loop {
        if let Some(first) = claims(cluster.db.clone()).await.into_iter().next() {
            break first;
        }
        assert!(started.elapsed() < FAILOVER_BOUND, "run {run} was never claimed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let index = (0..cluster.layout.of(Service::Runner))
        .find(|&i| cluster.runner_id(i) == runner)
        .unwrap_or_else(|| panic!("run {run} claimed by {runner:?}, not a runner replica"));
    let victim = Replica {
        service: Service::Runner,
        index,
    };
    // Into the tap's pause, so the kill lands mid-run.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = cluster.kill_replica(victim);
    let mut reclaimed = None;
    let succeeded = loop {
        if reclaimed.is_none() && claims(cluster.db.clone()).await.len() > 1 {
            reclaimed = Some(killed.elapsed());
        }
        let ended: Vec<String> = sqlx::query_scalar(
            "SELECT event_type FROM events WHERE aggregate_id = $1 \
              AND event_type IN ('run.succeeded', 'run.failed', 'run.cancelled', 'run.timed_out')",
        )
        .bind(run)
        .fetch_all(&cluster.db)
        .await
        .unwrap_or_default();
        if ended.iter().any(|e| e == "run.succeeded") {
            break killed.elapsed();
        }
        assert!(
            !ended.iter().any(|e| e == "run.failed" || e == "run.cancelled"),
            "run {run} ended {ended:?} after its runner was killed"
        );
        assert!(
            killed.elapsed() < FAILOVER_BOUND + FAILOVER_BOUND,
            "run {run} did not succeed within {:?} of killing its runner {runner}",
            FAILOVER_BOUND + FAILOVER_BOUND
        );
        if killed.elapsed() >= downtime && cluster.exited().contains(&victim) {
            cluster.spawn_replica(victim);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ended: Vec<String> =
        sqlx::query_scalar("SELECT event_type FROM events WHERE aggregate_id = $1 AND event_type = 'run.timed_out'")
            .bind(run)
            .fetch_all(&cluster.db)
            .await
            .unwrap_or_default();
    assert!(
        !ended.is_empty() || claims(cluster.db.clone()).await.len() > 1,
        "run {run} succeeded after its runner was killed mid-run without a second attempt: the kill missed the run"
    );
    if cluster.exited().contains(&victim) {
        tokio::time::sleep_until((killed + downtime).into()).await;
        cluster.spawn_replica(victim);
    }
    let restarted = Instant::now();
    cluster.wait_replica_ready(victim, Duration::from_secs(120)).await;
    let mut failover = Vec::new();
    if let Some(reclaimed) = reclaimed {
        failover.push(("attempt claimed again".to_owned(), reclaimed));
    }
    failover.push(("run succeeded".to_owned(), succeeded));
    Injected {
        name: "kill -9 a runner mid-run".to_owned(),
        ended: killed,
        ready_after: Some(restarted.elapsed()),
        failover,
    }
}
