//! `POST /schedules/{id}/backfill` (operator): requests the runs of a schedule's past slots
//! between `from` and `to`, like `flexctl schedule backfill`. Each run's id derives from
//! (schedule, slot) exactly like the scheduler's, so a backfill repeated, interrupted or
//! overlapping slots the scheduler fired requests every slot's run at most once.
//!
//! One request does what can be done now and says what became of every slot:
//! - `requested`: its run was requested by this request;
//! - `existed`: its run existed (fired, or an earlier backfill);
//! - `skipped` (overlap `skip`, the default): the pipeline was at `max_active_runs`, so the
//!   slot is recorded skipped (`schedule.slot_skipped`, reason `backfill_overlap`);
//! - `pending` (overlap `wait`): the pipeline was at `max_active_runs`; this slot and the
//!   later ones were not requested: send the same request again once runs have ended.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use flexcore_client::{ClientError, Retry};
use flexcore_contracts::commands::{RequestRun, SkipSlot};
use flexcore_contracts::ids::scheduled_run_id;
use flexcore_contracts::model::RunTrigger;
use flexcore_contracts::views::ScheduleView;
use flexcore_contracts::ErrorReason;
use flexcore_security::ApiRole;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::{parse_id, queries, require, Collection};
use crate::problem::Problem;
use crate::{Caller, Gateway};

/// Most slots one backfill request covers.
pub const MAX_SLOTS: usize = 1000;

/// The body of a backfill.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackfillRequest {
    /// First instant of the range (RFC 3339).
    pub from: DateTime<Utc>,
    /// Last instant of the range (RFC 3339), not in the future.
    pub to: DateTime<Utc>,
    /// What a slot does when the pipeline is at `max_active_runs`.
    #[serde(default)]
    pub overlap: BackfillOverlap,
}

/// What a slot does when the pipeline is at `max_active_runs`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackfillOverlap {
    /// Recorded skipped, not run.
    #[default]
    Skip,
    /// Left `pending` with the later slots: send the request again later.
    Wait,
}

/// What became of one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SlotResult {
    /// Its run was requested now.
    Requested,
    /// Its run existed.
    Existed,
    /// Recorded skipped (the pipeline was at `max_active_runs`).
    Skipped,
    /// Not requested yet (overlap `wait`).
    Pending,
}

/// One slot of the answer.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Slot {
    /// The slot.
    pub slot: DateTime<Utc>,
    /// Its run's id.
    pub run_id: Uuid,
    /// What became of it.
    pub result: SlotResult,
}

/// The answer of a backfill.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct BackfillAnswer {
    /// The schedule.
    pub schedule_id: Uuid,
    /// Every slot of the range, in order.
    pub slots: Vec<Slot>,
}

/// `POST /schedules/{id}/backfill`.
pub async fn backfill(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    require(&caller.principal, ApiRole::Operator, "a backfill")?;
    let schedule_id = parse_id(Collection::Schedules, &id)?;
    super::commands::json_content(&headers, &body)?;
    let request: BackfillRequest = serde_json::from_slice(&body).map_err(|e| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            flexcore_contracts::ErrorCode::ValidationFailed.as_str(),
            format!(
                "the body must be {{\"from\": <RFC 3339>, \"to\": <RFC 3339>, \"overlap\": \"skip\"|\"wait\"}}: {e}"
            ),
        )
    })?;
    if request.to < request.from {
        return Err(Problem::invalid("/to", "to is before from"));
    }
    if request.to > Utc::now() {
        return Err(Problem::invalid(
            "/to",
            "to is in the future: a backfill requests past slots only; the scheduler fires the rest",
        ));
    }
    let view = queries::ask(&gateway, "schedule.get", &json!({ "id": schedule_id })).await?;
    let schedule: ScheduleView = serde_json::from_str(view.data.as_str()).map_err(|e| {
        tracing::error!(error = %e, "unreadable schedule view");
        Problem::new(
            StatusCode::BAD_GATEWAY,
            "internal",
            "the schedule view could not be read (logged)",
        )
    })?;
    if schedule.state == "deleted" {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "invalid_state",
            "the schedule is deleted: it requests no more runs",
        ));
    }
    let mut spec = schedule.spec.clone();
    spec.start_at = Some(request.from);
    spec.end_at = Some(request.to);
    let calendar = flexcore_cron::Calendar::new(&spec)
        .map_err(|e| Problem::invalid("", format!("the schedule's calendar: {e}")))?;
    let slots = calendar.slots_between(request.from - chrono::Duration::seconds(1), request.to, MAX_SLOTS + 1);
    if slots.len() > MAX_SLOTS {
        return Err(Problem::invalid(
            "/to",
            format!("the range holds more than {MAX_SLOTS} slots: backfill a shorter range at a time"),
        ));
    }
    let client = gateway
        .client
        .on_behalf_of(&caller.principal.name, caller.principal.role)
        .map_err(|e| Problem::invalid("", e))?;
    let mut answer = Vec::with_capacity(slots.len());
    let mut waiting = false;
    for slot in slots {
        let run_id = scheduled_run_id(schedule_id, slot);
        if waiting {
            answer.push(Slot {
                slot,
                run_id,
                result: SlotResult::Pending,
            });
            continue;
        }
        let run = RequestRun {
            run_id: Some(run_id),
            pipeline_id: schedule.pipeline_id,
            trigger: RunTrigger::Backfill,
            schedule_id: Some(schedule_id),
            scheduled_for: Some(slot),
        };
        let sent = client
            .command(&run)
            .correlation(caller.correlation_id.clone())
            .retry(Retry::default())
            .send()
            .await;
        let result = match sent {
            Ok(_) => SlotResult::Requested,
            Err(e) if reason(&e) == Some(ErrorReason::Exists) => SlotResult::Existed,
            Err(e) if reason(&e) == Some(ErrorReason::MaxActiveRuns) => match request.overlap {
                BackfillOverlap::Wait => {
                    waiting = true;
                    SlotResult::Pending
                }
                BackfillOverlap::Skip => {
                    let skip = SkipSlot {
                        schedule_id,
                        slot,
                        reason: "backfill_overlap"
                            .parse()
                            .map_err(|e| Problem::invalid("", format!("{e}")))?,
                    };
                    client
                        .command(&skip)
                        .correlation(caller.correlation_id.clone())
                        .send()
                        .await
                        .map_err(|e| Problem::from_client(&e))?;
                    SlotResult::Skipped
                }
            },
            Err(e) => return Err(Problem::from_client(&e)),
        };
        answer.push(Slot { slot, run_id, result });
    }
    Ok(Json(BackfillAnswer {
        schedule_id,
        slots: answer,
    })
    .into_response())
}

fn reason(error: &ClientError) -> Option<ErrorReason> {
    error.reason()
}
