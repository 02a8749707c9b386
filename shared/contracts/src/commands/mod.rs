//! Every command, one module per aggregate, and [`decode`]: subject + raw bytes → command.
//!
//! A command body is a JSON object with the command's fields plus the optional
//! `command_id` (idempotency key), `expected_version` (optimistic concurrency) and
//! `dry_run` (decide, but write nothing).

pub mod pipeline;
pub mod plugin;
pub mod run;
pub mod schedule;

use std::collections::HashMap;
use std::sync::OnceLock;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::decode::Decoder;
use crate::error::{ErrorBody, ErrorReason};

pub use pipeline::*;
pub use plugin::*;
pub use run::*;
pub use schedule::*;

/// The fields every command body may carry besides its own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandMeta {
    /// Idempotency key: the same id again returns the first reply and has no second effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<Uuid>,
    /// The aggregate version the client decided on; a mismatch is a `conflict`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<u64>,
    /// Decide only: the command is validated exactly as it would be (the same decision on
    /// the current state, unique names included) and the reply says what it would write,
    /// but nothing is written (`dry_run: true` in the reply).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// The names of the [`CommandMeta`] fields inside a command body.
pub const META_FIELDS: &[&str] = &["command_id", "expected_version", "dry_run"];

/// A command's body type: knows its subject (`flexcore.cmd.<AGGREGATE>.<ACTION>`).
pub trait CommandBody: Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static {
    /// The aggregate it addresses.
    const AGGREGATE: &'static str;
    /// The action.
    const ACTION: &'static str;
    /// `<aggregate>.<action>`.
    const NAME: &'static str;
    /// The body as a [`Command`].
    fn into_command(self) -> Command;
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

            /// The body as JSON text (without `command_id` / `expected_version`).
            pub fn body(&self) -> String {
                match self { $(Self::$variant(c) => serde_json::to_string(c).unwrap_or_default(),)* }
            }

            fn decode_body(name: &str, payload: &[u8]) -> Result<(CommandMeta, Self), ErrorBody> {
                let decoder = decoder(name)?;
                match name {
                    $(concat!($aggregate, ".", $action) => decoder
                        .decode_with_meta::<$ty, CommandMeta>(payload, META_FIELDS)
                        .map(|(meta, body)| (meta, Self::$variant(body))),)*
                    _ => Err(unknown_command(name)),
                }
            }

            /// JSON Schema of every command body (including the common fields), by name.
            pub fn schemas() -> Vec<(String, schemars::Schema)> {
                vec![$((concat!($aggregate, ".", $action).to_owned(), crate::schema::command_schema::<$ty>()),)*]
            }
        }

        $(
            impl CommandBody for $ty {
                const AGGREGATE: &'static str = $aggregate;
                const ACTION: &'static str = $action;
                const NAME: &'static str = concat!($aggregate, ".", $action);
                fn into_command(self) -> Command {
                    Command::$variant(self)
                }
            }
        )*
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

fn unknown_command(name: &str) -> ErrorBody {
    ErrorBody::new(
        ErrorReason::UnknownSubject,
        format!("unknown command {name}; known commands: {}", known()),
    )
}

/// The compiled schema of command `name` (`pipeline.create`), compiled once per process.
pub fn decoder(name: &str) -> Result<&'static Decoder, ErrorBody> {
    static DECODERS: OnceLock<HashMap<String, Result<Decoder, String>>> = OnceLock::new();
    let all = DECODERS.get_or_init(|| {
        Command::schemas()
            .into_iter()
            .map(|(name, schema)| (name, Decoder::new(schema)))
            .collect()
    });
    match all.get(name) {
        Some(Ok(decoder)) => Ok(decoder),
        Some(Err(e)) => Err(ErrorBody::new(
            ErrorReason::Internal,
            format!("the schema of {name} does not compile: {e}"),
        )),
        None => Err(unknown_command(name)),
    }
}

/// Decodes a command from its subject and raw payload (see [`crate::decode`] for the
/// steps). Errors are `validation_failed` replies saying which rule failed and where:
/// malformed JSON (line and column), a body that is not an object, a repeated key, U+0000,
/// an unknown subject, a missing or unknown field, a wrong type or a value breaking a rule
/// of the command's schema (with the field's JSON pointer).
pub fn decode(subject: &str, payload: &[u8]) -> Result<(CommandMeta, Command), ErrorBody> {
    let (aggregate, action) = crate::subjects::parse_command(subject).ok_or_else(|| {
        ErrorBody::new(
            ErrorReason::UnknownSubject,
            format!("subject {subject:?} is not a command subject (flexcore.cmd.<aggregate>.<action>)"),
        )
    })?;
    Command::decode_body(&format!("{aggregate}.{action}"), payload)
}

/// A command body as sent on the wire: the command's fields plus the meta fields.
///
/// Written as text, never through a [`serde_json::Value`]: opaque client data (a STATE,
/// a config) keeps every digit and its key order.
pub fn encode<C: Serialize>(command: &C, meta: &CommandMeta) -> Result<Vec<u8>, serde_json::Error> {
    let mut body = serde_json::to_vec(command)?;
    let serde_json::Value::Object(meta) = serde_json::to_value(meta)? else {
        return Ok(body);
    };
    if meta.is_empty() || body.last() != Some(&b'}') {
        return Ok(body);
    }
    body.pop();
    let mut empty = body.ends_with(b"{");
    for (key, value) in meta {
        if !empty {
            body.push(b',');
        }
        empty = false;
        serde_json::to_writer(&mut body, &key)?;
        body.push(b':');
        serde_json::to_writer(&mut body, &value)?;
    }
    body.push(b'}');
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn refusal(r: Result<(CommandMeta, Command), ErrorBody>) -> (ErrorCode, ErrorReason, String) {
        let e = r
            .err()
            .unwrap_or_else(|| ErrorBody::new(ErrorReason::Internal, "decoded"));
        (e.code, e.details.reason, e.details.path.unwrap_or_default())
    }

    #[test]
    fn encoding_keeps_opaque_text_and_adds_meta() {
        let id = Uuid::nil();
        let state = r#"{"z":524560164915.88403,"big":123456789012345678901234567890,"e":1.5e3}"#;
        let command = CommitPipelineState {
            pipeline_id: id,
            state: crate::OpaqueJson::parse(state).unwrap_or_else(|_| crate::OpaqueJson::null()),
        };
        let meta = CommandMeta {
            expected_version: Some(4),
            ..CommandMeta::default()
        };
        let body = String::from_utf8(encode(&command, &meta).unwrap_or_default()).unwrap_or_default();
        assert_eq!(
            body,
            format!(r#"{{"pipeline_id":"{id}","state":{state},"expected_version":4}}"#)
        );
        assert_eq!(
            encode(&command, &CommandMeta::default()).unwrap_or_default(),
            serde_json::to_vec(&command).unwrap_or_default()
        );
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
            let (_, reason, _) = refusal(decode(&crate::subjects::command(a, c), b"{}"));
            assert_ne!(reason, ErrorReason::UnknownSubject, "{a}.{c}");
            assert_ne!(reason, ErrorReason::Internal, "{a}.{c}");
        }
    }

    #[test]
    fn bad_input_is_explained_with_reason_and_pointer() {
        let id = Uuid::new_v4();
        let resume = "flexcore.cmd.pipeline.resume";
        assert_eq!(refusal(decode(resume, b"{not json")).1, ErrorReason::MalformedJson);
        assert_eq!(refusal(decode(resume, b"[1]")).1, ErrorReason::NotAnObject);
        assert_eq!(
            refusal(decode("flexcore.cmd.pipeline.fly", b"{}")).1,
            ErrorReason::UnknownSubject
        );
        assert_eq!(
            refusal(decode("flexcore.cmd.pipeline", b"{}")).1,
            ErrorReason::UnknownSubject
        );
        let unknown = format!(r#"{{"pipeline_id":"{id}","colour":"red"}}"#);
        assert_eq!(
            refusal(decode(resume, unknown.as_bytes())),
            (ErrorCode::ValidationFailed, ErrorReason::UnknownField, "/colour".into())
        );
        assert_eq!(
            refusal(decode(resume, b"{}")),
            (
                ErrorCode::ValidationFailed,
                ErrorReason::MissingField,
                "/pipeline_id".into()
            )
        );
        assert_eq!(
            refusal(decode(resume, br#"{"pipeline_id":42}"#)).1,
            ErrorReason::InvalidType
        );
        let bad_id = format!(r#"{{"pipeline_id":"{id}","command_id":"nope"}}"#);
        assert_eq!(refusal(decode(resume, bad_id.as_bytes())).2, "/command_id");
        // Only the canonical hyphenated form of a UUID.
        for spelling in [id.simple().to_string(), format!("{{{id}}}"), format!("urn:uuid:{id}")] {
            let body = format!(r#"{{"pipeline_id":"{spelling}"}}"#);
            assert_eq!(refusal(decode(resume, body.as_bytes())).2, "/pipeline_id", "{spelling}");
        }
        let upper = format!(r#"{{"pipeline_id":"{}"}}"#, id.to_string().to_uppercase());
        assert!(decode(resume, upper.as_bytes()).is_ok());
    }

    #[test]
    fn arrays_where_objects_belong_are_refused() {
        let body = br#"{"name":"p","owner":"o","steps":[],"retry":[2,5,60,1.5]}"#;
        let (_, reason, path) = refusal(decode("flexcore.cmd.pipeline.create", body));
        assert!(
            matches!(reason, ErrorReason::InvalidType | ErrorReason::InvalidValue),
            "{reason}"
        );
        assert!(path == "/retry" || path == "/steps", "{path}");
    }

    #[test]
    fn repeated_items_are_refused_whatever_their_text() {
        // The validator's message quotes the items; multi-byte ones once cut it mid-character.
        let id = Uuid::new_v4();
        let tag = "x\u{a0}y ".repeat(30);
        let body = format!(r#"{{"pipeline_id":"{id}","tags":["{tag}","{tag}"]}}"#);
        assert_eq!(
            refusal(decode("flexcore.cmd.pipeline.update", body.as_bytes())),
            (ErrorCode::ValidationFailed, ErrorReason::InvalidValue, "/tags".into())
        );
    }

    #[test]
    fn integers_written_as_floats_are_integers() {
        let id = Uuid::new_v4();
        let body = format!(r#"{{"run_id":"{id}","attempt":2.0,"runner_id":"r","lease_seconds":3e1}}"#);
        let (_, cmd) = decode("flexcore.cmd.run.claim", body.as_bytes()).unwrap_or_else(|e| unreachable!("{e}"));
        let Command::ClaimRun(claim) = cmd else { unreachable!() };
        assert_eq!((claim.attempt, claim.lease_seconds), (2, 30));
        let frac = format!(r#"{{"run_id":"{id}","attempt":2.5,"runner_id":"r"}}"#);
        assert_eq!(refusal(decode("flexcore.cmd.run.claim", frac.as_bytes())).2, "/attempt");
    }

    #[test]
    fn opaque_state_keeps_every_digit_and_key_order() {
        let id = Uuid::new_v4();
        let state =
            r#"{"z":524560164915.88403,"big":123456789012345678901234567890,"e":1.5E+3,"a":{"y":1,"x":[0.1000]}}"#;
        let body = format!(r#"{{"pipeline_id":"{id}","state":{state}}}"#);
        let (_, cmd) =
            decode("flexcore.cmd.pipeline.commit_state", body.as_bytes()).unwrap_or_else(|e| unreachable!("{e}"));
        let Command::CommitPipelineState(c) = cmd else {
            unreachable!()
        };
        assert_eq!(c.state.as_str(), state);
    }
}
