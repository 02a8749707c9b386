//! The `*_ms` keys: a whole number of milliseconds in the files and variables (as
//! documented), or a duration `humantime` reads (`30s`, `1m 30s`, `500ms`); a
//! `std::time::Duration` in Rust.

use std::time::Duration;

use serde::de::{Deserializer, Error, Visitor};

/// Deserialises a `*_ms` key.
pub fn millis<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(Millis)
}

struct Millis;

impl Visitor<'_> for Millis {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a number of milliseconds or a duration such as 30s")
    }

    fn visit_u64<E: Error>(self, ms: u64) -> Result<Duration, E> {
        Ok(Duration::from_millis(ms))
    }

    fn visit_i64<E: Error>(self, ms: i64) -> Result<Duration, E> {
        u64::try_from(ms)
            .map(Duration::from_millis)
            .map_err(|_| E::custom(format!("{ms} ms: a duration cannot be negative")))
    }

    fn visit_str<E: Error>(self, text: &str) -> Result<Duration, E> {
        let text = text.trim();
        if let Ok(ms) = text.parse::<u64>() {
            return Ok(Duration::from_millis(ms));
        }
        humantime::parse_duration(text).map_err(|e| {
            E::custom(format!(
                "{text:?} is neither milliseconds nor a duration such as 30s ({e})"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    struct Key {
        #[serde(deserialize_with = "millis")]
        wait_ms: Duration,
    }

    fn read(yaml: &str) -> Result<Duration, String> {
        config::Config::builder()
            .add_source(config::File::from_str(yaml, config::FileFormat::Yaml))
            .build()
            .and_then(config::Config::try_deserialize::<Key>)
            .map(|k| k.wait_ms)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn milliseconds_and_durations_are_read() {
        assert_eq!(read("wait_ms: 500"), Ok(Duration::from_millis(500)));
        assert_eq!(read("wait_ms: '750'"), Ok(Duration::from_millis(750)));
        assert_eq!(read("wait_ms: 30s"), Ok(Duration::from_secs(30)));
        assert_eq!(read("wait_ms: 1m 30s"), Ok(Duration::from_secs(90)));
        let negative = read("wait_ms: -5").unwrap_err();
        assert!(negative.contains("cannot be negative"), "{negative}");
        let bad = read("wait_ms: soon").unwrap_err();
        assert!(bad.contains("neither milliseconds nor a duration"), "{bad}");
    }
}
