//! FlexCore over NATS, as flexctl uses it: commands (request/reply on `flexcore.cmd.…`)
//! and queries (`flexcore.qry.…`). flexctl never reads FlexCore's database.
//!
//! A refusal is an [`ApiError::Refused`] carrying the service's error body, so callers
//! can tell "the command was refused because …" from "nobody answered".

use std::fmt;

use async_nats::{Client, RequestErrorKind};
use flexcore_contracts::queries::QueryReply;
use flexcore_contracts::reply::Accepted;
use flexcore_contracts::{subjects, CommandReply, ErrorBody, ErrorCode};
use flexcore_telemetry::propagation;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tracing::Instrument as _;
use uuid::Uuid;

/// Why a command or query did not succeed.
#[derive(Debug)]
pub enum ApiError {
    /// The service answered with a refusal.
    Refused {
        /// `command.pipeline.create`, `query.run.get`, …
        what: String,
        /// The service's error.
        error: ErrorBody,
    },
    /// Nobody answered, the reply was unreadable, or NATS failed.
    Transport(anyhow::Error),
}

impl ApiError {
    /// The refusal's error body, if the service refused.
    pub fn refusal(&self) -> Option<&ErrorBody> {
        match self {
            Self::Refused { error, .. } => Some(error),
            Self::Transport(_) => None,
        }
    }

    /// True when the service refused with `code`.
    pub fn is(&self, code: ErrorCode) -> bool {
        self.refusal().is_some_and(|e| e.code == code)
    }

    /// The `details.reason` of a refusal.
    pub fn reason(&self) -> Option<&str> {
        self.refusal()?.details.as_ref()?.get("reason")?.as_str()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused { what, error } => write!(f, "{what} refused ({}): {}", error.code, error.message),
            Self::Transport(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for ApiError {}

/// A NATS connection speaking FlexCore's contract.
#[derive(Debug, Clone)]
pub struct Api {
    client: Client,
}

impl Api {
    /// Connects to NATS (a clear error when the server is unreachable).
    pub async fn connect(nats_url: &str) -> anyhow::Result<Self> {
        Ok(Self::new(crate::connect_one(nats_url).await?))
    }

    /// Wraps an existing connection.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// The NATS connection.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Sends command `name` (`pipeline.create`, …) with `body`.
    pub async fn command(&self, name: &str, body: &Value) -> Result<Accepted, ApiError> {
        let (aggregate, action) = name.split_once('.').unwrap_or((name, ""));
        let payload = self
            .request(subjects::command(aggregate, action), body, name, "flexcore-command")
            .await?;
        match serde_json::from_slice::<CommandReply>(&payload) {
            Ok(CommandReply::Accepted(accepted)) => Ok(accepted),
            Ok(CommandReply::Rejected(r)) => Err(ApiError::Refused {
                what: name.to_owned(),
                error: r.error,
            }),
            Err(e) => Err(ApiError::Transport(anyhow::anyhow!("{name}: unreadable reply: {e}"))),
        }
    }

    /// Sends query `name` (`run.get`, …) and returns the whole successful reply.
    pub async fn query_raw(&self, name: &str, body: &Value) -> Result<flexcore_contracts::queries::QueryOk, ApiError> {
        let (view, operation) = name.split_once('.').unwrap_or((name, ""));
        let payload = self
            .request(subjects::query(view, operation), body, name, "flexcore-projection")
            .await?;
        match serde_json::from_slice::<QueryReply>(&payload) {
            Ok(QueryReply::Ok(ok)) => Ok(ok),
            Ok(QueryReply::Err(e)) => Err(ApiError::Refused {
                what: name.to_owned(),
                error: e.error,
            }),
            Err(e) => Err(ApiError::Transport(anyhow::anyhow!("{name}: unreadable reply: {e}"))),
        }
    }

    /// Sends query `name` and decodes its `data`.
    pub async fn query<T: DeserializeOwned>(&self, name: &str, body: &Value) -> Result<T, ApiError> {
        let ok = self.query_raw(name, body).await?;
        serde_json::from_value(ok.data)
            .map_err(|e| ApiError::Transport(anyhow::anyhow!("{name}: unexpected data in the reply: {e}")))
    }

    /// Every item of a list query, following `next_cursor` up to `max` items.
    pub async fn list_all<T: DeserializeOwned>(
        &self,
        name: &str,
        filter: &Value,
        max: usize,
    ) -> Result<Vec<T>, ApiError> {
        let mut items = Vec::new();
        let mut body = filter.clone();
        loop {
            let page = self.query_raw(name, &body).await?;
            let batch: Vec<T> = serde_json::from_value(page.data)
                .map_err(|e| ApiError::Transport(anyhow::anyhow!("{name}: unexpected data in the reply: {e}")))?;
            items.extend(batch);
            match page.next_cursor {
                Some(cursor) if items.len() < max => body["cursor"] = json!(cursor),
                _ => break,
            }
        }
        items.truncate(max);
        Ok(items)
    }

    /// Resolves a pipeline given by id or by name.
    pub async fn pipeline_id(&self, id_or_name: &str) -> anyhow::Result<Uuid> {
        self.resolve("pipeline", id_or_name).await
    }

    /// Resolves a plugin given by id or by `name@version`.
    pub async fn plugin_id(&self, reference: &str) -> anyhow::Result<Uuid> {
        if let Ok(id) = reference.parse::<Uuid>() {
            return Ok(id);
        }
        let Some((name, version)) = reference.split_once('@') else {
            anyhow::bail!("{reference:?} is neither a plugin id nor name@version (e.g. generator@1.0.0)");
        };
        Ok(flexcore_contracts::ids::plugin_id(name, version))
    }

    async fn resolve(&self, view: &str, id_or_name: &str) -> anyhow::Result<Uuid> {
        if let Ok(id) = id_or_name.parse::<Uuid>() {
            return Ok(id);
        }
        let found: Vec<Value> = self
            .query(&format!("{view}.list"), &json!({"name": id_or_name, "limit": 2}))
            .await?;
        let id = found
            .first()
            .and_then(|p| p[format!("{view}_id")].as_str())
            .and_then(|s| s.parse().ok());
        id.ok_or_else(|| {
            anyhow::anyhow!("no {view} named {id_or_name:?}; `flexctl {view} list` shows the existing ones")
        })
    }

    async fn request(&self, subject: String, body: &Value, name: &str, service: &str) -> Result<Vec<u8>, ApiError> {
        let payload = serde_json::to_vec(body).map_err(|e| ApiError::Transport(e.into()))?;
        // The root of the request's trace when spans are exported (`--otlp-endpoint`).
        let span = tracing::info_span!("flexctl.request", request = name);
        let headers = propagation::headers(&span);
        let sent = async {
            match headers {
                Some(headers) => self.client.request_with_headers(subject, headers, payload.into()).await,
                None => self.client.request(subject, payload.into()).await,
            }
        };
        match sent.instrument(span).await {
            Ok(reply) => Ok(reply.payload.to_vec()),
            Err(e) if e.kind() == RequestErrorKind::NoResponders => Err(ApiError::Transport(anyhow::anyhow!(
                "{name}: no {service} is listening on NATS; start it (or the whole stack with `flexctl dev`)"
            ))),
            Err(e) if e.kind() == RequestErrorKind::TimedOut => Err(ApiError::Transport(anyhow::anyhow!(
                "{name}: {service} did not answer in time; is it overloaded or stuck? (`flexctl status`)"
            ))),
            Err(e) => Err(ApiError::Transport(anyhow::anyhow!("{name}: {e}"))),
        }
    }
}
