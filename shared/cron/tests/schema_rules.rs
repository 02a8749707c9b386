//! The schedule rules of the request schemas agree with the parsers the services check
//! schedules with (issue 14: a client that validates against `schemas/` is never refused
//! for a rule it could not see). Both rules are read from the schema file
//! (`schemas/commands/schedule.create.json`) and judged by a standard validator.
//!
//! - Cron: every expression the schema accepts, [`flexcore_cron::parse_cron`] accepts
//!   (required), checked on seeded expressions of every form, near misses and garbage
//!   included. Among expressions in the schema's own notation (spaces between fields,
//!   upper-case `L`/`W`, no empty list items, numbers with at most one leading zero, names
//!   in their own fields, steps within the field) the converse holds too; the forms the
//!   parser reads but the schema refuses on purpose (`rules::cron_pattern` lists them)
//!   are checked one by one.
//! - Time zones: the schema's enum is exactly the set of names
//!   [`flexcore_cron::parse_zone`] accepts: every listed name parses, and seeded near
//!   misses (case, whitespace, separators, truncations) parse exactly when listed.
//!
//! `FLEXCORE_FUZZ_SEED` replays a run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeSet;
use std::path::Path;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;

fn seed() -> u64 {
    std::env::var("FLEXCORE_FUZZ_SEED")
        .ok()
        .map(|s| {
            let s = s.trim();
            match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).unwrap(),
                None => s.parse().unwrap(),
            }
        })
        .unwrap_or(0x0f1e_c0de_2026_0014)
}

/// `schemas/commands/schedule.create.json`.
fn schedule_schema() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/commands/schedule.create.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// A standard validator of one property of the schedule schema (with the file's draft).
fn property(name: &str) -> jsonschema::Validator {
    let schema = schedule_schema();
    assert_eq!(
        schema["properties"]["cron"]["pattern"],
        flexcore_contracts::rules::cron_regex(),
        "the file states rules::cron_regex() (see schemas_up_to_date)"
    );
    let mut property = schema["properties"][name].clone();
    property["$schema"] = schema["$schema"].clone();
    jsonschema::validator_for(&property).unwrap()
}

/// One cron field's values.
struct Field {
    lo: u32,
    hi: u32,
    names: &'static [&'static str],
    dom: bool,
    dow: bool,
}

const MONTHS: &[&str] = &[
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

const SECONDS: Field = Field {
    lo: 0,
    hi: 59,
    names: &[],
    dom: false,
    dow: false,
};
const FIELDS: [Field; 5] = [
    SECONDS,
    Field { hi: 23, ..SECONDS },
    Field {
        lo: 1,
        hi: 31,
        dom: true,
        ..SECONDS
    },
    Field {
        lo: 1,
        hi: 12,
        names: MONTHS,
        ..SECONDS
    },
    Field {
        lo: 0,
        hi: 7,
        names: DAYS,
        dow: true,
        ..SECONDS
    },
];

/// Cron expressions from a seed: in the schema's notation (`canonical`), or with
/// everything else a hand might type.
struct Crons {
    rng: StdRng,
    canonical: bool,
}

impl Crons {
    /// A value of `field` (just outside it when `wild`), as a number or a name.
    fn value(&mut self, field: &Field, wild: bool) -> (u32, String) {
        let v = if wild {
            self.rng.random_range(field.lo.saturating_sub(2)..=field.hi + 2)
        } else {
            self.rng.random_range(field.lo..=field.hi)
        };
        let name = v
            .checked_sub(field.lo)
            .and_then(|i| field.names.get(i as usize))
            .filter(|_| self.rng.random_bool(0.4));
        let text = match name {
            Some(n) if self.rng.random_bool(0.3) => n.to_lowercase(),
            Some(n) => (*n).to_owned(),
            None if v < 10 && self.rng.random_bool(0.2) => format!("0{v}"),
            None if !self.canonical && self.rng.random_bool(0.1) => format!("00{v}"),
            None => v.to_string(),
        };
        (v, text)
    }

    fn step(&mut self, field: &Field, wild: bool) -> String {
        let span = field.hi - field.lo + 1;
        let (least, most) = match (wild, self.canonical) {
            (false, _) => (1, span),
            (true, true) => (0, span),
            (true, false) => (0, span + 3),
        };
        format!("/{}", self.rng.random_range(least..=most))
    }

    /// One list item: one the field allows, or (`wild`) anything of the notation.
    fn item(&mut self, field: &Field) -> String {
        let wild = self.rng.random_bool(0.2);
        let kinds = if wild { 0..12 } else { 2..7 };
        match self.rng.random_range(kinds) {
            0 => "*".into(),
            1 => "?".into(),
            2 => format!("*{}", self.step(field, wild)),
            3 | 4 => {
                let (a, start) = self.value(field, wild);
                let (b, mut end) = self.value(field, wild);
                if !wild && a > b {
                    return start;
                }
                // `SUN` ending a range is a documented refusal (the parser reads it as 7).
                if self.canonical && field.dow && end.eq_ignore_ascii_case("SUN") {
                    end = b.to_string();
                }
                if self.rng.random_bool(0.3) {
                    let step = self.step(field, wild);
                    format!("{start}-{end}{step}")
                } else {
                    format!("{start}-{end}")
                }
            }
            5 => {
                let (_, v) = self.value(field, wild);
                let step = self.step(field, wild);
                format!("{v}{step}")
            }
            6 if !wild && field.dom => (*["L", "15W", "1W", "31W"].choose(&mut self.rng).unwrap()).to_owned(),
            6 if !wild && field.dow => {
                let (v, text) = self.value(field, false);
                if v == 7 || self.rng.random_bool(0.5) {
                    format!("{}#{}", text, self.rng.random_range(1..=5))
                } else {
                    format!("{text}L")
                }
            }
            // `L` alone in the day of the week is a documented refusal (it never fires).
            7 if self.canonical && field.dow => "6L".into(),
            7 => "L".into(),
            8 => format!("{}W", self.value(field, wild).1),
            9 => {
                let (v, text) = self.value(field, wild);
                // `7L` is a documented refusal (the parser never fires it).
                if self.canonical && v == 7 && field.dow {
                    "6L".into()
                } else {
                    format!("{text}L")
                }
            }
            10 => format!("{}#{}", self.value(field, wild).1, self.rng.random_range(0..7)),
            11 => "LW".into(),
            _ => self.value(field, wild).1,
        }
    }

    fn field(&mut self, field: &Field) -> String {
        let whole = if field.dom || field.dow { "?" } else { "*" };
        match self.rng.random_range(0..10) {
            0 | 1 => return "*".into(),
            2 => return whole.into(),
            _ => {}
        }
        let n = match self.rng.random_range(0..10) {
            0..=5 => 1,
            6..=8 => 2,
            _ => 3,
        };
        let items: Vec<String> = (0..n).map(|_| self.item(field)).collect();
        let mut out = items.join(",");
        if !self.canonical {
            match self.rng.random_range(0..20) {
                0 => out.push(','),
                1 => out.insert(0, ','),
                2 => out = out.to_lowercase(),
                3 if field.dow => out.insert(0, '+'),
                4 => out = (*MONTHS.choose(&mut self.rng).unwrap()).to_owned(),
                5 => out = (*DAYS.choose(&mut self.rng).unwrap()).to_owned(),
                _ => {}
            }
        }
        out
    }

    fn next(&mut self) -> String {
        // 5 fields, 6 (seconds first), or a field too few or too many.
        let specs: Vec<&Field> = match self.rng.random_range(0..10) {
            0..=2 => [&SECONDS].into_iter().chain(&FIELDS).collect(),
            3 => FIELDS[..4].iter().collect(),
            4 => [&SECONDS].into_iter().chain(&FIELDS).chain([&SECONDS]).collect(),
            _ => FIELDS.iter().collect(),
        };
        let fields: Vec<String> = specs.into_iter().map(|f| self.field(f)).collect();
        if self.canonical {
            return fields.join(" ");
        }
        let separator = *[" ", " ", " ", "  ", "\t"].choose(&mut self.rng).unwrap();
        let mut out = fields.join(separator);
        match self.rng.random_range(0..10) {
            0 => out.insert(0, ' '),
            1 => out.push(' '),
            2 => out = "@daily".into(),
            3 => {
                let i = self.rng.random_range(0..out.len());
                if out.is_char_boundary(i) {
                    out.insert(i, *['x', '%', 'é', ':'].choose(&mut self.rng).unwrap());
                }
            }
            _ => {}
        }
        out
    }
}

#[test]
fn cron_expressions_the_schema_accepts_the_parser_accepts() {
    let seed = seed();
    let schema = property("cron");
    let mut refused_valid = Vec::new();
    let mut unlisted = Vec::new();
    let (mut both, mut neither) = (0, 0);
    for canonical in [true, false] {
        let mut crons = Crons {
            rng: StdRng::seed_from_u64(seed ^ u64::from(canonical)),
            canonical,
        };
        for _ in 0..20_000 {
            let cron = crons.next();
            let valid = schema.is_valid(&Value::String(cron.clone()));
            let parsed = flexcore_cron::parse_cron(&cron);
            match (valid, &parsed) {
                (true, Err(e)) => refused_valid.push(format!("{cron:?}: {e}")),
                (false, Ok(_)) if canonical => unlisted.push(cron),
                (true, Ok(_)) => both += 1,
                _ => neither += 1,
            }
        }
    }
    let seed_note = format!("reproduce with FLEXCORE_FUZZ_SEED={seed:#x}");
    assert!(
        refused_valid.is_empty(),
        "{} schema-valid crons the parser refuses ({seed_note}):\n{}",
        refused_valid.len(),
        refused_valid[..refused_valid.len().min(20)].join("\n")
    );
    assert!(
        unlisted.is_empty(),
        "{} crons in the schema's notation the parser accepts but the schema refuses ({seed_note}):\n{}",
        unlisted.len(),
        unlisted[..unlisted.len().min(20)].join("\n")
    );
    // Both sides are reached, or the comparison says little.
    assert!(
        both > 2_000 && neither > 2_000,
        "{both} accepted by both, {neither} by neither"
    );
}

#[test]
fn forms_the_schema_refuses_on_purpose_are_the_documented_ones() {
    let schema = property("cron");
    let documented = [
        ("0\t3 * * *", "a tab"),
        ("\t0 3 * * *", "whitespace around the expression"),
        ("0 3 * * * ", "whitespace around the expression"),
        ("0 3 l * *", "a lower-case L or W"),
        ("0 3 * * 5,", "an empty list item"),
        ("0 3 * * ,5", "an empty list item"),
        ("005 3 * * *", "more than one leading zero"),
        ("*/61 * * * *", "a step longer than the field"),
        ("0 3 * MON *", "a name in another field's position"),
        ("0 3 * * FRI-SUN", "SUN ending a range (the parser reads 7)"),
        ("0 3 * * +1", "a leading + on the day of the week"),
    ];
    for (cron, why) in documented {
        assert!(
            flexcore_cron::parse_cron(cron).is_ok(),
            "{cron:?} ({why}): the parser refuses it"
        );
        assert!(
            !schema.is_valid(&Value::from(cron)),
            "{cron:?} ({why}): the schema accepts it"
        );
    }
    // Read by the parser with another meaning than written: refused by the schema.
    for cron in [
        "0 0 * * SUN-SUN",
        "0 0 * * 0-SUN",
        "0 0 * * 7L",
        "0 0 * * L",
        "0 0 * * sunl",
    ] {
        assert!(!schema.is_valid(&Value::from(cron)), "{cron:?}: the schema accepts it");
    }
    for cron in [
        "0 0 * * SUNL",
        "0 0 * * 0L",
        "0 0 * * 7#1",
        "0 0 * * MON-7",
        "0 0 ? * 1,2",
    ] {
        assert!(schema.is_valid(&Value::from(cron)), "{cron:?}: the schema refuses it");
        assert!(
            flexcore_cron::parse_cron(cron).is_ok(),
            "{cron:?}: the parser refuses it"
        );
    }
}

/// Near misses of zone `name`.
fn near_misses(rng: &mut StdRng, name: &str) -> Vec<String> {
    let mut out = vec![
        name.to_lowercase(),
        name.to_uppercase(),
        format!(" {name}"),
        format!("{name} "),
        format!("{name}/"),
        name.replace('_', " "),
        name.replace('/', "-"),
        name.chars().skip(1).collect(),
        name.chars().take(name.chars().count().saturating_sub(1)).collect(),
    ];
    if let Some(i) = (1..name.len())
        .filter(|i| name.is_char_boundary(*i))
        .collect::<Vec<_>>()
        .choose(rng)
    {
        out.push(format!("{}{}", &name[..*i], &name[*i..].to_ascii_lowercase()));
    }
    out
}

#[test]
fn the_time_zone_enum_is_what_the_parser_accepts() {
    let schema = schedule_schema();
    let listed: BTreeSet<String> = schema["properties"]["timezone"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert!(listed.len() > 400, "{} zones listed", listed.len());
    let update = schedule_schema_of("schedule.update");
    let mut expected = schema["properties"]["timezone"]["enum"].as_array().unwrap().clone();
    expected.push(Value::Null);
    assert_eq!(
        update["properties"]["timezone"]["enum"].as_array(),
        Some(&expected),
        "schedule.update lists the same zones (and null)"
    );
    let validator = property("timezone");
    let mut wrong = Vec::new();
    let mut rng = StdRng::seed_from_u64(seed());
    let mut candidates: Vec<String> = listed.iter().cloned().collect();
    for name in &listed {
        candidates.extend(near_misses(&mut rng, name));
    }
    candidates.extend(
        [
            "",
            "Z",
            "+01:00",
            "GMT+1",
            "Etc/GMT+13",
            "Mars/Olympus",
            "localtime",
            "posixrules",
            "Factory",
        ]
        .map(String::from),
    );
    for candidate in candidates {
        let parses = flexcore_cron::parse_zone(&candidate).is_ok();
        let valid = validator.is_valid(&Value::from(candidate.as_str()));
        if parses != valid || valid != listed.contains(&candidate) {
            wrong.push(format!("{candidate:?}: parser {parses}, schema {valid}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn schedule_schema_of(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../schemas/commands/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}
