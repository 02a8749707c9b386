//! The resources under `/api/v1/flexcore`, each a translation onto the NATS contract.
//!
//! | resource | role | contract |
//! |---|---|---|
//! | `GET` lists and items, `/status`, `/events`, live streams, `POST /queries` | viewer | `<view>.list/get`, `plugin.stats`, `stats.get`, `projection.list` |
//! | `POST /pipelines/{id}/execute`, `…/pause`, `…/resume`, `POST /runs/{id}/cancel`, schedules' `pause`/`resume`/`backfill` | operator | `run.request`, `pipeline.pause/resume`, `run.cancel`, `schedule.pause/resume`, a backfill's `run.request`s and `schedule.skip_slot`s |
//! | plugins, pipelines and schedules created, changed, archived or deleted | admin | `plugin.*`, `pipeline.create/update/archive`, `schedule.create/update/delete` |
//! | `POST /commands` | the command service decides by the caller's role | any command |
//!
//! # Layout
//! - this file: the route table and the request helpers every resource uses.
//! - [`commands`]: bodies spliced with path ids and headers, sent, answered.
//! - [`queries`]: gets and lists with consistency positions, ETags and `Link` paging.
//! - [`streams`]: Server-Sent Events of a run and of the event log; a run's log lines.
//! - [`status`]: `/status` and `/health`.
//! - [`upload`]: `POST /plugins` as a multipart module upload.
//! - [`backfill`]: a schedule's past slots.

pub mod backfill;
pub mod commands;
pub mod queries;
pub mod status;
pub mod streams;
pub mod upload;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use flexcore_security::ApiRole;

use crate::auth::Principal;
use crate::problem::Problem;
use crate::Gateway;

/// The base path of every resource.
pub const BASE: &str = "/api/v1/flexcore";

/// The routes.
pub fn routes() -> Router<Arc<Gateway>> {
    use commands::{action, create, remove, update};
    let api = Router::new()
        .route("/status", get(status::status))
        // Module uploads are bounded by gateway.max_module_bytes instead (the per-request
        // layer bounds every other body by gateway.max_body_bytes).
        .route(
            "/plugins",
            get(queries::list)
                .post(create)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/plugins/{id}", get(queries::get))
        .route("/plugins/{id}/status", get(queries::plugin_status))
        .route("/plugins/{id}/{action}", post(action))
        .route("/pipelines", get(queries::list).post(create))
        .route("/pipelines/{id}", get(queries::get).put(update).delete(remove))
        .route("/pipelines/{id}/{action}", post(action))
        .route("/runs", get(queries::list))
        .route("/runs/{id}", get(queries::get))
        .route("/runs/{id}/logs", get(streams::logs))
        .route("/runs/{id}/logs/stream", get(streams::run_logs))
        .route("/runs/{id}/events", get(streams::run_events))
        .route("/runs/{id}/{action}", post(action))
        .route("/schedules", get(queries::list).post(create))
        .route("/schedules/{id}", get(queries::get).put(update).delete(remove))
        .route("/schedules/{id}/backfill", post(backfill::backfill))
        .route("/schedules/{id}/{action}", post(action))
        .route("/events", get(queries::list))
        .route("/events/stream", get(streams::events))
        .route("/commands", post(commands::generic))
        .route("/queries", post(queries::generic));
    Router::new()
        .nest(BASE, api)
        .route("/health", get(status::health))
        .route(crate::openapi::DOCUMENT_PATH, get(status::openapi))
        .route(crate::openapi::PAGE_PATH, get(status::reference_page))
}

/// The collection a path names (`/api/v1/flexcore/pipelines/…` → pipeline), as the
/// contract's aggregate and view name, with its id field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection {
    /// `/plugins`.
    Plugins,
    /// `/pipelines`.
    Pipelines,
    /// `/runs`.
    Runs,
    /// `/schedules`.
    Schedules,
    /// `/events`.
    Events,
}

impl Collection {
    /// The collection of a request path.
    pub fn of_path(path: &str) -> Option<Self> {
        let rest = path.strip_prefix(BASE)?.strip_prefix('/')?;
        Some(match rest.split('/').next()? {
            "plugins" => Self::Plugins,
            "pipelines" => Self::Pipelines,
            "runs" => Self::Runs,
            "schedules" => Self::Schedules,
            "events" => Self::Events,
            _ => return None,
        })
    }

    /// The contract's aggregate (and view) name.
    pub fn aggregate(self) -> &'static str {
        match self {
            Self::Plugins => "plugin",
            Self::Pipelines => "pipeline",
            Self::Runs => "run",
            Self::Schedules => "schedule",
            Self::Events => "event",
        }
    }

    /// The path segment.
    pub fn segment(self) -> &'static str {
        match self {
            Self::Plugins => "plugins",
            Self::Pipelines => "pipelines",
            Self::Runs => "runs",
            Self::Schedules => "schedules",
            Self::Events => "events",
        }
    }

    /// The body field holding the id.
    pub fn id_field(self) -> &'static str {
        match self {
            Self::Plugins => "plugin_id",
            Self::Pipelines => "pipeline_id",
            Self::Runs => "run_id",
            Self::Schedules => "schedule_id",
            Self::Events => "event_id",
        }
    }
}

/// Refuses the caller unless its role is at least `needed`.
pub fn require(principal: &Principal, needed: ApiRole, what: &str) -> Result<(), Problem> {
    if principal.may(needed) {
        return Ok(());
    }
    Err(Problem::new(
        axum::http::StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "{what} needs role {needed}; {} has role {}",
            principal.name, principal.role
        ),
    ))
}

/// A path id: a UUID, else a 404 naming it (an id no resource can have; never echoed raw).
pub fn parse_id(collection: Collection, id: &str) -> Result<uuid::Uuid, Problem> {
    uuid::Uuid::parse_str(id).map_err(|_| {
        Problem::new(
            axum::http::StatusCode::NOT_FOUND,
            flexcore_contracts::ErrorCode::NotFound.as_str(),
            format!("no {} with that id: ids are UUIDs", collection.aggregate()),
        )
    })
}
