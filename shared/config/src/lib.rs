//! Layered, typed configuration for every FlexCore binary.
//!
//! Layers, later ones winning: `config/base.yaml` → `config/<FLEXCORE_ENV>.yaml` →
//! `FLEXCORE__SECTION__KEY` environment variables (e.g. `FLEXCORE__DATABASE__URL`).
//! Unknown keys are errors, so a typo fails at start-up instead of being ignored.
//!
//! # Layout
//! - [`Settings`] (here): the root, one field per section.
//! - [`sections`]: the section structs; their defaults are `config/base.yaml`, built in.
//! - [`load`]: finding the config directory and merging the layers
//!   ([`Settings::load`], [`Settings::load_from`], [`Settings::load_with`]).
//! - [`secret`]: [`Secret`], a string whose `Debug`/`Display` print `[redacted]`.
//! - [`nats_login`]: [`NatsLogin`], the NATS URL without credentials and the user and
//!   password to log in with ([`NatsSettings::login`]).

pub mod duration;
pub mod load;
pub mod nats_login;
pub mod secret;
pub mod sections;
pub mod url_text;

pub use config::ConfigError;
pub use load::find_config_dir;
pub use nats_login::NatsLogin;
pub use secret::Secret;
pub use sections::{
    AdminSettings, CommandSettings, DatabaseSettings, GatewaySettings, LogFormat, NatsSettings, ProjectionSettings,
    RelaySettings, RunnerSettings, SampleRatio, SchedulerSettings, SecuritySettings, StreamsSettings,
    TelemetrySettings, UnsignedCommands,
};

use serde::Deserialize;

/// All settings of a FlexCore process. `Default` is the built-in `config/base.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// PostgreSQL, the event store.
    pub database: DatabaseSettings,
    /// NATS with JetStream.
    pub nats: NatsSettings,
    /// Identities and signatures.
    pub security: SecuritySettings,
    /// The command service.
    pub command: CommandSettings,
    /// The outbox relay.
    pub relay: RelaySettings,
    /// The JetStream streams.
    pub streams: StreamsSettings,
    /// Logging and tracing.
    pub telemetry: TelemetrySettings,
    /// The plugin runner.
    pub runner: RunnerSettings,
    /// The projection service.
    pub projection: ProjectionSettings,
    /// The scheduler.
    pub scheduler: SchedulerSettings,
    /// The admin HTTP server (health endpoints).
    pub admin: AdminSettings,
    /// The HTTP gateway.
    pub gateway: GatewaySettings,
}

impl Default for Settings {
    fn default() -> Self {
        load::built_in().clone()
    }
}
