//! Durations on the command line: `30s`, `2m`, `500ms`, `1h`, `1m30s`, `1m 30s`, `0`, read
//! and written by `humantime`, with errors that say how to write one.

use std::time::Duration;

/// Parses a duration of one or more `<number><unit>` parts (`ms`, `s`, `m`, `h`, `d`, and
/// humantime's longer spellings), e.g. `30s`, `2m`, `500ms`, `1m30s`. A bare `0` is zero;
/// any other number needs a unit, so `30` is not silently read as seconds or ms.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let text = input.trim();
    humantime::parse_duration(text).map_err(|e| match e {
        _ if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) => {
            format!("{input:?} lacks a unit: use ms, s, m or h (e.g. {text}s)")
        }
        humantime::DurationError::UnknownUnit { unit, .. } => {
            format!("unknown unit {unit:?} in {input:?}: use ms, s, m or h")
        }
        other => format!("{input:?} is not a duration ({other}): write e.g. 30s, 2m, 500ms or 1m30s"),
    })
}

/// Formats a duration the way [`parse_duration`] reads it back (`30s`, `500ms`, `2m`,
/// `1m 30s`), for reports and recorded command lines.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_units_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(" 3s "), Ok(Duration::from_secs(3)));
    }

    #[test]
    fn zero_and_compounds_parse() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h2m3s"), Ok(Duration::from_secs(3723)));
    }

    #[test]
    fn bad_input_is_refused_with_a_hint() {
        for bad in ["", "s", "fast", "30", "5 parsecs", "3x", "-1s", "30s!"] {
            let error = parse_duration(bad).err();
            assert!(error.is_some(), "{bad:?} parsed");
        }
        let lacks_unit = parse_duration("30").err().unwrap_or_default();
        assert!(lacks_unit.contains("30s"), "{lacks_unit}");
        let unknown = parse_duration("3x").err().unwrap_or_default();
        assert!(unknown.contains("unknown unit \"x\""), "{unknown}");
    }

    #[test]
    fn formatting_round_trips() {
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(90), "1m 30s"),
            (Duration::from_secs(3600), "1h"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d));
        }
    }
}
