//! The contract's rules as data: bounds and patterns that both the generated JSON Schemas
//! (`schemas/`) and the services enforce, so a client that validates against the schemas
//! is never refused for a rule it could not see.
//!
//! Patterns are ECMA-262 regular expressions (the dialect JSON Schema prescribes) written
//! in the subset that Rust's `regex`/`fancy-regex` and most other engines read alike:
//! anchored, character classes with `\uXXXX` escapes, non-capturing groups, no `\d`/`\s`
//! (whose meaning differs between engines) and no lookaround.

/// Largest integer any integer field accepts: 2^53 − 1, the largest integer every JSON
/// parser (JavaScript's included) reads exactly. Positions and versions never get near it.
pub const MAX_SAFE_INTEGER: u64 = 9_007_199_254_740_991;

/// A UUID in its canonical hyphenated form (either case).
pub const UUID_PATTERN: &str = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// The months of 30 days and February of a common year, with their days.
macro_rules! month_days {
    () => {
        "(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8])"
    };
}
/// A time of day: seconds 00-59, an optional fraction of 1-9 digits.
macro_rules! time_of_day {
    () => {
        "[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,9})?"
    };
}
/// An offset from UTC of less than a day.
macro_rules! offset {
    () => {
        "(?:[01][0-9]|2[0-3]):[0-5][0-9]"
    };
}

/// An RFC 3339 timestamp with a valid calendar date (leap years included) of the years
/// 0000-9999, seconds 00-59, an optional fraction of 1-9 digits and `Z` or a `±hh:mm`
/// offset. No spaces. On 0000-01-01 the offset is not ahead of UTC and on 9999-12-31 not
/// behind it, so that every instant is one of those years in UTC too (the form services
/// write it back in).
pub const TIMESTAMP_PATTERN: &str = concat!(
    "^(?:(?:",
    // 0001-9998: any day.
    "(?:000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])",
    "-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|",
    month_days!(),
    ")",
    // 0000 but its first day, 9999 but its last.
    "|0000-(?:01-(?:0[2-9]|[12][0-9]|3[01])|(?:0[3578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|",
    month_days!(),
    ")",
    "|9999-(?:(?:0[13578]|10)-(?:0[1-9]|[12][0-9]|3[01])|12-(?:0[1-9]|[12][0-9]|30)|",
    month_days!(),
    ")",
    // 29 February of a leap year.
    "|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)-02-29)",
    time_of_day!(),
    "(?:[Zz]|[+-]",
    offset!(),
    ")",
    "|0000-01-01",
    time_of_day!(),
    "(?:[Zz]|[+-]00:00|-",
    offset!(),
    ")",
    "|9999-12-31",
    time_of_day!(),
    "(?:[Zz]|[+-]00:00|\\+",
    offset!(),
    "))$"
);

/// Any proper prefix of `{secret:` (including the empty one).
macro_rules! secret_prefix {
    () => {
        "(?:\\{(?:s(?:e(?:c(?:r(?:e(?:t)?)?)?)?)?)?)?"
    };
}

/// Any text without NUL (PostgreSQL cannot store U+0000 in text or jsonb).
pub const TEXT_PATTERN: &str = "^[^\\u0000]*$";

/// An RFC 6901 JSON pointer (`""` or `/a/0/b~1c`). Its tokens are the keys of a body as
/// written, so they may hold any character, U+0000 included.
pub const JSON_POINTER_PATTERN: &str = "^(?:/(?:[^~/]|~[01])*)*$";

/// A string inside a step's config: no NUL, and every `${secret:` opens a well-formed
/// reference `${secret:NAME}` (NAME: letters, digits, `_`, not starting with a digit).
///
/// Written without lookaround (a `$` starts a chain that either breaks off the
/// `${secret:` prefix with another character or completes a whole reference), so every
/// engine matches it in linear time.
pub const CONFIG_STRING_PATTERN: &str = concat!(
    "^(?:[^$\\u0000]|\\$(?:",
    secret_prefix!(),
    "\\$)*(?:",
    "[^{$\\u0000]|\\{[^s$\\u0000]|\\{s[^e$\\u0000]|\\{se[^c$\\u0000]|\\{sec[^r$\\u0000]",
    "|\\{secr[^e$\\u0000]|\\{secre[^t$\\u0000]|\\{secret[^:$\\u0000]",
    "|\\{secret:[A-Za-z_][A-Za-z0-9_]*\\}))*",
    "(?:\\$(?:",
    secret_prefix!(),
    "\\$)*",
    secret_prefix!(),
    ")?$"
);

/// A plugin name: 1-64 characters of `a-z 0-9 - _`, starting with a letter or digit.
pub const PLUGIN_NAME_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,63}$";
/// A pipeline name: 1-128 characters of `a-z 0-9 - _`, starting with a letter or digit.
pub const PIPELINE_NAME_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,127}$";

/// The core of a semantic version 2.0 (semver.org's grammar, without capture groups).
macro_rules! semver_core {
    () => {
        concat!(
            "(?:0|[1-9][0-9]*)\\.(?:0|[1-9][0-9]*)\\.(?:0|[1-9][0-9]*)",
            "(?:-(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(?:\\.(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*)?",
            "(?:\\+[0-9a-zA-Z-]+(?:\\.[0-9a-zA-Z-]+)*)?"
        )
    };
}

/// A semantic version (`1.2.3`, `1.0.0-beta.1+build.5`), at most [`MAX_VERSION_CHARS`].
pub const VERSION_PATTERN: &str = concat!("^", semver_core!(), "$");
/// Longest version.
pub const MAX_VERSION_CHARS: u64 = 64;
/// A plugin reference `name@version`.
pub const PLUGIN_REF_PATTERN: &str = concat!("^[a-z0-9][a-z0-9_-]{0,63}@", semver_core!(), "$");
/// Longest plugin reference (name, `@`, version).
pub const MAX_PLUGIN_REF_CHARS: u64 = 64 + 1 + MAX_VERSION_CHARS;

/// A module digest: `sha256:` and 64 lowercase hex digits.
pub const DIGEST_PATTERN: &str = "^sha256:[0-9a-f]{64}$";

/// Characters a label may not contain: the C0 and C1 control characters.
const CONTROL_CLASS: &str = "\\u0000-\\u001f\\u007f-\\u009f";
/// Characters that do not make a label non-blank: controls, and the whitespace of
/// ECMA-262's `\s` (spelled out, so every engine agrees).
const BLANK_CLASS: &str =
    "\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff";

/// A label (owner, tag, runner id): printable characters, not all blank; length by
/// [`MAX_LABEL_CHARS`].
pub fn label_pattern() -> String {
    format!("^[^{CONTROL_CLASS}]*[^{BLANK_CLASS}][^{CONTROL_CLASS}]*$")
}
/// Longest label, in characters.
pub const MAX_LABEL_CHARS: u64 = 200;

/// Whether `c` is a control character (what [`label_pattern`] refuses anywhere).
pub fn is_control(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}')
}

/// Whether `c` is blank (what [`label_pattern`] needs one character besides).
pub fn is_blank(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{20}' | '\u{7f}'..='\u{a0}' | '\u{1680}' | '\u{2000}'..='\u{200a}'
        | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}' | '\u{feff}')
}

/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: u64 = 4000;
/// Longest reason (pause, archive, deprecate, cancel, skip), in characters.
pub const MAX_REASON_CHARS: u64 = 1000;
/// Longest path (executables and granted directories), in characters.
pub const MAX_PATH_CHARS: u64 = 4096;
/// Longest filter string of a list query, in characters.
pub const MAX_FILTER_CHARS: u64 = 200;
/// Longest list cursor, in characters.
pub const MAX_CURSOR_CHARS: u64 = 2048;
/// An absolute path (starts with `/`), without NUL.
pub const ABSOLUTE_PATH_PATTERN: &str = "^/[^\\u0000]*$";

/// Most tags of a pipeline.
pub const MAX_TAGS: u64 = 50;
/// Fewest steps of a pipeline (an extractor and a loader).
pub const MIN_STEPS: u64 = 2;
/// Most steps of a pipeline.
pub const MAX_STEPS: u64 = 32;
/// Most concurrently active runs a pipeline may allow.
pub const MAX_ACTIVE_RUNS: u64 = 1000;
/// Most attempts a retry policy may allow.
pub const MAX_ATTEMPTS: u64 = 100;
/// Most catch-up slots a schedule may fire at once.
pub const MAX_CATCHUP_CAP: u64 = 1000;
/// Largest jitter: one day.
pub const MAX_JITTER_SECONDS: u64 = 86_400;
/// Longest lease a runner may ask for: one day.
pub const MAX_LEASE_SECONDS: u64 = 86_400;
/// Most slots in one `schedule.miss_slots`.
pub const MAX_MISSED_SLOTS: u64 = 10_000;
/// Most streams in one set of counters.
pub const MAX_STREAMS: u64 = 10_000;
/// Most hosts, environment names or directories in a plugin's grants.
pub const MAX_GRANTS: u64 = 64;
/// Largest page of a list query.
pub const MAX_PAGE: u64 = 1000;

/// A cron expression: 5 fields (minute hour day-of-month month day-of-week) or 6 (a
/// leading seconds field), separated by spaces. A field is `*`, `?` (day fields only), or
/// a comma-separated list of `*/step`, numbers, ascending ranges `a-b` (each optionally
/// `/step`), month and weekday names (`JAN`, `MON`, any case), `L` and `nW` in the day of
/// the month, `nL` (`n` 0-6) and `n#k` in the day of the week. A weekday range does not
/// end in `SUN` (write `7`).
///
/// Every expression it matches is one the schedule calendar's parser (`shared/cron`,
/// croner) accepts, with the meaning written. Refused because the parser refuses them: a
/// bare `*` or `?` inside a list (`1,*`). Refused because the parser reads them otherwise:
/// `SUN` ending a range (read as 7, so `SUN-SUN` is every day), `7L` and `L` alone in the
/// day of the week (never fire). Refused although the parser reads them, to keep one
/// notation: tabs and spaces around the expression, `l`/`w` in lower case, empty list
/// items (`5,`), numbers with more than one leading zero, steps longer than the field
/// (`*/61`), names in another field's position, and a leading `+` on the day of the week.
/// (`shared/cron/tests/schema_rules.rs` checks both directions.)
pub fn cron_pattern() -> String {
    let field = |f: &CronField| f.pattern();
    let sec = field(&SECONDS);
    format!(
        "^(?:{sec} +)?{} +{} +{} +{} +{}$",
        field(&MINUTES),
        field(&HOURS),
        field(&DAYS),
        field(&MONTHS),
        field(&WEEKDAYS)
    )
}

/// [`cron_pattern`], built once.
pub fn cron_regex() -> &'static str {
    static PATTERN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATTERN.get_or_init(cron_pattern)
}

/// Longest cron expression, in characters.
pub const MAX_CRON_CHARS: u64 = 512;

/// One cron field's grammar.
pub(crate) struct CronField {
    /// Smallest value.
    pub lo: u32,
    /// Largest value.
    pub hi: u32,
    /// Names of the values from `lo` on (months `JAN`…, weekdays `SUN`…).
    pub names: &'static [&'static str],
    /// `?`, `L` and `nW` (day of month).
    pub day_of_month: bool,
    /// `?`, `nL` and `n#k` (day of week).
    pub day_of_week: bool,
}

pub(crate) const SECONDS: CronField = CronField {
    lo: 0,
    hi: 59,
    names: &[],
    day_of_month: false,
    day_of_week: false,
};
pub(crate) const MINUTES: CronField = SECONDS;
pub(crate) const HOURS: CronField = CronField { hi: 23, ..SECONDS };
pub(crate) const DAYS: CronField = CronField {
    lo: 1,
    hi: 31,
    day_of_month: true,
    ..SECONDS
};
pub(crate) const MONTHS: CronField = CronField {
    lo: 1,
    hi: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
    ..SECONDS
};
pub(crate) const WEEKDAYS: CronField = CronField {
    lo: 0,
    hi: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    day_of_week: true,
    ..SECONDS
};

impl CronField {
    /// A number of `from..=to` (one leading zero allowed) or the name of one.
    fn value(&self, from: u32, to: u32) -> String {
        let mut alternatives = vec![numbers(from, to)];
        alternatives.extend(
            self.names
                .iter()
                .zip(self.lo..)
                .filter(|(_, v)| (from..=to).contains(v))
                .map(|(name, _)| any_case(name)),
        );
        format!("(?:{})", alternatives.join("|"))
    }

    /// An ascending range `a-b`: for each start, the ends not below it. No weekday range
    /// ends in `SUN`: the parser reads it there as 7 (`0-SUN` would be every day).
    fn range(&self) -> String {
        let alternatives: Vec<String> = (self.lo..=self.hi)
            .map(|a| {
                let mut start = vec![number(a)];
                if let Some(name) = a.checked_sub(self.lo).and_then(|i| self.names.get(i as usize)) {
                    start.push(any_case(name));
                }
                let end = if self.day_of_week && a == self.lo {
                    format!("(?:{}|{})", numbers(a, self.hi), self.value(a + 1, self.hi))
                } else {
                    self.value(a, self.hi)
                };
                format!("(?:{})-{end}", start.join("|"))
            })
            .collect();
        format!("(?:{})", alternatives.join("|"))
    }

    /// One item of a list (a bare `*` or `?` is a whole field, never an item: the parser
    /// refuses `1,*`).
    fn item(&self) -> String {
        let steps = numbers(1, self.hi - self.lo + 1);
        let step = format!("(?:/{steps})?");
        let mut alternatives = vec![
            format!("\\*/{steps}"),
            format!("{}{step}", self.range()),
            format!("{}{step}", self.value(self.lo, self.hi)),
        ];
        if self.day_of_month {
            alternatives.push("L".into());
            alternatives.push(format!("{}W", numbers(1, 31)));
        }
        if self.day_of_week {
            // 7 is Sunday everywhere but here: the parser never fires `7L`.
            alternatives.push(format!("{}L", self.value(self.lo, 6)));
            alternatives.push(format!("{}#[1-5]", self.value(self.lo, self.hi)));
        }
        format!("(?:{})", alternatives.join("|"))
    }

    /// The whole field: `*`, `?` in the day fields, or a comma-separated list of items.
    pub(crate) fn pattern(&self) -> String {
        let item = self.item();
        let whole = if self.day_of_month || self.day_of_week {
            "\\*|\\?"
        } else {
            "\\*"
        };
        format!("(?:{whole}|{item}(?:,{item})*)")
    }
}

/// A name in any case: `[Jj][Aa][Nn]`.
fn any_case(name: &str) -> String {
    name.chars()
        .map(|c| format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase()))
        .collect()
}

/// One number, with an optional leading zero when it has one digit.
fn number(n: u32) -> String {
    if n < 10 {
        format!("0?{n}")
    } else {
        n.to_string()
    }
}

/// Every number from `lo` to `hi` (at most 99), one leading zero allowed on one digit.
fn numbers(lo: u32, hi: u32) -> String {
    let mut alternatives = Vec::new();
    // One digit: 0?[lo-9].
    if lo <= 9 {
        let top = hi.min(9);
        alternatives.push(if lo == top {
            format!("0?{lo}")
        } else {
            format!("0?[{lo}-{top}]")
        });
    }
    // Two digits, by tens.
    for tens in (lo.max(10) / 10)..=(hi / 10) {
        if tens == 0 {
            continue;
        }
        let first = (tens * 10).max(lo) % 10;
        let last = ((tens * 10 + 9).min(hi)) % 10;
        if tens * 10 + first > hi {
            continue;
        }
        alternatives.push(if first == last {
            format!("{tens}{first}")
        } else {
            format!("{tens}[{first}-{last}]")
        });
    }
    format!("(?:{})", alternatives.join("|"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, s: &str) -> bool {
        fancy_regex::Regex::new(pattern)
            .unwrap_or_else(|e| unreachable!("{e}"))
            .is_match(s)
            .unwrap_or(false)
    }

    #[test]
    fn number_ranges_are_exact() {
        for lo in 0..=31u32 {
            for hi in lo..=60 {
                let p = format!("^{}$", numbers(lo, hi));
                for n in 0..=99u32 {
                    assert_eq!(matches(&p, &n.to_string()), (lo..=hi).contains(&n), "{lo}..{hi} {n}");
                }
            }
        }
    }

    #[test]
    fn timestamps_follow_the_calendar() {
        for ok in [
            "2026-11-24T10:00:00Z",
            "2024-02-29T00:00:00.123456789+01:00",
            "2000-02-29t23:59:59z",
            "1999-12-31T23:59:59-23:59",
            "0000-01-01T00:00:00Z",
            "0000-01-01T00:00:00-23:59",
            "0000-01-02T00:00:00+23:59",
            "0004-02-29T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
            "9999-12-31T23:59:59+23:59",
            "9999-12-30T23:59:59-23:59",
        ] {
            assert!(matches(TIMESTAMP_PATTERN, ok), "{ok}");
        }
        for bad in [
            " 2026-11-24T10:00:00Z",
            "2026-11-24T10:00:00Z ",
            "2026-11-24 10:00:00Z",
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-11-24T24:00:00Z",
            "2026-11-24T10:00:60Z",
            "2026-11-24T10:00:00",
            "2026-11-24T10:00:00.1234567890Z",
            "0000-01-01T00:00:00+00:01",
            "9999-12-31T23:59:59-00:01",
            "0000-02-29T00:00:00Z",
            "9999-02-29T00:00:00Z",
            "+10000-01-01T00:00:00Z",
        ] {
            assert!(!matches(TIMESTAMP_PATTERN, bad), "{bad}");
        }
    }

    #[test]
    fn labels_need_one_printable_non_blank_character() {
        let p = label_pattern();
        for ok in ["team-a", " a ", "é", "a\u{feff}"] {
            assert!(matches(&p, ok), "{ok:?}");
        }
        for bad in ["", " ", "\u{feff}", "a\nb", "\u{0}", "\u{85}x"] {
            assert!(!matches(&p, bad), "{bad:?}");
        }
    }

    #[test]
    fn secret_references_in_config_strings() {
        for ok in [
            "plain",
            "$HOME",
            "${other}",
            "postgres://u:${secret:PW}@db",
            "${secret:A}${secret:_b1}",
        ] {
            assert!(matches(CONFIG_STRING_PATTERN, ok), "{ok:?}");
        }
        for bad in ["${secret:", "${secret:1A}", "${secret:A", "x${secret:A-B}", "\u{0}"] {
            assert!(!matches(CONFIG_STRING_PATTERN, bad), "{bad:?}");
        }
    }
}
