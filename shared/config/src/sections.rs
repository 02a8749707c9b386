//! The typed sections of [`Settings`](crate::Settings).
//!
//! Every section's `Default` is its part of `config/base.yaml` as built in
//! ([`crate::load::BASE_YAML`]): the defaults are written once, there, with their comments,
//! and a binary started without any config file behaves exactly like one started with it.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::Secret;

/// `Default` for each section: its part of the built-in `config/base.yaml`.
macro_rules! defaults_from_base {
    ($($section:ty => $field:ident),* $(,)?) => {
        $(
            impl Default for $section {
                fn default() -> Self {
                    crate::load::built_in().$field.clone()
                }
            }
        )*
    };
}

defaults_from_base! {
    DatabaseSettings => database,
    NatsSettings => nats,
    SecuritySettings => security,
    CommandSettings => command,
    RelaySettings => relay,
    ProjectionSettings => projection,
    SchedulerSettings => scheduler,
    AdminSettings => admin,
    GatewaySettings => gateway,
    StreamsSettings => streams,
    TelemetrySettings => telemetry,
    RunnerSettings => runner,
}

/// PostgreSQL, the event store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Connection URL (may carry a password, hence secret).
    pub url: Secret,
    /// Size of the connection pool.
    pub max_connections: u32,
    /// Apply the SQL migrations at start-up.
    pub migrate_on_start: bool,
    /// How long to wait for a pooled connection before failing, in milliseconds.
    #[serde(rename = "acquire_timeout_ms", deserialize_with = "crate::duration::millis")]
    pub acquire_timeout: Duration,
}

/// NATS with JetStream, the bus.
///
/// `Debug` shows a password in [`Self::url`] as `[redacted]`; [`Self::login`] resolves
/// the credentials to connect with.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSettings {
    /// Server URL, e.g. `nats://127.0.0.1:4222`. Credentials in it
    /// (`nats://user:password@host:4222`, percent-encoded) apply where [`Self::user`] /
    /// [`Self::password`] are empty.
    pub url: String,
    /// User to log in as with a password; empty = the URL's user, if any, else the NKey
    /// identity of [`Self::nkey_seed`] / [`Self::nkey_seed_file`].
    pub user: String,
    /// Password of [`Self::user`] (secret).
    pub password: Secret,
    /// This process's NKey seed (`SU…`, secret): its identity, to log in with (unless
    /// [`Self::user`] is set) and to sign what it sends. Wins over [`Self::nkey_seed_file`].
    pub nkey_seed: Secret,
    /// File holding this process's NKey seed (e.g. a mounted Kubernetes Secret).
    pub nkey_seed_file: String,
    /// CA certificates (PEM) to trust for the server's TLS certificate; set = TLS.
    pub tls_ca_file: String,
    /// Client certificate (PEM) for mutual TLS, with [`Self::tls_key_file`].
    pub tls_cert_file: String,
    /// Private key (PEM) of [`Self::tls_cert_file`].
    pub tls_key_file: String,
    /// Refuse to connect without TLS.
    pub tls_required: bool,
    /// Timeout of the initial connection, in milliseconds.
    #[serde(rename = "connect_timeout_ms", deserialize_with = "crate::duration::millis")]
    pub connect_timeout: Duration,
    /// Timeout of a request/reply round trip, in milliseconds.
    #[serde(rename = "request_timeout_ms", deserialize_with = "crate::duration::millis")]
    pub request_timeout: Duration,
}

impl fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSettings")
            .field("url", &crate::url_text::redact(&self.url))
            .field("user", &self.user)
            .field("password", &self.password)
            .field("nkey_seed", &self.nkey_seed)
            .field("nkey_seed_file", &self.nkey_seed_file)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("tls_required", &self.tls_required)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// Identities and what unsigned commands may do (docs/security.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySettings {
    /// The identities file (JSON: name, role and NKey public key of every identity);
    /// required: no FlexCore service runs without it.
    pub identities_file: String,
    /// What the command service does with a command that carries no signature.
    pub unsigned_commands: UnsignedCommands,
}

/// What the command service does with an unsigned command (one from an application that
/// logged in to NATS but does not sign).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnsignedCommands {
    /// Treated as sent by role `client`, recorded with actor `unsigned`.
    Client,
    /// Refused with `unauthorized`.
    Refuse,
}

/// The command service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSettings {
    /// Largest accepted command payload, in bytes.
    pub max_payload_bytes: usize,
    /// Commands handled concurrently before new ones wait.
    pub max_in_flight: usize,
    /// Parallel appenders (group-commit writers) to the event store (1–64).
    #[serde(deserialize_with = "writers")]
    pub writers: usize,
    /// Most commands committed in one transaction (1–64): each command is a
    /// subtransaction, and Postgres caches 64 per transaction before every later one
    /// costs a look-up in `pg_subtrans` (ADR 0002).
    #[serde(deserialize_with = "batch_max_commands")]
    pub batch_max_commands: usize,
    /// Longest a group-commit writer holds a batch open for commands of this replica that
    /// are still deciding, and a group reader its batch for the reads they may still make
    /// (0–100 ms; 0: never). A lone command is never held.
    #[serde(rename = "batch_linger_ms", deserialize_with = "batch_linger")]
    pub batch_linger: Duration,
    /// Aggregates kept in memory between commands.
    pub aggregate_cache_size: usize,
    /// Retries of a command after an optimistic-concurrency conflict.
    pub conflict_retries: u32,
    /// Time given to in-flight commands at shutdown, in milliseconds.
    #[serde(rename = "shutdown_grace_ms", deserialize_with = "crate::duration::millis")]
    pub shutdown_grace: Duration,
}

/// The outbox relay publishing the event log to JetStream.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySettings {
    /// Run the relay in this process.
    pub enabled: bool,
    /// Events read and published per round.
    pub batch_size: i64,
    /// Poll interval when there is nothing to publish, in milliseconds.
    #[serde(rename = "idle_poll_ms", deserialize_with = "crate::duration::millis")]
    pub idle_poll: Duration,
    /// Interval at which a standby relay retries to become leader, in milliseconds.
    #[serde(rename = "leader_retry_ms", deserialize_with = "crate::duration::millis")]
    pub leader_retry: Duration,
    /// Timeout of one publish acknowledgement, in milliseconds.
    #[serde(rename = "publish_timeout_ms", deserialize_with = "crate::duration::millis")]
    pub publish_timeout: Duration,
}

/// The projection service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectionSettings {
    /// Connection URL of the read models' database (a secret, like `database.url`);
    /// empty = the event store's database. When set, the read models (and the
    /// migrations) go there and the event log is read from `database.url` through
    /// read-only connections, so the query tier can scale apart from the write tier.
    pub database_url: Secret,
    /// Run projection workers in this process (one leader per projection across replicas).
    pub workers_enabled: bool,
    /// Most events applied in one read-model transaction.
    pub batch_size: usize,
    /// Events read from the event store per transaction during catch-up and rebuild.
    pub replay_batch_size: i64,
    /// Queries handled concurrently before new ones wait.
    pub max_in_flight: usize,
    /// Largest accepted query payload in bytes.
    pub max_payload_bytes: usize,
    /// Longest wait of a query for its `min_position`, in milliseconds (then `stale`).
    #[serde(rename = "min_position_timeout_ms", deserialize_with = "crate::duration::millis")]
    pub min_position_timeout: Duration,
    /// Interval at which a standby worker retries to become leader, in milliseconds.
    #[serde(rename = "leader_retry_ms", deserialize_with = "crate::duration::millis")]
    pub leader_retry: Duration,
    /// Time given to in-flight queries at shutdown, in milliseconds.
    #[serde(rename = "shutdown_grace_ms", deserialize_with = "crate::duration::millis")]
    pub shutdown_grace: Duration,
    /// Bytes of recent list pages kept to answer an identical list query again while no
    /// event has been applied since (each page for at most a second); 0 = keep none.
    pub list_cache_bytes: usize,
}

/// The scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSettings {
    /// This replica's id in presence announcements and logs; empty = `<hostname>-<pid>`.
    pub instance_id: String,
    /// How long a replica waits past a slot or timer that another live replica owns before
    /// acting on it itself, in milliseconds.
    #[serde(rename = "takeover_grace_ms", deserialize_with = "crate::duration::millis")]
    pub takeover_grace: Duration,
    /// Interval of presence announcements, in milliseconds; a replica unheard for three
    /// intervals is taken as gone and its share is taken over.
    #[serde(rename = "presence_interval_ms", deserialize_with = "crate::duration::millis")]
    pub presence_interval: Duration,
    /// Commands in flight at once.
    pub max_in_flight: usize,
    /// Most past slots of one schedule examined on catch-up (older ones are not recorded).
    pub max_catchup_slots: usize,
    /// On shutdown, how long commands in flight get to be answered before the replica
    /// exits (milliseconds).
    #[serde(rename = "shutdown_grace_ms", deserialize_with = "crate::duration::millis")]
    pub shutdown_grace: Duration,
    /// A snapshot of the scheduler's state is written once this many events have been
    /// folded since the last one (a replica starts from the latest snapshot and folds
    /// only the events after it); 0 = never write one.
    pub snapshot_every_events: u64,
    /// At most one snapshot per this interval (milliseconds).
    #[serde(rename = "snapshot_min_interval_ms", deserialize_with = "crate::duration::millis")]
    pub snapshot_min_interval: Duration,
}

/// The per-service admin HTTP server (`/health/live`, `/health/ready`, `/metrics`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Address to listen on, `host:port` (e.g. `0.0.0.0:9090`); empty = no admin server.
    pub listen: String,
    /// The projection service is ready only while no projection is more than this many
    /// events behind the event log.
    pub ready_max_lag_events: u64,
}

impl AdminSettings {
    /// Whether an admin server is to be started ([`Self::listen`] is not empty).
    pub fn enabled(&self) -> bool {
        !self.listen.trim().is_empty()
    }
}

/// The HTTP gateway (`flexcore-gateway`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    /// Address the HTTP API listens on, `host:port`.
    pub listen: String,
    /// Largest request body in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Longest a request may take to be read and answered, in milliseconds (408 beyond;
    /// live streams are not bound by it once they started).
    #[serde(rename = "request_timeout_ms", deserialize_with = "crate::duration::millis")]
    pub request_timeout: Duration,
    /// Origins allowed to call the API from a browser (CORS); `*` allows any. A list, or
    /// one comma-separated string (`FLEXCORE__GATEWAY__CORS_ORIGINS=https://a,https://b`).
    #[serde(deserialize_with = "list_or_commas")]
    pub cors_origins: Vec<String>,
    /// Role of callers without credentials (`viewer`, `operator`, `admin`); empty: none
    /// (401). For local development only.
    pub anonymous_role: String,
    /// The API keys file (`flexctl api-key create/revoke/list`); empty: no API keys.
    pub api_keys_file: String,
    /// File holding the HS256 secret JWTs are signed with (at least 32 bytes); empty: no
    /// HS256 tokens.
    pub jwt_hs256_secret_file: String,
    /// JWKS file with the RS256/ES256 public keys of the identity provider; empty: none.
    pub jwt_jwks_file: String,
    /// JWKS URL of the identity provider (`https://…/.well-known/jwks.json`), fetched at
    /// start (the gateway is not ready until it has the keys) and again every
    /// `jwt_jwks_refresh_seconds`, and when a token names a key it does not know (at most
    /// once a minute); empty: none. `http://` only for loopback addresses.
    pub jwt_jwks_url: String,
    /// How often the JWKS URL is fetched again, in seconds.
    pub jwt_jwks_refresh_seconds: u64,
    /// Required `iss` of JWTs; empty: not checked.
    pub jwt_issuer: String,
    /// Required `aud` of JWTs; empty: not checked.
    pub jwt_audience: String,
    /// Requests a second per caller on average (0: no limit).
    pub rate_limit_per_second: u32,
    /// Requests a caller may make at once above the average.
    pub rate_limit_burst: u32,
    /// Live streams (Server-Sent Events) open at once (503 beyond).
    pub max_streams: usize,
    /// Live streams one caller may have open at once (429 beyond).
    pub max_streams_per_caller: usize,
    /// Connections open at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Largest plugin module `POST /plugins` takes as a multipart upload, in bytes (413
    /// beyond). Each upload in progress holds its module in memory once.
    pub max_module_bytes: u64,
    /// Module uploads in progress at once (503 with `Retry-After` beyond).
    pub max_uploads: usize,
    /// Longest a module upload may take to arrive, in milliseconds (408 beyond).
    #[serde(rename = "upload_timeout_ms", deserialize_with = "crate::duration::millis")]
    pub upload_timeout: Duration,
    /// Time requests in flight get at shutdown, in milliseconds.
    #[serde(rename = "shutdown_grace_ms", deserialize_with = "crate::duration::millis")]
    pub shutdown_grace: Duration,
}

/// The JetStream streams, as `flexcore-command setup` (the setup identity) creates them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamsSettings {
    /// Maximum age of events in the events stream, in days; 0 keeps them forever.
    pub events_max_age_days: u64,
    /// Stream replicas (1 on a single server, 3 on a cluster).
    pub replicas: usize,
    /// JetStream duplicate-detection window, in seconds.
    pub duplicate_window_seconds: u64,
    /// Bound of the plugin bucket (`flexcore-plugins`), all modules together, in bytes;
    /// 0 leaves it unbounded. An upload over it is refused by the server.
    pub plugins_max_bytes: u64,
}

impl StreamsSettings {
    /// [`Self::events_max_age_days`] as a `Duration`; zero means unlimited, which is
    /// also what JetStream's `max_age` takes for "forever".
    pub fn events_max_age(&self) -> Duration {
        Duration::from_secs(self.events_max_age_days.saturating_mul(86_400))
    }

    /// [`Self::duplicate_window_seconds`] as a `Duration`.
    pub fn duplicate_window(&self) -> Duration {
        Duration::from_secs(self.duplicate_window_seconds)
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable text when stderr is a terminal, JSON otherwise.
    #[default]
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// Logging and tracing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// Log format.
    pub log_format: LogFormat,
    /// `tracing` filter directives (`RUST_LOG` wins when set).
    pub log_filter: String,
    /// OTLP/gRPC endpoint for span export, e.g. `http://127.0.0.1:4317`; `None` turns
    /// export off.
    pub otlp_endpoint: Option<String>,
    /// `service.instance.id` resource attribute; `None` derives one from host and pid.
    pub service_instance: Option<String>,
    /// Share of traces exported (0.0–1.0), decided where a trace starts and followed by
    /// every service it reaches (parent-based, on the trace id).
    pub trace_sample_ratio: SampleRatio,
}

/// A ratio in `0.0..=1.0` (never NaN, so it is `Eq`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "f64")]
pub struct SampleRatio(f64);

impl SampleRatio {
    /// Every trace.
    pub const ALL: Self = Self(1.0);

    /// The ratio as a number in `0.0..=1.0`.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl Eq for SampleRatio {}

/// Postgres's cache of subtransactions per transaction (`PGPROC_MAX_CACHED_SUBXIDS`).
pub const SUBTRANSACTION_CACHE: usize = 64;

/// `command.batch_max_commands`: 1 to [`SUBTRANSACTION_CACHE`].
fn batch_max_commands<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let value = usize::deserialize(d)?;
    if (1..=SUBTRANSACTION_CACHE).contains(&value) {
        Ok(value)
    } else {
        Err(serde::de::Error::custom(format!(
            "{value} commands per transaction is outside 1–{SUBTRANSACTION_CACHE}: each command is a subtransaction, and beyond Postgres's cache of {SUBTRANSACTION_CACHE} every one slows the whole database (ADR 0002)"
        )))
    }
}

/// `command.batch_linger_ms`: at most [`MAX_BATCH_LINGER`].
fn batch_linger<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let value = crate::duration::millis(d)?;
    if value <= MAX_BATCH_LINGER {
        Ok(value)
    } else {
        Err(serde::de::Error::custom(format!(
            "a batch linger of {value:?} is over {MAX_BATCH_LINGER:?}: every command deciding beside another could wait that long for its commit"
        )))
    }
}

/// The longest `command.batch_linger_ms`.
pub const MAX_BATCH_LINGER: Duration = Duration::from_millis(100);

/// `command.writers`: 1 to 64 (each holds a connection while it commits).
fn writers<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let value = usize::deserialize(d)?;
    if (1..=64).contains(&value) {
        Ok(value)
    } else {
        Err(serde::de::Error::custom(format!(
            "{value} group-commit writers is outside 1–64 (each holds one of the pool's connections while it commits)"
        )))
    }
}

impl TryFrom<f64> for SampleRatio {
    type Error = String;

    fn try_from(value: f64) -> Result<Self, Self::Error> {
        if (0.0..=1.0).contains(&value) {
            Ok(Self(value))
        } else {
            Err(format!("a sample ratio is between 0.0 and 1.0, not {value}"))
        }
    }
}

/// The plugin runner (`flexcore-runner`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerSettings {
    /// Id recorded in `run.claimed`; null derives `<host>-<pid>`.
    pub runner_id: Option<String>,
    /// Run attempts executed at once.
    pub slots: usize,
    /// Lease of a claimed attempt (work AckWait) in seconds; heartbeats every third.
    pub lease_seconds: u64,
    /// Deliveries of one work item before JetStream gives up on it.
    pub max_deliver: i64,
    /// Where `${secret:NAME}` values come from: `env` or `dir`.
    pub secrets_source: String,
    /// Prefix of secret environment variables (source `env`).
    pub secrets_env_prefix: String,
    /// Directory with one file per secret (source `dir`): `<dir>/NAME`, or `<dir>/A/B`
    /// for `A__B` (one subdirectory per mounted secret volume).
    pub secrets_dir: Option<String>,
    /// Environment variables of the runner's host a plugin's `env` grant may pass through:
    /// names or `PREFIX*`; none by default. `FLEXCORE_…` and the secret variables can
    /// never be listed. As a variable: comma-separated
    /// (`FLEXCORE__RUNNER__PLUGIN_ENV_ALLOW=TZ,PGSSL*`).
    #[serde(deserialize_with = "list_or_commas")]
    pub plugin_env_allow: Vec<String>,
    /// Where the runner keeps its private work directory (plugin config and state files,
    /// mode 0700/0600); null: `$XDG_RUNTIME_DIR/flexcore-runner`, else
    /// `<temp dir>/flexcore-runner-<uid>`.
    pub work_dir: Option<String>,
    /// Days run logs are kept (the logs stream's age limit, applied by setup).
    pub log_retention_days: u64,
    /// On shutdown, how long attempts in flight get to hand back their work or report
    /// their outcome before the runner exits (milliseconds).
    #[serde(rename = "shutdown_grace_ms", deserialize_with = "crate::duration::millis")]
    pub shutdown_grace: Duration,
    /// Largest wasm module a runner downloads and compiles (bytes).
    pub max_module_bytes: u64,
    /// CPU seconds a module may take to compile (single-threaded, in a child process).
    pub compile_timeout_seconds: u64,
    /// Address space of that compile child process (bytes).
    pub compile_memory_bytes: u64,
    /// Modules compiled at once.
    pub compile_concurrency: usize,
    /// Compiled modules kept in memory (least recently used evicted first).
    pub module_cache_entries: usize,
    /// Bytes of compiled code kept in memory.
    pub module_cache_bytes: u64,
    /// Largest STATE message accepted from a plugin (bytes).
    pub max_state_bytes: usize,
    /// At most one checkpoint per this interval; STATEs in between are coalesced (ms).
    #[serde(rename = "checkpoint_interval_ms", deserialize_with = "crate::duration::millis")]
    pub checkpoint_interval: Duration,
    /// Sum of the memory limits of one run's stages (bytes).
    pub run_memory_bytes: u64,
    /// Most stages in one run.
    pub max_stages: usize,
    /// Run each `process` stage in its own PID namespace when the host allows it.
    pub process_pid_namespace: bool,
    /// When the runner runs as root: the uid `process` stages run as (null: root).
    pub process_uid: Option<u32>,
    /// When the runner runs as root: the gid `process` stages run as (null: root).
    pub process_gid: Option<u32>,
    /// Open files per `process` stage (RLIMIT_NOFILE).
    pub process_max_open_files: u64,
    /// Processes of a `process` stage's user (RLIMIT_NPROC) when it runs as its own user.
    pub process_max_processes: u64,
}

/// A list given as a YAML sequence or, as an environment variable can only give it, as
/// one comma-separated string (blank items dropped).
fn list_or_commas<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCommas {
        List(Vec<String>),
        Commas(String),
    }
    Ok(match ListOrCommas::deserialize(deserializer)? {
        ListOrCommas::List(items) => items,
        ListOrCommas::Commas(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}
