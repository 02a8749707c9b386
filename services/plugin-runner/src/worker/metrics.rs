//! The runner's metrics and readiness checks.
//!
//! - `flexcore_runner_slots_busy` / `flexcore_runner_slots`: kept by the work loop
//!   ([`super::run`]) with guards, so a slot is freed however its attempt ends.
//! - `flexcore_plugin_executions_total{plugin_name,status}`: once per stage of every
//!   attempt that got to execute: `ok` when the execution succeeded; otherwise the stage
//!   at fault gets the failure code and the others `aborted` (a failure without a stage at
//!   fault, e.g. `cancelled`, is every stage's status).
//! - `flexcore_run_records_total{pipeline,stream}`: records the loader received, added
//!   when the attempt ends: all of them on success, else those its last committed
//!   checkpoint covered.

use flexcore_contracts::model::StreamCounters;
use flexcore_contracts::subjects;
use flexcore_service::admin::Checks;
use flexcore_service::metrics as shared;

use super::definition::AttemptDefinition;
use super::CONSUMER;
use crate::executor::{ExecEvent, ExecFailure, ExecSummary};

/// The status of stages that did not cause their execution's failure.
const ABORTED: &str = "aborted";

/// Keeps the counters of the latest checkpoint seen (what the loader has confirmed).
pub fn observe(event: &ExecEvent, delivered: &mut StreamCounters) {
    if let ExecEvent::Checkpoint { counters, .. } = event {
        delivered.clone_from(counters);
    }
}

/// Counts an attempt's plugin executions and delivered records once it has run.
pub fn attempt_finished(
    def: &AttemptDefinition,
    result: &Result<ExecSummary, ExecFailure>,
    delivered: &StreamCounters,
) {
    let metrics = shared::runner();
    for (i, plugin) in def.plugins.iter().enumerate() {
        let status = match result {
            Ok(_) => "ok",
            Err(failure) if failure.step.is_none_or(|at| at == i) => failure.code.as_str(),
            Err(_) => ABORTED,
        };
        metrics.plugin_executions.inc_by(plugin.name.as_str(), status, 1);
    }
    let records = match result {
        Ok(summary) => &summary.counters,
        Err(_) => delivered,
    };
    let pipeline = def.requested.pipeline_name.as_str();
    for (stream, n) in records {
        metrics.run_records.inc_by(pipeline, stream, *n);
    }
}

/// The readiness checks of a runner: NATS, the work stream and its durable consumer.
pub fn checks(client: &async_nats::Client) -> Checks {
    Checks::new()
        .nats(client.clone())
        .stream(client.clone(), subjects::WORK_STREAM)
        .consumer(client.clone(), subjects::WORK_STREAM, CONSUMER)
}
