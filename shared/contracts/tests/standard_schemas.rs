//! The generated schemas (every file under `schemas/`) say their rules in standard JSON
//! Schema 2020-12 only, so any validator in any language enforces all of them (issue 14):
//!
//! - every keyword in a schema position is one of the 2020-12 vocabularies' (no
//!   `x-…`, no leftovers of another draft), and every `format` is a standard one (no
//!   `uint32`, `int64`, `double`, …: those say nothing to a validator);
//! - every integer states both bounds, within ±(2^53 − 1) (what every JSON parser reads
//!   exactly), and no type union hides an integer (some validators do not count `1.0` as
//!   an integer inside one);
//! - every `pattern` compiles, and uses only the part of ECMA-262 that regex engines read
//!   alike: `\uXXXX` and escaped punctuation, no `\d`/`\s`/`\w`/`\b` (whose meaning
//!   differs between engines), no lookaround or backreferences;
//! - every `$ref` is local or the 2020-12 meta-schema, and every file declares 2020-12.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;

use flexcore_contracts::rules::MAX_SAFE_INTEGER;
use serde_json::Value;

const DRAFT: &str = "https://json-schema.org/draft/2020-12/schema";

/// The keywords of the 2020-12 vocabularies (core, applicator, unevaluated, validation,
/// meta-data, format-annotation, content).
const KEYWORDS: &[&str] = &[
    "$schema",
    "$id",
    "$ref",
    "$anchor",
    "$dynamicRef",
    "$dynamicAnchor",
    "$vocabulary",
    "$comment",
    "$defs",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "dependentSchemas",
    "prefixItems",
    "items",
    "contains",
    "properties",
    "patternProperties",
    "additionalProperties",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "type",
    "enum",
    "const",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxContains",
    "minContains",
    "maxProperties",
    "minProperties",
    "required",
    "dependentRequired",
    "title",
    "description",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
    "examples",
    "format",
    "contentEncoding",
    "contentMediaType",
    "contentSchema",
];

/// The formats 2020-12 defines.
const FORMATS: &[&str] = &[
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

/// Keywords whose value is a map of subschemas, one subschema, or a list of them.
const SCHEMA_MAPS: &[&str] = &["properties", "patternProperties", "$defs", "dependentSchemas"];
const SCHEMA_ONE: &[&str] = &[
    "items",
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
];
const SCHEMA_LISTS: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems"];

/// Every subschema of `schema` (itself included) with its JSON pointer.
fn subschemas<'s>(schema: &'s Value, at: String, out: &mut Vec<(String, &'s Value)>) {
    let Some(map) = schema.as_object() else { return };
    out.push((at.clone(), schema));
    for (key, value) in map {
        let here = format!("{at}/{key}");
        if SCHEMA_MAPS.contains(&key.as_str()) {
            for (name, sub) in value.as_object().into_iter().flatten() {
                subschemas(sub, format!("{here}/{name}"), out);
            }
        } else if SCHEMA_ONE.contains(&key.as_str()) {
            subschemas(value, here, out);
        } else if SCHEMA_LISTS.contains(&key.as_str()) {
            for (i, sub) in value.as_array().into_iter().flatten().enumerate() {
                subschemas(sub, format!("{here}/{i}"), out);
            }
        }
    }
}

/// Every generated schema file as `(path under schemas/, JSON)`.
fn files() -> Vec<(String, Value)> {
    let files: Vec<(String, Value)> = flexcore_contracts::schema::all()
        .into_iter()
        .map(|(path, text)| (path, serde_json::from_str(&text).unwrap()))
        .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    for (path, generated) in &files {
        let on_disk: Value = serde_json::from_str(&std::fs::read_to_string(root.join(path)).unwrap()).unwrap();
        assert_eq!(&on_disk, generated, "schemas/{path} is stale (see schemas_up_to_date)");
    }
    assert!(files.len() > 50, "{} schema files", files.len());
    files
}

/// Why `pattern` is not portable, if it is not: every escape is `\uXXXX` or escaped
/// punctuation, and there is no lookaround, backreference or named group.
fn unportable(pattern: &str) -> Option<String> {
    for construct in ["(?=", "(?!", "(?<", "(?P", "(?>", "*+", "++", "?+"] {
        if pattern.contains(construct) {
            return Some(format!("uses {construct}"));
        }
    }
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            continue;
        }
        match chars.next() {
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                if hex.len() != 4 || !hex.chars().all(|h| h.is_ascii_hexdigit()) {
                    return Some(format!("\\u{hex} is not \\uXXXX"));
                }
            }
            Some(p) if p.is_ascii_punctuation() => {}
            other => return Some(format!("uses the escape \\{}", other.unwrap_or(' '))),
        }
    }
    None
}

#[test]
fn schemas_use_only_standard_keywords_and_formats() {
    let mut wrong = Vec::new();
    for (path, schema) in files() {
        if schema.get("$schema").and_then(Value::as_str) != Some(DRAFT) {
            wrong.push(format!("{path}: does not declare {DRAFT}"));
        }
        let mut all = Vec::new();
        subschemas(&schema, String::new(), &mut all);
        for (at, node) in all {
            for (key, value) in node.as_object().into_iter().flatten() {
                if !KEYWORDS.contains(&key.as_str()) {
                    wrong.push(format!("{path}#{at}: keyword {key:?} is not 2020-12"));
                }
                if key == "format" && !value.as_str().is_some_and(|f| FORMATS.contains(&f)) {
                    wrong.push(format!("{path}#{at}: format {value} is not a standard format"));
                }
                if key == "$ref" && !value.as_str().is_some_and(|r| r.starts_with("#/$defs/") || r == DRAFT) {
                    wrong.push(format!(
                        "{path}#{at}: $ref {value} is neither local nor the meta-schema"
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn integers_state_both_bounds_within_the_safe_range() {
    let safe = i128::from(MAX_SAFE_INTEGER);
    let mut wrong = Vec::new();
    let mut integers = 0;
    for (path, schema) in files() {
        let mut all = Vec::new();
        subschemas(&schema, String::new(), &mut all);
        for (at, node) in all {
            match node.get("type") {
                Some(Value::Array(types)) if types.iter().any(|t| t == "integer") => {
                    wrong.push(format!("{path}#{at}: integer inside a type union {types:?}"));
                }
                Some(Value::String(t)) if t == "integer" => {
                    integers += 1;
                    let bound = |key: &str| node.get(key).and_then(|v| v.as_i64().map(i128::from));
                    match (bound("minimum"), bound("maximum")) {
                        (Some(min), Some(max)) if -safe <= min && min <= max && max <= safe => {}
                        bounds => wrong.push(format!("{path}#{at}: integer bounds {bounds:?}")),
                    }
                }
                _ => {}
            }
        }
    }
    assert!(integers > 100, "only {integers} integers found");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn patterns_compile_and_are_portable() {
    let mut wrong = Vec::new();
    let mut patterns = 0;
    for (path, schema) in files() {
        let mut all = Vec::new();
        subschemas(&schema, String::new(), &mut all);
        for (at, node) in all {
            let Some(pattern) = node.get("pattern").and_then(Value::as_str) else {
                continue;
            };
            patterns += 1;
            if let Err(e) = fancy_regex::Regex::new(pattern) {
                wrong.push(format!("{path}#{at}: does not compile: {e}"));
            }
            if let Some(why) = unportable(pattern) {
                wrong.push(format!("{path}#{at}: {why}"));
            }
        }
    }
    assert!(patterns > 100, "only {patterns} patterns found");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_portability_check_catches_engine_specific_syntax() {
    for bad in [r"^\d+$", r"\s", r"(?=a)", r"(?<n>a)", r"\1", r"\u12"] {
        assert!(unportable(bad).is_some(), "{bad}");
    }
    for good in [r"^[^\u0000]*$", r"^sha256:[0-9a-f]{64}$", r"\{\$\.\*\?"] {
        assert_eq!(unportable(good), None, "{good}");
    }
}
