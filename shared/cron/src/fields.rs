//! Which field of a cron expression the parser refused, and why, in the operator's terms.
//!
//! The cron crate reports a bad field as `Component error: Number out of bounds.`, naming
//! neither the field nor what it allows. When it refuses an expression, each field is
//! parsed alone (the others `*`) to find the culprit, whose numbers are then checked against
//! the field's range: `minute field "61" is out of range 0–59`.

use croner::parser::{CronParser, Seconds};

/// One field of a cron expression: its name and the numbers it allows.
#[derive(Debug, Clone, Copy)]
struct Field {
    /// `minute`, `day-of-week`, …
    name: &'static str,
    /// Smallest number allowed.
    min: u32,
    /// Largest number allowed.
    max: u32,
    /// Named values also allowed, shown after the range.
    names: &'static str,
}

const SECOND: Field = Field {
    name: "second",
    min: 0,
    max: 59,
    names: "",
};
const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: "",
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: "",
};
const DAY_OF_MONTH: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: "",
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: " or JAN–DEC",
};
const DAY_OF_WEEK: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: " (0 and 7 are Sunday) or SUN–SAT",
};

/// Most occurrences of one weekday in a month (`MON#5`).
const MAX_NTH: u32 = 5;

/// Why the cron parser refused `expr` (of 5 or 6 fields), naming the field at fault when
/// one field alone is refused; `parser_error` otherwise.
pub(crate) fn explain(expr: &str, parser_error: &str) -> String {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let layout: &[Field] = if fields.len() == 6 {
        &[SECOND, MINUTE, HOUR, DAY_OF_MONTH, MONTH, DAY_OF_WEEK]
    } else {
        &[MINUTE, HOUR, DAY_OF_MONTH, MONTH, DAY_OF_WEEK]
    };
    if fields.len() != layout.len() {
        return parser_error.to_owned();
    }
    for (index, (text, field)) in fields.iter().zip(layout).enumerate() {
        let alone: Vec<&str> = (0..fields.len())
            .map(|i| if i == index { *text } else { "*" })
            .collect();
        if let Err(e) = parser().parse(&alone.join(" ")) {
            return describe(field, text, &e.to_string());
        }
    }
    parser_error.to_owned()
}

fn parser() -> CronParser {
    CronParser::builder().seconds(Seconds::Optional).build()
}

/// The refusal of one field: a number outside its range, a backwards range, a bad nth
/// weekday, or else the parser's words with what the field allows.
fn describe(field: &Field, text: &str, parser_error: &str) -> String {
    let name = field.name;
    let allowed = format!("{}–{}{}", field.min, field.max, field.names);
    for part in text.split(',') {
        let (value, nth) = part.split_once('#').map_or((part, None), |(v, n)| (v, Some(n)));
        if let Some(n) = nth.and_then(|n| n.parse::<u32>().ok()) {
            if !(1..=MAX_NTH).contains(&n) {
                return format!(
                    "{name} field {text:?}: #{n} is out of range 1–{MAX_NTH} (the nth such weekday of the month)"
                );
            }
        }
        let range = value.split_once('/').map_or(value, |(range, _step)| range);
        let range = range.trim_end_matches(['L', 'W', 'l', 'w']);
        let bounds: Vec<u32> = range.split('-').filter_map(|n| n.parse().ok()).collect();
        if let Some(out) = bounds.iter().find(|n| **n < field.min || **n > field.max) {
            return if part == text && bounds.len() == 1 && range == text {
                format!("{name} field {text:?} is out of range {allowed}")
            } else {
                format!("{name} field {text:?}: {out} is out of range {allowed}")
            };
        }
        if let [start, end] = bounds[..] {
            if start > end {
                return format!(
                    "{name} field {text:?}: the range {start}-{end} runs backwards (write the smaller number first)"
                );
            }
        }
    }
    let why = parser_error
        .strip_prefix("Component error: ")
        .unwrap_or(parser_error)
        .trim_end_matches('.');
    format!("{name} field {text:?} is invalid ({why}); it allows {allowed}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why(expr: &str) -> String {
        match parser().parse(expr) {
            Ok(_) => format!("{expr:?} parsed"),
            Err(e) => explain(expr, &e.to_string()),
        }
    }

    #[test]
    fn seconds_out_of_range_are_named() {
        assert_eq!(why("60 * * * * *"), r#"second field "60" is out of range 0–59"#);
    }

    #[test]
    fn minutes_out_of_range_are_named() {
        assert_eq!(why("61 * * * *"), r#"minute field "61" is out of range 0–59"#);
        assert_eq!(why("0 61 * * * *"), r#"minute field "61" is out of range 0–59"#);
        assert_eq!(why("5,75 * * * *"), r#"minute field "5,75": 75 is out of range 0–59"#);
    }

    #[test]
    fn hours_out_of_range_are_named() {
        assert_eq!(why("0 24 * * *"), r#"hour field "24" is out of range 0–23"#);
        assert_eq!(why("0 20-25 * * *"), r#"hour field "20-25": 25 is out of range 0–23"#);
        assert_eq!(
            why("0 */2,30/2 * * *"),
            r#"hour field "*/2,30/2": 30 is out of range 0–23"#
        );
    }

    #[test]
    fn days_of_month_out_of_range_are_named() {
        assert_eq!(why("0 0 0 * *"), r#"day-of-month field "0" is out of range 1–31"#);
        assert_eq!(why("0 0 32 * *"), r#"day-of-month field "32" is out of range 1–31"#);
        assert_eq!(
            why("0 0 32W * *"),
            r#"day-of-month field "32W": 32 is out of range 1–31"#
        );
    }

    #[test]
    fn months_out_of_range_are_named() {
        assert_eq!(why("0 0 1 13 *"), r#"month field "13" is out of range 1–12 or JAN–DEC"#);
        assert_eq!(why("0 0 1 0 *"), r#"month field "0" is out of range 1–12 or JAN–DEC"#);
    }

    #[test]
    fn days_of_week_out_of_range_are_named() {
        assert_eq!(
            why("0 0 * * 8"),
            r#"day-of-week field "8" is out of range 0–7 (0 and 7 are Sunday) or SUN–SAT"#
        );
        assert_eq!(
            why("0 0 * * 1#6"),
            r#"day-of-week field "1#6": #6 is out of range 1–5 (the nth such weekday of the month)"#
        );
    }

    #[test]
    fn backwards_ranges_and_other_refusals_still_name_the_field() {
        assert_eq!(
            why("0 5-2 * * *"),
            r#"hour field "5-2": the range 5-2 runs backwards (write the smaller number first)"#
        );
        let step = why("*/0 * * * *");
        assert!(
            step.starts_with(r#"minute field "*/0" is invalid (Step cannot be zero); it allows 0–59"#),
            "{step}"
        );
        let letters = why("0 0 * * FOO");
        assert!(
            letters.starts_with(r#"day-of-week field "FOO" is invalid"#),
            "{letters}"
        );
    }

    #[test]
    fn valid_expressions_are_untouched() {
        assert_eq!(
            why("*/5 0-23 1,15 JAN-DEC MON-FRI"),
            r#""*/5 0-23 1,15 JAN-DEC MON-FRI" parsed"#
        );
        assert_eq!(explain("61 * * *", "four fields"), "four fields");
    }
}
