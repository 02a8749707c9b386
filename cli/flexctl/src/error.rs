//! How a failed command is reported: `error: …` text on stderr, or, with `--output json`,
//! one JSON document on stderr that scripts branch on:
//!
//! ```json
//! {"error": {"code": "not_found", "message": "…", "details": {"reason": "not_found", …}}}
//! ```
//!
//! `code` is the contract's error code when a service refused (`validation_failed`,
//! `not_found`, `conflict`, `invalid_state`, `unauthorized`, `payload_too_large`, `stale`;
//! `details` is then the refusal's details: `reason`, `path`, …), or one of flexctl's own:
//! `unavailable` (no answer: `details.reason` is `no_responders`, `timed_out`, `transient`,
//! `connection` or `stopped`; or no connection: `connection`, with `server`), `unauthorized`
//! also when NATS refuses flexctl's login (`details.reason` `nats_login`), `protocol` (an answer flexctl could not read), `usage` (a
//! command line clap refused), `io` (a file or the terminal), a [`Failure`]'s code
//! (`run_failed`, `run_not_finished`, …) and `failed` for any other failure.

use std::ffi::OsString;

use flexcore_client::{ClientError, Unanswered};
use flexcore_service::connect::ConnectError;
use serde_json::{json, Value};

/// A failure with a code of flexctl's own, for `--output json` (e.g. a followed run that
/// did not succeed).
#[derive(Debug)]
pub struct Failure {
    /// Machine-readable code (`run_failed`, …).
    pub code: &'static str,
    /// What happened and what to do.
    pub message: String,
    /// Facts for scripts (`run_id`, `state`, …).
    pub details: Value,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// A refusal told in other words (e.g. at the line of a file it is about): prints as
/// `text`, and keeps the refusal's code and details for `--output json`.
#[derive(Debug)]
pub struct Explained {
    /// What is printed.
    pub text: String,
    /// The refusal.
    pub error: ClientError,
}

impl std::fmt::Display for Explained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Explained {}

/// `explanation` (its text) of refusal `error`, keeping the refusal's code for JSON.
pub fn explained(explanation: &anyhow::Error, error: ClientError) -> anyhow::Error {
    anyhow::Error::new(Explained {
        text: format!("{explanation:#}"),
        error,
    })
}

/// The JSON document of `error` (see the module documentation).
pub fn to_json(error: &anyhow::Error) -> Value {
    let (code, details) = classify(error);
    json!({"error": {"code": code, "message": text(error), "details": details}})
}

/// The code and details of the first cause in `error`'s chain that has them.
fn classify(error: &anyhow::Error) -> (String, Value) {
    // A Failure may be a context (`.context(failure)`), which only anyhow's own downcast
    // finds, not the chain's.
    if let Some(failure) = error.downcast_ref::<Failure>() {
        return (failure.code.to_owned(), failure.details.clone());
    }
    for cause in error.chain() {
        let client = cause
            .downcast_ref::<ClientError>()
            .or_else(|| cause.downcast_ref::<Explained>().map(|e| &e.error));
        if let Some(client) = client {
            return match client {
                ClientError::Refused { what, error } => {
                    let mut details = serde_json::to_value(&error.details).unwrap_or_else(|_| json!({}));
                    if let Some(map) = details.as_object_mut() {
                        map.insert("request".to_owned(), json!(what));
                    }
                    (error.code.as_str().to_owned(), details)
                }
                ClientError::Unanswered { what, attempts, .. } => (
                    "unavailable".to_owned(),
                    json!({"reason": unanswered_reason(client), "request": what, "attempts": attempts}),
                ),
                ClientError::Stopped { what } => (
                    "unavailable".to_owned(),
                    json!({"reason": unanswered_reason(client), "request": what}),
                ),
                ClientError::Protocol { what, .. } => ("protocol".to_owned(), json!({"request": what})),
            };
        }
        if let Some(connect) = cause.downcast_ref::<ConnectError>() {
            return connect_failure(connect);
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return ("io".to_owned(), json!({"kind": io.kind().to_string()}));
        }
    }
    ("failed".to_owned(), json!({}))
}

/// A connection flexctl could not open: `unauthorized` when NATS refused the login,
/// `unavailable` otherwise (`details.reason` `connection`).
fn connect_failure(error: &ConnectError) -> (String, Value) {
    use async_nats::ConnectErrorKind as Kind;
    match error {
        ConnectError::Nats { cause, .. } => match cause.kind() {
            Kind::Authentication | Kind::AuthorizationViolation => (
                "unauthorized".to_owned(),
                json!({"reason": "nats_login", "server": "nats"}),
            ),
            _ => (
                "unavailable".to_owned(),
                json!({"reason": "connection", "server": "nats"}),
            ),
        },
        ConnectError::Postgres(_) => (
            "unavailable".to_owned(),
            json!({"reason": "connection", "server": "postgres"}),
        ),
    }
}

/// How a request went unanswered (`details.reason` of an `unavailable` error):
/// `no_responders`, `timed_out`, `transient`, `connection`, or `stopped` (also for an
/// error that is no [`ClientError::Unanswered`]).
pub fn unanswered_reason(error: &ClientError) -> &'static str {
    match error {
        ClientError::Unanswered { kind, .. } => match kind {
            Unanswered::NoResponders => "no_responders",
            Unanswered::TimedOut => "timed_out",
            Unanswered::Transient => "transient",
            Unanswered::Connection => "connection",
        },
        _ => "stopped",
    }
}

/// Prints `error` on stderr as `--output json` (found in `args`) asks: JSON or `error: …`.
#[allow(clippy::print_stderr)]
pub fn print(args: &[OsString], error: &anyhow::Error) {
    if json_requested(args) {
        eprintln!("{}", to_json(error));
    } else {
        eprintln!("error: {}", text(error));
    }
}

/// `error` as one line for people: its causes joined by `: ` (as `{:#}` prints them), a
/// service's refusal as its message and code (`no run with id …; list them: … (not_found)`)
/// rather than the request's NATS name (which the JSON form keeps in `details.request`).
pub fn text(error: &anyhow::Error) -> String {
    error
        .chain()
        .map(|cause| match cause.downcast_ref::<ClientError>() {
            Some(client) => client_text(client),
            None => cause.to_string(),
        })
        .collect::<Vec<_>>()
        .join(": ")
}

/// A client error for people: a refusal as its message and code, anything else as it is.
pub fn client_text(error: &ClientError) -> String {
    match error {
        ClientError::Refused { error, .. } => {
            let (code, reason) = (error.code.to_string(), error.details.reason.to_string());
            match code == reason {
                true => format!("{} ({code})", error.message),
                false => format!("{} ({code}: {reason})", error.message),
            }
        }
        other => other.to_string(),
    }
}

/// Whether the command line asks for `--output json` (read from the arguments themselves,
/// so that an error is JSON even when the command line does not parse).
pub fn json_requested(args: &[OsString]) -> bool {
    let mut json = false;
    let mut args = args.iter().map(|a| a.to_string_lossy());
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        if arg == "--output" {
            json = args.next().is_some_and(|value| value == "json");
        } else if let Some(value) = arg.strip_prefix("--output=") {
            json = value == "json";
        }
    }
    json
}

/// Parses the process's command line as `C`; a command line clap refuses exits with
/// status 2 and, with `--output json`, a `usage` error as JSON on stderr (`--help` and
/// `--version` print as usual).
#[allow(clippy::print_stderr)]
pub fn parse_args<C: clap::Parser>() -> Result<C, std::process::ExitCode> {
    let args: Vec<OsString> = std::env::args_os().collect();
    match C::try_parse_from(&args) {
        Ok(cli) => Ok(cli),
        Err(error) if error.use_stderr() && json_requested(&args) => {
            eprintln!("{}", usage_json(&error));
            Err(std::process::ExitCode::from(2))
        }
        Err(error) => error.exit(),
    }
}

/// The JSON document of a command line clap refused.
pub fn usage_json(error: &clap::Error) -> Value {
    let message = error.render().to_string();
    let message = message.trim().strip_prefix("error: ").unwrap_or(message.trim());
    json!({"error": {"code": "usage", "message": message, "details": {"kind": error.kind().to_string()}}})
}

#[cfg(test)]
mod tests {
    use flexcore_contracts::{ErrorBody, ErrorReason};

    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn json_is_asked_for_by_output_json_in_either_spelling() {
        assert!(json_requested(&args(&["flexctl", "run", "list", "--output", "json"])));
        assert!(json_requested(&args(&["flexctl", "--output=json", "status"])));
        assert!(!json_requested(&args(&["flexctl", "--output", "text", "status"])));
        assert!(!json_requested(&args(&[
            "flexctl", "--output", "json", "--output", "text"
        ])));
        assert!(!json_requested(&args(&["flexctl", "status"])));
        assert!(!json_requested(&args(&["flexctl", "x", "--", "--output", "json"])));
    }

    #[test]
    fn a_refusal_keeps_the_contract_code_and_details() {
        let refused = ClientError::Refused {
            what: "pipeline.create".to_owned(),
            error: ErrorBody::at(ErrorReason::MissingField, "/owner", "owner is required"),
        };
        let json = to_json(&anyhow::Error::new(refused).context("creating p.yaml"));
        assert_eq!(json["error"]["code"], "validation_failed", "{json}");
        assert_eq!(json["error"]["details"]["reason"], "missing_field", "{json}");
        assert_eq!(json["error"]["details"]["path"], "/owner", "{json}");
        assert_eq!(json["error"]["details"]["request"], "pipeline.create", "{json}");
        let message = json["error"]["message"].as_str().unwrap();
        assert_eq!(
            message, "creating p.yaml: owner is required (validation_failed: missing_field)",
            "{json}"
        );
        // People read the same words, without the request's NATS name.
        let not_found = ClientError::Refused {
            what: "run.get".to_owned(),
            error: ErrorBody::new(ErrorReason::NotFound, "no run with id 1; list them: `flexctl run list`"),
        };
        assert_eq!(
            text(&anyhow::Error::new(not_found)),
            "no run with id 1; list them: `flexctl run list` (not_found)"
        );
    }

    #[test]
    fn no_answer_is_unavailable_with_how_it_failed() {
        let unanswered = ClientError::Unanswered {
            what: "run.request".to_owned(),
            why: "flexcore-command did not answer in time".to_owned(),
            kind: Unanswered::TimedOut,
            attempts: 5,
        };
        let json = to_json(&anyhow::Error::new(unanswered));
        assert_eq!(json["error"]["code"], "unavailable");
        assert_eq!(
            json["error"]["details"],
            json!({"reason": "timed_out", "request": "run.request", "attempts": 5})
        );
    }

    #[test]
    fn local_failures_get_codes_of_their_own() {
        let failure = Failure {
            code: "run_failed",
            message: "run x ended failed".to_owned(),
            details: json!({"state": "failed"}),
        };
        let json = to_json(&anyhow::Error::new(failure));
        assert_eq!(json["error"]["code"], "run_failed");
        let wrapped = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::TimedOut)).context(Failure {
            code: "follow_timed_out",
            message: "still running".to_owned(),
            details: json!({}),
        });
        assert_eq!(
            to_json(&wrapped)["error"]["code"],
            "follow_timed_out",
            "a failure as context wins"
        );
        assert_eq!(json["error"]["details"]["state"], "failed");
        let io = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::NotFound)).context("reading p.yaml");
        assert_eq!(to_json(&io)["error"]["code"], "io");
        assert_eq!(to_json(&anyhow::anyhow!("something else"))["error"]["code"], "failed");
    }

    #[tokio::test]
    async fn no_nats_server_is_unavailable() {
        let nats = crate::nats::Nats::new(
            "nats://127.0.0.1:1",
            crate::nats::NatsLogin {
                user: String::new(),
                password: flexcore_config::Secret::new(""),
                identity: None,
                tls_ca_file: None,
                tls_client: None,
            },
        );
        let error = nats.connect().await.unwrap_err();
        let json = to_json(&error);
        assert_eq!(json["error"]["code"], "unavailable", "{json}");
        assert_eq!(
            json["error"]["details"],
            json!({"reason": "connection", "server": "nats"})
        );
    }

    #[test]
    fn a_refusal_told_at_a_files_line_keeps_its_code() {
        let refused = ClientError::Refused {
            what: "pipeline.create".to_owned(),
            error: ErrorBody::at(
                ErrorReason::NotFound,
                "/steps/1/plugin",
                "plugin nope@1.0.0 is not registered",
            ),
        };
        let error = explained(
            &anyhow::anyhow!("p.yaml:7:13: plugin nope@1.0.0 is not registered"),
            refused,
        );
        assert_eq!(format!("{error:#}"), "p.yaml:7:13: plugin nope@1.0.0 is not registered");
        let json = to_json(&error);
        assert_eq!(json["error"]["code"], "not_found", "{json}");
        assert_eq!(json["error"]["details"]["path"], "/steps/1/plugin", "{json}");
    }

    #[test]
    fn a_refused_command_line_is_a_usage_error() {
        use clap::Parser as _;
        let error = crate::cli::Cli::try_parse_from(["flexctl", "run", "start"]).unwrap_err();
        let json = usage_json(&error);
        assert_eq!(json["error"]["code"], "usage", "{json}");
        assert!(
            json["error"]["message"].as_str().unwrap().contains("<PIPELINE>"),
            "{json}"
        );
    }
}
