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
use flexcore_contracts::{ErrorCode, ErrorReason};
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
    /// Commands also name who asked ([`requester`], header `Flexcore-Requested-By`): a
    /// claim recorded apart from the verified actor, so an unsigned command (a dev stack
    /// with anonymous access) still says which operator sent it.
    pub fn new(client: Client) -> Self {
        let client = match client.clone().requested_by(&requester()) {
            Ok(named) => named,
            Err(error) => {
                tracing::warn!(%error, "commands go without Flexcore-Requested-By");
                client
            }
        };
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

    /// Waits until the read model behind `query` (`pipeline.get`, …) has applied global
    /// position `position`, written by this flexctl a moment ago, so that the commands
    /// after it read their own write (a name resolved, a list showing it). Asks with
    /// `min_position` (each ask waits up to `projection.min_position_timeout_ms`) while the
    /// answer is `stale`, for at most [`SETTLE_TIMEOUT`]; a read model that has not caught
    /// up by then is a warning, not an error: the write itself succeeded.
    pub async fn settle(&self, query: &str, id: Uuid, position: u64) {
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        let body = json!({"id": id, "min_position": position});
        loop {
            match self.query_raw(query, &body).await {
                Err(e) if e.is(ErrorCode::Stale) && tokio::time::Instant::now() < deadline => {}
                Err(e) if e.is(ErrorCode::Stale) => {
                    tracing::warn!(
                        "the read models have not reached position {position} after {}s; until they do, queries may not show {id} yet",
                        SETTLE_TIMEOUT.as_secs()
                    );
                    return;
                }
                Err(e) => {
                    tracing::warn!("could not read {id} back ({query}): {e}");
                    return;
                }
                Ok(_) => return,
            }
        }
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

    /// Resolves a pipeline given by id, unique id prefix or name.
    pub async fn pipeline_id(&self, reference: &str) -> anyhow::Result<Uuid> {
        self.resolve(IdKind::Pipeline, reference).await
    }

    /// Resolves a plugin given by id, unique id prefix or `name@version`.
    pub async fn plugin_id(&self, reference: &str) -> anyhow::Result<Uuid> {
        self.resolve(IdKind::Plugin, reference).await
    }

    /// Resolves a run given by id or unique id prefix.
    pub async fn run_id(&self, reference: &str) -> anyhow::Result<Uuid> {
        self.resolve(IdKind::Run, reference).await
    }

    /// Resolves a schedule given by id or unique id prefix.
    pub async fn schedule_id(&self, reference: &str) -> anyhow::Result<Uuid> {
        self.resolve(IdKind::Schedule, reference).await
    }

    /// The one place a command-line reference to a `kind` becomes its id (every command
    /// taking an id calls it): a whole id (with or without hyphens) as it is; a name where
    /// the kind has them (a pipeline's name, a plugin's `name@version`), looked up first;
    /// else a prefix of the id's hex digits (hyphens ignored), resolved by the projection
    /// service as a range of ids (`id_prefix`), so it costs the same for millions of runs.
    /// No match, or more than one, is an error naming the candidates.
    pub async fn resolve(&self, kind: IdKind, reference: &str) -> anyhow::Result<Uuid> {
        let reference = reference.trim();
        if let Ok(id) = Uuid::parse_str(reference) {
            return Ok(id);
        }
        match kind {
            IdKind::Plugin => {
                if let Some((name, version)) = reference.split_once('@') {
                    return Ok(flexcore_contracts::ids::plugin_id(name, version));
                }
            }
            IdKind::Pipeline => {
                if let Some(id) = self.named_pipeline(reference).await? {
                    return Ok(id);
                }
            }
            IdKind::Run | IdKind::Schedule => {}
        }
        let Some(prefix) = id_prefix(reference) else {
            if kind == IdKind::Pipeline {
                anyhow::bail!("no pipeline named {reference:?}; `flexctl pipeline list` shows them");
            }
            anyhow::bail!("{reference:?} is not {}", kind.what_is_accepted());
        };
        let candidates = self.candidates(kind, &prefix, AMBIGUOUS_SHOWN + 1).await?;
        match candidates.as_slice() {
            [one] => Ok(one.id),
            [] => anyhow::bail!(
                "no {kind} {}{reference:?}; `flexctl {kind} list` shows them",
                if kind.has_names() {
                    "named or with an id starting with "
                } else {
                    "with an id starting with "
                }
            ),
            many => {
                let mut message = format!(
                    "{reference:?} is ambiguous: it starts the ids of {}{} {kind}s; give more of the id:",
                    if many.len() > AMBIGUOUS_SHOWN { "more than " } else { "" },
                    many.len().min(AMBIGUOUS_SHOWN)
                );
                for candidate in many.iter().take(AMBIGUOUS_SHOWN) {
                    message.push_str(&format!("\n  {candidate}"));
                }
                Err(anyhow::anyhow!(message))
            }
        }
    }

    /// An aggregate of any kind (`events tail --aggregate`): a whole id as it is, else a
    /// pipeline name, a plugin's `name@version` or an id prefix unique across the plugins,
    /// pipelines, runs and schedules.
    pub async fn aggregate_id(&self, reference: &str) -> anyhow::Result<Uuid> {
        let reference = reference.trim();
        if let Ok(id) = Uuid::parse_str(reference) {
            return Ok(id);
        }
        if reference.contains('@') {
            return self.resolve(IdKind::Plugin, reference).await;
        }
        if let Some(id) = self.named_pipeline(reference).await? {
            return Ok(id);
        }
        let Some(prefix) = id_prefix(reference) else {
            anyhow::bail!("{reference:?} is not an id, an id prefix (hex digits), a pipeline name or name@version");
        };
        let mut all = Vec::new();
        for kind in IdKind::ALL {
            all.extend(self.candidates(kind, &prefix, AMBIGUOUS_SHOWN + 1).await?);
        }
        match all.as_slice() {
            [one] => Ok(one.id),
            [] => anyhow::bail!("no plugin, pipeline, run or schedule has an id starting with {reference:?}"),
            many => {
                let mut message = format!("{reference:?} is ambiguous: it starts several ids; give more of the id:");
                for candidate in many.iter().take(AMBIGUOUS_SHOWN) {
                    message.push_str(&format!("\n  {} {candidate}", candidate.kind));
                }
                Err(anyhow::anyhow!(message))
            }
        }
    }

    /// The pipeline named `name`: the one not archived (archiving frees a name, so older
    /// archived pipelines may have had it), else the newest archived one.
    async fn named_pipeline(&self, name: &str) -> anyhow::Result<Option<Uuid>> {
        // `name*` would be a prefix filter, and no pipeline name has a `*`.
        if name.is_empty() || name.contains('*') {
            return Ok(None);
        }
        let found: Vec<Value> = self
            .query(
                "pipeline.list",
                &json!({"name": name, "limit": 100, "sort_by": "time", "order": "desc"}),
            )
            .await?;
        let live = found.iter().find(|p| p["state"] != json!("archived"));
        Ok(live
            .or(found.first())
            .and_then(|p| p["pipeline_id"].as_str())
            .and_then(|id| id.parse().ok()))
    }

    /// Up to `limit` items of `kind` whose id starts with `prefix` (hex digits), oldest first.
    pub async fn candidates(&self, kind: IdKind, prefix: &str, limit: usize) -> anyhow::Result<Vec<Candidate>> {
        let query = json!({"id_prefix": prefix, "limit": limit.clamp(1, 1000), "sort_by": "time", "order": "asc"});
        let items: Vec<Value> = self.query(&format!("{}.list", kind.view()), &query).await?;
        Ok(items.iter().filter_map(|item| Candidate::of(kind, item)).collect())
    }
}

/// How long [`Api::settle`] waits for the read models to show a write.
pub const SETTLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// How many candidates an ambiguous reference's error lists.
const AMBIGUOUS_SHOWN: usize = 10;

/// The hex digits of `reference` as an id prefix (hyphens dropped, lowercased), if it is one.
pub fn id_prefix(reference: &str) -> Option<String> {
    let digits: String = reference
        .chars()
        .filter(|c| *c != '-')
        .collect::<String>()
        .to_ascii_lowercase();
    (!digits.is_empty() && digits.len() <= 32 && digits.bytes().all(|c| c.is_ascii_hexdigit())).then_some(digits)
}

/// What kind of thing an id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// A plugin version.
    Plugin,
    /// A pipeline.
    Pipeline,
    /// A run.
    Run,
    /// A schedule.
    Schedule,
}

impl IdKind {
    /// Every kind.
    pub const ALL: [IdKind; 4] = [IdKind::Plugin, IdKind::Pipeline, IdKind::Run, IdKind::Schedule];

    /// Its query view (`run` of `run.list`), also its name in messages.
    pub fn view(self) -> &'static str {
        match self {
            IdKind::Plugin => "plugin",
            IdKind::Pipeline => "pipeline",
            IdKind::Run => "run",
            IdKind::Schedule => "schedule",
        }
    }

    fn has_names(self) -> bool {
        matches!(self, IdKind::Pipeline | IdKind::Plugin)
    }

    fn what_is_accepted(self) -> &'static str {
        match self {
            IdKind::Plugin => "a plugin id, id prefix (hex digits) or name@version (e.g. generator@1.0.0)",
            IdKind::Pipeline => "a pipeline name, id or id prefix (hex digits)",
            IdKind::Run => "a run id or id prefix (hex digits, e.g. the RUN column of `flexctl run list`)",
            IdKind::Schedule => "a schedule id or id prefix (hex digits)",
        }
    }
}

impl std::fmt::Display for IdKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.view())
    }
}

/// An item an id prefix matched, with what tells it apart to a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its kind.
    pub kind: IdKind,
    /// Its id.
    pub id: Uuid,
    /// Its name (`name@version` for plugins), or for runs and schedules their pipeline's.
    pub label: String,
}

impl Candidate {
    fn of(kind: IdKind, item: &Value) -> Option<Self> {
        let id = item[format!("{}_id", kind.view())].as_str()?.parse().ok()?;
        let text = |key: &str| item[key].as_str().unwrap_or("").to_owned();
        let label = match kind {
            IdKind::Plugin => format!("{}@{}", text("name"), text("version")),
            IdKind::Pipeline => text("name"),
            IdKind::Run => format!("of {} requested {}", text("pipeline_name"), text("requested_at")),
            IdKind::Schedule => format!(
                "of {} ({})",
                text("pipeline_name"),
                item["spec"]["cron"].as_str().unwrap_or("")
            ),
        };
        Some(Self { kind, id, label })
    }
}

impl std::fmt::Display for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}  {}", self.id, self.label)
    }
}

/// Who flexctl says asks for its commands: `FLEXCTL_PRINCIPAL` when set (a configured
/// principal, e.g. `alice@example.com`), else `user@host` from `USER` (or `LOGNAME`) and
/// the host name. Unverified by nature: the command service records it as
/// `requested_by`, apart from the actor its signature proves.
pub fn requester() -> String {
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    if let Some(principal) = env("FLEXCTL_PRINCIPAL") {
        return principal;
    }
    let user = env("USER")
        .or_else(|| env("LOGNAME"))
        .unwrap_or_else(|| "unknown".to_owned());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| env("HOSTNAME"))
        .unwrap_or_else(|| "unknown-host".to_owned());
    format!("{user}@{host}")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_prefixes_are_hex_digits_with_hyphens_ignored() {
        assert_eq!(id_prefix("01A24157-89ab").as_deref(), Some("01a2415789ab"));
        assert_eq!(id_prefix("01a24151").as_deref(), Some("01a24151"));
        assert_eq!(id_prefix("demo"), None);
        assert_eq!(id_prefix("-"), None);
        assert_eq!(id_prefix(&"a".repeat(33)), None);
    }

    #[test]
    fn candidates_say_what_tells_them_apart() {
        let run = json!({"run_id": "01a24157-89ab-7c01-8000-000000000001", "pipeline_name": "demo",
                         "requested_at": "2026-12-06T08:00:00Z"});
        let c = Candidate::of(IdKind::Run, &run).unwrap();
        assert_eq!(
            c.to_string(),
            "01a24157-89ab-7c01-8000-000000000001  of demo requested 2026-12-06T08:00:00Z"
        );
        let plugin = json!({"plugin_id": "01a24157-89ab-7c01-8000-000000000001", "name": "csv", "version": "1.0.0"});
        assert_eq!(Candidate::of(IdKind::Plugin, &plugin).unwrap().label, "csv@1.0.0");
        assert_eq!(Candidate::of(IdKind::Pipeline, &json!({"name": "x"})), None);
    }

    #[test]
    fn the_requester_is_the_configured_principal_or_user_at_host() {
        // Only this test sets the variable.
        std::env::set_var("FLEXCTL_PRINCIPAL", "alice@example.com");
        assert_eq!(requester(), "alice@example.com");
        std::env::remove_var("FLEXCTL_PRINCIPAL");
        let claimed = requester();
        let (user, host) = claimed.split_once('@').unwrap();
        assert!(!user.is_empty() && !host.is_empty(), "{claimed}");
    }
}
