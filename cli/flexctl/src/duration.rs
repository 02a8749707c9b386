//! Durations on the command line: `30s`, `2m`, `500ms`, `1h`, `1m30s`, `1.5s`, `0`.
//!
//! A tiny humantime-like parser, so that no crate is needed for three options.

use std::time::Duration;

/// Parses a duration made of one or more `<number><unit>` parts (units `ms`, `s`, `m`,
/// `h`; numbers may have a fraction), e.g. `30s`, `2m`, `500ms`, `1m30s`. A bare `0` is
/// zero; any other number needs a unit, so `30` is not silently read as seconds or ms.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    let invalid = || format!("{input:?} is not a duration: write e.g. 30s, 2m, 500ms or 1m30s");
    if s.is_empty() {
        return Err(invalid());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
            return Err(invalid());
        }
        let value: f64 = number.parse().map_err(|_| invalid())?;
        let unit_seconds = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("{input:?} lacks a unit: use ms, s, m or h (e.g. {number}s)")),
            other => return Err(format!("unknown unit {other:?} in {input:?}: use ms, s, m or h")),
        };
        let part = Duration::try_from_secs_f64(value * unit_seconds).map_err(|_| invalid())?;
        total = total.checked_add(part).ok_or_else(invalid)?;
        rest = tail;
    }
    Ok(total)
}

/// Formats a duration the way [`parse_duration`] reads it back (`30s`, `500ms`, `2m`,
/// `1m30s`), for reports and recorded command lines.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    if d.subsec_millis() != 0 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    match (secs / 3600, secs % 3600 / 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
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
    fn zero_fractions_and_compounds_parse() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h2m3s"), Ok(Duration::from_secs(3723)));
    }

    #[test]
    fn bad_input_is_refused_with_a_hint() {
        for bad in [
            "",
            "s",
            "fast",
            "30",
            "5 parsecs",
            "3d",
            "1.s",
            ".5s",
            "1..2s",
            "-1s",
            "30s!",
        ] {
            let error = parse_duration(bad).err();
            assert!(error.is_some(), "{bad:?} parsed");
        }
        let lacks_unit = parse_duration("30").err().unwrap_or_default();
        assert!(lacks_unit.contains("30s"), "{lacks_unit}");
        let unknown = parse_duration("3d").err().unwrap_or_default();
        assert!(unknown.contains("unknown unit \"d\""), "{unknown}");
    }

    #[test]
    fn formatting_round_trips() {
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d));
        }
    }
}
