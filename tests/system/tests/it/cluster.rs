//! The cluster fault test (issue 18, "Clusters"): the fault suite of `chaos.rs` on a
//! three-node NATS cluster (three nats-server processes run from
//! `deploy/nats/nats-server.conf`, every stream at three replicas) with several replicas
//! of every service: two command services (a relay leader and a standby), two projection
//! services (each projection's leader and a standby), three schedulers sharing the slots,
//! two runners. Under the same steady load it kills (-9), one after the other:
//!
//! - the NATS node that leads `FLEXCORE_EVENTS` (started again once another node leads it);
//! - the command service that leads the relay (found from its log: the last replica to log
//!   that it acquired the advisory lock), measuring until a standby leads it;
//! - the projection replica that leads the most projections, measuring until each of them
//!   has a new leader;
//! - the scheduler replica that owns a schedule firing every second (the replica whose
//!   identity the schedule's slots carry), measuring until another replica fires a slot
//!   of it;
//! - the runner executing a run (its tap pauses 3 s), measuring until the attempt is
//!   claimed again and the run succeeds.
//!
//! Then it checks what `chaos.rs` checks: no acknowledged command lost, no event twice,
//! the stream equals the log, the read models equal the fold of the log, every run
//! finished and none ran again; and, on the cluster, every stream replica current.
//! The fail-over times are in the report (docs/benchmarks.md has figures).
//!
//! Knobs (the long form, `scripts/chaos.sh --cluster`, is this test with larger values):
//! `FLEXCORE_CLUSTER_ROUNDS`, `_SECONDS`, `_CLIENTS`, `_FAULTS` (a comma-separated subset
//! of `nats-node`, `relay-leader`, `projection-leader`, `scheduler-owner`,
//! `runner-mid-run`, and the faults of `chaos.rs`), `_LOGS`, `_REPORT`, as in `chaos.rs`.

use flexcore_system_tests::cluster::{Fault, Layout};

use crate::chaos::failover::Step;
use crate::chaos::{scenario, Knobs};

/// The faults of one round.
const FAULTS: [Step; 5] = [
    Step::Fault(Fault::NatsNodeKill),
    Step::Fault(Fault::KillRelayLeader),
    Step::Fault(Fault::KillProjectionLeader),
    Step::KillSchedulerOwner,
    Step::KillRunnerMidRun,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_loses_nothing_when_a_nats_node_and_each_leader_die() {
    scenario(Layout::CLUSTER, Knobs::from_env("FLEXCORE_CLUSTER", &FAULTS), "cluster").await;
}
