//! The OpenAPI 3.1 document of the HTTP API, built from the same Rust types as the JSON
//! Schemas in `schemas/` (one source of truth): every command body, view, reply and
//! event envelope is the contract's own schema ([`flexcore_contracts::schema::all`]), the
//! list endpoints' query parameters are the list queries' properties, and the problem
//! document is [`crate::problem::Document`]'s schema. This module adds only what is HTTP:
//! the paths, methods, headers, statuses and the page and status wrappers.
//!
//! `docs/openapi.json` is this document; the `openapi_up_to_date` test fails when it
//! drifts (`FLEXCORE_UPDATE_SCHEMAS=1 cargo test -p flexcore-gateway --lib openapi`
//! rewrites it). The gateway serves it at `/api/v1/openapi.json` and a reference page
//! reading it at `/api/v1/docs` (embedded, no CDN).

use serde_json::{json, Map, Value};

use crate::api::BASE;

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/api/v1/openapi.json";
/// Where the reference page is served.
pub const PAGE_PATH: &str = "/api/v1/docs";
/// The reference page (HTML with its script inline).
pub const PAGE: &str = include_str!("openapi.html");

/// The components every operation shares.
const PROBLEM: &str = "#/components/responses/Problem";

/// The document.
pub fn document() -> Value {
    let mut schemas = Map::new();
    for (path, text) in flexcore_contracts::schema::all() {
        let name = path.trim_end_matches(".json").replace('/', ".");
        let schema = serde_json::from_str(&text).unwrap_or(Value::Null);
        hoist(&name, schema, &mut schemas);
    }
    // Not standardised: a problem may quote what the caller sent, U+0000 included (a
    // refused key is named as sent).
    let problem = serde_json::to_value(schemars::schema_for!(crate::problem::Document)).unwrap_or(Value::Null);
    hoist("Problem", problem, &mut schemas);
    for (name, schema) in [
        (
            "BackfillRequest",
            flexcore_contracts::schema::schema_for::<crate::api::backfill::BackfillRequest>(),
        ),
        (
            "BackfillAnswer",
            flexcore_contracts::schema::schema_for::<crate::api::backfill::BackfillAnswer>(),
        ),
    ] {
        hoist(name, serde_json::to_value(schema).unwrap_or(Value::Null), &mut schemas);
    }
    for (name, schema) in wrappers() {
        schemas.insert(name.to_owned(), schema);
    }
    let mut paths = Map::new();
    for operation in operations(&mut schemas) {
        let item = paths
            .entry(operation.path.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(item) = item.as_object_mut() {
            item.insert(operation.method.to_owned(), operation.into_value());
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "FlexCore HTTP API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "FlexCore's REST API, served by flexcore-gateway and translated onto the NATS contract (docs/messaging.md). Errors are RFC 7807 problem documents; docs/http-api.md explains authentication, errors, paging, consistency and streaming.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "tags": [
            {"name": "status", "description": "Health and what flexctl status shows."},
            {"name": "plugins", "description": "Registered plugins."},
            {"name": "pipelines", "description": "Pipelines and their executions."},
            {"name": "runs", "description": "Runs, their logs and live progress."},
            {"name": "schedules", "description": "Cron schedules of pipelines."},
            {"name": "events", "description": "The event log (audit) and its live stream."},
            {"name": "generic", "description": "The NATS contract's commands and queries through one endpoint each."},
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (`fck_…`, made with `flexctl api-key create`) or a JWT (HS256, RS256, ES256) whose `role` (or `roles`) claim names viewer, operator or admin.",
                }
            },
            "responses": {
                "Problem": {
                    "description": "An RFC 7807 problem document: `code` is the contract's error code, `errors[]` the fields at fault (docs/http-api.md has the table of statuses).",
                    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
                }
            },
            "headers": headers(),
            "parameters": parameters(),
        }
    })
}

/// Puts `schema` into `out` as `name`, its `$defs` beside it as `<name>.<def>`, and its
/// references rewritten to them.
fn hoist(name: &str, mut schema: Value, out: &mut Map<String, Value>) {
    let prefix = format!("#/components/schemas/{name}.");
    rewrite_refs(&mut schema, &prefix);
    if let Some(object) = schema.as_object_mut() {
        object.remove("$schema");
        if let Some(Value::Object(defs)) = object.remove("$defs") {
            for (def, body) in defs {
                out.insert(format!("{name}.{def}"), body);
            }
        }
    }
    out.insert(name.to_owned(), schema);
}

/// The JSON Schema meta-schema: a reference to it (a plugin's config schema) becomes its
/// shape, so the document needs nothing from the network.
const META_SCHEMA: &str = "https://json-schema.org/draft/2020-12/schema";

fn rewrite_refs(value: &mut Value, prefix: &str) {
    match value {
        Value::Object(object) => {
            if object.get("$ref").and_then(Value::as_str) == Some(META_SCHEMA) {
                object.remove("$ref");
                object.insert("type".into(), json!(["object", "boolean"]));
            }
            for (key, inner) in object.iter_mut() {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(reference)) => {
                        if let Some(def) = reference.strip_prefix("#/$defs/") {
                            *reference = format!("{prefix}{def}");
                        }
                    }
                    (_, inner) => rewrite_refs(inner, prefix),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_refs(v, prefix)),
        _ => {}
    }
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The schemas that are only HTTP's: pages, the status, the health, the generic envelopes.
fn wrappers() -> Vec<(&'static str, Value)> {
    let page = |view: &str| {
        json!({
            "type": "object",
            "description": "A page: the items, the cursor of the next page (null on the last), and the global position the view had reached.",
            "required": ["items", "next_cursor", "position"],
            "properties": {
                "items": {"type": "array", "items": reference(view)},
                "next_cursor": {"type": ["string", "null"], "pattern": "^[0-9a-f]*$"},
                "position": {"type": "integer", "minimum": 0},
            },
            "additionalProperties": false,
        })
    };
    // The commands the gateway may send (FlexCore's services send the others).
    let commands: Vec<String> = flexcore_contracts::commands::Command::ALL
        .iter()
        .map(|(aggregate, action)| format!("{aggregate}.{action}"))
        .filter(|name| {
            let subject = format!("{}.cmd.{name}", flexcore_contracts::subjects::ROOT);
            flexcore_security::permissions::may_publish(flexcore_security::Role::Gateway, &subject)
        })
        .collect();
    vec![
        ("PluginPage", page("views.plugin")),
        ("PipelinePage", page("views.pipeline")),
        ("RunPage", page("views.run")),
        ("SchedulePage", page("views.schedule")),
        ("EventPage", page("events.envelope")),
        (
            "Health",
            json!({
                "type": "object",
                "required": ["status", "nats", "stopping"],
                "properties": {
                    "status": {"enum": ["ok", "unavailable"]},
                    "nats": {"enum": ["connected", "disconnected"]},
                    "stopping": {"type": "boolean"},
                },
            }),
        ),
        (
            "Status",
            json!({
                "type": "object",
                "description": "What `flexctl status` shows: each service's answer, the runners and schedulers heard, the projections' positions, the work queue and the counts.",
                "required": ["gateway", "nats_version", "command", "projection", "schedulers", "runners", "projections", "queue", "stats"],
                "properties": {
                    "gateway": {"type": "object", "properties": {"version": {"type": "string"}}},
                    "nats_version": {"type": "string"},
                    "command": reference("ServiceProbe"),
                    "projection": reference("ServiceProbe"),
                    "schedulers": {
                        "type": "array",
                        "description": "Scheduler replicas heard in the last 10 s, with the version each names (`flexcore-scheduler/0.1.0`).",
                        "items": {
                            "type": "object",
                            "required": ["instance"],
                            "properties": {"instance": {"type": "string"}, "version": {"type": "string"}},
                        },
                    },
                    "runners": {
                        "type": "array",
                        "description": "Runners heard in the last 10 s: their announcement and the version each names.",
                        "items": {
                            "type": "object",
                            "required": ["runner_id", "slots", "busy", "alive"],
                            "properties": {
                                "runner_id": {"type": "string"},
                                "slots": {"type": "integer", "minimum": 0},
                                "busy": {"type": "integer", "minimum": 0},
                                "alive": {"type": "boolean"},
                                "version": {"type": "string"},
                            },
                        },
                    },
                    "projections": {"anyOf": [{"type": "array", "items": reference("views.projection-status")}, {"type": "null"}]},
                    "queue": {
                        "anyOf": [
                            {"type": "object", "properties": {"waiting": {"type": "integer"}, "in_progress": {"type": "integer"}}},
                            {"type": "null"},
                        ]
                    },
                    "stats": {"anyOf": [reference("views.stats"), {"type": "null"}]},
                },
            }),
        ),
        (
            "ServiceProbe",
            json!({
                "type": "object",
                "required": ["up"],
                "properties": {
                    "up": {"type": "boolean"},
                    "latency_ms": {"type": "number"},
                    "error": {"type": "string"},
                    "version": {"type": "string", "description": "The service and version its answer named (`flexcore-command/0.1.0`)."},
                },
            }),
        ),
        (
            "RunLogs",
            json!({
                "type": "object",
                "required": ["run_id", "lines"],
                "properties": {
                    "run_id": {"type": "string", "format": "uuid"},
                    "lines": {"type": "array", "items": reference("work.run-log-line")},
                },
            }),
        ),
        (
            "CommandRequest",
            json!({
                "type": "object",
                "required": ["command", "body"],
                "additionalProperties": false,
                "properties": {
                    "command": {"enum": commands},
                    "body": {"type": "object", "description": "The command's body as schemas/commands/<command>.json states it."},
                },
            }),
        ),
        (
            "QueryRequest",
            json!({
                "type": "object",
                "required": ["query"],
                "additionalProperties": false,
                "properties": {
                    "query": {"enum": flexcore_contracts::queries::ALL},
                    "body": {"type": "object", "description": "The query's body as schemas/queries/<query>.json states it."},
                },
            }),
        ),
    ]
}

fn headers() -> Value {
    json!({
        "ETag": {
            "description": "The aggregate's version, quoted; send it back in If-Match.",
            "schema": {"type": "string", "pattern": "^\"[0-9]+\"$"},
        },
        "Consistency-Position": {
            "description": "The global position this answer reflects (after a command: the position of its last event).",
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        },
        "Location": {"description": "The resource created (or the run requested).", "schema": {"type": "string"}},
        "Link": {"description": "`<…>; rel=\"next\"` while there is a next page.", "schema": {"type": "string"}},
    })
}

fn parameters() -> Value {
    json!({
        "Id": {
            "name": "id", "in": "path", "required": true,
            "description": "The resource's id (a UUID).",
            "schema": {"type": "string", "format": "uuid"},
        },
        "ConsistencyPosition": {
            "name": "Consistency-Position", "in": "header", "required": false,
            "description": "Answer only once the view includes this global position (a command's Consistency-Position): read your own writes. 503 `stale` if it does not in time.",
            "schema": {"type": "string", "pattern": "^[0-9]{1,15}$"},
        },
        "IdempotencyKey": {
            "name": "Idempotency-Key", "in": "header", "required": false,
            "description": "Makes a retried request the same command: it is answered with the first reply.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
        },
        "IfMatch": {
            "name": "If-Match", "in": "header", "required": false,
            "description": "The ETag (aggregate version) the change was decided on; 412 if the aggregate has moved on.",
            "schema": {"type": "string", "pattern": "^(\\*|(W/)?\"[0-9]{1,15}\")$"},
        },
        "MinPosition": {
            "name": "min_position", "in": "query", "required": false,
            "description": "The same as the Consistency-Position header.",
            "schema": {"type": "integer", "minimum": 0, "maximum": 9_007_199_254_740_991_u64},
        },
        "LastEventId": {
            "name": "Last-Event-ID", "in": "header", "required": false,
            "description": "Resume after this event (its global position, the SSE id).",
            "schema": {"type": "string", "pattern": "^[0-9]{1,15}$"},
        },
    })
}

/// One operation of the document.
struct Operation {
    method: &'static str,
    path: String,
    id: String,
    tag: &'static str,
    summary: String,
    parameters: Vec<Value>,
    body: Option<(Value, bool)>,
    /// The schema of a `multipart/form-data` body the operation also takes.
    multipart: Option<Value>,
    success: (u16, Value),
    errors: &'static [u16],
    extra: Vec<(u16, Value)>,
    open: bool,
}

/// The statuses every authenticated operation may answer.
const READ_ERRORS: &[u16] = &[400, 401, 403, 404, 408, 429, 503];
const WRITE_ERRORS: &[u16] = &[400, 401, 403, 404, 408, 409, 412, 413, 415, 422, 429, 503];

impl Operation {
    fn into_value(self) -> Value {
        let mut responses = Map::new();
        responses.insert(self.success.0.to_string(), self.success.1);
        for (status, response) in self.extra {
            responses.insert(status.to_string(), response);
        }
        for status in self.errors {
            responses.insert(status.to_string(), json!({"$ref": PROBLEM}));
        }
        responses.insert("default".into(), json!({"$ref": PROBLEM}));
        let mut operation = json!({
            "operationId": self.id,
            "tags": [self.tag],
            "summary": self.summary,
            "responses": responses,
        });
        if !self.parameters.is_empty() {
            operation["parameters"] = Value::Array(self.parameters);
        }
        if let Some((schema, required)) = self.body {
            operation["requestBody"] = json!({
                "required": required,
                "content": {"application/json": {"schema": schema}},
            });
            if let Some(multipart) = self.multipart {
                operation["requestBody"]["content"]["multipart/form-data"] = multipart;
            }
        }
        if self.open {
            operation["security"] = json!([]);
        }
        operation
    }
}

fn param(name: &str) -> Value {
    json!({"$ref": format!("#/components/parameters/{name}")})
}

fn header(name: &str) -> Value {
    json!({"$ref": format!("#/components/headers/{name}")})
}

fn json_response(description: &str, schema: Value, with: &[&str]) -> Value {
    let mut response = json!({
        "description": description,
        "content": {"application/json": {"schema": schema}},
    });
    if !with.is_empty() {
        let headers: Map<String, Value> = with.iter().map(|h| ((*h).to_owned(), header(h))).collect();
        response["headers"] = Value::Object(headers);
    }
    response
}

/// The query parameters of list query `query` (`queries.run.list`): its properties, each
/// as a query parameter with its schema less `null`.
fn list_parameters(schemas: &Map<String, Value>, query: &str) -> Vec<Value> {
    let Some(properties) = schemas
        .get(query)
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
    else {
        return Vec::new();
    };
    let mut out: Vec<Value> = properties
        .iter()
        .map(|(name, schema)| {
            let description = schema.get("description").cloned().unwrap_or(Value::Null);
            let mut schema = resolve(schemas, schema.clone());
            if let Some(object) = schema.as_object_mut() {
                object.remove("description");
                object.remove("default");
            }
            json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
        })
        .collect();
    out.push(param("ConsistencyPosition"));
    out
}

/// `schema` with a top-level `$ref` inlined and `null` taken out of its type (a query
/// parameter is absent rather than null).
fn resolve(schemas: &Map<String, Value>, schema: Value) -> Value {
    let mut schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let target = r.trim_start_matches("#/components/schemas/");
            schemas.get(target).cloned().unwrap_or(schema)
        }
        None => schema,
    };
    let Some(object) = schema.as_object_mut() else {
        return schema;
    };
    if let Some(Value::Array(types)) = object.get("type") {
        let kept: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        let kept = if kept.len() == 1 {
            kept[0].clone()
        } else {
            Value::Array(kept)
        };
        object.insert("type".into(), kept);
    }
    if let Some(Value::Array(branches)) = object.get("anyOf").cloned() {
        let kept: Vec<Value> = branches
            .into_iter()
            .filter(|b| b.get("type") != Some(&json!("null")))
            .collect();
        if kept.len() == 1 {
            object.remove("anyOf");
            if let Some(branch) = kept[0].as_object() {
                object.extend(branch.clone());
            }
        }
    }
    schema
}

/// The request body of `command` over HTTP: its schema less the fields the gateway splices
/// in from the path (registered as `<command>.http`), and whether a body is needed.
fn command_body(schemas: &mut Map<String, Value>, command: &str, from_path: &[&str]) -> (Value, bool) {
    let name = format!("commands.{command}");
    let mut schema = schemas.get(&name).cloned().unwrap_or(Value::Null);
    if let Some(object) = schema.as_object_mut() {
        if let Some(Value::Object(properties)) = object.get_mut("properties") {
            for field in from_path {
                properties.remove(*field);
            }
        }
        if let Some(Value::Array(required)) = object.get_mut("required") {
            required.retain(|r| !from_path.iter().any(|f| r == f));
        }
    }
    let required = schema
        .get("required")
        .and_then(Value::as_array)
        .is_some_and(|r| !r.is_empty());
    let http = format!("{name}.http");
    schemas.insert(http.clone(), schema);
    (reference(&http), required)
}

fn sse_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    })
}

/// Every operation (`api::routes` serves each; the `every_documented_operation_is_served`
/// test checks it on a live gateway).
fn operations(schemas: &mut Map<String, Value>) -> Vec<Operation> {
    let mut out = Vec::new();
    let path = |p: &str| format!("{BASE}{p}");
    let op = |method, path: String, id: &str, tag, summary: &str| Operation {
        method,
        path,
        id: id.to_owned(),
        tag,
        summary: summary.to_owned(),
        parameters: Vec::new(),
        body: None,
        multipart: None,
        success: (200, json!({"description": "OK"})),
        errors: READ_ERRORS,
        extra: Vec::new(),
        open: false,
    };
    out.push(Operation {
        success: (200, json_response("The gateway is up.", reference("Health"), &[])),
        errors: &[503],
        open: true,
        ..op(
            "get",
            "/health".into(),
            "health",
            "status",
            "The gateway's health (unauthenticated)",
        )
    });
    out.push(Operation {
        success: (
            200,
            json_response(
                "The services, runners, schedulers, projections and queue.",
                reference("Status"),
                &[],
            ),
        ),
        ..op(
            "get",
            path("/status"),
            "getStatus",
            "status",
            "What flexctl status shows",
        )
    });
    out.push(Operation {
        success: (200, json_response("This document.", json!({"type": "object"}), &[])),
        errors: &[],
        open: true,
        ..op(
            "get",
            DOCUMENT_PATH.into(),
            "getOpenApi",
            "status",
            "The OpenAPI document",
        )
    });
    let collections: [(&str, &str, &str, &str, &str); 4] = [
        ("plugins", "plugin", "Plugin", "plugin_id", "plugin.register"),
        ("pipelines", "pipeline", "Pipeline", "pipeline_id", "pipeline.create"),
        ("runs", "run", "Run", "run_id", ""),
        ("schedules", "schedule", "Schedule", "schedule_id", "schedule.create"),
    ];
    for (segment, aggregate, title, id_field, create) in collections {
        let tag = match segment {
            "plugins" => "plugins",
            "pipelines" => "pipelines",
            "runs" => "runs",
            _ => "schedules",
        };
        out.push(Operation {
            parameters: list_parameters(schemas, &format!("queries.{aggregate}.list")),
            success: (
                200,
                json_response(
                    "A page of the view.",
                    reference(&format!("{title}Page")),
                    &["Consistency-Position", "Link"],
                ),
            ),
            ..op(
                "get",
                path(&format!("/{segment}")),
                &format!("list{title}s"),
                tag,
                &format!("List {segment}"),
            )
        });
        out.push(Operation {
            parameters: vec![param("Id"), param("ConsistencyPosition"), param("MinPosition")],
            success: (
                200,
                json_response(
                    &format!("The {aggregate}."),
                    reference(&format!("views.{aggregate}")),
                    &["ETag", "Consistency-Position"],
                ),
            ),
            ..op(
                "get",
                path(&format!("/{segment}/{{id}}")),
                &format!("get{title}"),
                tag,
                &format!("Get a {aggregate}"),
            )
        });
        let accepted = |status: &str| {
            json_response(
                status,
                reference("replies.command-reply.Accepted"),
                &["ETag", "Consistency-Position", "Location"],
            )
        };
        if !create.is_empty() {
            let body = command_body(schemas, create, &[]);
            // Plugins: the module uploaded with its metadata (`api::upload`).
            let multipart = (segment == "plugins").then(|| {
                json!({
                    "schema": {
                        "type": "object",
                        "required": ["metadata", "module"],
                        "properties": {
                            "metadata": body.0.clone(),
                            "module": {
                                "type": "string",
                                "contentMediaType": "application/wasm",
                                "description": "The WebAssembly module (at most gateway.max_module_bytes); its sha256 becomes module_digest.",
                            },
                        },
                    },
                    "encoding": {
                        "metadata": {"contentType": "application/json"},
                        "module": {"contentType": "application/wasm, application/octet-stream"},
                    },
                })
            });
            out.push(Operation {
                parameters: vec![param("IdempotencyKey")],
                body: Some(body),
                multipart,
                success: (
                    201,
                    accepted("Created: the accepted command; Location names the new resource."),
                ),
                errors: WRITE_ERRORS,
                ..op(
                    "post",
                    path(&format!("/{segment}")),
                    &format!("create{title}"),
                    tag,
                    &format!("Create a {aggregate} ({create})"),
                )
            });
        }
        let mut actions: Vec<(&str, &str, &str)> = match segment {
            "plugins" => vec![
                ("deprecate", "plugin.deprecate", "post"),
                ("disable", "plugin.disable", "post"),
                ("enable", "plugin.enable", "post"),
            ],
            "pipelines" => vec![
                ("", "pipeline.update", "put"),
                ("", "pipeline.archive", "delete"),
                ("pause", "pipeline.pause", "post"),
                ("resume", "pipeline.resume", "post"),
                ("archive", "pipeline.archive", "post"),
            ],
            "runs" => vec![("cancel", "run.cancel", "post")],
            _ => vec![
                ("", "schedule.update", "put"),
                ("", "schedule.delete", "delete"),
                ("pause", "schedule.pause", "post"),
                ("resume", "schedule.resume", "post"),
            ],
        };
        if segment == "pipelines" {
            actions.push(("execute", "run.request", "post"));
        }
        for (action, command, method) in actions {
            let execute = action == "execute";
            let spliced: &[&str] = if execute {
                &["pipeline_id", "run_id"]
            } else {
                &[id_field]
            };
            let body = command_body(schemas, command, spliced);
            let suffix = if action.is_empty() {
                String::new()
            } else {
                format!("/{action}")
            };
            let verb = if action.is_empty() {
                method.to_owned()
            } else {
                action.to_owned()
            };
            let success = if execute {
                (
                    202,
                    accepted("Accepted: the run is requested; Location names it (follow it with GET or its /events)."),
                )
            } else {
                (200, accepted("The accepted command."))
            };
            let parameters = if execute {
                vec![param("Id"), param("IdempotencyKey")]
            } else {
                vec![param("Id"), param("IdempotencyKey"), param("IfMatch")]
            };
            out.push(Operation {
                parameters,
                body: Some(body),
                success,
                errors: WRITE_ERRORS,
                ..op(
                    method,
                    path(&format!("/{segment}/{{id}}{suffix}")),
                    &format!("{}{title}", camel(&verb)),
                    tag,
                    command,
                )
            });
        }
    }
    out.push(Operation {
        parameters: vec![param("Id"), param("ConsistencyPosition"), param("MinPosition")],
        success: (
            200,
            json_response(
                "The plugin's runs by state with their average durations.",
                reference("views.plugin-stats"),
                &["Consistency-Position"],
            ),
        ),
        ..op(
            "get",
            path("/plugins/{id}/status"),
            "getPluginStatus",
            "plugins",
            "How a plugin has run (plugin.stats)",
        )
    });
    out.push(Operation {
        parameters: vec![param("Id")],
        body: Some((reference("BackfillRequest"), true)),
        success: (
            200,
            json_response(
                "What became of every slot of the range: requested, existed, skipped or pending (send the request again later).",
                reference("BackfillAnswer"),
                &[],
            ),
        ),
        errors: WRITE_ERRORS,
        ..op("post", path("/schedules/{id}/backfill"), "backfillSchedule", "schedules", "Request the runs of a schedule's past slots")
    });
    out.push(Operation {
        parameters: vec![
            param("Id"),
            json!({"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": crate::api::streams::MAX_LOG_LINES}}),
            param("ConsistencyPosition"),
        ],
        success: (200, json_response("The run's log lines, oldest first.", reference("RunLogs"), &[])),
        ..op("get", path("/runs/{id}/logs"), "getRunLogs", "runs", "A run's log lines")
    });
    out.push(Operation {
        parameters: vec![param("Id"), param("ConsistencyPosition"), param("LastEventId")],
        success: (200, sse_response("Server-Sent Events: each of the run's events (`event:` its type, `id:` its global position), ending after the run ends.")),
        ..op("get", path("/runs/{id}/events"), "streamRunEvents", "runs", "Live progress of a run (SSE)")
    });
    if let Some(stream) = out.last_mut() {
        stream.extra.push((204, json!({"description": "The run had ended at Last-Event-ID: nothing more will come (an EventSource stops)."})));
    }
    out.push(Operation {
        parameters: vec![param("Id"), param("ConsistencyPosition")],
        success: (200, sse_response("Server-Sent Events: the run's log lines (`event: line`, data a run log line), the stored ones first, then live; ending after the run ends.")),
        ..op("get", path("/runs/{id}/logs/stream"), "streamRunLogs", "runs", "A run's log lines, live (SSE)")
    });
    out.push(Operation {
        parameters: list_parameters(schemas, "queries.event.list"),
        success: (
            200,
            json_response(
                "A page of the event log.",
                reference("EventPage"),
                &["Consistency-Position", "Link"],
            ),
        ),
        ..op("get", path("/events"), "listEvents", "events", "The event log (audit)")
    });
    out.push(Operation {
        parameters: vec![
            json!({"name": "aggregate_type", "in": "query", "required": false, "schema": {"enum": ["plugin", "pipeline", "run", "schedule"]}}),
            json!({"name": "aggregate_id", "in": "query", "required": false, "schema": {"type": "string", "format": "uuid"}}),
            json!({"name": "event_type", "in": "query", "required": false, "schema": {"type": "string", "pattern": "^[a-z_]+\\.[a-z_]+$"}}),
            param("LastEventId"),
        ],
        success: (200, sse_response("Server-Sent Events: every event from now on (or after Last-Event-ID), `id:` its global position.")),
        ..op("get", path("/events/stream"), "streamEvents", "events", "The event log, live (SSE)")
    });
    out.push(Operation {
        parameters: vec![param("IdempotencyKey"), param("IfMatch")],
        body: Some((reference("CommandRequest"), true)),
        success: (
            200,
            json_response(
                "The accepted command.",
                reference("replies.command-reply.Accepted"),
                &["ETag", "Consistency-Position"],
            ),
        ),
        errors: WRITE_ERRORS,
        ..op(
            "post",
            path("/commands"),
            "sendCommand",
            "generic",
            "Any command of the contract",
        )
    });
    out.push(Operation {
        body: Some((reference("QueryRequest"), true)),
        success: (
            200,
            json_response(
                "The query's answer.",
                reference("replies.query-reply"),
                &["Consistency-Position"],
            ),
        ),
        errors: &[400, 401, 403, 404, 408, 413, 415, 422, 429, 503],
        ..op(
            "post",
            path("/queries"),
            "sendQuery",
            "generic",
            "Any query of the contract",
        )
    });
    add_links(&mut out);
    out
}

/// OpenAPI links from each create (and a pipeline's execute) to the operations on what it
/// made, so clients and fuzzers can follow an id from a response to the next request.
fn add_links(operations: &mut [Operation]) {
    let targets: Vec<(String, String)> = operations
        .iter()
        .filter(|o| o.path.contains("{id}"))
        .map(|o| (o.path.clone(), o.id.clone()))
        .collect();
    for operation in operations.iter_mut() {
        let collection = match operation.success.0 {
            201 => operation.path.clone(),
            202 => format!("{BASE}/runs"),
            _ => continue,
        };
        let prefix = format!("{collection}/{{id}}");
        let links: Map<String, Value> = targets
            .iter()
            .filter(|(path, _)| path.starts_with(&prefix))
            .map(|(_, id)| {
                let link = json!({"operationId": id, "parameters": {"id": "$response.body#/aggregate_id"}});
                (id.clone(), link)
            })
            .collect();
        operation.success.1["links"] = Value::Object(links);
    }
}

fn camel(verb: &str) -> String {
    let mut chars = verb.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_ascii_lowercase().to_string() + chars.as_str()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// `docs/openapi.json` is the document the gateway serves.
    #[test]
    fn openapi_up_to_date() {
        let file = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
        let text = serde_json::to_string_pretty(&document()).unwrap() + "\n";
        if std::env::var("FLEXCORE_UPDATE_SCHEMAS").is_ok_and(|v| v == "1") {
            std::fs::write(&file, &text).unwrap();
        }
        let on_disk = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            on_disk == text,
            "docs/openapi.json drifted from the types; run: FLEXCORE_UPDATE_SCHEMAS=1 cargo test -p flexcore-gateway --lib openapi"
        );
    }

    /// Every `$ref` names something the document has, and every operation id is unique.
    #[test]
    fn references_resolve_and_ids_are_unique() {
        let document = document();
        let mut refs = Vec::new();
        collect_refs(&document, &mut refs);
        assert!(refs.len() > 50);
        for r in refs {
            let pointer = r.strip_prefix('#').unwrap();
            let pointer = pointer.replace("~1", "/");
            assert!(document.pointer(&pointer).is_some(), "{r} does not resolve");
        }
        let mut ids = Vec::new();
        for item in document["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                ids.push(operation["operationId"].as_str().unwrap().to_owned());
            }
        }
        let count = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), count, "operation ids repeat");
        assert!(document["paths"]["/api/v1/flexcore/pipelines/{id}/execute"]["post"]["responses"]["202"].is_object());
    }

    fn collect_refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(object) => {
                for (key, inner) in object {
                    if key == "$ref" {
                        out.push(inner.as_str().unwrap().to_owned());
                    } else {
                        collect_refs(inner, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }
}
