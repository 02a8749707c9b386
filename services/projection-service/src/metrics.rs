//! The projection service's metrics and readiness checks.
//!
//! - `flexcore_projection_lag_events{projection}`: how many positions of the event log a
//!   projection's committed checkpoint is behind its head, sampled every
//!   [`SAMPLE_EVERY`] (and on every readiness check). Positions are the log's identity
//!   column, so a rolled-back append's unused positions count too: an upper bound that is
//!   0 exactly when the projection has applied the newest event.
//! - `flexcore_queries_executed_total{query_type,status}`, counted by the query loop.
//! - `flexcore_list_cache_lookups_total{outcome}`: list queries answered from a kept page
//!   (`hit`) or read (`miss`); see `crate::query::PageCache`.
//! - Readiness: NATS, Postgres (both databases when the read models have their own), the events stream, and every projection within
//!   `admin.ready_max_lag_events` of the head.

use std::time::Duration;

use flexcore_config::Settings;
use flexcore_contracts::queries::QueryReply;
use flexcore_contracts::subjects;
use flexcore_service::admin::{CheckOutcome, Checks};
use flexcore_service::metrics as shared;
use tokio_util::sync::CancellationToken;

use crate::projection::Kind;
use crate::query::KNOWN;
use crate::Databases;

/// How often the lag gauges are refreshed.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Every projection's lag in events behind the head of the log, from the committed
/// checkpoints (so any replica, leader or not, sees the same). The head is read before
/// the checkpoints: a lag is never understated by events appended in between.
pub async fn lags(databases: &Databases) -> Result<Vec<(Kind, u64)>, sqlx::Error> {
    let head: i64 = sqlx::query_scalar("SELECT coalesce(max(global_position), 0) FROM events")
        .fetch_one(databases.log())
        .await?;
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT name, global_position FROM read.projections")
        .fetch_all(&databases.read)
        .await?;
    let lags: Vec<(Kind, u64)> = rows
        .into_iter()
        .filter_map(|(name, at)| Some((Kind::parse(&name)?, u64::try_from(head - at).unwrap_or_default())))
        .collect();
    for (kind, lag) in &lags {
        shared::projections().set_lag(kind.name(), i64::try_from(*lag).unwrap_or(i64::MAX));
    }
    Ok(lags)
}

/// Refreshes the lag gauges every [`SAMPLE_EVERY`] until `stop`.
pub async fn sample(databases: Databases, stop: CancellationToken) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                if let Err(error) = lags(&databases).await {
                    tracing::debug!(%error, "sampling projection lag failed");
                }
            }
        }
    }
}

/// Counts one answered query: the `subject` it came on and its `reply`.
pub fn record_query(subject: &str, reply: &QueryReply) {
    let status = match reply {
        QueryReply::Ok(_) => "ok",
        QueryReply::Err(err) => err.error.code.as_str(),
    };
    record_query_status(subject, status);
}

/// Counts one answered query whose reply has `status` (`ok` or the refusal's error code).
pub fn record_query_status(subject: &str, status: &'static str) {
    let query_type = subjects::parse_query(subject)
        .and_then(|(view, operation)| {
            KNOWN.iter().copied().find(|known| {
                known.len() == view.len() + 1 + operation.len()
                    && known.starts_with(view)
                    && known.ends_with(operation)
                    && known.as_bytes()[view.len()] == b'.'
            })
        })
        .unwrap_or("unknown");
    shared::projections().query(query_type, status);
}

/// Counts one list query looked up among the kept pages.
pub fn record_list_cache(hit: bool) {
    shared::projections().list_cache(hit);
}

/// The readiness checks of the projection service: NATS, Postgres (the read models'
/// database; the event store is read by the lag check), the events stream, and every
/// projection at most `admin.ready_max_lag_events` behind.
pub fn checks(settings: &Settings, nats: &async_nats::Client, databases: &Databases) -> Checks {
    let max_lag = settings.admin.ready_max_lag_events;
    let lag_databases = databases.clone();
    Checks::new()
        .nats(nats.clone())
        .postgres(databases.read.clone())
        .stream(nats.clone(), subjects::EVENTS_STREAM)
        .serving("queries")
        .with_fn("projection_lag", move || {
            let databases = lag_databases.clone();
            async move {
                match lags(&databases).await {
                    Ok(lags) => lag_outcome(&lags, max_lag),
                    Err(error) => CheckOutcome::failed(format!("reading projection positions: {error}")),
                }
            }
        })
}

fn lag_outcome(lags: &[(Kind, u64)], max_lag: u64) -> CheckOutcome {
    let behind: Vec<String> = lags
        .iter()
        .filter(|(_, lag)| *lag > max_lag)
        .map(|(kind, lag)| format!("{} is {lag} events behind", kind.name()))
        .collect();
    if lags.is_empty() {
        CheckOutcome::failed("no projection positions yet")
    } else if behind.is_empty() {
        let most = lags.iter().map(|(_, lag)| *lag).max().unwrap_or_default();
        CheckOutcome::ok(format!(
            "every projection within {max_lag} events (most behind: {most})"
        ))
    } else {
        CheckOutcome::failed(format!(
            "{} (admin.ready_max_lag_events = {max_lag})",
            behind.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use flexcore_contracts::queries::QueryOk;
    use flexcore_contracts::ErrorBody;

    use super::*;

    #[test]
    fn lag_outcome_names_the_projections_behind() {
        let lags = [(Kind::Runs, 12), (Kind::Audit, 3)];
        assert!(lag_outcome(&lags, 12).ok);
        let failed = lag_outcome(&lags, 5);
        assert!(!failed.ok);
        assert_eq!(
            failed.detail,
            "runs is 12 events behind (admin.ready_max_lag_events = 5)"
        );
        assert!(!lag_outcome(&[], 5).ok);
    }

    #[test]
    fn queries_are_counted_by_known_type_and_status() {
        let ok = QueryReply::Ok(QueryOk {
            ok: true,
            data: flexcore_contracts::OpaqueJson::null(),
            next_cursor: None,
            position: 0,
        });
        record_query("flexcore.qry.run.get", &ok);
        let err = QueryReply::Err(flexcore_contracts::queries::QueryErr {
            ok: false,
            error: ErrorBody::new(flexcore_contracts::ErrorReason::NotFound, "no"),
        });
        record_query("flexcore.qry.run.get", &err);
        record_query("flexcore.qry.nothing.here", &err);
        let text = shared::render().unwrap();
        for line in [
            r#"flexcore_queries_executed_total{query_type="run.get",status="ok"}"#,
            r#"flexcore_queries_executed_total{query_type="run.get",status="not_found"}"#,
            r#"flexcore_queries_executed_total{query_type="unknown",status="not_found"}"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
