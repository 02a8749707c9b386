//! Live fuzz of the request contract (issue 14): at least 20,000 seeded requests (valid and
//! mutated bodies of every command and query, unknown subjects, hostile headers) sent with
//! some concurrency to the real command and projection services over a private NATS and
//! a fresh database, after a world of real aggregates is built (`fuzz/world.rs`) so that
//! mutated bodies reach the domain's decisions. Bodies and mutations come from
//! `shared/contracts/tests/support` (the differential test's generator).
//!
//! For every request:
//! - it is answered (none is silent: no time-out, no "no responders");
//! - the reply is JSON of the documented shape (`schemas/replies/*.json`), never `internal`,
//!   and its `details.reason` is one of the documented reasons and belongs to its `code`;
//! - the verdict matches a standard validator's on the request's schema file: for a body
//!   that is JSON without repeated keys, within the size limit and sent with valid label
//!   headers, one the schema refuses is refused with `validation_failed` and a reason of
//!   form (`SCHEMA_REASONS`), one it accepts is never refused with such a reason; a body no
//!   validator can judge is refused for what the parse finds; a label header that is not
//!   a label is refused with `invalid_value` naming the header; an oversized body with
//!   `too_large`; an unknown subject with `unknown_subject`.
//!
//! And for the run: the event log grew by exactly the events of the accepted commands (a
//! replayed command counted once), so no refused command wrote anything; and every event
//! written is valid against its schema in `schemas/events/`.
//!
//! Requests go through `async-nats`, so header blocks it cannot write (a line without a
//! colon, bytes that are not UTF-8) are not among them.
//!
//! `FLEXCORE_FUZZ_SEED` replays the requests of a run (not their interleaving; failures
//! print it), `FLEXCORE_FUZZ_COUNT` sets how many (default 20,000).

#[path = "../../../../shared/contracts/tests/support/mod.rs"]
mod support;
mod world;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use async_nats::{HeaderMap, RequestErrorKind};
use flexcore_contracts::values::Label;
use flexcore_contracts::{envelope, subjects, ErrorReason};
use flexcore_system_tests::{Options, Stack};
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde_json::Value;
use support::corpus::{names, Corpus, Kind};
use support::mutate::Mutator;
use support::standard::{form, Form, Schema, Schemas, SCHEMA_REASONS};

/// Requests per run unless `FLEXCORE_FUZZ_COUNT` says otherwise.
const DEFAULT_COUNT: usize = 20_000;
/// Requests in flight at once.
const CONCURRENCY: usize = 64;
/// How long a request may wait for its reply (a `min_position` never reached takes 5 s).
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Values of the label headers: labels, and values that are not (after the trimming NATS
/// does on receipt).
const LABEL_HEADERS: &[&str] = &[
    "fuzz",
    "Jürgen Weiß",
    " padded ",
    "svc/a b",
    "",
    "   ",
    "\t\t",
    "a\u{7}b",
    "\u{0}",
    "\u{85}",
    "x\u{feff}",
];

/// `traceparent` values: valid, and garbage the service must ignore.
const TRACEPARENTS: &[&str] = &[
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-00000000000000000000000000000000-0000000000000000-01",
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    "00-ü",
    "garbage",
    "",
];

/// Requests drawn less often than the others, and how much less: a rebuild replays a
/// whole projection, and what ends an aggregate (or disables a plugin) would soon leave
/// the other requests little to act on.
const RARE: &[(&str, f64)] = &[
    ("projection.rebuild", 0.1),
    ("plugin.disable", 0.3),
    ("pipeline.archive", 0.3),
    ("schedule.delete", 0.3),
    ("run.cancel", 0.3),
];

/// One request of the fuzz.
struct Probe {
    /// The command or query it is one of; `None` for a subject that names none.
    request: Option<String>,
    /// The service it goes to.
    kind: Kind,
    subject: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// What was done to the body.
    how: String,
}

/// The request limits of the stack.
struct Limits {
    command: usize,
    query: usize,
}

impl Limits {
    fn of(&self, kind: Kind) -> usize {
        match kind {
            Kind::Command => self.command,
            Kind::Query => self.query,
        }
    }
}

/// What the reply to a probe must be.
#[derive(Debug)]
enum Expect {
    /// Refused for exactly this reason (and, for a header, naming it).
    Refused(ErrorReason, Option<&'static str>),
    /// Refused with `validation_failed` for a rule of form.
    FormRefusal,
    /// Anything but a refusal for form.
    NoFormRefusal,
}

/// A request on a subject under `flexcore.cmd.>` or `flexcore.qry.>` that names no
/// command or query: unknown tokens, the wrong case, one token too many, non-ASCII.
fn unknown(rng: &mut StdRng, all: &[(Kind, String)]) -> Probe {
    const TOKENS: &[&str] = &[
        "pipeline", "Pipeline", "run", "create", "CREATE", "list", "get", "stats", "ünï", "-", "0",
    ];
    let token = |rng: &mut StdRng| match rng.random_range(0..4) {
        0 => format!("t{:x}", rng.random::<u32>()),
        1 => "é".repeat(rng.random_range(1..40)),
        _ => (*TOKENS.choose(rng).unwrap()).to_owned(),
    };
    loop {
        let kind = if rng.random_bool(0.5) {
            Kind::Command
        } else {
            Kind::Query
        };
        let (a, b) = (token(rng), token(rng));
        let (a, b) = match rng.random_range(0..3) {
            0 => (format!("{a}.{}", token(rng)), b),
            1 => (a, format!("{b}.{}", token(rng))),
            _ => (a, b),
        };
        if all.contains(&(kind, format!("{a}.{b}"))) {
            continue;
        }
        let subject = match kind {
            Kind::Command => subjects::command(&a, &b),
            Kind::Query => subjects::query(&a, &b),
        };
        return Probe {
            request: None,
            kind,
            subject,
            headers: Vec::new(),
            body: b"{}".to_vec(),
            how: "unknown subject".into(),
        };
    }
}

/// Generates probes from the corpus: mostly mutated bodies, some valid ones, some unknown
/// subjects, now and then hostile headers.
fn probe(corpus: &mut Corpus, schemas: &Schemas, limits: &Limits, all: &[(Kind, String)]) -> Probe {
    let rng = &mut corpus.rng;
    if rng.random_bool(0.03) {
        return unknown(rng, all);
    }
    let (kind, name) = loop {
        let (kind, name) = all.choose(rng).unwrap();
        let share = RARE.iter().find(|(n, _)| n == name).map_or(1.0, |(_, share)| *share);
        if rng.random_bool(share) {
            break (*kind, name.clone());
        }
    };
    let headers = headers(rng);
    // Only what a valid body sent with valid headers creates joins the world (the service
    // refuses most mutants); the donor is never sent.
    let valid = rng.random_bool(0.3);
    corpus.record = valid && bad_header(&headers).is_none();
    let body = corpus.body(kind, &name);
    corpus.record = false;
    let donor = corpus.body(kind, &name);
    let rng = &mut corpus.rng;
    let (body, how) = if valid {
        (body.to_string().into_bytes(), "valid".to_owned())
    } else {
        let schema = &schemas.request(kind, &name).json;
        let near_limit = limits.of(kind) + 1024;
        let mutant = Mutator::new(rng, schema, near_limit).mutate(&body, &donor, 0.25);
        (mutant.bytes, mutant.how)
    };
    Probe {
        request: Some(name.clone()),
        kind,
        subject: kind.subject(&name),
        headers,
        body,
        how,
    }
}

/// Headers of a request: now and then a label header (a label or not) or a `traceparent`
/// (valid or garbage).
fn headers(rng: &mut StdRng) -> Vec<(&'static str, String)> {
    let mut headers = Vec::new();
    for (header, p) in [
        // Not read by the service any more (the actor is the signer): any value passes.
        ("Flexcore-Actor", 0.2),
        (envelope::HEADER_CORRELATION_ID, 0.2),
        (envelope::HEADER_TRACEPARENT, 0.1),
    ] {
        if rng.random_bool(p) {
            let pool = if header == envelope::HEADER_TRACEPARENT {
                TRACEPARENTS
            } else {
                LABEL_HEADERS
            };
            headers.push((header, (*pool.choose(rng).unwrap()).to_owned()));
        }
    }
    if rng.random_bool(0.02) {
        headers.push((envelope::HEADER_CORRELATION_ID, "x".repeat(201)));
    }
    headers
}

/// The first label header the command service refuses (it reads the correlation id first).
fn bad_header(headers: &[(&'static str, String)]) -> Option<&'static str> {
    [envelope::HEADER_CORRELATION_ID].into_iter().find(|name| {
        // NATS trims header values on receipt; the first value of a name counts.
        let value = headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.trim());
        value.is_some_and(|v| v.parse::<Label>().is_err())
    })
}

/// What the reply to `probe` must be, from the schema files alone.
fn expect(probe: &Probe, schemas: &Schemas, limits: &Limits) -> Expect {
    let Some(name) = &probe.request else {
        return Expect::Refused(ErrorReason::UnknownSubject, None);
    };
    if probe.kind == Kind::Command {
        if let Some(header) = bad_header(&probe.headers) {
            return Expect::Refused(ErrorReason::InvalidValue, Some(header));
        }
    }
    if probe.body.len() > limits.of(probe.kind) {
        return Expect::Refused(ErrorReason::TooLarge, None);
    }
    match form(probe.kind, &probe.body) {
        Form::Unjudgeable(reason) => Expect::Refused(reason, None),
        Form::Json(value) if schemas.request(probe.kind, name).accepts(&value) => Expect::NoFormRefusal,
        Form::Json(_) => Expect::FormRefusal,
    }
}

/// Sends `probe`; the reply's payload, or why there is none.
async fn send(s: &Stack, probe: &Probe) -> Result<Vec<u8>, String> {
    let mut headers = HeaderMap::new();
    for (name, value) in &probe.headers {
        headers.append(*name, value.as_str());
    }
    let request = async_nats::Request::new()
        .payload(probe.body.clone().into())
        .headers(headers)
        .timeout(Some(REPLY_TIMEOUT));
    match s.client.send_request(probe.subject.clone(), request).await {
        Ok(message) => Ok(message.payload.to_vec()),
        Err(e) => Err(match e.kind() {
            RequestErrorKind::TimedOut => "silent: no reply within 10 s".into(),
            RequestErrorKind::NoResponders => "no responders".into(),
            _ => format!("not sent: {e}"),
        }),
    }
}

/// The reply checked against everything it must be; its tally label, or what is wrong.
fn verify(probe: &Probe, expect: &Expect, reply: &[u8], reply_schema: &Schema) -> Result<String, String> {
    let reply: Value = serde_json::from_slice(reply).map_err(|e| format!("the reply is not JSON: {e}"))?;
    if !reply_schema.accepts(&reply) {
        let why = reply_schema.validator.iter_errors(&reply).next().map(|e| e.to_string());
        return Err(format!("the reply is not of the documented shape ({why:?}): {reply}"));
    }
    let service = match probe.kind {
        Kind::Command => "command",
        Kind::Query => "query",
    };
    if reply["ok"] == Value::Bool(true) {
        return match expect {
            Expect::NoFormRefusal => Ok(format!("{service} accepted")),
            other => Err(format!("accepted, but expected {other:?}: {reply}")),
        };
    }
    let error = &reply["error"];
    let reason: ErrorReason = serde_json::from_value(error["details"]["reason"].clone())
        .map_err(|e| format!("undocumented reason ({e}): {reply}"))?;
    if error["code"] != reason.code().as_str() || reason == ErrorReason::Internal {
        return Err(format!("an internal error or a reason of another code: {reply}"));
    }
    let of_form = SCHEMA_REASONS.contains(&reason);
    let fits = match expect {
        Expect::Refused(expected, header) => {
            reason == *expected && header.is_none_or(|h| error["details"]["header"] == h)
        }
        Expect::FormRefusal => of_form,
        Expect::NoFormRefusal => !of_form,
    };
    if !fits {
        return Err(format!("expected {expect:?}, got {reply}"));
    }
    Ok(format!("{service} refused: {reason}"))
}

async fn event_count(s: &Stack) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&s.db.pool)
        .await
        .unwrap()
}

/// Every event after `position` that its schema in `schemas/events/` refuses.
async fn invalid_events(s: &Stack, position: i64) -> Vec<String> {
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT global_position, event_type, data::text FROM events WHERE global_position > $1 ORDER BY global_position",
    )
    .bind(position)
    .fetch_all(&s.db.pool)
    .await
    .unwrap();
    assert!(!rows.is_empty(), "the fuzz wrote no events");
    let mut schemas: HashMap<String, Schema> = HashMap::new();
    let mut wrong = Vec::new();
    for (position, event_type, data) in rows {
        let schema = schemas
            .entry(event_type.clone())
            .or_insert_with(|| Schema::load(&format!("events/{event_type}.json")));
        let data: Value = serde_json::from_str(&data).unwrap();
        let error = schema.validator.iter_errors(&data).next().map(|e| e.to_string());
        if let Some(error) = error {
            let shown = support::excerpt(&data.to_string(), 300);
            wrong.push(format!("event {position} ({event_type}): {error}: {shown}"));
        }
    }
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_requests_get_documented_replies_and_the_standard_verdict() {
    let seed = support::seed();
    let count = support::env_count("FLEXCORE_FUZZ_COUNT", DEFAULT_COUNT);
    let started = Instant::now();
    let s = Stack::start(Options::default()).await;
    let schemas = Schemas::load();
    let bus = s.client.max_payload();
    let limits = Limits {
        command: s.settings.command.max_payload_bytes.min(bus),
        query: s.settings.projection.max_payload_bytes.min(bus),
    };
    let mut rng = support::rng(seed);
    let world = world::build(&s, &mut rng).await;
    let events_before = event_count(&s).await;
    let position_before: i64 = sqlx::query_scalar("SELECT max(global_position) FROM events")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    let all = names();
    let mut corpus = Corpus::new(seed ^ 2, world);
    corpus.settle = 2 * CONCURRENCY;
    let probes = (0..count).map(|_| probe(&mut corpus, &schemas, &limits, &all));
    let mut replies = futures::stream::iter(probes)
        .map(|probe| async {
            let reply = send(&s, &probe).await;
            (probe, reply)
        })
        .buffer_unordered(CONCURRENCY);
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let mut wrong = Vec::new();
    // Accepted commands by the position of their last event: a replay has the same one.
    let mut accepted: HashMap<u64, usize> = HashMap::new();
    while let Some((probe, reply)) = replies.next().await {
        let expect = expect(&probe, &schemas, &limits);
        let verdict = reply.and_then(|reply| {
            let label = verify(&probe, &expect, &reply, schemas.reply(probe.kind))?;
            if probe.kind == Kind::Command && label.ends_with("accepted") {
                let reply: Value = serde_json::from_slice(&reply).unwrap();
                let events = reply["events"].as_array().map_or(0, Vec::len);
                accepted.insert(reply["global_position"].as_u64().unwrap(), events);
            }
            Ok(label)
        });
        match verdict {
            Ok(label) => *tally.entry(label).or_default() += 1,
            Err(why) => {
                *tally.entry("WRONG".into()).or_default() += 1;
                let body = String::from_utf8_lossy(&probe.body);
                wrong.push(format!(
                    "{} [{}] headers {:?}\n  body: {}\n  {}",
                    probe.subject,
                    probe.how,
                    probe.headers,
                    support::excerpt(&body, 300),
                    support::excerpt(&why, 600)
                ));
            }
        }
    }
    drop(replies);
    let written = event_count(&s).await - events_before;
    let expected: usize = accepted.values().sum();
    let invalid = invalid_events(&s, position_before).await;
    let table: Vec<String> = tally.iter().map(|(k, v)| format!("  {v:>6}  {k}")).collect();
    eprintln!(
        "fuzz, seed {seed:#x}: {count} requests in {:.0?}, {} accepted commands wrote {written} events:\n{}",
        started.elapsed(),
        accepted.len(),
        table.join("\n")
    );
    let reproduce = support::reproduce(seed);
    assert!(
        wrong.is_empty(),
        "{} of {count} replies are wrong ({reproduce}):\n{}",
        wrong.len(),
        wrong.iter().take(15).cloned().collect::<Vec<_>>().join("\n")
    );
    assert_eq!(
        written,
        i64::try_from(expected).unwrap(),
        "the events written are not those of the accepted commands ({reproduce})"
    );
    assert!(
        invalid.is_empty(),
        "{} events break their schema ({reproduce}):\n{}",
        invalid.len(),
        invalid.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
    // Every side of the contract was reached, or the run says little.
    for label in ["command accepted", "query accepted", "command refused: not_found"] {
        assert!(
            tally.get(label).copied().unwrap_or(0) > count / 200,
            "too few {label:?}: {tally:?}"
        );
    }
    s.stop().await;
}
