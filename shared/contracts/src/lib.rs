//! FlexCore message contracts: the public, language-neutral shapes that cross NATS.
//!
//! # Layout
//! - [`subjects`]: every NATS subject and stream name, built only here.
//! - [`envelope`]: the event envelope published on `FLEXCORE_EVENTS` and its headers.
//! - [`error`]: error codes and the error body shared by command and query replies.
//! - [`reply`]: the command reply.
//! - [`values`]: parse-don't-validate value types (names, versions, digests, refs).
//! - [`commands`]: one module per aggregate with every command body, plus [`commands::decode`].
//! - [`events`]: one module per aggregate with every event payload.
//! - [`queries`]: query requests and replies served by the projection service.
//! - [`lifecycle`]: the aggregates' lifecycle states and how events move them (shared by
//!   the command service, the projections and the scheduler).
//! - [`model`]: shared building blocks of commands and events (kinds, limits, policies).
//! - [`ids`]: deterministic identifiers (plugin id from name@version, run id from a schedule slot).
//! - [`work`]: run work items on `FLEXCORE_WORK`.
//! - [`views`]: the read models returned by queries.
//! - [`schema`]: JSON Schema generation for everything above (written to `schemas/`).
//! - [`rules`]: the bounds and patterns the schemas state and the services enforce.
//! - [`decode`]: request decoding: JSON, then the request's schema, then the typed request.
//! - [`opaque`]: client data kept as the exact JSON text sent (STATE, configs).
//!
//! This crate does no I/O.

pub mod commands;
pub mod decode;
pub mod envelope;
pub mod error;
pub mod events;
pub mod ids;
pub mod lifecycle;
pub mod model;
pub mod opaque;
pub mod queries;
pub mod reply;
pub mod rules;
pub mod schema;
pub mod subjects;
pub mod values;
pub mod views;
pub mod work;

pub use envelope::{EventEnvelope, EventMetadata};
pub use error::{ErrorBody, ErrorCode, ErrorDetails, ErrorReason};
pub use opaque::{OpaqueJson, StepConfig};
pub use reply::{CommandReply, EventRef};
