//! Values that break rules: strings with U+0000, controls, blanks and non-ASCII text,
//! numbers at the machine's limits and spelt every way JSON allows (and some it does not),
//! near misses of UUIDs and timestamps, crons and time zones good and bad, keys a client
//! might add, values at and around a schema's bounds, nested garbage.

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Number, Value};

/// Strings that break something somewhere.
pub const HOSTILE: &[&str] = &[
    "",
    " ",
    "\u{0}",
    "x\u{0}y",
    "\u{7}bell",
    "\t",
    "a\nb",
    "é",
    "日本語",
    "🚀",
    "\u{feff}",
    "\u{200b}",
    "\u{2028}",
    "\u{85}x",
    "\u{a0}",
    "null",
    "true",
    "1",
    "-1",
    "1e400",
    "[]",
    "{}",
    "${secret:",
    "${secret:A}",
    "${secret:1A}",
    "$${secret:A}",
    "${secret:A-B}",
    "${secre",
    "x${secret:_b}y${",
    "/",
    "/usr/bin/true",
    "relative/path",
    "sha256:",
    "csv@1.0.0",
    "csv@01.0.0",
    "CSV",
    "-lead",
    "a_b-c",
    "1.2",
    "1.0.0-",
    "1.0.0+",
    "1.0.0-beta..1",
    "process",
    "wasm",
    "extractor",
    "Extractor",
    "asc",
    "name",
    "updated",
    "runs",
    "lease_expired",
    "buffer_one",
    "schedule",
    "backfill",
    "0",
    "ff",
    "0g",
    "abc",
];

/// Cron expressions: valid ones, and ones a parser or the schema refuses.
pub const CRONS: &[&str] = &[
    "* * * * *",
    "0 3 * * *",
    "*/10 * * * * *",
    "0 0 L * ?",
    "0 0 ? * MON#2",
    "0 0 * * 5L",
    "0 0 15W * ?",
    "61 * * * *",
    "* * * *",
    "* * * * * * *",
    "1,* * * * *",
    "* * ?,1 * *",
    "*,*/5 * * * *",
    "@daily",
    "* * * * MON-SUN",
    "* * * * SUN-SUN",
    "*/0 * * * *",
    "*/61 * * * *",
    "5, * * * *",
    " * * * * *",
    "* * * * * ",
    "*\t* * * *",
    "*  *  * * *",
    "0 0 31 2 *",
    "0 0 * * 8",
    "L * * * *",
    "0 0 L * 5L",
    "0 0 ? ? ?",
    "0 0 * * 7L",
    "0 0 0W * *",
    "0 0 32W * *",
    "0 0 * * 1#6",
    "0 0 * * MON#0",
    "0 0 1-31/31 * *",
    "0 0 * JAN-DEC/12 *",
    "* * * * mon",
    "0 0 * * ?L",
    "0 0 LW * *",
    "0 0 * * L",
    "5-1 * * * *",
    "0 0 * * +1",
    "0 0 * 13 *",
    "00 00 01 01 00",
    "000 * * * *",
    "",
];

/// Time zone names: IANA ones, and near misses.
pub const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "US/Pacific",
    "Etc/GMT-14",
    "EST5EDT",
    "Europe/Kyiv",
    "Europe/Kiev",
    "utc",
    "Europe/berlin",
    "Mars/Olympus",
    "",
    " UTC",
    "UTC ",
    "+01:00",
    "Z",
    "GMT+1",
    "Etc/GMT+13",
    "Etc/GMT-15",
    "posixrules",
    "Factory",
    "localtime",
    "US/Pacific-New",
    "Europe/Berlin/",
    "europe/berlin",
    "EUROPE/BERLIN",
];

/// Keys a client might add by mistake (or malice).
pub const KEYS: &[&str] = &[
    "colour",
    "",
    " ",
    "\u{0}",
    "ID",
    "id ",
    "Name",
    "pipeline_Id",
    "__proto__",
    "constructor",
    "$schema",
    "command_id",
    "expected_version",
    "min_position",
    "extra",
    "ключ",
    "a/b",
    "~0",
    "~",
];

/// Numbers at the machine's limits, as JSON values.
pub fn machine_numbers() -> Vec<Value> {
    vec![
        json!(0),
        json!(-1),
        json!(1),
        json!(i32::MAX),
        json!(1u64 << 31),
        json!(u32::MAX),
        json!(1u64 << 32),
        json!((1u64 << 53) - 1),
        json!(1u64 << 53),
        json!((1u64 << 53) + 1),
        json!(i64::MAX),
        json!(1u64 << 63),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(18_446_744_073_709_551_616.0f64),
        json!(1.0f64),
        json!(1.5f64),
        json!(-0.0f64),
        json!(1000.0f64),
        json!(0.1f64),
        json!(1e-7f64),
        json!(1e308f64),
        json!(-1e308f64),
        json!(4_294_967_296.0f64),
        json!(9_007_199_254_740_991.0f64),
        json!(9_007_199_254_740_992.0f64),
        json!(-9_007_199_254_740_991.0f64),
    ]
}

/// Spellings of integer `n` a JSON parser reads as the same number (or, `-0`, as zero).
pub fn spellings(n: &Number) -> Vec<String> {
    let text = n.to_string();
    let mut out = vec![
        format!("{text}.0"),
        format!("{text}e0"),
        format!("{text}E+0"),
        format!("{text}0e-1"),
        format!("{text}.000"),
    ];
    if text == "0" {
        out.push("-0".into());
        out.push("-0.0".into());
    }
    if let Some(stripped) = text.strip_suffix("000") {
        out.push(format!("{stripped}e3"));
    }
    out
}

/// Spellings that no parser reads as a number a double holds, or that are not JSON.
pub const NOT_NUMBERS: &[&str] = &[
    "1e400",
    "-1e400",
    "123456789012345678901234567890e400",
    "NaN",
    "Infinity",
    "-Infinity",
    "+1",
    "01",
    ".5",
    "1.",
    "0x10",
    "1_000",
];

/// `n − 1`, `n`, `n + 1` and `n` written as a float, as JSON numbers.
pub fn around(n: &Number) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(i) = n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from)) {
        for d in [-1i128, 0, 1] {
            let m = i + d;
            out.push(match (u64::try_from(m), i64::try_from(m)) {
                (Ok(u), _) => json!(u),
                (_, Ok(i)) => json!(i),
                _ => json!(m as f64),
            });
        }
        out.push(json!(i as f64));
        out.push(json!(i as f64 + 0.5));
    } else if let Some(f) = n.as_f64() {
        out.extend([json!(f), json!(f - 1e-9), json!(f + 1e-9)]);
    }
    out
}

/// A string of `n` characters, multi-byte ones when `wide`.
pub fn string_of(n: u64, wide: bool) -> String {
    let unit = if wide { "é" } else { "a" };
    unit.repeat(usize::try_from(n).unwrap_or(0))
}

/// Near misses of a canonical UUID.
pub fn uuid_variants(id: &str) -> Vec<String> {
    let simple = id.replace('-', "");
    vec![
        simple.clone(),
        format!("{{{id}}}"),
        format!("urn:uuid:{id}"),
        format!(" {id}"),
        format!("{id} "),
        id.to_uppercase(),
        format!("{}-{}", &simple[..12], &simple[12..]),
        id[..id.len() - 1].to_owned(),
        format!("{id}0"),
        id.replacen(|c: char| c.is_ascii_hexdigit(), "g", 1),
        "00000000-0000-0000-0000-000000000000".to_owned(),
        "ffffffff-ffff-ffff-ffff-ffffffffffff".to_owned(),
    ]
}

/// Near misses of an RFC 3339 timestamp, and valid extremes.
pub fn timestamp_variants(ts: &str) -> Vec<String> {
    vec![
        ts.replacen('T', " ", 1),
        format!(" {ts}"),
        format!("{ts} "),
        ts.to_lowercase(),
        ts.trim_end_matches(['Z', 'z']).to_owned(),
        "2023-02-29T00:00:00Z".into(),
        "2024-02-29T00:00:00Z".into(),
        "1900-02-29T00:00:00Z".into(),
        "2000-02-29T00:00:00Z".into(),
        "2026-04-31T00:00:00Z".into(),
        "2026-11-24T24:00:00Z".into(),
        "2026-11-24T23:60:00Z".into(),
        "2026-12-31T23:59:60Z".into(),
        "2026-11-24T10:00:00.1234567891Z".into(),
        "2026-11-24T10:00:00.123456789Z".into(),
        "2026-11-24T10:00:00+24:00".into(),
        "2026-11-24T10:00:00+01:60".into(),
        "2026-11-24T10:00:00+0100".into(),
        "2026-11-24T10:00Z".into(),
        "2026-1-24T10:00:00Z".into(),
        "0000-01-01T00:00:00Z".into(),
        "0000-01-01T00:00:00+23:59".into(),
        "0001-01-01T00:00:00+23:59".into(),
        "9999-12-31T23:59:59Z".into(),
        "9999-12-31T23:59:59-23:59".into(),
        "9998-12-31T23:59:59-23:59".into(),
        "+10000-01-01T00:00:00Z".into(),
        "-0001-01-01T00:00:00Z".into(),
        "2026-11-24".into(),
        "1764000000".into(),
    ]
}

/// Nested garbage `depth` levels deep.
pub fn garbage(rng: &mut StdRng, depth: u32) -> Value {
    (0..depth).fold(json!("\u{0}🚀"), |inner, i| match (i + rng.random_range(0..2)) % 3 {
        0 => json!([inner, null, -0.0]),
        1 => json!({ "": inner, "\u{0}": 1 }),
        _ => json!({ "a": [inner], "b": {} }),
    })
}
