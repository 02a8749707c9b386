//! The NATS side: a queue-group subscription on `flexcore.cmd.>`, one task per request
//! (bounded), a reply for every request, and a graceful drain on shutdown.

use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, Message};
use flexcore_config::UnsignedCommands;
use flexcore_contracts::commands;
use flexcore_contracts::rules::MAX_LABEL_CHARS;
use flexcore_contracts::{envelope, subjects, CommandReply, ErrorBody, ErrorReason};
use flexcore_security::{policy, ApiRole, Role, Trust, COMMAND_FRESHNESS};
use flexcore_telemetry::propagation;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::executor::{Executor, Prepared, RequestContext};

/// Limits of the request loop.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Largest accepted command payload in bytes (the NATS server's `max_payload` caps it too).
    pub max_payload_bytes: usize,
    /// Most requests handled at once.
    pub max_in_flight: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// Largest module a registration may name (`runner.max_module_bytes`: runners refuse
    /// larger ones, so such a plugin could never run).
    pub max_module_bytes: u64,
}

/// Whom commands are accepted from: signatures are checked against the identities file,
/// and the signer's role against [`policy::authorize`].
#[derive(Debug, Clone)]
pub struct Auth {
    /// The identities file.
    pub trust: Trust,
    /// What an unsigned command is.
    pub unsigned: UnsignedCommands,
}

/// The actor recorded for unsigned commands accepted as role `client` (a name no
/// identity can have: the identities file refuses it).
pub const UNSIGNED_ACTOR: &str = flexcore_security::identity::RESERVED_NAME;

/// Who sent a command.
struct Sender {
    name: String,
    authority: Authority,
}

/// What decides which commands a sender may send.
#[derive(Debug, Clone, Copy)]
enum Authority {
    /// The signer's (or an unsigned command's) role.
    Role(Role),
    /// A caller of the HTTP API, for whom the gateway signed.
    Api(ApiRole),
}

impl Authority {
    fn authorize(self, command: &commands::Command) -> Result<(), String> {
        match self {
            Authority::Role(role) => policy::authorize(role, command),
            Authority::Api(role) => policy::authorize_api(role, command),
        }
    }
}

/// The caller a gateway names in `Flexcore-On-Behalf-Of` (`<api role>:<name>`): a known
/// API role and a name of 1 to 200 printable characters.
fn on_behalf_of(value: &str) -> Result<(ApiRole, &str), ErrorBody> {
    let refused = |why: &str| {
        ErrorBody::new(
            ErrorReason::Unauthorized,
            format!(
                "{} must be <viewer|operator|admin>:<caller>: {why}",
                envelope::HEADER_ON_BEHALF_OF
            ),
        )
    };
    let (role, name) = value.split_once(':').ok_or_else(|| refused("no role"))?;
    let role = role.parse::<ApiRole>().map_err(|e| refused(&e))?;
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(refused("the caller's name is 1 to 200 printable characters"));
    }
    Ok((role, name))
}

impl Auth {
    /// The verified sender of `message`, or the `unauthorized` refusal.
    fn sender(&self, message: &Message) -> Result<Sender, ErrorBody> {
        let signed = message
            .headers
            .as_ref()
            .is_some_and(|h| h.get(envelope::HEADER_SIGNATURE).is_some());
        if !signed {
            return match self.unsigned {
                UnsignedCommands::Client => Ok(Sender {
                    name: UNSIGNED_ACTOR.to_owned(),
                    authority: Authority::Role(Role::Client),
                }),
                UnsignedCommands::Refuse => Err(ErrorBody::new(
                    ErrorReason::Unauthorized,
                    "unsigned commands are refused here (security.unsigned_commands = refuse): sign them with \
                     an identity from the identities file (docs/security.md)",
                )),
            };
        }
        let identity = self
            .trust
            .verify(
                message.subject.as_str(),
                message.headers.as_ref(),
                &message.payload,
                &Role::ALL,
                Some(COMMAND_FRESHNESS),
            )
            .map_err(|e| {
                ErrorBody::new(
                    ErrorReason::Unauthorized,
                    format!("the command's signature is not accepted: {e}"),
                )
            })?;
        // Verified above: the header, when present, is covered by the signature.
        let caller = message
            .headers
            .as_ref()
            .and_then(|h| h.get(envelope::HEADER_ON_BEHALF_OF))
            .map(|v| v.as_str().to_owned());
        match (identity.role, caller) {
            (Role::Gateway, Some(caller)) => {
                let (role, name) = on_behalf_of(&caller)?;
                Ok(Sender {
                    name: name.to_owned(),
                    authority: Authority::Api(role),
                })
            }
            (Role::Gateway, None) => Err(ErrorBody::new(
                ErrorReason::Unauthorized,
                format!(
                    "the gateway sends commands only on behalf of a caller ({} missing)",
                    envelope::HEADER_ON_BEHALF_OF
                ),
            )),
            (role, Some(_)) => Err(ErrorBody::new(
                ErrorReason::Unauthorized,
                format!(
                    "only the gateway acts on behalf of others; {} (role {role}) sent {}",
                    identity.name,
                    envelope::HEADER_ON_BEHALF_OF
                ),
            )),
            (role, None) => Ok(Sender {
                name: identity.name.clone(),
                authority: Authority::Role(role),
            }),
        }
    }
}

/// Serves commands until `shutdown`, then stops taking new ones and waits (bounded) for
/// those in flight to be answered.
pub async fn serve(
    client: Client,
    executor: Arc<Executor>,
    limits: ServerLimits,
    auth: Auth,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let auth = Arc::new(auth);
    let bounds = flexcore_service::ServeLimits {
        max_in_flight: limits.max_in_flight,
        shutdown_grace: limits.shutdown_grace,
    };
    let max = limits.max_payload_bytes;
    let max_module = limits.max_module_bytes;
    let replies = client.clone();
    flexcore_service::serve(
        client,
        subjects::COMMANDS_WILDCARD,
        subjects::COMMAND_QUEUE_GROUP,
        "commands",
        bounds,
        shutdown,
        move |message| {
            let (client, executor, auth) = (replies.clone(), executor.clone(), auth.clone());
            async move { handle(&client, &executor, &auth, message, (max, max_module)).await }
        },
    )
    .await
}

async fn handle(
    client: &Client,
    executor: &Executor,
    auth: &Auth,
    message: Message,
    (max_payload, max_module): (usize, u64),
) {
    let Some(reply_to) = message.reply.clone() else {
        tracing::warn!(subject = %message.subject, "command without a reply subject dropped: send it as a request");
        return;
    };
    let started = std::time::Instant::now();
    let bus_limit = client.max_payload();
    let limits = (max_payload.min(bus_limit), bus_limit, max_module);
    let reply = answer(client, executor, auth, &message, limits).await;
    super::metrics::record(message.subject.as_str(), &reply, started.elapsed());
    let body = serde_json::to_vec(&reply).unwrap_or_else(|e| {
        flexcore_service::reply::error_body(&ErrorBody::new(
            ErrorReason::Internal,
            format!("reply encoding failed: {e}"),
        ))
    });
    flexcore_service::reply::send(client, reply_to, body, crate::SERVICE).await;
}

/// A `plugin.register` naming a stored module larger than `max_module` bytes is refused:
/// runners would never run it. (A module not stored yet is let through: its runs fail with
/// `module_not_found` until it is uploaded, and the runner checks the size again then.)
/// Other commands, and a bus that cannot answer the look-up, pass unchecked.
async fn module_fits(client: &Client, command: &commands::Command, max_module: u64) -> Result<(), ErrorBody> {
    let commands::Command::RegisterPlugin(register) = command else {
        return Ok(());
    };
    let Some(digest) = &register.module_digest else {
        return Ok(());
    };
    let js = async_nats::jetstream::new(client.clone());
    match flexcore_plugin_store::stored_size(&js, digest).await {
        Ok(Some(size)) if size > max_module => Err(ErrorBody::new(
            ErrorReason::TooLarge,
            format!("module {digest} is {size} bytes; runners take at most {max_module} (runner.max_module_bytes)"),
        )
        .with("path", "/module_digest")
        .with("size", size)
        .with("limit", max_module)),
        Ok(_) => Ok(()),
        Err(error) => {
            tracing::debug!(%error, "module size not checked");
            Ok(())
        }
    }
}

/// A label header (`Flexcore-Correlation-Id`): stored on every event, so it is held to the
/// rules of a label (printable, at most 200 characters).
fn label_header(message: &Message, name: &str) -> Result<Option<String>, ErrorBody> {
    let Some(value) = message.headers.as_ref().and_then(|h| h.get(name)) else {
        return Ok(None);
    };
    match value.as_str().parse::<flexcore_contracts::values::Label>() {
        Ok(label) => Ok(Some(label.to_string())),
        Err(_) => Err(ErrorBody::new(
            ErrorReason::InvalidValue,
            format!("header {name} must be 1-{MAX_LABEL_CHARS} printable characters, not all blank"),
        )
        .with("header", name)),
    }
}

/// How far ahead of this service's clock a slot may be (the clocks of the scheduler's and
/// this host differ a little).
const SLOT_AHEAD: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// Refuses a slot that is not due yet in `schedule.skip_slot` and in a slot's
/// `run.request` of anyone but a scheduler: firing or skipping a future slot would move the
/// scheduler past it, and it would never fire.
fn slot_due(command: &commands::Command, now: chrono::DateTime<chrono::Utc>) -> Result<(), ErrorBody> {
    let (slot, pointer) = match command {
        commands::Command::SkipSlot(c) => (c.slot, "/slot"),
        commands::Command::RequestRun(c) => match c.scheduled_for {
            Some(slot) => (slot, "/scheduled_for"),
            None => return Ok(()),
        },
        _ => return Ok(()),
    };
    if slot <= now + SLOT_AHEAD {
        return Ok(());
    }
    Err(ErrorBody::at(
        ErrorReason::InvalidValue,
        pointer,
        format!("slot {slot} is not due yet: only slots up to now can be fired, backfilled or skipped"),
    ))
}

/// The reply to `message`; `limits`: the command size limit, the bus's message limit and
/// the module size limit.
async fn answer(
    client: &Client,
    executor: &Executor,
    auth: &Auth,
    message: &Message,
    (max_payload, bus_limit, max_module): (usize, usize, u64),
) -> CommandReply {
    // Who sent it, then what it is, then whether that sender may send it.
    let headers = auth.sender(message).and_then(|sender| {
        let correlation = label_header(message, envelope::HEADER_CORRELATION_ID)?;
        // A claim: checked as a label and stored as `requested_by`, never as the actor.
        let requested_by = label_header(message, envelope::HEADER_REQUESTED_BY)?;
        Ok(((correlation, requested_by), sender))
    });
    let decoded = headers.and_then(|headers| Ok((headers, decode(message, max_payload)?)));
    let authorized = decoded.and_then(|((correlation, sender), (meta, command))| {
        sender.authority.authorize(&command).map_err(|refusal| {
            ErrorBody::new(ErrorReason::Unauthorized, refusal).with("actor", sender.name.as_str())
        })?;
        // The scheduler's clock decides when its slots are due (tests drive it by hand).
        if !matches!(sender.authority, Authority::Role(Role::Scheduler)) {
            slot_due(&command, chrono::Utc::now())?;
        }
        Ok(((correlation, Some(sender.name)), (meta, command)))
    });
    let checked = match authorized {
        Ok((headers, (meta, command))) => module_fits(client, &command, max_module)
            .await
            .map(|()| (headers, (meta, command))),
        Err(error) => Err(error),
    };
    let prepared = match checked {
        Ok((headers, (meta, command))) => (headers, Prepared::new(meta, command)),
        Err(error) => {
            // Refused before it is understood; still a span in the sender's trace.
            let span = tracing::info_span!("command", subject = %message.subject, error = error.code.as_str());
            propagation::set_parent(&span, message.headers.as_ref());
            tracing::debug!(parent: &span, reason = %error.message, "command refused");
            return CommandReply::rejected(error);
        }
    };
    let (((correlation_id, requested_by), actor), prepared) = prepared;
    // The correlation id the events get (see the executor): the header's, else the command id.
    let correlation = correlation_id
        .clone()
        .or_else(|| prepared.command_id().map(|id| id.to_string()));
    // A child of the sender's span (its `traceparent` header), else a new trace. Every
    // field is known here: a field recorded later would re-format the span's fields.
    let span = tracing::info_span!(
        "command",
        command_type = prepared.command().name(),
        aggregate_id = %prepared.aggregate_id(),
        correlation_id = correlation.as_deref(),
    );
    propagation::set_parent(&span, message.headers.as_ref());
    let ctx = RequestContext {
        correlation_id,
        actor,
        requested_by,
        // This span's context, so what the events cause (relay, projections, the run)
        // continues under the command handling; the client's own (when valid) when spans
        // are not exported.
        traceparent: propagation::traceparent(&span).or_else(|| propagation::header(message.headers.as_ref())),
        bus_limit,
    };
    async {
        executor.execute(prepared, ctx).await.unwrap_or_else(|error| {
            tracing::debug!(%error, "command refused");
            CommandReply::rejected(error)
        })
    }
    .instrument(span)
    .await
}

/// The command in `message`, or why it is refused unread (too large, not a command).
/// `max_payload` is the smaller of `command.max_payload_bytes` and the server's limit.
fn decode(message: &Message, max_payload: usize) -> Result<(commands::CommandMeta, commands::Command), ErrorBody> {
    if message.payload.len() > max_payload {
        return Err(ErrorBody::new(
            ErrorReason::TooLarge,
            format!(
                "the command is {} bytes; the limit is {max_payload} bytes",
                message.payload.len()
            ),
        )
        .with("size", message.payload.len())
        .with("limit", max_payload));
    }
    commands::decode(message.subject.as_str(), &message.payload)
}

#[cfg(test)]
mod slot_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn command(name: &str, body: &str) -> commands::Command {
        let (aggregate, action) = name.split_once('.').unwrap();
        commands::decode(&subjects::command(aggregate, action), body.as_bytes())
            .unwrap()
            .1
    }

    #[test]
    fn slots_that_are_not_due_are_neither_fired_nor_skipped() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-05T12:00:00Z")
            .unwrap()
            .to_utc();
        let skip = |slot: &str| {
            command(
                "schedule.skip_slot",
                &format!(
                    r#"{{"schedule_id":"0190a000-0000-7000-8000-000000000002","slot":"{slot}","reason":"maintenance"}}"#
                ),
            )
        };
        let fire = |slot: &str| {
            command(
                "run.request",
                &format!(
                    r#"{{"pipeline_id":"0190a000-0000-7000-8000-000000000001","trigger":"backfill","schedule_id":"0190a000-0000-7000-8000-000000000002","scheduled_for":"{slot}"}}"#
                ),
            )
        };
        // Past and current slots, and a slot within the clocks' tolerance.
        for slot in ["2026-12-05T11:00:00Z", "2026-12-05T12:00:00Z", "2026-12-05T12:04:00Z"] {
            assert!(slot_due(&skip(slot), now).is_ok(), "{slot}");
            assert!(slot_due(&fire(slot), now).is_ok(), "{slot}");
        }
        let refused = slot_due(&skip("2999-01-01T00:00:00Z"), now).unwrap_err();
        assert_eq!(refused.details.path.as_deref(), Some("/slot"));
        let refused = slot_due(&fire("2026-12-05T12:06:00Z"), now).unwrap_err();
        assert_eq!(refused.details.path.as_deref(), Some("/scheduled_for"));
        // A run without a slot is not concerned.
        let plain = command(
            "run.request",
            r#"{"pipeline_id":"0190a000-0000-7000-8000-000000000001"}"#,
        );
        assert!(slot_due(&plain, now).is_ok());
    }
}
