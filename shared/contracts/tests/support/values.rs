//! Valid values of the contract's fields, from a seed: labels of every kind of character
//! and of the longest length (in characters, not bytes), names, versions, timestamps of
//! every form the schema admits (lower case, offsets, fractions, the first and last
//! instants of the years 0000-9999), crons with names, steps and lists, time zones,
//! digests, opaque data, and plugin config schemas with configs they accept.

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// Config schemas a plugin may have, with a config each accepts. The last ones are valid
/// JSON Schema by the 2020-12 meta-schema but cannot be compiled (a pattern that is no
/// regular expression, a `$ref` to nowhere, another draft's keyword form).
pub const CONFIG_SCHEMAS: &[(&str, &str)] = &[
    (
        r#"{"type":"object","properties":{"path":{"type":"string","minLength":1},"password":{"type":"string","writeOnly":true}},"required":["path"]}"#,
        r#"{"path":"/data/in.csv","password":"${secret:DB_PASSWORD}"}"#,
    ),
    (
        r#"{"type":"object","additionalProperties":{"type":"integer","maximum":100}}"#,
        r#"{"a":1,"b":100}"#,
    ),
    (
        r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"object","properties":{"n":{"type":"number","exclusiveMinimum":0}}}"#,
        r#"{"n":0.5}"#,
    ),
    (
        r##"{"$defs":{"host":{"type":"string","pattern":"^[a-z.]+$"}},"type":"object","properties":{"host":{"$ref":"#/$defs/host"},"token":{"x-secret":true}}}"##,
        r#"{"host":"db.internal","token":"${secret:TOKEN}"}"#,
    ),
    ("{}", "{}"),
    (
        r#"{"type":"object","properties":{"p":{"type":"string","pattern":"("}}}"#,
        "{}",
    ),
    (
        r##"{"type":"object","properties":{"q":{"$ref":"#/$defs/missing"}}}"##,
        "{}",
    ),
    (
        r#"{"$schema":"http://json-schema.org/draft-04/schema#","type":"object","properties":{"n":{"type":"number","minimum":0,"exclusiveMinimum":1}}}"#,
        "{}",
    ),
];

/// How many of [`CONFIG_SCHEMAS`] compile.
pub const USABLE_CONFIG_SCHEMAS: usize = 5;

/// Valid cron expressions of every form the schema admits.
pub const CRONS: &[&str] = &[
    "* * * * *",
    "0 3 * * *",
    "*/15 * * * *",
    "0 0 1 * *",
    "30 2 * * MON-FRI",
    "0 9-17/2 * JAN,jul,Dec sat",
    "0 0 L * ?",
    "0 0 15W * ?",
    "0 0 ? * 5L",
    "0 0 ? * MON#2",
    "*/10 * * * * *",
    "0 0 0 29 2 *",
    "05 04 * * 0,7",
    "0 0 31 * *",
    "59 23 31 12 6",
    "*/60 * * * *",
    "0 0 * * SUNL",
];

/// IANA zones, odd ones included.
pub const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Etc/GMT+12",
    "America/Argentina/ComodRivadavia",
    "US/Pacific",
    "Zulu",
];

/// Labels: short, spaced, non-ASCII, the longest allowed in characters (not bytes).
pub fn label(rng: &mut StdRng) -> String {
    match rng.random_range(0..10) {
        0 => "é".repeat(200),
        1 => " padded ".to_owned(),
        2 => "Jürgen Weiß".to_owned(),
        3 => "数据团队".to_owned(),
        4 => "🚀 launch".to_owned(),
        5 => "a".to_owned(),
        6 => format!("team-{}", rng.random_range(0..1000)),
        7 => "x\u{a0}y".to_owned(),
        _ => format!("runner-{:x}", rng.random::<u32>()),
    }
}

/// A free text of up to `max` characters (reasons, descriptions).
pub fn text(rng: &mut StdRng, max: usize) -> String {
    match rng.random_range(0..6) {
        0 => String::new(),
        1 => "ünïcødé ✓ text".chars().cycle().take(max).collect(),
        2 => "line one\nline two\ttabbed \\ \"quoted\"".to_owned(),
        _ => format!("reason {}", rng.random::<u16>()),
    }
}

/// A lowercase name of `a-z 0-9 - _` of up to `max` characters.
pub fn name(rng: &mut StdRng, max: usize) -> String {
    const FIRST: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    const REST: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-_";
    let len = if rng.random_bool(0.1) {
        max
    } else {
        rng.random_range(4..=12)
    };
    let mut out = String::with_capacity(len);
    out.push(char::from(*FIRST.choose(rng).unwrap_or(&b'a')));
    while out.len() < len {
        out.push(char::from(*REST.choose(rng).unwrap_or(&b'a')));
    }
    out
}

/// A semantic version.
pub fn semver(rng: &mut StdRng) -> String {
    let core = format!(
        "{}.{}.{}",
        rng.random_range(0..20),
        rng.random_range(0..20),
        rng.random_range(0..100)
    );
    match rng.random_range(0..4) {
        0 => format!("{core}-beta.{}", rng.random_range(0..9)),
        1 => format!("{core}-rc.1+build.{}", rng.random_range(0..99)),
        _ => core,
    }
}

/// An RFC 3339 timestamp the schema accepts: any calendar day of 2000-2099 (now and then
/// the first or last instants of years 0000-9999), a fraction of 0-9 digits, `Z` or an
/// offset, sometimes in lowercase.
pub fn timestamp(rng: &mut StdRng) -> String {
    if rng.random_bool(0.03) {
        let extremes = [
            "0000-01-01T00:00:00Z",
            "0000-01-01T00:00:00-23:59",
            "0000-01-02T00:00:00+23:59",
            "9999-12-31T23:59:59.999999999Z",
            "9999-12-31T23:59:59+23:59",
            "9999-12-30T23:59:59-23:59",
        ];
        return (*extremes.choose(rng).unwrap_or(&extremes[0])).to_owned();
    }
    let year = rng.random_range(2000..2100);
    let month = rng.random_range(1..=12u32);
    let leap = year % 4 == 0;
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    let day = rng.random_range(1..=days);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rng.random_range(0..24),
        rng.random_range(0..60),
        rng.random_range(0..60)
    );
    if rng.random_bool(0.3) {
        let digits = rng.random_range(1..=9);
        out.push('.');
        for _ in 0..digits {
            out.push(char::from(b'0' + rng.random_range(0..10u8)));
        }
    }
    match rng.random_range(0..4) {
        0 => out.push_str(&format!(
            "{}{:02}:{:02}",
            if rng.random_bool(0.5) { '+' } else { '-' },
            rng.random_range(0..24),
            rng.random_range(0..60)
        )),
        1 => out = out.replace('T', "t") + "z",
        _ => out.push('Z'),
    }
    out
}

/// A cron expression the schema admits and the parser accepts.
pub fn cron(rng: &mut StdRng) -> String {
    if rng.random_bool(0.5) {
        return (*CRONS.choose(rng).unwrap_or(&"* * * * *")).to_owned();
    }
    let field = |rng: &mut StdRng, lo: u32, hi: u32| -> String {
        match rng.random_range(0..5) {
            0 => "*".to_owned(),
            1 => format!("*/{}", rng.random_range(1..=hi - lo + 1)),
            2 => {
                let a = rng.random_range(lo..=hi);
                format!("{a}-{}", rng.random_range(a..=hi))
            }
            3 => format!("{},{}", rng.random_range(lo..=hi), rng.random_range(lo..=hi)),
            _ => rng.random_range(lo..=hi).to_string(),
        }
    };
    let fields = [
        field(rng, 0, 59),
        field(rng, 0, 23),
        field(rng, 1, 31),
        field(rng, 1, 12),
        field(rng, 0, 7),
    ];
    let seconds = if rng.random_bool(0.2) {
        format!("{} ", field(rng, 0, 59))
    } else {
        String::new()
    };
    format!("{seconds}{}", fields.join(" "))
}

/// A module digest.
pub fn digest(rng: &mut StdRng) -> String {
    let hex: String = (0..32).map(|_| format!("{:02x}", rng.random::<u8>())).collect();
    format!("sha256:{hex}")
}

/// A random UUID.
pub fn uuid(rng: &mut StdRng) -> Uuid {
    uuid::Builder::from_random_bytes(rng.random()).into_uuid()
}

/// An integer of 1..=`max`, often a bound.
pub fn int(rng: &mut StdRng, min: u64, max: u64) -> Value {
    Value::from(match rng.random_range(0..4) {
        0 => min,
        1 => max,
        _ => rng.random_range(min..=max),
    })
}

/// Largest integer the contract accepts anywhere.
pub const MAX_SAFE: u64 = flexcore_contracts::rules::MAX_SAFE_INTEGER;

/// Opaque client data (a STATE): nested objects and arrays, numbers of every JSON form
/// a 64-bit float holds, strings with escapes and non-ASCII text.
pub fn opaque(rng: &mut StdRng, depth: u32) -> Value {
    let leaf = |rng: &mut StdRng| -> Value {
        match rng.random_range(0..8) {
            0 => Value::Null,
            1 => Value::Bool(rng.random()),
            2 => Value::from(rng.random::<i64>()),
            3 => Value::from(rng.random::<u64>()),
            4 => json!(rng.random::<f64>() * 1e300),
            5 => Value::from(timestamp(rng)),
            6 => Value::from("ëscaped \" \\ / \u{1} \u{2028} 𝄞"),
            _ => Value::from(format!("v{}", rng.random::<u16>())),
        }
    };
    if depth == 0 || rng.random_bool(0.3) {
        return leaf(rng);
    }
    if rng.random_bool(0.5) {
        let n = rng.random_range(0..4);
        Value::Array((0..n).map(|_| opaque(rng, depth - 1)).collect())
    } else {
        let n = rng.random_range(0..4);
        let mut map = Map::new();
        for i in 0..n {
            let key = match i {
                0 => "bookmarks".to_owned(),
                1 => "ключ".to_owned(),
                _ => format!("k{}", rng.random::<u16>()),
            };
            map.insert(key, opaque(rng, depth - 1));
        }
        Value::Object(map)
    }
}

/// Records per stream.
pub fn counters(rng: &mut StdRng) -> Value {
    let n = rng.random_range(0..4);
    let mut map = Map::new();
    for i in 0..n {
        map.insert(format!("stream_{i}"), int(rng, 0, MAX_SAFE));
    }
    Value::Object(map)
}

/// A config schema (JSON text) and a config it accepts; `usable` picks one that compiles.
pub fn config_schema(rng: &mut StdRng, usable: bool) -> (&'static str, &'static str) {
    let n = if usable {
        USABLE_CONFIG_SCHEMAS
    } else {
        CONFIG_SCHEMAS.len()
    };
    CONFIG_SCHEMAS[rng.random_range(0..n)]
}
