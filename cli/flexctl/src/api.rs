//! FlexCore over NATS, as flexctl uses it: the typed client (`flexcore-client`) for
//! commands and queries, plus look-ups by name. flexctl never reads FlexCore's database.
//!
//! A refusal is a [`ClientError::Refused`] carrying the service's error body and reason, so
//! callers can tell "the command was refused because …" from "nobody answered".

use bytes::Bytes;
use flexcore_client::{Client, ClientError, Retry};
use flexcore_contracts::commands::CommandBody;
use flexcore_contracts::queries::QueryOk;
use flexcore_contracts::reply::Accepted;
use flexcore_contracts::ErrorReason;
use flexcore_telemetry::propagation;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tracing::Instrument as _;
use uuid::Uuid;

/// Why a command or query did not succeed.
pub type ApiError = ClientError;

/// A NATS connection speaking FlexCore's contract.
#[derive(Debug, Clone)]
pub struct Api {
    client: Client,
}

impl Api {
    /// Wraps a typed client; commands are signed as its identity (flexctl's:
    /// `--nkey-seed-file`, see [`crate::nats::Nats::api`]), which the command service
    /// records as their actor.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// The NATS connection.
    pub fn client(&self) -> &async_nats::Client {
        self.client.nats()
    }

    /// The typed client.
    pub fn typed(&self) -> &Client {
        &self.client
    }

    /// Sends a typed command (a fresh `command_id`, kept across retries, so a retry after a
    /// lost reply never applies it twice).
    pub async fn send<C: CommandBody>(&self, body: &C) -> Result<Accepted, ApiError> {
        let span = tracing::info_span!("flexctl.request", request = C::NAME);
        self.client.command(body).send().instrument(rooted(span)).await
    }

    /// Sends command `name` (`pipeline.create`, …) with a JSON `body` (a pipeline file's
    /// translation), adding a fresh `command_id` unless it has one.
    pub async fn command(&self, name: &str, body: &Value) -> Result<Accepted, ApiError> {
        let mut body = body.clone();
        if let Some(object) = body.as_object_mut() {
            object.entry("command_id").or_insert_with(|| json!(Uuid::new_v4()));
        }
        let payload = serde_json::to_vec(&body).map_err(|e| ClientError::Protocol {
            what: name.to_owned(),
            message: format!("encoding: {e}"),
        })?;
        let span = tracing::info_span!("flexctl.request", request = name);
        self.client
            .command_raw(name, Bytes::from(payload), &Retry::default())
            .instrument(rooted(span))
            .await
    }

    /// Sends query `name` (`run.get`, …) and returns the whole successful reply.
    pub async fn query_raw(&self, name: &str, body: &Value) -> Result<QueryOk, ApiError> {
        let span = tracing::info_span!("flexctl.request", request = name);
        self.client
            .query_raw(name, body, &Retry::default())
            .instrument(rooted(span))
            .await
    }

    /// Sends query `name` and decodes its `data`.
    pub async fn query<T: DeserializeOwned>(&self, name: &str, body: &Value) -> Result<T, ApiError> {
        let ok = self.query_raw(name, body).await?;
        ok.data.decode().map_err(|e| ClientError::Protocol {
            what: name.to_owned(),
            message: format!("unexpected data in the reply: {e}"),
        })
    }

    /// Every item of a list query, following `next_cursor` up to `max` items. An item too
    /// large for any reply (`payload_too_large` with `details.next_cursor`) is skipped with
    /// a warning naming it, and the listing goes on after it.
    pub async fn list_all<T: DeserializeOwned>(
        &self,
        name: &str,
        filter: &Value,
        max: usize,
    ) -> Result<Vec<T>, ApiError> {
        let mut items = Vec::new();
        let mut body = filter.clone();
        loop {
            let page = match self.query_raw(name, &body).await {
                Ok(page) => page,
                Err(error) => {
                    let Some(skip) = TooLargeItem::of(&error).filter(|skip| body["cursor"] != json!(skip.next_cursor))
                    else {
                        return Err(error);
                    };
                    tracing::warn!(
                        "{name}: skipping {}: it is {} bytes, more than one reply can carry ({} bytes under the NATS server's max_payload); raise max_payload or read it another way",
                        skip.id.as_deref().map_or_else(|| "an item".to_owned(), |id| format!("item {id}")),
                        skip.size.map_or_else(|| "?".to_owned(), |n| n.to_string()),
                        skip.limit.map_or_else(|| "?".to_owned(), |n| n.to_string()),
                    );
                    body["cursor"] = json!(skip.next_cursor);
                    continue;
                }
            };
            let batch: Vec<T> = page.data.decode().map_err(|e| ClientError::Protocol {
                what: name.to_owned(),
                message: format!("unexpected data in the reply: {e}"),
            })?;
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
}

/// A list item the service could not send (`payload_too_large` refusing a list page whose
/// first item alone is over the reply limit), as its refusal describes it.
struct TooLargeItem {
    /// The cursor that continues after it.
    next_cursor: String,
    /// Its id, when the service named it.
    id: Option<String>,
    size: Option<u64>,
    limit: Option<u64>,
}

impl TooLargeItem {
    fn of(error: &ApiError) -> Option<Self> {
        let refusal = error.refusal().filter(|e| e.details.reason == ErrorReason::TooLarge)?;
        let details = &refusal.details.extra;
        Some(Self {
            next_cursor: details.get("next_cursor")?.as_str()?.to_owned(),
            id: details.get("id").and_then(Value::as_str).map(str::to_owned),
            size: details.get("size").and_then(Value::as_u64),
            limit: details.get("limit").and_then(Value::as_u64),
        })
    }
}

/// A request's span as the root of its trace when spans are exported (`--otlp-endpoint`).
fn rooted(span: tracing::Span) -> tracing::Span {
    propagation::set_parent_traceparent(&span, None);
    span
}
