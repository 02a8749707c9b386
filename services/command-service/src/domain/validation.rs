//! Checks that need stored state or more than a JSON Schema can say: whether a plugin's
//! config schema compiles, whether a step config satisfies its plugin's schema (and gives
//! secret properties only as references, and references only inside string values),
//! whether a cron expression has slots. Every
//! error says what is wrong and how to fix it, and never echoes a value that might be a
//! secret. (Rules of a body alone are in its generated schema, checked on decoding.)

use flexcore_contracts::model::ScheduleSpec;
use flexcore_contracts::ErrorReason;
use serde_json::{Map, Value};

use super::DomainError;

/// Marker that starts a secret reference inside a config string.
const SECRET_PREFIX: &str = "${secret:";

/// Compiles a plugin's config JSON Schema. It must be an object (a boolean schema says
/// nothing useful about a config) and a valid schema of its declared draft (2020-12 when
/// it declares none). The command's schema has checked it against the 2020-12
/// meta-schema already; what fails here (a pattern that is no regular expression, a
/// `$ref` to nowhere, an unknown `$schema`) is a rule no meta-schema states, refused with
/// its own reason.
pub fn compile_config_schema(schema: &Value) -> Result<jsonschema::Validator, DomainError> {
    if !schema.is_object() {
        return Err(DomainError::validation(
            ErrorReason::InvalidValue,
            "/config_schema",
            "config_schema must be a JSON Schema object, e.g. {\"type\":\"object\",\"properties\":{…}}",
        ));
    }
    jsonschema::validator_for(schema).map_err(|e| {
        DomainError::validation(
            ErrorReason::ConfigSchemaUnusable,
            "/config_schema",
            format!(
                "config_schema is not a usable JSON Schema: {e} (at {}); fix the schema",
                pointer_or_root(e.schema_path.as_str())
            ),
        )
        .with("schema_path", e.schema_path.as_str())
    })
}

/// Checks one step's config: well-formed secret references everywhere, secret properties
/// (`writeOnly` / `x-secret` in the schema) given only as references, then the schema.
/// `step` is the 0-based index of the step (in the command's `steps`), `plugin` its
/// `name@version`.
pub fn check_step_config(
    step: usize,
    plugin: &str,
    schema: Option<&Value>,
    config: &Map<String, Value>,
) -> Result<(), DomainError> {
    let config = Value::Object(config.clone());
    let mut path = Vec::new();
    check_secret_syntax(step, &config, &mut path)?;
    let Some(schema) = schema else { return Ok(()) };
    check_secret_properties(step, schema, schema, &config, &mut path, 0)?;
    let validator = compile_config_schema(schema).map_err(|_| {
        DomainError::validation(
            ErrorReason::ConfigInvalid,
            format!("/steps/{step}/config"),
            format!(
                "step {step}: plugin {plugin} has an unusable config schema; register a new version with a valid one"
            ),
        )
    })?;
    let errors: Vec<(String, String)> = validator
        .iter_errors(&config)
        .map(|e| (error_pointer(&e), e.to_string()))
        .collect();
    let Some((pointer, first)) = errors.first() else {
        return Ok(());
    };
    Err(DomainError::validation(
        ErrorReason::ConfigInvalid,
        format!("/steps/{step}/config{pointer}"),
        format!(
            "step {step}: config{} is invalid: {first}; fix it to match the config schema of {plugin}",
            at_pointer(pointer)
        ),
    )
    .with(
        "errors",
        errors
            .iter()
            .map(|(p, m)| serde_json::json!({"pointer": p, "message": m}))
            .collect::<Vec<_>>(),
    ))
}

/// Where an error of a config's schema is: the value that breaks the rule, or for an
/// unknown key (`additionalProperties` / `unevaluatedProperties` false) the first such
/// key, not the object holding it, so the error points at the key to remove or fix.
fn error_pointer(error: &jsonschema::ValidationError<'_>) -> String {
    use jsonschema::error::ValidationErrorKind;
    let at = error.instance_path.as_str().to_owned();
    match &error.kind {
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => match unexpected.first() {
            Some(key) => format!("{at}/{}", key.replace('~', "~0").replace('/', "~1")),
            None => at,
        },
        _ => at,
    }
}

/// The secret name if `value` is exactly one reference `${secret:NAME}`.
pub fn secret_reference(value: &str) -> Option<&str> {
    let name = value.strip_prefix(SECRET_PREFIX)?.strip_suffix('}')?;
    is_secret_name(name).then_some(name)
}

/// `NAME` of `${secret:NAME}`: `[A-Za-z_][A-Za-z0-9_]*`, like an environment variable.
pub fn is_secret_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A step of a path into a config.
enum Seg {
    Key(String),
    Index(usize),
}

/// `config.db.password`, `config.hosts[0]`: how a person writes the field.
fn dotted(path: &[Seg]) -> String {
    let mut s = String::from("config");
    for seg in path {
        match seg {
            Seg::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// The RFC 6901 pointer of a path (`/db/password`).
fn pointer(path: &[Seg]) -> String {
    path.iter()
        .map(|seg| match seg {
            Seg::Key(k) => format!("/{}", k.replace('~', "~0").replace('/', "~1")),
            Seg::Index(i) => format!("/{i}"),
        })
        .collect()
}

fn at_pointer(pointer: &str) -> String {
    if pointer.is_empty() {
        String::new()
    } else {
        format!(" at {pointer}")
    }
}

fn pointer_or_root(pointer: &str) -> &str {
    if pointer.is_empty() {
        "the root"
    } else {
        pointer
    }
}

/// Refuses a secret reference in a field that is no step config value (a pipeline's
/// owner, description, tags): nothing resolves it there, and such fields are names and
/// labels shown everywhere. `pointer` is the field's JSON pointer, `field` how a person
/// writes it.
pub fn check_no_secret_reference(pointer: &str, field: &str, text: &str) -> Result<(), DomainError> {
    if !text.contains(SECRET_PREFIX) {
        return Ok(());
    }
    Err(DomainError::validation(
        ErrorReason::InvalidValue,
        pointer,
        format!(
            "{field} holds a secret reference: ${{secret:NAME}} is only allowed inside string values of a step's config"
        ),
    ))
}

/// Every `${secret:` in every string must open a well-formed reference; embedding one in a
/// longer string (`postgres://u:${secret:PW}@db`) is fine. Object keys may hold none: a
/// key is where a name goes (e.g. a stream name), and names a plugin reports (stream
/// names in counters) end up in events and read models.
fn check_secret_syntax(step: usize, value: &Value, path: &mut Vec<Seg>) -> Result<(), DomainError> {
    match value {
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(start) = rest.find(SECRET_PREFIX) {
                let after = &rest[start + SECRET_PREFIX.len()..];
                let end = after.find('}');
                let name = end.map_or(after, |e| &after[..e]);
                if end.is_none() || !is_secret_name(name) {
                    // Show only the broken reference, not the whole string (it may hold credentials).
                    let shown: String = rest[start..]
                        .chars()
                        .take(SECRET_PREFIX.len() + 40)
                        .take_while(|c| *c != '}')
                        .collect();
                    return Err(DomainError::validation(
                        ErrorReason::InvalidValue,
                        format!("/steps/{step}/config{}", pointer(path)),
                        format!(
                            "step {step}: {} has a malformed secret reference {:?}: write ${{secret:NAME}} where NAME is letters, digits and '_' and does not start with a digit",
                            dotted(path),
                            shown + if end.is_some() { "}" } else { "" }
                        ),
                    ));
                }
                rest = &after[end.map_or(after.len(), |e| e + 1)..];
            }
            Ok(())
        }
        Value::Array(items) => items.iter().enumerate().try_for_each(|(i, v)| {
            path.push(Seg::Index(i));
            let r = check_secret_syntax(step, v, path);
            path.pop();
            r
        }),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            path.push(Seg::Key(k.clone()));
            let r = if k.contains(SECRET_PREFIX) {
                Err(DomainError::validation(
                    ErrorReason::InvalidValue,
                    format!("/steps/{step}/config{}", pointer(path)),
                    format!(
                        "step {step}: a key of {} holds a secret reference: ${{secret:NAME}} is only allowed inside string values, not in keys (where names go)",
                        dotted(&path[..path.len() - 1])
                    ),
                ))
            } else {
                check_secret_syntax(step, v, path)
            };
            path.pop();
            r
        }),
        _ => Ok(()),
    }
}

/// Follows local `$ref`s (`#/$defs/…`) so secret markers behind a reference are found.
fn resolve<'a>(root: &'a Value, mut schema: &'a Value) -> &'a Value {
    for _ in 0..16 {
        match schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
        {
            Some(p) => match root.pointer(p) {
                Some(target) => schema = target,
                None => return schema,
            },
            None => return schema,
        }
    }
    schema
}

fn is_secret_schema(schema: &Value) -> bool {
    schema.get("writeOnly") == Some(&Value::Bool(true)) || schema.get("x-secret") == Some(&Value::Bool(true))
}

/// Walks the config alongside its schema; a value whose schema is marked secret must be
/// exactly one `${secret:NAME}` reference, so no secret ever lands in the event log.
/// `depth` bounds the walk through combinators and references, which do not descend.
fn check_secret_properties(
    step: usize,
    root: &Value,
    schema: &Value,
    value: &Value,
    path: &mut Vec<Seg>,
    depth: u32,
) -> Result<(), DomainError> {
    if depth > 64 {
        return Ok(());
    }
    let schema = resolve(root, schema);
    if is_secret_schema(schema) {
        if value.as_str().and_then(secret_reference).is_some() {
            return Ok(());
        }
        let field = dotted(path);
        return Err(DomainError::validation(
            ErrorReason::LiteralSecret,
            format!("/steps/{step}/config{}", pointer(path)),
            format!("step {step}: {field} is a secret: pass it as ${{secret:NAME}}, not a value"),
        ));
    }
    // A property may be marked secret in any branch of a combinator: honour every branch.
    for key in ["allOf", "anyOf", "oneOf"] {
        for sub in schema.get(key).and_then(Value::as_array).into_iter().flatten() {
            check_secret_properties(step, root, sub, value, path, depth + 1)?;
        }
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, v) in map {
                let sub = props.and_then(|p| p.get(k)).or(additional);
                if let Some(sub) = sub {
                    path.push(Seg::Key(k.clone()));
                    let r = check_secret_properties(step, root, sub, v, path, depth + 1);
                    path.pop();
                    r?;
                }
            }
        }
        Value::Array(items) => {
            let prefix = schema.get("prefixItems").and_then(Value::as_array);
            let rest = schema.get("items").filter(|i| i.is_object());
            for (i, v) in items.iter().enumerate() {
                if let Some(sub) = prefix.and_then(|p| p.get(i)).or(rest) {
                    path.push(Seg::Index(i));
                    let r = check_secret_properties(step, root, sub, v, path, depth + 1);
                    path.pop();
                    r?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Checks a whole schedule spec (also after an update merged new fields in): the cron
/// expression and zone must make a calendar. The schema's pattern and zone list already
/// admit only expressions and zones that do, so this refuses nothing a valid body holds.
pub fn check_schedule_spec(spec: &ScheduleSpec) -> Result<(), DomainError> {
    flexcore_cron::Calendar::new(spec)
        .map(|_| ())
        .map_err(|e| DomainError::validation(ErrorReason::InvalidValue, format!("/{}", e.field()), e.to_string()))
}
