//! Differential test of the request contract (issue 14): a standard JSON Schema validator
//! loading the files in `schemas/` and the services' decoders (`commands::decode`,
//! `queries::decode`) give every body the same verdict, so a client that validates
//! against the schemas is never surprised.
//!
//! For every command and query, a seeded corpus of valid bodies (each accepted by both)
//! and thousands of seeded mutations of them (`support::mutate`). A body that is JSON
//! without repeated keys is accepted by the decoder exactly when the validator accepts
//! it, and refused for a rule of its form (`support::standard::SCHEMA_REASONS`, with the
//! JSON pointer of the field) when not. A body no validator can judge (not JSON, a
//! repeated key) is refused with the reason the parse gives. And what the service makes
//! of an accepted command (the typed command written out again, as its events carry
//! it) is accepted too: the contract can state every value it takes in.
//!
//! `FLEXCORE_FUZZ_SEED` replays a run; `FLEXCORE_DIFF_COUNT` sets the mutations per
//! request (default 600, about 22,000 in all).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod support;

use std::collections::{BTreeMap, BTreeSet};

use flexcore_contracts::queries::{self, GetById, ListQuery, ProjectionsQuery, RebuildRequest, StatsQuery};
use flexcore_contracts::{commands, ErrorBody, ErrorCode};
use support::corpus::{names, Corpus, Kind, World};
use support::mutate::Mutator;
use support::standard::{form, Form, Schemas, SCHEMA_REASONS};

/// Largest mutated body (the huge ones come near it): enough to pass every length limit.
const MAX_BYTES: usize = 256 * 1024;

/// The service's verdict: `payload` decoded as the command or query service does; for a
/// command, the service's own rendering of it (the text its events are made from).
fn decode(kind: Kind, name: &str, payload: &[u8]) -> Result<Option<String>, ErrorBody> {
    match kind {
        Kind::Command => commands::decode(&kind.subject(name), payload).map(|(_, command)| Some(command.body())),
        Kind::Query => match name {
            "stats.get" => queries::decode::<StatsQuery>(name, payload).map(|_| None),
            "projection.list" => queries::decode::<ProjectionsQuery>(name, payload).map(|_| None),
            "projection.rebuild" => queries::decode::<RebuildRequest>(name, payload).map(|_| None),
            n if n.ends_with(".get") || n == "plugin.stats" => queries::decode::<GetById>(name, payload).map(|_| None),
            _ => queries::decode::<ListQuery>(name, payload).map(|_| None),
        },
    }
}

/// Why the decoder's verdict on a body is wrong, if it is.
fn judge(schemas: &Schemas, kind: Kind, name: &str, payload: &[u8]) -> (Outcome, Option<String>) {
    let Ok(verdict) = std::panic::catch_unwind(|| decode(kind, name, payload)) else {
        return (Outcome::Unjudgeable("panic"), Some("the decoder panicked".into()));
    };
    match form(kind, payload) {
        Form::Json(value) => {
            let schema = schemas.request(kind, name);
            let accepted = schema.accepts(&value);
            let wrong = match (&verdict, accepted) {
                (Ok(Some(rendered)), true) => {
                    // What the service makes of a body (its events carry these values)
                    // is itself a body the schema accepts: no instant beyond year 9999, …
                    let value: serde_json::Value = serde_json::from_str(rendered).unwrap_or_default();
                    (!schema.accepts(&value)).then(|| {
                        let why = schema.validator.iter_errors(&value).next().map(|e| e.to_string());
                        format!("accepted, but its rendering {rendered} is not: {why:?}")
                    })
                }
                (Ok(None), true) => None,
                (Ok(_), false) => {
                    let why = schema.validator.iter_errors(&value).next().map(|e| e.to_string());
                    Some(format!("accepted, but the schema refuses it: {why:?}"))
                }
                (Err(e), true) => Some(format!("refused ({e}), but the schema accepts it")),
                (Err(e), false) if e.code != ErrorCode::ValidationFailed || !SCHEMA_REASONS.contains(&e.reason()) => {
                    Some(format!("refused for a rule that is not one of form: {e}"))
                }
                (Err(e), false) if e.details.path.is_none() => Some(format!("refused without a path: {e}")),
                (Err(_), false) => None,
            };
            let outcome = if accepted { Outcome::Valid } else { Outcome::Invalid };
            (outcome, wrong)
        }
        Form::Unjudgeable(reason) => {
            let wrong = match &verdict {
                Err(e) if e.reason() == reason => None,
                other => Some(format!("not judgeable ({reason}), but the decoder says {other:?}")),
            };
            (Outcome::Unjudgeable(reason.as_str()), wrong)
        }
    }
}

/// How a standard validator sees a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Valid,
    Invalid,
    Unjudgeable(&'static str),
}

#[test]
fn every_request_schema_has_a_corpus() {
    let schemas = Schemas::load();
    let files: BTreeSet<(Kind, String)> = schemas.requests.keys().cloned().collect();
    let named: BTreeSet<(Kind, String)> = names().into_iter().collect();
    assert_eq!(
        files, named,
        "schemas/commands and schemas/queries hold exactly the requests"
    );
}

#[test]
fn corpus_bodies_are_valid_for_the_schema_and_the_decoder() {
    let seed = support::seed();
    let schemas = Schemas::load();
    let mut rng = support::rng(seed);
    let mut corpus = Corpus::new(seed, World::synthetic(&mut rng));
    let mut wrong = Vec::new();
    for (kind, name) in names() {
        for _ in 0..50 {
            let body = corpus.body(kind, &name);
            let payload = body.to_string();
            let schema = schemas.request(kind, &name);
            if !schema.accepts(&body) {
                let why = schema.validator.iter_errors(&body).next().map(|e| e.to_string());
                wrong.push(format!("{name}: the schema refuses {payload}: {why:?}"));
            } else if let Err(e) = decode(kind, &name, payload.as_bytes()) {
                wrong.push(format!("{name}: the decoder refuses {payload}: {e}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} corpus bodies are not valid ({}):\n{}",
        wrong.len(),
        support::reproduce(seed),
        wrong
            .iter()
            .take(10)
            .map(|w| support::excerpt(w, 600))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn mutated_bodies_get_the_standard_verdict() {
    let seed = support::seed();
    let per_request = support::env_count("FLEXCORE_DIFF_COUNT", 600);
    let schemas = Schemas::load();
    let mut rng = support::rng(seed);
    let mut corpus = Corpus::new(seed ^ 1, World::synthetic(&mut rng));
    let mut tally: BTreeMap<Outcome, usize> = BTreeMap::new();
    let mut per_name: BTreeMap<String, [usize; 2]> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (kind, name) in names() {
        let schema = &schemas.request(kind, &name).json;
        for _ in 0..per_request {
            let body = corpus.body(kind, &name);
            let donor = corpus.body(kind, &name);
            let mutant = Mutator::new(&mut rng, schema, MAX_BYTES).mutate(&body, &donor, 0.2);
            let (outcome, error) = judge(&schemas, kind, &name, &mutant.bytes);
            *tally.entry(outcome).or_default() += 1;
            let counts = per_name.entry(name.clone()).or_default();
            counts[usize::from(outcome != Outcome::Valid)] += 1;
            if let Some(error) = error {
                let text = String::from_utf8_lossy(&mutant.bytes);
                wrong.push(format!(
                    "{name} ({}): {error}\n  body: {}",
                    mutant.how,
                    support::excerpt(&text, 300)
                ));
            }
        }
    }
    let total: usize = tally.values().sum();
    eprintln!("differential, seed {seed:#x}: {total} mutated bodies: {tally:?}");
    assert!(
        wrong.is_empty(),
        "{} of {total} verdicts differ between schemas/ and the decoders ({}):\n{}",
        wrong.len(),
        support::reproduce(seed),
        wrong.iter().take(20).map(String::as_str).collect::<Vec<_>>().join("\n")
    );
    // The mutations must reach both sides of every schema, or the comparison says little.
    let valid = tally.get(&Outcome::Valid).copied().unwrap_or(0);
    let invalid = tally.get(&Outcome::Invalid).copied().unwrap_or(0);
    assert!(valid * 20 > total && invalid * 2 > total, "lopsided: {tally:?}");
    for (name, [accepted, refused]) in &per_name {
        assert!(*accepted > 0 && *refused > 0, "{name}: {accepted} valid, {refused} not");
    }
}
