//! Assembles `docs/messaging.md`, section by section.

use std::collections::BTreeSet;

use flexcore_contracts::commands::{Command, CommandMeta};
use flexcore_contracts::envelope::{self, EventEnvelope};
use flexcore_contracts::events::{PipelineEvent, PluginEvent, RunEvent, ScheduleEvent};
use flexcore_contracts::queries::{GetById, ListQuery, ProjectionsQuery, QueryReply, RebuildRequest, StatsQuery};
use flexcore_contracts::views::{
    PipelineView, PluginStatsView, PluginView, ProjectionStatus, RebuildStatus, RunView, ScheduleView, StatsView,
};
use flexcore_contracts::work::WorkItem;
use flexcore_contracts::{subjects, CommandReply, ErrorCode, ErrorReason};

use serde_json::Value;
use uuid::Uuid;

use crate::render::{self, Types};
use crate::{prose, scan};

fn json<T: schemars::JsonSchema>() -> Value {
    serde_json::to_value(flexcore_contracts::schema::schema_for::<T>()).unwrap()
}

/// A subject built with the nil UUID, shown with a placeholder instead.
fn placeholder(subject: String, name: &str) -> String {
    subject.replace(&Uuid::nil().to_string(), &format!("<{name}>"))
}

/// The whole document.
pub fn generate() -> String {
    let mut types = Types::default();
    let mut out = String::from(prose::HEADER);
    out.push_str(&toc());
    out.push_str(&subjects_section());
    out.push_str(&headers_section());
    out.push_str(&replies_section(&mut types));
    out.push_str(&commands_section(&mut types));
    out.push_str(&events_section(&mut types));
    out.push_str(&queries_section(&mut types));
    out.push_str(&work_section(&mut types));
    out.push_str("## Types\n\n");
    out.push_str(prose::TYPES);
    out.push_str(&types.section());
    while out.contains("\n\n\n") {
        out = out.replace("\n\n\n", "\n\n");
    }
    out.trim_end().to_owned() + "\n"
}

fn toc() -> String {
    [
        ("Subjects and streams", "subjects-and-streams"),
        ("Headers", "headers"),
        ("Replies and errors", "replies-and-errors"),
        ("Commands", "commands"),
        ("Events", "events"),
        ("Queries", "queries"),
        (
            "Run work, heartbeats, presence and logs",
            "run-work-heartbeats-presence-and-logs",
        ),
        ("Types", "types"),
    ]
    .iter()
    .map(|(title, anchor)| format!("- [{title}](#{anchor})\n"))
    .collect::<String>()
        + "\n"
}

fn subjects_section() -> String {
    let nil = Uuid::nil();
    let source = scan::file("shared/contracts/src/subjects.rs");
    check_subjects_covered(&source);
    let runner_consumer = scan::const_str(&scan::file("services/plugin-runner/src/worker/mod.rs"), "CONSUMER");
    let bucket = scan::const_str(&scan::file("shared/plugin-store/src/lib.rs"), "BUCKET");
    let event = placeholder(
        subjects::event("<aggregate>", nil, "<aggregate>.<event>"),
        "aggregate_id",
    );
    let mut rows = vec![
        (
            subjects::command("<aggregate>", "<action>"),
            format!("request/reply, queue group `{}`", subjects::COMMAND_QUEUE_GROUP),
            "clients, `flexctl`, `flexcore-scheduler`, `flexcore-runner`",
            "`flexcore-command`",
            "a [command](#commands); reply: [command reply](#command-reply)".to_owned(),
        ),
        (
            event,
            format!("JetStream stream `{}`", subjects::EVENTS_STREAM),
            "the outbox relay (in `flexcore-command`)",
            "`flexcore-projection`, `flexcore-scheduler`, `flexcore-runner`, any client",
            "an [event envelope](#event-envelope)".to_owned(),
        ),
        (
            subjects::query("<view>", "<operation>"),
            format!("request/reply, queue group `{}`", subjects::QUERY_QUEUE_GROUP),
            "clients, `flexctl`",
            "`flexcore-projection`",
            "a [query](#queries); reply: [query reply](#query-reply)".to_owned(),
        ),
    ];
    for (title, subject) in work_subjects() {
        let (transport, from, to) = match title.as_str() {
            "WorkItem" => (
                format!("JetStream stream `{}`", subjects::WORK_STREAM),
                "the outbox relay",
                "`flexcore-runner`",
            ),
            "RunLogLine" => (
                format!("JetStream stream `{}`", subjects::LOGS_STREAM),
                "`flexcore-runner`",
                "operators (any JetStream client)",
            ),
            "RunHeartbeat" => (
                "core NATS publish".to_owned(),
                "`flexcore-runner`",
                "`flexcore-scheduler`",
            ),
            "SchedulerPresence" => (
                "core NATS publish".to_owned(),
                "`flexcore-scheduler`",
                "every `flexcore-scheduler` replica",
            ),
            "RunnerPresence" => (
                "core NATS publish".to_owned(),
                "`flexcore-runner`",
                "operator tools (`flexctl status`); no service",
            ),
            other => panic!("say who sends and receives {other} in doc.rs"),
        };
        rows.push((
            subject,
            transport,
            from,
            to,
            format!("[`{title}`](#{})", render::anchor(&title)),
        ));
    }
    rows.push((
        "flexcore.state.scheduler.<chunk>".to_owned(),
        format!("JetStream stream `{}`", subjects::SCHEDULER_STATE_STREAM),
        "the `flexcore-scheduler` replica owning the nil id",
        "every `flexcore-scheduler` replica, at its start",
        "internal: the scheduler's snapshot, gzip-compressed JSON in chunks; chunk 0 is its manifest (docs/architecture.md, \"Scheduler snapshots\")".to_owned(),
    ));
    rows.push((
        subjects::projection_position("<name>"),
        "core NATS publish".to_owned(),
        "the leader of each projection",
        "every `flexcore-projection` replica",
        "internal: `{\"transaction_id\",\"global_position\"}` of the projection's checkpoint".to_owned(),
    ));
    let mut out = String::from("## Subjects and streams\n\n");
    out.push_str(prose::SUBJECTS);
    out.push_str("| Subject | Transport | Sent by | Received by | Body |\n|---|---|---|---|---|\n");
    for (subject, transport, from, to, body) in rows {
        out.push_str(&format!("| `{subject}` | {transport} | {from} | {to} | {body} |\n"));
    }
    out.push_str(&format!(
        "\nThe event subject's last token is the event type without its aggregate prefix \
         (`state_committed` for `pipeline.state_committed`). Wildcards: `{}`, `{}`, `{}`, `{}`, `{}`, `{}`, `{}`, `{}`.\n\n",
        subjects::COMMANDS_WILDCARD,
        subjects::EVENTS_WILDCARD,
        subjects::QUERIES_WILDCARD,
        subjects::WORK_WILDCARD,
        subjects::LOGS_WILDCARD,
        subjects::RUN_HEARTBEATS_WILDCARD,
        subjects::PROJECTION_POSITIONS_WILDCARD,
        subjects::SCHEDULER_STATE_WILDCARD,
    ));
    out.push_str("| Stream or bucket | Subjects | Created by | Retention | Consumed by |\n|---|---|---|---|---|\n");
    out.push_str(&format!(
        "| `{}` | `{}` | `flexcore-command setup` (the setup identity: created, or updated when `streams.*` changed) | limits: `streams.events_max_age_days` (0 = forever), file storage, `streams.replicas`, duplicate window `streams.duplicate_window_seconds`, direct get allowed | the durable pull consumer `projection-audit` through which a projection service's one worker applies all five projections (the older `projection-<name>` durables are deleted when found), ordered consumers of each scheduler replica, runners' direct gets by subject |\n",
        subjects::EVENTS_STREAM,
        subjects::EVENTS_WILDCARD
    ));
    out.push_str(&format!(
        "| `{}` | `{}` | `flexcore-command setup` | work queue: a message leaves when a runner acknowledges it; same duplicate window and replicas | durable pull consumer `{runner_consumer}` shared by all runners (explicit ack; AckWait = `runner.lease_seconds` and MaxDeliver = `runner.max_deliver` of the runner that created it) |\n",
        subjects::WORK_STREAM,
        subjects::WORK_WILDCARD
    ));
    out.push_str(&format!(
        "| `{}` | `{}` | `flexcore-command setup` | max age `runner.log_retention_days`, `streams.replicas` | nothing in FlexCore |\n",
        subjects::LOGS_STREAM,
        subjects::LOGS_WILDCARD
    ));
    out.push_str(&format!(
        "| `{}` | `{}` | `flexcore-command setup` | one message per subject (the latest snapshot), `streams.replicas`; written by schedulers only | each `flexcore-scheduler` replica at its start (last message per subject) |\n",
        subjects::SCHEDULER_STATE_STREAM,
        subjects::SCHEDULER_STATE_WILDCARD
    ));
    out.push_str(&format!(
        "| object store `{bucket}` | — | `flexcore-command setup` | kept; all modules together at most `streams.plugins_max_bytes` | runners download modules by digest (object name `sha256:<hex>`) |\n\n"
    ));
    out
}

/// The work-like types (`schemas/work/`) by title, with their subjects, in the order of
/// `schema::all()`. A new one fails the generator until its subject is named here.
fn work_subjects() -> Vec<(String, String)> {
    let nil = Uuid::nil();
    let source = scan::file("shared/contracts/src/subjects.rs");
    work_schemas()
        .into_iter()
        .map(|schema| {
            let title = render::title(&schema);
            let subject = match title.as_str() {
                "WorkItem" => placeholder(subjects::work_run(nil), "run_id"),
                "RunHeartbeat" => placeholder(subjects::run_heartbeat(nil), "run_id"),
                "RunLogLine" => placeholder(subjects::run_logs(nil), "run_id"),
                "SchedulerPresence" => subjects::SCHEDULER_PRESENCE.to_owned(),
                "RunnerPresence" => scan::const_str(&source, "RUNNER_PRESENCE"),
                other => panic!("name the subject of {other} in doc.rs"),
            };
            (title, subject)
        })
        .collect()
}

/// The schemas under `schemas/work/`, as generated.
fn work_schemas() -> Vec<Value> {
    flexcore_contracts::schema::all()
        .into_iter()
        .filter(|(path, _)| path.starts_with("work/"))
        .map(|(_, text)| serde_json::from_str(&text).unwrap())
        .collect()
}

/// Every public constant and function of `subjects` is documented by this generator.
fn check_subjects_covered(source: &str) {
    const COVERED: &[&str] = &[
        "ROOT",
        "COMMANDS_WILDCARD",
        "COMMAND_QUEUE_GROUP",
        "EVENTS_WILDCARD",
        "EVENTS_STREAM",
        "QUERIES_WILDCARD",
        "QUERY_QUEUE_GROUP",
        "PROJECTION_POSITIONS_WILDCARD",
        "WORK_STREAM",
        "WORK_WILDCARD",
        "LOGS_STREAM",
        "LOGS_WILDCARD",
        "RUN_HEARTBEATS_WILDCARD",
        "SCHEDULER_PRESENCE",
        "RUNNER_PRESENCE",
        "SCHEDULER_STATE_STREAM",
        "SCHEDULER_STATE_WILDCARD",
        "scheduler_state",
        "run_logs",
        "command",
        "parse_command",
        "event",
        "events_of_type",
        "events_of_aggregate",
        "query",
        "parse_query",
        "projection_position",
        "run_heartbeat",
        "work_run",
    ];
    for line in source.lines() {
        let name = line
            .strip_prefix("pub const ")
            .map(|r| r.split(':').next().unwrap_or(""))
            .or_else(|| line.strip_prefix("pub fn ").map(|r| r.split('(').next().unwrap_or("")));
        if let Some(name) = name {
            assert!(
                COVERED.contains(&name),
                "subjects::{name} is new: add it to the messaging doc (doc.rs)"
            );
        }
    }
}

fn headers_section() -> String {
    let mut out = String::from("## Headers\n\n");
    out.push_str(prose::HEADERS);
    out.push_str("Optional headers of a command request:\n\n| Header | Meaning |\n|---|---|\n");
    let command = [
        envelope::HEADER_CORRELATION_ID,
        envelope::HEADER_REQUESTED_BY,
        envelope::HEADER_SIGNER,
        envelope::HEADER_SIGNED_AT,
        envelope::HEADER_SIGNATURE,
        envelope::HEADER_TRACEPARENT,
    ];
    push_headers(&mut out, &command, prose::COMMAND_HEADERS);
    out.push_str("\nHeaders of every message on `FLEXCORE_EVENTS`:\n\n| Header | Meaning |\n|---|---|\n");
    let event = [
        envelope::HEADER_MSG_ID,
        envelope::HEADER_GLOBAL_POSITION,
        envelope::HEADER_VERSION,
        envelope::HEADER_SCHEMA_VERSION,
        envelope::HEADER_EVENT_TYPE,
        envelope::HEADER_TRANSACTION_ID,
        envelope::HEADER_TRACEPARENT,
        envelope::HEADER_SIGNER,
        envelope::HEADER_SIGNED_AT,
        envelope::HEADER_SIGNATURE,
    ];
    push_headers(&mut out, &event, prose::EVENT_HEADERS);
    let item = WorkItem {
        run_id: Uuid::nil(),
        attempt: 0,
        pipeline_id: Uuid::nil(),
        correlation_id: None,
    };
    let msg_id = placeholder(item.msg_id(), "run_id").replace("-0", "-<attempt>");
    out.push_str(&format!(
        "\nA work item on `FLEXCORE_WORK` carries `{}: {msg_id}`, `{}` (the relay publish span's context while spans are exported, else the command request's, when it had one) and the relay's signature.\n\n\
         Every reply of the command and projection services, and every runner and scheduler presence announcement, carries `{}: <service>/<version>` (`flexcore-command/0.1.0`): which versions run, shown by the gateway's status and console. It is not signed: for display, never relied on.\n\n",
        envelope::HEADER_MSG_ID,
        envelope::HEADER_TRACEPARENT,
        envelope::HEADER_SERVICE
    ));
    out
}

fn push_headers(out: &mut String, names: &[&str], meanings: &[(&str, &str)]) {
    assert_eq!(names.len(), meanings.len(), "explain every header in prose.rs");
    for name in names {
        let meaning = meanings
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("explain header {name} in prose.rs"));
        out.push_str(&format!("| `{name}` | {} |\n", meaning.1));
    }
}

fn replies_section(types: &mut Types) -> String {
    let mut out = String::from("## Replies and errors\n\n");
    out.push_str(prose::REPLIES);
    let command = json::<CommandReply>();
    types.collect(&command);
    out.push_str("### Command reply\n\n");
    out.push_str(prose::COMMAND_REPLY);
    for name in ["Accepted", "Rejected"] {
        out.push_str(&format!("`{name}` — "));
        out.push_str(&render::describe(&command["$defs"][name]));
    }
    let query = json::<QueryReply>();
    types.collect(&query);
    out.push_str("### Query reply\n\n");
    for name in ["QueryOk", "QueryErr"] {
        out.push_str(&format!("`{name}` — "));
        out.push_str(&render::describe(&query["$defs"][name]));
    }
    out.push_str("### Error codes\n\n");
    out.push_str(prose::ERROR_CODES);
    out.push_str(&error_codes());
    out.push_str("### Error reasons\n\n");
    out.push_str(&reasons());
    out
}

/// The reasons each service refuses with (`ErrorReason::X` in its source, plus the
/// domain's reason-less variants), and the request decoding's.
fn reasons_returned() -> Vec<(&'static str, BTreeSet<ErrorReason>)> {
    let places = [
        ("`flexcore-command`", scan::dir("services/command-service/src")),
        ("`flexcore-projection`", scan::dir("services/projection-service/src")),
        (
            "both (request decoding, reply size)",
            vec![
                scan::file("shared/contracts/src/decode.rs"),
                scan::file("shared/contracts/src/commands/mod.rs"),
                scan::file("shared/contracts/src/queries.rs"),
                scan::file("shared/service/src/reply.rs"),
            ],
        ),
    ];
    places
        .into_iter()
        .map(|(name, sources)| {
            let mut found: BTreeSet<ErrorReason> = scan::error_reasons(&sources)
                .iter()
                .map(|variant| reason_of(variant))
                .collect();
            for (domain, reason) in [
                ("DomainError::NotFound", ErrorReason::NotFound),
                ("DomainError::InvalidState", ErrorReason::InvalidState),
                ("DomainError::Corrupt", ErrorReason::Internal),
            ] {
                if sources.iter().any(|s| s.contains(domain)) {
                    found.insert(reason);
                }
            }
            (name, found)
        })
        .collect()
}

/// The reason of a variant name (`MissingField` → `missing_field`).
fn reason_of(variant: &str) -> ErrorReason {
    let mut snake = String::new();
    for (i, c) in variant.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            snake.push('_');
        }
        snake.push(c.to_ascii_lowercase());
    }
    serde_json::from_value(serde_json::Value::String(snake.clone()))
        .unwrap_or_else(|e| panic!("ErrorReason::{variant} ({snake}): {e}"))
}

fn error_codes() -> String {
    let returned = reasons_returned();
    let schema = json::<ErrorCode>();
    let mut out = String::from("| Code | Meaning | Returned by |\n|---|---|---|\n");
    for alternative in schema["oneOf"].as_array().unwrap() {
        let code: ErrorCode = serde_json::from_value(alternative["const"].clone()).unwrap();
        assert_eq!(
            alternative["const"],
            code.as_str(),
            "ErrorCode::as_str disagrees with serde"
        );
        let by: Vec<&str> = returned
            .iter()
            .filter(|(_, reasons)| reasons.iter().any(|r| r.code() == code))
            .map(|(n, _)| *n)
            .collect();
        let by = if by.is_empty() {
            "none yet (reserved)".to_owned()
        } else {
            by.join(", ")
        };
        out.push_str(&format!("| `{code}` | {} | {by} |\n", render::description(alternative)));
    }
    out.push('\n');
    out
}

fn reasons() -> String {
    let returned = reasons_returned();
    let schema = json::<ErrorReason>();
    let mut out = String::from(
        "Values of `error.details.reason` (`ErrorReason`), each with the code it comes with:\n\n| Reason | Meaning | Returned by |\n|---|---|---|\n",
    );
    for alternative in schema["oneOf"].as_array().unwrap() {
        let reason: ErrorReason = serde_json::from_value(alternative["const"].clone()).unwrap();
        assert_eq!(
            alternative["const"],
            reason.as_str(),
            "ErrorReason::as_str disagrees with serde"
        );
        let by: Vec<&str> = returned
            .iter()
            .filter(|(_, reasons)| reasons.contains(&reason))
            .map(|(n, _)| *n)
            .collect();
        let by = if by.is_empty() {
            "none yet (reserved)".to_owned()
        } else {
            by.join(", ")
        };
        out.push_str(&format!(
            "| `{reason}` | {} | {by} |\n",
            render::description(alternative)
        ));
    }
    out.push('\n');
    out
}

/// Every value found is explained, and every explanation names a value found.
fn explained(found: &BTreeSet<&String>, explanations: &[(&str, &str)], table: &str) {
    for value in found {
        assert!(
            explanations.iter().any(|(v, _)| v == value),
            "`{value}` is new: explain it in prose::{table}"
        );
    }
    for (value, _) in explanations {
        assert!(
            found.iter().any(|f| f == value),
            "`{value}` is no longer used: remove it from prose::{table}"
        );
    }
}

/// A schema description without its leading "`name`:" (the heading says it).
fn about(schema: &Value, name: &str) -> String {
    let text = render::description(schema);
    let rest = text
        .strip_prefix(&format!("`{name}`"))
        .map(|r| r.trim_start_matches([':', '.']).trim())
        .unwrap_or(&text);
    let mut chars = rest.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().collect::<String>() + chars.as_str(),
        None => String::new(),
    }
}

fn commands_section(types: &mut Types) -> String {
    let mut out = String::from("## Commands\n\n");
    out.push_str(prose::COMMANDS);
    out.push_str(&render::fields(&json::<CommandMeta>(), &[]).unwrap());
    out.push_str(prose::COMMANDS_AFTER_META);
    let senders = [
        ("`flexcore-runner`", scan::dir("services/plugin-runner/src")),
        ("`flexcore-scheduler`", scan::dir("services/scheduler/src")),
    ];
    let mut aggregate = String::new();
    for (name, schema) in Command::schemas() {
        let schema = serde_json::to_value(schema).unwrap();
        types.collect(&schema);
        let (agg, action) = name.split_once('.').unwrap();
        if agg != aggregate {
            aggregate = agg.to_owned();
            out.push_str(&format!("### {} commands\n\n", capitalised(agg)));
        }
        out.push_str(&format!("#### `{name}`\n\n"));
        let by: Vec<&str> = senders
            .iter()
            .filter(|(_, src)| src.iter().any(|s| s.contains(&format!("\"{name}\""))))
            .map(|(n, _)| *n)
            .collect();
        out.push_str(&format!("Subject `{}`", subjects::command(agg, action)));
        if !by.is_empty() {
            out.push_str(&format!(" · sent by {}", by.join(", ")));
        }
        out.push_str(".\n\n");
        let text = about(&schema, &name);
        if !text.is_empty() {
            out.push_str(&text);
            out.push_str("\n\n");
        }
        match render::fields(&schema, flexcore_contracts::commands::META_FIELDS) {
            Some(table) => out.push_str(&table),
            None => out.push_str("No fields besides the common ones.\n"),
        }
        out.push('\n');
    }
    out
}

fn capitalised(s: &str) -> String {
    s[..1].to_uppercase() + &s[1..]
}

fn events_section(types: &mut Types) -> String {
    let mut out = String::from("## Events\n\n");
    out.push_str(prose::EVENTS);
    let envelope = json::<EventEnvelope>();
    types.collect(&envelope);
    out.push_str("### Event envelope\n\n");
    out.push_str(&render::describe(&envelope));
    out.push_str(&format!(
        "`schema_version` is {} for every event this build writes; a reader meeting a newer \
         version refuses the event rather than guess (the projection stops and retries; the \
         scheduler skips it).\n\n",
        flexcore_contracts::events::SCHEMA_VERSION
    ));
    let groups = [
        (PluginEvent::AGGREGATE_TYPE, PluginEvent::schemas()),
        (PipelineEvent::AGGREGATE_TYPE, PipelineEvent::schemas()),
        (RunEvent::AGGREGATE_TYPE, RunEvent::schemas()),
        (ScheduleEvent::AGGREGATE_TYPE, ScheduleEvent::schemas()),
    ];
    for (aggregate, schemas) in groups {
        out.push_str(&format!("### {} events\n\n", capitalised(aggregate)));
        for (event_type, schema) in schemas {
            let schema = serde_json::to_value(schema).unwrap();
            types.collect(&schema);
            out.push_str(&format!("#### `{event_type}`\n\n"));
            let subject = placeholder(subjects::event(aggregate, Uuid::nil(), &event_type), "aggregate_id");
            out.push_str(&format!("Subject `{subject}`.\n\n"));
            let text = render::description(&schema);
            if !text.is_empty() {
                out.push_str(&text);
                out.push_str("\n\n");
            }
            match render::fields(&schema, &[]) {
                Some(table) => out.push_str(&table),
                None => out.push_str("`data` is `{}`.\n"),
            }
            out.push('\n');
        }
    }
    out.push_str("### Run failure codes\n\n");
    out.push_str(prose::FAILURE_CODES);
    out.push_str(&failure_codes());
    out.push_str("### Skip reasons\n\n`reason` of `schedule.skip_slot` / `schedule.slot_skipped` as FlexCore's own clients set it (the field is free text):\n\n");
    out.push_str(&skip_reasons());
    out
}

fn failure_codes() -> String {
    let executor = scan::documented_consts(&scan::file("services/plugin-runner/src/executor/failure.rs"));
    let attempt = scan::file("services/plugin-runner/src/worker/attempt.rs");
    assert!(
        attempt.contains("error.code != \"cancelled\" && error.code != \"fenced\""),
        "the runner changed which failures it does not report: update the messaging doc generator"
    );
    let runner = scan::words_after(&[attempt], "failure(\"");
    explained(&runner.iter().collect(), prose::RUNNER_CODES, "RUNNER_CODES");
    let mut rows: Vec<(String, String)> = Vec::new();
    for (code, doc) in &executor {
        let extra = prose::RUNNER_CODES.iter().find(|(c, _)| c == code).map(|(_, d)| *d);
        let mut text = doc.clone();
        if let Some(extra) = extra {
            text = format!("{text} {extra}");
        }
        if code == "cancelled" {
            text.push_str(" Not reported.");
        }
        rows.push((code.clone(), text));
    }
    for (code, doc) in prose::RUNNER_CODES {
        if !executor.iter().any(|(c, _)| c == code) {
            rows.push(((*code).to_owned(), (*doc).to_owned()));
        }
    }
    rows.sort();
    let mut out = String::from("| `error.code` | Meaning |\n|---|---|\n");
    for (code, text) in rows {
        out.push_str(&format!("| `{code}` | {} |\n", render::one_line(&text)));
    }
    out.push('\n');
    out
}

fn skip_reasons() -> String {
    let scheduler = scan::dir("services/scheduler/src");
    let mut found = scan::words_after(&scheduler, "skip(\"");
    found.extend(scan::words_after(&scheduler, "reason: \""));
    found.extend(scan::words_after(
        &[scan::file("cli/flexctl/src/schedule.rs")],
        "reason: \"",
    ));
    explained(&found.iter().collect(), prose::SKIP_REASONS, "SKIP_REASONS");
    let mut out = String::from("| Reason | Meaning |\n|---|---|\n");
    for (reason, meaning) in prose::SKIP_REASONS {
        out.push_str(&format!("| `{reason}` | {meaning} |\n"));
    }
    out.push('\n');
    out
}

fn queries_section(types: &mut Types) -> String {
    let mut out = String::from("## Queries\n\n");
    out.push_str(prose::QUERIES);
    let mut request = |schema: Value| {
        format!(
            "[`{0}`](#{1})",
            types.collect_top(&schema),
            render::anchor(&render::title(&schema))
        )
    };
    let get = request(json::<GetById>());
    let list = request(json::<ListQuery>());
    let stats = request(json::<StatsQuery>());
    let projections = request(json::<ProjectionsQuery>());
    let rebuild = request(json::<RebuildRequest>());
    let mut view = |schema: Value| {
        format!(
            "[`{0}`](#{1})",
            types.collect_top(&schema),
            render::anchor(&render::title(&schema))
        )
    };
    let plugin = view(json::<PluginView>());
    let pipeline = view(json::<PipelineView>());
    let run = view(json::<RunView>());
    let schedule = view(json::<ScheduleView>());
    let stats_view = view(json::<StatsView>());
    let plugin_stats = view(json::<PluginStatsView>());
    let status = view(json::<ProjectionStatus>());
    let rebuild_status = view(json::<RebuildStatus>());
    let event = "[`EventEnvelope`](#event-envelope)".to_owned();
    let rows = [
        ("plugin", "get", &get, plugin.clone()),
        ("plugin", "list", &list, format!("array of {plugin}")),
        ("plugin", "stats", &get, plugin_stats),
        ("pipeline", "get", &get, pipeline.clone()),
        ("pipeline", "list", &list, format!("array of {pipeline}")),
        ("run", "get", &get, run.clone()),
        ("run", "list", &list, format!("array of {run}")),
        ("schedule", "get", &get, schedule.clone()),
        ("schedule", "list", &list, format!("array of {schedule}")),
        ("event", "list", &list, format!("array of {event} (the audit log)")),
        ("stats", "get", &stats, stats_view),
        ("projection", "list", &projections, format!("array of {status}")),
        (
            "projection",
            "rebuild",
            &rebuild,
            format!("{rebuild_status} of the requested rebuild (`conflict` if one is already requested or running)"),
        ),
    ];
    let listed: Vec<String> = rows.iter().map(|(v, o, _, _)| format!("{v}.{o}")).collect();
    assert_eq!(
        listed,
        flexcore_contracts::queries::ALL,
        "the contract has other queries: update doc.rs"
    );
    out.push_str("| Subject | Request | Reply `data` |\n|---|---|---|\n");
    for (v, o, req, reply) in &rows {
        let not_found = if *req == &get { "; `not_found` when absent" } else { "" };
        out.push_str(&format!(
            "| `{}` | {req} | {reply}{not_found} |\n",
            subjects::query(v, o)
        ));
    }
    out.push_str("\nEach query has its own body schema (`schemas/queries/<view>.<operation>.json`). Filters and sort keys each list accepts (others are not in its schema: refused with `validation_failed`):\n\n");
    out.push_str(&list_specs());
    out
}

/// Which filters and sorts each list takes (`queries::list_rules`).
fn list_specs() -> String {
    let mut out = String::from("| List | Filters | `sort_by` |\n|---|---|---|\n");
    for view in ["plugin", "pipeline", "run", "schedule", "event"] {
        let (filters, sorts) = flexcore_contracts::queries::list_rules(view).unwrap();
        let filters: Vec<String> = filters.iter().map(|f| format!("`{f}`")).collect();
        let sorts: Vec<String> = sorts.iter().map(|s| format!("`{s}`")).collect();
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            subjects::query(view, "list"),
            filters.join(", "),
            sorts.join(", ")
        ));
    }
    out.push_str("\n`sort_by: time` is the creation time (runs: request time; events: global position); `since`/`until` filter on it (events: on `recorded_at`); a window with `until` at or before `since` is empty. A list page holds at most `limit` items and fewer when they would not fit in one reply (the NATS server's `max_payload`); `next_cursor` continues after the last one.\n\n");
    out
}

fn work_section(types: &mut Types) -> String {
    let mut out = String::from("## Run work, heartbeats, presence and logs\n\n");
    out.push_str(prose::WORK);
    for (schema, (name, subject)) in work_schemas().into_iter().zip(work_subjects()) {
        types.collect(&schema);
        out.push_str(&format!(
            "<a id=\"{}\"></a>\n\n### `{name}`\n\nSubject `{subject}`.\n\n",
            render::anchor(&name)
        ));
        out.push_str(&render::describe(&schema));
    }
    out
}
