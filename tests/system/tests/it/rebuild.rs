//! A projection rebuild outlives the process running it: two projection replicas, the
//! `audit` rebuild replaying one event per transaction, kill -9 of the replica leading it
//! part-way through. The standby takes the projection's lock, finds the rebuild `running` with
//! no task of its own, restarts it past the dead run's generation and swaps it in; the
//! read model then holds each event of the log once, and the dead run's tables are gone
//! (ADR 0011; `services/projection-service/tests/it/rebuild.rs` covers the same takeover
//! within one process, where the old leader's session could still write).

use std::time::{Duration, Instant};

use flexcore_client::{Client, Retry};
use flexcore_contracts::commands::RegisterPlugin;
use flexcore_contracts::views::{ProjectionStatus, RebuildStatus};
use flexcore_system_tests::cluster::{Cluster, Layout, Replica, Service, FAILOVER_BOUND};
use flexcore_testkit::db::table_exists;
use futures::StreamExt as _;
use serde_json::json;
use uuid::Uuid;

/// Events in the log before the rebuild: seconds of replay at one per transaction (the
/// rebuild reports its progress each second).
const PLUGINS: usize = 3000;

/// The audit projection's status.
async fn audit(api: &Client) -> ProjectionStatus {
    let list: Vec<ProjectionStatus> = api.query("projection.list", &json!({})).await.unwrap();
    list.into_iter().find(|p| p.name == "audit").unwrap()
}

/// Waits until the audit projection's rebuild satisfies `done`; its status then.
async fn audit_until(api: &Client, what: &str, done: impl Fn(&RebuildStatus) -> bool) -> ProjectionStatus {
    let deadline = Instant::now() + FAILOVER_BOUND;
    loop {
        let status = audit(api).await;
        if status.rebuild.as_ref().is_some_and(&done) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {FAILOVER_BOUND:?}: {:?}",
            status.rebuild
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plugin registration: a `process` plugin named `name` (one `plugin.registered` event).
fn plugin(name: &str) -> RegisterPlugin {
    serde_json::from_value(json!({
        "name": name, "version": "1.0.0", "kind": "extractor", "runtime": "process", "executable": "/bin/true"
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_whose_process_is_killed_is_finished_by_the_standby() {
    let layout = Layout {
        replicas: [1, 2, 0, 0],
        nats_nodes: 1,
    };
    let settings = [("FLEXCORE__PROJECTION__REPLAY_BATCH_SIZE", "1".to_owned())];
    let mut cluster = Cluster::start_layout(layout, &settings, None).await;
    let api = Client::new(cluster.client.clone())
        .with_identity(cluster.nats.identity(flexcore_testkit::nats::HARNESS).unwrap())
        .with_timeout(Duration::from_secs(5));

    // The log: one `plugin.registered` per plugin.
    let scope = Uuid::new_v4();
    futures::stream::iter(0..PLUGINS)
        .map(|i| {
            let api = api.clone();
            async move {
                api.command(&plugin(&format!("p{i}")))
                    .id(flexcore_client::command_id(scope, &i.to_string()))
                    .retry(Retry::attempts(10))
                    .send()
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<()>()
        .await;
    flexcore_testkit::wait_until(FAILOVER_BOUND, "audit caught up", || {
        let api = api.clone();
        async move { audit(&api).await.events_applied >= PLUGINS as u64 }
    })
    .await
    .unwrap();
    let before = audit(&api).await.generation;

    let requested: RebuildStatus = api
        .query("projection.rebuild", &json!({"name": "audit"}))
        .await
        .unwrap();
    assert_eq!(requested.state, "requested");
    let running = audit_until(&api, "the rebuild under way", |r| {
        r.state == "running" && r.processed > 0 && r.processed < r.target
    })
    .await;
    let progress = running.rebuild.expect("the rebuild's status");
    let dead_generation = progress.generation.expect("the running rebuild's generation");
    let leader = cluster
        .projection_leader("audit")
        .expect("the audit projection's leader");
    let killed = cluster.kill_replica(leader);

    let done = audit_until(&api, "the rebuild finished by the standby", |r| r.state == "done").await;
    // For docs/benchmarks.md (run with --no-capture).
    eprintln!(
        "rebuild fail-over: {} of {} events replayed when {leader} was killed; swapped in by the standby {:.2?} later",
        progress.processed,
        progress.target,
        killed.elapsed()
    );
    let rebuild = done.rebuild.unwrap();
    assert_eq!(
        done.generation,
        dead_generation + 1,
        "built past the dead run's generation"
    );
    assert!(done.generation > before);
    assert_eq!(rebuild.generation, Some(done.generation));
    assert!(
        !table_exists(&cluster.db, &format!("read.events_g{dead_generation}"))
            .await
            .unwrap(),
        "the dead run's tables are left"
    );
    let standby = Replica {
        service: Service::Projection,
        index: 1 - leader.index,
    };
    assert_eq!(cluster.projection_leader("audit"), Some(standby));

    // The swapped-in model holds each event of the log once.
    let table = format!("read.events_g{}", done.generation);
    let (missing, extra): (i64, i64) = sqlx::query_as(&format!(
        "SELECT (SELECT count(*) FROM (SELECT global_position FROM events EXCEPT SELECT global_position FROM {table}) m), \
                (SELECT count(*) FROM {table}) - (SELECT count(*) FROM events)"
    ))
    .fetch_one(&cluster.db)
    .await
    .unwrap();
    assert_eq!((missing, extra), (0, 0), "events missing from / extra in {table}");

    // The killed replica comes back as a standby; the model follows new events.
    cluster.spawn_replica(leader);
    cluster.wait_replica_ready(leader, Duration::from_secs(60)).await;
    let accepted = api.command(&plugin("after")).send().await.unwrap();
    flexcore_testkit::wait_until(FAILOVER_BOUND, "the new event applied", || {
        let api = api.clone();
        async move { audit(&api).await.position >= accepted.global_position }
    })
    .await
    .unwrap();
    assert_eq!(cluster.projection_leader("audit"), Some(standby));
    cluster.stop(Duration::from_secs(30)).await;
}
