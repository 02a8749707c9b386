//! The typed FlexCore client: what every sender of commands and queries uses (`flexctl`,
//! the scheduler, the runner, the benchmarks, tests).
//!
//! - Commands are typed bodies ([`CommandBody`]): the client knows their subject and reply.
//! - Every command carries a `command_id`, given by the caller (derive it with
//!   [`command_id`] from what the command does, so a restarted sender sends the same id)
//!   or drawn once per [`Client::send`]. Retries always repeat that id, so the command
//!   service applies the command at most once and answers a repeat with the first reply.
//! - What is retried, with exponential back-off and jitter, per [`Retry`]: no responder,
//!   no reply in time, a lost connection, and the transient refusals (`unavailable`,
//!   `internal`). A refusal is final: it comes back as [`ClientError::Refused`] with the
//!   contract's [`ErrorReason`] to branch on.
//! - Headers: `Flexcore-Correlation-Id` (per send), the current span's `traceparent` while
//!   spans are exported, and, for a client with an identity ([`Client::with_identity`]),
//!   the command's signature (`Flexcore-Signer`, `-Signed-At`, `-Signature`, made afresh
//!   for every try): the command service records that identity as the actor and checks
//!   its role may send the command (docs/security.md).
//!
//! # Layout
//! - this file: [`Client`], [`Retry`], [`Send`], [`ClientError`], [`command_id`].

use std::time::Duration;

use async_nats::{HeaderMap, RequestErrorKind};
use bytes::Bytes;
use flexcore_contracts::commands::{CommandBody, CommandMeta};
use flexcore_contracts::envelope::{HEADER_CORRELATION_ID, HEADER_ON_BEHALF_OF, HEADER_REQUESTED_BY};
use flexcore_contracts::queries::{QueryOk, QueryReply};
use flexcore_contracts::reply::Accepted;
use flexcore_contracts::{subjects, CommandReply, ErrorBody, ErrorCode, ErrorReason};
use flexcore_security::{ApiRole, Identity};
use flexcore_telemetry::propagation;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A deterministic command id: the same `scope` (an aggregate or a run) and `key` (what is
/// done to it, e.g. `succeed:2`) give the same id in every process, every time.
pub fn command_id(scope: Uuid, key: &str) -> Uuid {
    Uuid::new_v5(&scope, key.as_bytes())
}

/// How often a request is tried before it counts as unanswered.
#[derive(Debug, Clone)]
pub struct Retry {
    /// Most tries in all (`None`: until `stop`).
    pub max_attempts: Option<u32>,
    /// Wait before the first retry; it doubles up to `max_backoff`, with ±20 % jitter.
    pub initial_backoff: Duration,
    /// Longest wait between tries.
    pub max_backoff: Duration,
    /// Gives up (with [`ClientError::Stopped`]) when cancelled, even mid-wait.
    pub stop: Option<CancellationToken>,
}

impl Retry {
    /// One try.
    pub fn once() -> Self {
        Self::attempts(1)
    }

    /// Up to `n` tries, 200 ms doubling to 5 s apart.
    pub fn attempts(n: u32) -> Self {
        Self {
            max_attempts: Some(n.max(1)),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            stop: None,
        }
    }

    /// Until answered or `stop` is cancelled, 200 ms doubling to 10 s apart: for commands
    /// whose loss would cost work (a run's outcome, a checkpoint).
    pub fn until_stopped(stop: CancellationToken) -> Self {
        Self {
            max_attempts: None,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            stop: Some(stop),
        }
    }

    /// This policy, also stopping at `stop`.
    pub fn stopping_at(mut self, stop: CancellationToken) -> Self {
        self.stop = Some(stop);
        self
    }

    fn backoff(&self, retry: u32, salt: Uuid) -> Duration {
        let base = self
            .initial_backoff
            .saturating_mul(1u32.checked_shl(retry.min(16)).unwrap_or(u32::MAX))
            .min(self.max_backoff);
        // ±20 %, from the command id and the retry number: spread, yet reproducible.
        let unit = f64::from(Uuid::new_v5(&salt, &retry.to_be_bytes()).as_bytes()[0]) / 255.0;
        base.mul_f64(0.8 + 0.4 * unit)
    }
}

impl Default for Retry {
    /// Five tries over about six seconds: rides out a restart of a service or of NATS.
    fn default() -> Self {
        Self::attempts(5)
    }
}

/// Why a request did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The service answered with a refusal (final for this request).
    #[error("{what} refused ({}, {}): {}", error.code, error.details.reason, error.message)]
    Refused {
        /// `pipeline.create`, `run.get`, …
        what: String,
        /// The service's error.
        error: ErrorBody,
    },
    /// No usable answer after every try the [`Retry`] allowed.
    #[error("{what}: {why} (after {attempts} tries)")]
    Unanswered {
        /// The request.
        what: String,
        /// The last failure.
        why: String,
        /// How it failed last.
        kind: Unanswered,
        /// Tries made.
        attempts: u32,
    },
    /// The retry's stop token was cancelled before an answer came.
    #[error("{what}: stopped before an answer came")]
    Stopped {
        /// The request.
        what: String,
    },
    /// The answer could not be read, or the request could not be written.
    #[error("{what}: {message}")]
    Protocol {
        /// The request.
        what: String,
        /// What was wrong.
        message: String,
    },
}

/// How the last try of an unanswered request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    /// Nobody subscribes to the subject (the service is not running).
    NoResponders,
    /// No reply within the timeout.
    TimedOut,
    /// The service answered `unavailable` or `internal`.
    Transient,
    /// NATS failed otherwise (connection lost, …).
    Connection,
}

impl ClientError {
    /// The refusal, if the service refused.
    pub fn refusal(&self) -> Option<&ErrorBody> {
        match self {
            Self::Refused { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The refusal's reason.
    pub fn reason(&self) -> Option<ErrorReason> {
        self.refusal().map(|e| e.details.reason)
    }

    /// True when the service refused with `code`.
    pub fn is(&self, code: ErrorCode) -> bool {
        self.refusal().is_some_and(|e| e.code == code)
    }
}

/// A NATS connection speaking FlexCore's contract.
#[derive(Debug, Clone)]
pub struct Client {
    nats: async_nats::Client,
    identity: Option<Identity>,
    /// `<api role>:<caller>` of the gateway's commands ([`Client::on_behalf_of`]).
    on_behalf: Option<String>,
    /// Who says they asked ([`Client::requested_by`]).
    requested_by: Option<String>,
    timeout: Duration,
}

/// One command about to be sent (see [`Client::command`]).
#[must_use = "a command is sent by `.send().await`"]
pub struct Send<'a, C: CommandBody> {
    client: &'a Client,
    body: &'a C,
    meta: CommandMeta,
    correlation_id: Option<String>,
    retry: Retry,
}

impl<C: CommandBody> Send<'_, C> {
    /// The idempotency key (default: a random one, kept across this send's retries).
    pub fn id(mut self, command_id: Uuid) -> Self {
        self.meta.command_id = Some(command_id);
        self
    }

    /// The aggregate version decided on (a mismatch is a `conflict` with reason `version`).
    pub fn expect_version(mut self, version: u64) -> Self {
        self.meta.expected_version = Some(version);
        self
    }

    /// The correlation id the events get (default: the command id).
    pub fn correlation(mut self, correlation_id: impl Into<String>) -> Self {
        self.correlation_id = Some(correlation_id.into());
        self
    }

    /// How often to try (default [`Retry::default`]).
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Sends it: the accepted reply, or why not.
    pub async fn send(self) -> Result<Accepted, ClientError> {
        let Self {
            client,
            body,
            mut meta,
            correlation_id,
            retry,
        } = self;
        let command_id = *meta.command_id.get_or_insert_with(Uuid::new_v4);
        let what = C::NAME;
        let payload = flexcore_contracts::commands::encode(body, &meta).map_err(|e| ClientError::Protocol {
            what: what.to_owned(),
            message: format!("encoding: {e}"),
        })?;
        let subject = subjects::command(C::AGGREGATE, C::ACTION);
        client
            .command_payload(what, subject, Bytes::from(payload), correlation_id, command_id, &retry)
            .await
    }
}

impl Client {
    /// Wraps a connection; requests time out after 10 s each.
    pub fn new(nats: async_nats::Client) -> Self {
        Self {
            nats,
            identity: None,
            on_behalf: None,
            requested_by: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// Signs every command as `identity` (without one, commands go unsigned: the command
    /// service treats them as role `client` or refuses them, per its configuration).
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// This client, sending its commands on behalf of the HTTP API's caller `name` with
    /// `role` (a gateway's client: the command service checks each command against `role`
    /// and records `name` as its actor). The caller is named in the signed
    /// `Flexcore-On-Behalf-Of` header; refused for a name the command service would refuse.
    pub fn on_behalf_of(&self, name: &str, role: ApiRole) -> Result<Self, String> {
        if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
            return Err("a caller's name is 1 to 200 printable characters".to_owned());
        }
        let mut client = self.clone();
        client.on_behalf = Some(format!("{role}:{name}"));
        Ok(client)
    }

    /// Names who asked for this client's commands (`user@host`; header
    /// `Flexcore-Requested-By`): recorded as the events' `requested_by`, a claim kept
    /// apart from the actor (the signer's verified identity, or `unsigned`). Refused for a
    /// name the command service would refuse (1 to 200 printable characters).
    pub fn requested_by(mut self, name: &str) -> Result<Self, String> {
        if name.trim().is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
            return Err("a requester's name is 1 to 200 printable characters, not all blank".to_owned());
        }
        self.requested_by = Some(name.to_owned());
        Ok(self)
    }

    /// The identity commands are signed as, if any.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// How long one try waits for its reply.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The NATS connection.
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// A command, to be sent with [`Send::send`].
    pub fn command<'a, C: CommandBody>(&'a self, body: &'a C) -> Send<'a, C> {
        Send {
            client: self,
            body,
            meta: CommandMeta::default(),
            correlation_id: None,
            retry: Retry::default(),
        }
    }

    /// Sends a command given as its name and raw body (which should carry a
    /// `command_id` when it is retried). For tools that relay bodies they did not build.
    pub async fn command_raw(&self, name: &str, payload: Bytes, retry: &Retry) -> Result<Accepted, ClientError> {
        let (aggregate, action) = name.split_once('.').unwrap_or((name, ""));
        let salt = Uuid::new_v5(&Uuid::NAMESPACE_OID, &payload);
        self.command_payload(name, subjects::command(aggregate, action), payload, None, salt, retry)
            .await
    }

    /// [`Self::command_raw`] with the events' correlation id (default: the command id).
    pub async fn command_with(
        &self,
        name: &str,
        payload: Bytes,
        correlation_id: Option<String>,
        retry: &Retry,
    ) -> Result<Accepted, ClientError> {
        let (aggregate, action) = name.split_once('.').unwrap_or((name, ""));
        let salt = Uuid::new_v5(&Uuid::NAMESPACE_OID, &payload);
        self.command_payload(
            name,
            subjects::command(aggregate, action),
            payload,
            correlation_id,
            salt,
            retry,
        )
        .await
    }

    async fn command_payload(
        &self,
        what: &str,
        subject: String,
        payload: Bytes,
        correlation_id: Option<String>,
        salt: Uuid,
        retry: &Retry,
    ) -> Result<Accepted, ClientError> {
        let mut headers = self.headers();
        if let Some(correlation) = &correlation_id {
            headers.insert(HEADER_CORRELATION_ID, correlation.as_str());
        }
        if let Some(caller) = &self.on_behalf {
            headers.insert(HEADER_ON_BEHALF_OF, caller.as_str());
        }
        if let Some(requester) = &self.requested_by {
            headers.insert(HEADER_REQUESTED_BY, requester.as_str());
        }
        let reply = self.request(
            what,
            subject,
            headers,
            payload,
            salt,
            retry,
            |body| match serde_json::from_slice::<CommandReply>(body) {
                Ok(CommandReply::Accepted(accepted)) => Ok(Ok(accepted)),
                Ok(CommandReply::Rejected(rejected)) => Ok(Err(rejected.error)),
                Err(e) => Err(format!("unreadable reply: {e}")),
            },
        );
        reply.await
    }

    /// Sends query `name` (`run.get`, …) and returns the whole successful reply.
    pub async fn query_raw<Q: Serialize + ?Sized>(
        &self,
        name: &str,
        body: &Q,
        retry: &Retry,
    ) -> Result<QueryOk, ClientError> {
        let (view, operation) = name.split_once('.').unwrap_or((name, ""));
        let payload = serde_json::to_vec(body).map_err(|e| ClientError::Protocol {
            what: name.to_owned(),
            message: format!("encoding: {e}"),
        })?;
        let salt = Uuid::new_v5(&Uuid::NAMESPACE_OID, &payload);
        let reply = self.request(
            name,
            subjects::query(view, operation),
            self.headers(),
            Bytes::from(payload),
            salt,
            retry,
            |body| match serde_json::from_slice::<QueryReply>(body) {
                Ok(QueryReply::Ok(ok)) => Ok(Ok(ok)),
                Ok(QueryReply::Err(err)) => Ok(Err(err.error)),
                Err(e) => Err(format!("unreadable reply: {e}")),
            },
        );
        reply.await
    }

    /// Sends query `name` and decodes its `data`.
    pub async fn query<T: DeserializeOwned, Q: Serialize + ?Sized>(
        &self,
        name: &str,
        body: &Q,
    ) -> Result<T, ClientError> {
        let ok = self.query_raw(name, body, &Retry::default()).await?;
        ok.data.decode().map_err(|e| ClientError::Protocol {
            what: name.to_owned(),
            message: format!("unexpected data in the reply: {e}"),
        })
    }

    fn headers(&self) -> HeaderMap {
        // The current span's context, so the service continues the sender's trace.
        propagation::headers(&tracing::Span::current()).unwrap_or_default()
    }

    /// Sends one request until `decode` says it was answered (its reply, or a final
    /// refusal), retrying what [`Retry`] allows.
    #[allow(clippy::too_many_arguments)]
    async fn request<T, F>(
        &self,
        what: &str,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
        salt: Uuid,
        retry: &Retry,
        decode: F,
    ) -> Result<T, ClientError>
    where
        F: Fn(&[u8]) -> Result<Result<T, ErrorBody>, String>,
    {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut headers = headers.clone();
            if let Some(identity) = self.identity.as_ref().filter(|_| subject.starts_with("flexcore.cmd.")) {
                // Signed at this try: a retry long after the first stays fresh.
                identity.sign(&subject, &mut headers, &payload);
            }
            let request = async_nats::Request::new()
                .payload(payload.clone())
                .headers(headers)
                .timeout(Some(self.timeout));
            let sent = self.nats.send_request(subject.clone(), request);
            let outcome = match &retry.stop {
                Some(stop) => tokio::select! {
                    () = stop.cancelled() => return Err(ClientError::Stopped { what: what.to_owned() }),
                    r = sent => r,
                },
                None => sent.await,
            };
            let (why, kind) = match outcome {
                Ok(reply) => match decode(&reply.payload) {
                    Ok(Ok(value)) => return Ok(value),
                    Ok(Err(error)) if error.code.is_transient() => (
                        format!("{} ({}): {}", error.code, error.details.reason, error.message),
                        Unanswered::Transient,
                    ),
                    Ok(Err(error)) => {
                        return Err(ClientError::Refused {
                            what: what.to_owned(),
                            error,
                        })
                    }
                    Err(message) => {
                        return Err(ClientError::Protocol {
                            what: what.to_owned(),
                            message,
                        })
                    }
                },
                Err(e) => {
                    let kind = match e.kind() {
                        RequestErrorKind::NoResponders => Unanswered::NoResponders,
                        RequestErrorKind::TimedOut => Unanswered::TimedOut,
                        RequestErrorKind::MaxPayloadExceeded => {
                            // The bus itself refuses it: as final as a refusal.
                            let error = ErrorBody::new(
                                ErrorReason::TooLarge,
                                format!("the request is larger than the NATS server accepts: {e}"),
                            )
                            .with("size", payload.len())
                            .with("limit", self.nats.max_payload());
                            return Err(ClientError::Refused {
                                what: what.to_owned(),
                                error,
                            });
                        }
                        RequestErrorKind::InvalidSubject => {
                            return Err(ClientError::Protocol {
                                what: what.to_owned(),
                                message: e.to_string(),
                            })
                        }
                        _ => Unanswered::Connection,
                    };
                    let service = if subject.starts_with("flexcore.cmd.") {
                        "flexcore-command"
                    } else {
                        "flexcore-projection"
                    };
                    let why = match kind {
                        Unanswered::NoResponders => format!(
                            "no {service} is listening on NATS; start it (or the whole stack with `flexctl dev`)"
                        ),
                        Unanswered::TimedOut => {
                            format!("{service} did not answer in time; is it overloaded or stuck? (`flexctl status`)")
                        }
                        _ => e.to_string(),
                    };
                    (why, kind)
                }
            };
            if retry.max_attempts.is_some_and(|max| attempt >= max) {
                return Err(ClientError::Unanswered {
                    what: what.to_owned(),
                    why,
                    kind,
                    attempts: attempt,
                });
            }
            let wait = retry.backoff(attempt - 1, salt);
            tracing::debug!(request = what, attempt, %why, ?wait, "no answer yet; trying again");
            match &retry.stop {
                Some(stop) => tokio::select! {
                    () = stop.cancelled() => return Err(ClientError::Stopped { what: what.to_owned() }),
                    () = tokio::time::sleep(wait) => {}
                },
                None => tokio::time::sleep(wait).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_ids_are_stable_and_distinct() {
        let run = Uuid::from_u128(7);
        assert_eq!(command_id(run, "succeed:1"), command_id(run, "succeed:1"));
        assert_ne!(command_id(run, "succeed:1"), command_id(run, "succeed:2"));
        assert_ne!(
            command_id(run, "succeed:1"),
            command_id(Uuid::from_u128(8), "succeed:1")
        );
    }

    #[test]
    fn backoff_doubles_within_jitter_up_to_the_cap() {
        let retry = Retry::attempts(10);
        let salt = Uuid::from_u128(1);
        for (n, base) in [(0u32, 200u64), (1, 400), (2, 800), (3, 1600)] {
            let wait = retry.backoff(n, salt).as_millis() as u64;
            assert!(wait >= base * 8 / 10 && wait <= base * 12 / 10, "{n}: {wait}");
        }
        assert!(retry.backoff(30, salt) <= Duration::from_secs(6));
        assert_eq!(retry.backoff(2, salt), retry.backoff(2, salt));
    }
}
