//! Every command, one module per aggregate, and [`decode`]: subject + raw bytes → command.
//!
//! A command body is a JSON object with the command's fields plus the optional
//! `command_id` (idempotency key) and `expected_version` (optimistic concurrency).

pub mod pipeline;
pub mod plugin;
pub mod run;
pub mod schedule;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{ErrorBody, ErrorCode};

pub use pipeline::*;
pub use plugin::*;
pub use run::*;
pub use schedule::*;

/// The fields every command body may carry besides its own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CommandMeta {
    /// Idempotency key: the same id again returns the first reply and has no second effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<Uuid>,
    /// The aggregate version the client decided on; a mismatch is a `conflict`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<u64>,
}

macro_rules! commands {
    ($( $variant:ident($ty:ty) = $aggregate:literal . $action:literal ),* $(,)?) => {
        /// Any command, by subject.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug, Clone, PartialEq)]
        pub enum Command {
            $(
                #[doc = concat!("`", $aggregate, ".", $action, "`")]
                $variant($ty),
            )*
        }

        impl Command {
            /// Every command as `(aggregate, action)`.
            pub const ALL: &'static [(&'static str, &'static str)] = &[$(($aggregate, $action)),*];

            /// The aggregate type the command addresses.
            pub fn aggregate_type(&self) -> &'static str {
                match self { $(Self::$variant(_) => $aggregate,)* }
            }

            /// The qualified command name, e.g. `pipeline.create`.
            pub fn name(&self) -> &'static str {
                match self { $(Self::$variant(_) => concat!($aggregate, ".", $action),)* }
            }

            /// The body as JSON (without `command_id` / `expected_version`).
            pub fn body(&self) -> serde_json::Value {
                match self { $(Self::$variant(c) => serde_json::to_value(c).unwrap_or_default(),)* }
            }

            fn decode_body(aggregate: &str, action: &str, body: serde_json::Value) -> Result<Self, ErrorBody> {
                match (aggregate, action) {
                    $(($aggregate, $action) => typed(body).map(Self::$variant),)*
                    _ => Err(ErrorBody::new(
                        ErrorCode::ValidationFailed,
                        format!("unknown command {aggregate}.{action}; known commands: {}", known()),
                    ).with_details(serde_json::json!({"reason": "unknown_subject"}))),
                }
            }

            /// JSON Schema of every command body (including the common fields), by name.
            pub fn schemas() -> Vec<(String, schemars::Schema)> {
                vec![$((concat!($aggregate, ".", $action).to_owned(), crate::schema::command_schema::<$ty>()),)*]
            }
        }
    };
}

commands! {
    RegisterPlugin(RegisterPlugin) = "plugin"."register",
    DeprecatePlugin(DeprecatePlugin) = "plugin"."deprecate",
    DisablePlugin(DisablePlugin) = "plugin"."disable",
    EnablePlugin(EnablePlugin) = "plugin"."enable",
    CreatePipeline(CreatePipeline) = "pipeline"."create",
    UpdatePipeline(UpdatePipeline) = "pipeline"."update",
    PausePipeline(PausePipeline) = "pipeline"."pause",
    ResumePipeline(ResumePipeline) = "pipeline"."resume",
    ArchivePipeline(ArchivePipeline) = "pipeline"."archive",
    CommitPipelineState(CommitPipelineState) = "pipeline"."commit_state",
    RequestRun(RequestRun) = "run"."request",
    ClaimRun(ClaimRun) = "run"."claim",
    CheckpointRun(CheckpointRun) = "run"."checkpoint",
    SucceedRun(SucceedRun) = "run"."succeed",
    FailRun(FailRun) = "run"."fail",
    RetryRun(RetryRun) = "run"."retry",
    CancelRun(CancelRun) = "run"."cancel",
    TimeOutRun(TimeOutRun) = "run"."time_out",
    CreateSchedule(CreateSchedule) = "schedule"."create",
    UpdateSchedule(UpdateSchedule) = "schedule"."update",
    PauseSchedule(PauseSchedule) = "schedule"."pause",
    ResumeSchedule(ResumeSchedule) = "schedule"."resume",
    DeleteSchedule(DeleteSchedule) = "schedule"."delete",
    SkipSlot(SkipSlot) = "schedule"."skip_slot",
    MissSlots(MissSlots) = "schedule"."miss_slots",
}

fn known() -> String {
    Command::ALL
        .iter()
        .map(|(a, c)| format!("{a}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn validation(message: String, details: serde_json::Value) -> ErrorBody {
    ErrorBody::new(ErrorCode::ValidationFailed, message).with_details(details)
}

pub(crate) fn typed<T: serde::de::DeserializeOwned>(body: serde_json::Value) -> Result<T, ErrorBody> {
    serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let message = if path == "." { inner } else { format!("{path}: {inner}") };
        validation(message, serde_json::json!({"reason": "invalid_field", "path": path}))
    })
}

/// Parses a request body, refusing malformed JSON with its line and column.
pub(crate) fn parse_json(payload: &[u8]) -> Result<serde_json::Value, ErrorBody> {
    serde_json::from_slice(payload).map_err(|e| {
        validation(
            format!("malformed JSON: {e}"),
            serde_json::json!({"reason": "malformed_json", "line": e.line(), "column": e.column()}),
        )
    })
}

/// Decodes a command from its subject and raw payload.
///
/// Errors are `validation_failed` replies that say what is wrong: malformed JSON (with
/// line and column), a body that is not an object, an unknown subject, an unknown or
/// missing field, a wrong type or an invalid value (with the field's path).
pub fn decode(subject: &str, payload: &[u8]) -> Result<(CommandMeta, Command), ErrorBody> {
    let (aggregate, action) = crate::subjects::parse_command(subject).ok_or_else(|| {
        validation(
            format!("subject {subject:?} is not a command subject (flexcore.cmd.<aggregate>.<action>)"),
            serde_json::json!({"reason": "unknown_subject"}),
        )
    })?;
    let value = parse_json(payload)?;
    let serde_json::Value::Object(mut body) = value else {
        return Err(validation(
            "the command body must be a JSON object".into(),
            serde_json::json!({"reason": "not_an_object"}),
        ));
    };
    let mut meta_fields = serde_json::Map::new();
    for key in ["command_id", "expected_version"] {
        if let Some(v) = body.remove(key) {
            meta_fields.insert(key.to_owned(), v);
        }
    }
    let meta: CommandMeta = typed(serde_json::Value::Object(meta_fields))?;
    let command = Command::decode_body(aggregate, action, serde_json::Value::Object(body))?;
    Ok((meta, command))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_and_reason(r: Result<(CommandMeta, Command), ErrorBody>) -> (ErrorCode, String) {
        let e = r
            .err()
            .unwrap_or_else(|| ErrorBody::new(ErrorCode::Internal, "decoded"));
        let reason = e
            .details
            .as_ref()
            .and_then(|d| d["reason"].as_str())
            .unwrap_or("")
            .to_owned();
        (e.code, reason)
    }

    #[test]
    fn decodes_a_command_with_meta() {
        let id = Uuid::new_v4();
        let body = format!(r#"{{"command_id":"{id}","expected_version":3,"pipeline_id":"{id}"}}"#);
        let (meta, cmd) =
            decode("flexcore.cmd.pipeline.resume", body.as_bytes()).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(meta.command_id, Some(id));
        assert_eq!(meta.expected_version, Some(3));
        assert_eq!(cmd, Command::ResumePipeline(ResumePipeline { pipeline_id: id }));
        assert_eq!(cmd.name(), "pipeline.resume");
    }

    #[test]
    fn every_listed_command_has_a_decoder() {
        for (a, c) in Command::ALL {
            let (_, reason) = code_and_reason(decode(&crate::subjects::command(a, c), b"{}"));
            assert_ne!(reason, "unknown_subject", "{a}.{c}");
        }
    }

    #[test]
    fn bad_input_is_explained() {
        let id = Uuid::new_v4();
        assert_eq!(
            code_and_reason(decode("flexcore.cmd.pipeline.resume", b"{not json")).1,
            "malformed_json"
        );
        assert_eq!(
            code_and_reason(decode("flexcore.cmd.pipeline.resume", b"[1]")).1,
            "not_an_object"
        );
        assert_eq!(
            code_and_reason(decode("flexcore.cmd.pipeline.fly", b"{}")).1,
            "unknown_subject"
        );
        assert_eq!(
            code_and_reason(decode("flexcore.cmd.pipeline", b"{}")).1,
            "unknown_subject"
        );
        let unknown = format!(r#"{{"pipeline_id":"{id}","colour":"red"}}"#);
        let (code, reason) = code_and_reason(decode("flexcore.cmd.pipeline.resume", unknown.as_bytes()));
        assert_eq!((code, reason.as_str()), (ErrorCode::ValidationFailed, "invalid_field"));
        let e = decode("flexcore.cmd.pipeline.resume", b"{}")
            .err()
            .map(|e| e.message)
            .unwrap_or_default();
        assert!(e.contains("missing field `pipeline_id`"), "{e}");
        let e = decode("flexcore.cmd.pipeline.resume", br#"{"pipeline_id":42}"#)
            .err()
            .map(|e| e.message)
            .unwrap_or_default();
        assert!(e.starts_with("pipeline_id:"), "{e}");
        let e = decode(
            "flexcore.cmd.pipeline.resume",
            format!(r#"{{"pipeline_id":"{id}","command_id":"nope"}}"#).as_bytes(),
        )
        .err()
        .map(|e| e.message)
        .unwrap_or_default();
        assert!(e.starts_with("command_id:"), "{e}");
    }
}
