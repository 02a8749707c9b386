//! Error codes, reasons and the error body shared by command and query replies.
//!
//! Every refusal has one shape: `{"code", "message", "details": {"reason", "path"?, …}}`.
//! `code` says what kind of refusal it is (and whether retrying can help), `reason` says
//! exactly which rule refused it (clients branch on it; it is an enum, not free text),
//! `path` is the RFC 6901 JSON pointer of the offending field when there is one (`""` is
//! the whole body), and any further keys carry numbers a client may act on (`limit`,
//! `current_version`, …).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Why a command or query was refused. The wire form is snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed or breaks a rule of the contract; fix it, do not retry as is.
    ValidationFailed,
    /// The addressed aggregate (or a referenced one) does not exist.
    NotFound,
    /// Optimistic concurrency lost, a unique name is taken, a slot limit is reached,
    /// or a stale attempt acted; reload and decide again.
    Conflict,
    /// The aggregate's current state forbids the command (e.g. pausing an archived pipeline).
    InvalidState,
    /// The actor may not do this.
    Unauthorized,
    /// The request, its events or its reply exceed a size limit (or a plugin's stored
    /// module the runners' module limit).
    PayloadTooLarge,
    /// A query's `min_position` was not reached within its bound.
    Stale,
    /// A dependency (database, NATS) is unavailable; retrying later may succeed.
    Unavailable,
    /// A bug or unexpected failure inside the service.
    Internal,
}

impl ErrorCode {
    /// The wire name of the code (`validation_failed`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ValidationFailed => "validation_failed",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::InvalidState => "invalid_state",
            Self::Unauthorized => "unauthorized",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Stale => "stale",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// Whether sending the same request again (same `command_id`) later may succeed:
    /// the service or a dependency was unavailable, or failed unexpectedly.
    pub fn is_transient(self) -> bool {
        matches!(self, Self::Unavailable | Self::Internal)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which rule refused a request: `details.reason` of every error. Each reason belongs to
/// one [`ErrorCode`] ([`ErrorReason::code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorReason {
    /// `validation_failed`: the body is not JSON (`line`, `column` say where).
    MalformedJson,
    /// `validation_failed`: the body is JSON but not an object.
    NotAnObject,
    /// `validation_failed`: an object repeats a key (`path` is the repeated key).
    DuplicateKey,
    /// `validation_failed`: a string or key holds a character that cannot be stored (U+0000).
    InvalidCharacter,
    /// `validation_failed`: the subject names no command or query.
    UnknownSubject,
    /// `validation_failed`: a required field is absent (`path` names it).
    MissingField,
    /// `validation_failed`: a field the schema does not define (`path` names it).
    UnknownField,
    /// `validation_failed`: a field has the wrong JSON type.
    InvalidType,
    /// `validation_failed`: a field breaks a rule of its schema (range, length, pattern, …).
    InvalidValue,
    /// `validation_failed`: a step's config does not satisfy its plugin's config schema.
    ConfigInvalid,
    /// `validation_failed`: a plugin's `config_schema` is valid by the JSON Schema
    /// meta-schema, but cannot be used: a `pattern` that is no regular expression, a
    /// `$ref` that does not resolve, a `$schema` no validator knows (rules no meta-schema
    /// states, so the command's own schema cannot).
    ConfigSchemaUnusable,
    /// `validation_failed`: a secret property of a step's config holds a value instead of a
    /// `${secret:NAME}` reference.
    LiteralSecret,
    /// `validation_failed`: a step uses a disabled plugin.
    PluginDisabled,
    /// `validation_failed`: a step's plugin is of the wrong kind for its position.
    WrongPluginKind,
    /// `validation_failed`: a referenced aggregate does not belong with the command
    /// (e.g. a schedule of another pipeline, a run id that is not the slot's).
    Mismatch,
    /// `validation_failed`: the query's filter, sort or cursor does not apply to the view.
    NotApplicable,
    /// `not_found`: the addressed or a referenced aggregate does not exist.
    NotFound,
    /// `conflict`: `expected_version` is not the aggregate's version (`current_version`).
    Version,
    /// `conflict`: an aggregate with this id already exists.
    Exists,
    /// `conflict`: a unique key (a pipeline name) is taken (`scope`, `key`, `owner`).
    Unique,
    /// `conflict`: the pipeline has `max_active_runs` runs active (`active`, `max`).
    MaxActiveRuns,
    /// `conflict`: the attempt acting is not the run's current one (`current_attempt`).
    StaleAttempt,
    /// `conflict`: the `command_id` was used for a different command.
    CommandIdReused,
    /// `conflict`: the schedule's slot was fired, so it cannot be skipped (`run_id`).
    SlotFired,
    /// `conflict`: concurrent writers kept winning; retry later.
    Contention,
    /// `conflict`: a rebuild of the projection is already requested or running.
    RebuildRunning,
    /// `invalid_state`: the aggregate's state forbids the command.
    InvalidState,
    /// `unauthorized`: the actor may not do this.
    Unauthorized,
    /// `payload_too_large`: the request, an event it would write or its reply is over a
    /// limit (`size`, `limit` in bytes). A list page whose first item alone is over the
    /// limit also has `next_cursor`, the cursor that continues after that item, and `id`,
    /// the item's id. A `plugin.register` whose stored module is over
    /// `runner.max_module_bytes` also has `path` `/module_digest`.
    TooLarge,
    /// `stale`: the view did not reach `min_position` in time.
    NotReached,
    /// `unavailable`: a dependency is unavailable; retry later.
    Unavailable,
    /// `internal`: an unexpected failure.
    Internal,
}

impl ErrorReason {
    /// The error code every refusal with this reason carries.
    pub fn code(self) -> ErrorCode {
        use ErrorReason::*;
        match self {
            MalformedJson | NotAnObject | DuplicateKey | InvalidCharacter | UnknownSubject | MissingField
            | UnknownField | InvalidType | InvalidValue | ConfigInvalid | ConfigSchemaUnusable | LiteralSecret
            | PluginDisabled | WrongPluginKind | Mismatch | NotApplicable => ErrorCode::ValidationFailed,
            NotFound => ErrorCode::NotFound,
            Version | Exists | Unique | MaxActiveRuns | StaleAttempt | CommandIdReused | SlotFired | Contention
            | RebuildRunning => ErrorCode::Conflict,
            InvalidState => ErrorCode::InvalidState,
            Unauthorized => ErrorCode::Unauthorized,
            TooLarge => ErrorCode::PayloadTooLarge,
            NotReached => ErrorCode::Stale,
            Unavailable => ErrorCode::Unavailable,
            Internal => ErrorCode::Internal,
        }
    }

    /// The wire name (`missing_field`, …).
    pub fn as_str(self) -> &'static str {
        REASON_NAMES
            .iter()
            .find(|(r, _)| *r == self)
            .map_or("internal", |(_, n)| n)
    }
}

/// Every reason with its wire name (kept in step with the enum by a test).
const REASON_NAMES: &[(ErrorReason, &str)] = &[
    (ErrorReason::MalformedJson, "malformed_json"),
    (ErrorReason::NotAnObject, "not_an_object"),
    (ErrorReason::DuplicateKey, "duplicate_key"),
    (ErrorReason::InvalidCharacter, "invalid_character"),
    (ErrorReason::UnknownSubject, "unknown_subject"),
    (ErrorReason::MissingField, "missing_field"),
    (ErrorReason::UnknownField, "unknown_field"),
    (ErrorReason::InvalidType, "invalid_type"),
    (ErrorReason::InvalidValue, "invalid_value"),
    (ErrorReason::ConfigInvalid, "config_invalid"),
    (ErrorReason::ConfigSchemaUnusable, "config_schema_unusable"),
    (ErrorReason::LiteralSecret, "literal_secret"),
    (ErrorReason::PluginDisabled, "plugin_disabled"),
    (ErrorReason::WrongPluginKind, "wrong_plugin_kind"),
    (ErrorReason::Mismatch, "mismatch"),
    (ErrorReason::NotApplicable, "not_applicable"),
    (ErrorReason::NotFound, "not_found"),
    (ErrorReason::Version, "version"),
    (ErrorReason::Exists, "exists"),
    (ErrorReason::Unique, "unique"),
    (ErrorReason::MaxActiveRuns, "max_active_runs"),
    (ErrorReason::StaleAttempt, "stale_attempt"),
    (ErrorReason::CommandIdReused, "command_id_reused"),
    (ErrorReason::SlotFired, "slot_fired"),
    (ErrorReason::Contention, "contention"),
    (ErrorReason::RebuildRunning, "rebuild_running"),
    (ErrorReason::InvalidState, "invalid_state"),
    (ErrorReason::Unauthorized, "unauthorized"),
    (ErrorReason::TooLarge, "too_large"),
    (ErrorReason::NotReached, "not_reached"),
    (ErrorReason::Unavailable, "unavailable"),
    (ErrorReason::Internal, "internal"),
];

impl std::fmt::Display for ErrorReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `details` of every error: the reason, the field at fault, and reason-specific numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorDetails {
    /// Which rule refused the request.
    pub reason: ErrorReason,
    /// RFC 6901 JSON pointer of the field at fault (`/retry/max_attempts`; `""` is the
    /// whole body), when one is. Its tokens are the body's keys as sent (a key refused
    /// for holding U+0000 is named with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::rules::JSON_POINTER_PATTERN))]
    pub path: Option<String>,
    /// Reason-specific facts: `limit` and `size` (bytes) of `too_large`,
    /// `current_version` of `version`, `line` and `column` of `malformed_json`, …
    #[serde(flatten)]
    pub extra: Box<Map<String, Value>>,
}

/// The `error` object of a refused request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation saying what was wrong and, where possible, how to fix it.
    pub message: String,
    /// Which rule refused it, and where.
    pub details: ErrorDetails,
}

impl ErrorBody {
    /// An error for `reason` (its code follows from the reason).
    pub fn new(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self {
            code: reason.code(),
            message: message.into(),
            details: ErrorDetails {
                reason,
                path: None,
                extra: Box::default(),
            },
        }
    }

    /// A `validation_failed` error of `reason` at JSON pointer `path`.
    pub fn at(reason: ErrorReason, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(reason, message).with_path(path)
    }

    /// Sets the JSON pointer of the field at fault.
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.details.path = Some(path.into());
        self
    }

    /// Adds a reason-specific fact to `details`.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.extra.insert(key.to_owned(), value.into());
        self
    }

    /// The reason.
    pub fn reason(&self) -> ErrorReason {
        self.details.reason
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.details.reason, self.message)
    }
}

impl std::error::Error for ErrorBody {}

/// The JSON pointer of a field inside the object at pointer `parent`.
pub fn pointer_to(parent: &str, key: &str) -> String {
    format!("{parent}/{}", key.replace('~', "~0").replace('/', "~1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_match_the_wire_form() {
        for (reason, name) in REASON_NAMES {
            assert_eq!(
                serde_json::to_value(reason).ok(),
                Some(Value::String((*name).to_owned()))
            );
        }
        // One entry per variant: the schema lists every variant once.
        let schema = serde_json::to_string(&schemars::schema_for!(ErrorReason)).unwrap_or_default();
        assert_eq!(schema.matches("\"const\"").count(), REASON_NAMES.len(), "{schema}");
    }

    #[test]
    fn details_flatten_extra_facts() {
        let e = ErrorBody::new(ErrorReason::TooLarge, "big")
            .with("limit", 10)
            .with("size", 11);
        let v = serde_json::to_value(&e).unwrap_or_default();
        assert_eq!(v["code"], "payload_too_large");
        assert_eq!(v["details"]["reason"], "too_large");
        assert_eq!(v["details"]["limit"], 10);
        let back: ErrorBody = serde_json::from_value(v).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(back, e);
        assert_eq!(pointer_to("/a", "b/c~"), "/a/b~1c~0");
    }
}
