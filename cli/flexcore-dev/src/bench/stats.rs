//! What one timed phase measured: counters, a latency histogram, and the figures the
//! report takes from them.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Lowest latency the histogram tells apart, in microseconds.
const LOWEST_US: u64 = 1;
/// Highest latency the histogram holds (larger ones saturate), in microseconds: 60 s.
const HIGHEST_US: u64 = 60_000_000;
/// Significant digits kept: 0.1 % relative error.
const SIGNIFICANT_DIGITS: u8 = 3;

/// Counters and latencies of one phase, for one client or merged over all of them.
/// Only operations completing inside the measured window are counted.
#[derive(Debug, Clone)]
pub struct PhaseStats {
    /// Successful operations (accepted commands, committed inserts).
    pub ok: u64,
    /// Refusals by error code (`invalid_state`, …); commands only.
    pub rejected: BTreeMap<String, u64>,
    /// Operations that got no answer, by kind (`timed_out`, `no_responders`, a SQLSTATE…).
    pub failed: BTreeMap<String, u64>,
    /// Latency of every operation that got an answer (ok or refused), in microseconds.
    pub latency_us: Histogram<u64>,
    /// The first refusal or failure seen (measured or not), to explain a failed phase.
    pub first_failure: Option<String>,
    /// Length of the measured window.
    pub window: Duration,
}

impl PhaseStats {
    /// Empty statistics for a window of length `window`.
    pub fn new(window: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            ok: 0,
            rejected: BTreeMap::new(),
            failed: BTreeMap::new(),
            latency_us: Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
                .context("creating a latency histogram")?,
            window,
            first_failure: None,
        })
    }

    /// Counts a success that took `latency`.
    pub fn record_ok(&mut self, latency: Duration) {
        self.ok += 1;
        self.record_latency(latency);
    }

    /// Counts a refusal with error code `code` that took `latency`.
    pub fn record_rejected(&mut self, code: &str, latency: Duration) {
        *self.rejected.entry(code.to_owned()).or_default() += 1;
        self.record_latency(latency);
    }

    /// Counts an operation that failed without an answer.
    pub fn record_failed(&mut self, kind: &str) {
        *self.failed.entry(kind.to_owned()).or_default() += 1;
    }

    /// Keeps `detail` if it is the first failure of the phase.
    pub fn remember_failure(&mut self, detail: impl FnOnce() -> String) {
        if self.first_failure.is_none() {
            self.first_failure = Some(detail());
        }
    }

    fn record_latency(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.saturating_record(us.max(LOWEST_US));
    }

    /// Adds another client's statistics of the same phase.
    pub fn merge(&mut self, other: &PhaseStats) -> anyhow::Result<()> {
        self.ok += other.ok;
        for (code, n) in &other.rejected {
            *self.rejected.entry(code.clone()).or_default() += n;
        }
        for (kind, n) in &other.failed {
            *self.failed.entry(kind.clone()).or_default() += n;
        }
        self.latency_us
            .add(&other.latency_us)
            .context("merging latency histograms")?;
        if self.first_failure.is_none() {
            self.first_failure.clone_from(&other.first_failure);
        }
        Ok(())
    }

    /// Successes per second of the measured window.
    pub fn per_second(&self) -> f64 {
        let seconds = self.window.as_secs_f64();
        if seconds > 0.0 {
            self.ok as f64 / seconds
        } else {
            0.0
        }
    }

    /// Refusals and failures together.
    pub fn errors(&self) -> u64 {
        self.rejected.values().chain(self.failed.values()).sum()
    }

    /// The latency percentiles.
    pub fn latency(&self) -> LatencySummary {
        LatencySummary::of(&self.latency_us)
    }
}

/// Latency percentiles of a phase, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Latencies recorded.
    pub samples: u64,
}

impl LatencySummary {
    /// Extracts the percentiles of a histogram of microseconds (all zero when empty).
    pub fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if histogram.is_empty() {
            return Self {
                p50_ms: 0.0,
                p95_ms: 0.0,
                p99_ms: 0.0,
                max_ms: 0.0,
                samples: 0,
            };
        }
        Self {
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p95_ms: ms(histogram.value_at_quantile(0.95)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            max_ms: ms(histogram.max()),
            samples: histogram.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        // The histogram keeps 3 significant digits.
        (a - b).abs() <= b * 0.001 + 1e-9
    }

    #[test]
    fn percentiles_come_out_in_milliseconds() {
        let mut s = PhaseStats::new(Duration::from_secs(2)).unwrap();
        for ms in 1..=100 {
            s.record_ok(Duration::from_millis(ms));
        }
        let l = s.latency();
        assert_eq!(l.samples, 100);
        assert!(close(l.p50_ms, 50.0), "{l:?}");
        assert!(close(l.p95_ms, 95.0), "{l:?}");
        assert!(close(l.p99_ms, 99.0), "{l:?}");
        assert!(close(l.max_ms, 100.0), "{l:?}");
        assert!(close(s.per_second(), 50.0));
    }

    #[test]
    fn an_empty_phase_reports_zeros() {
        let s = PhaseStats::new(Duration::from_secs(1)).unwrap();
        assert_eq!(s.latency().samples, 0);
        assert_eq!(s.latency().p99_ms, 0.0);
        assert_eq!(s.per_second(), 0.0);
    }

    #[test]
    fn sub_microsecond_and_huge_latencies_are_kept() {
        let mut s = PhaseStats::new(Duration::from_secs(1)).unwrap();
        s.record_ok(Duration::from_nanos(10));
        s.record_ok(Duration::from_secs(3600));
        let l = s.latency();
        assert_eq!(l.samples, 2);
        assert!(l.max_ms >= 59_000.0, "{l:?}");
    }

    #[test]
    fn merging_adds_counts_errors_and_latencies() {
        let mut a = PhaseStats::new(Duration::from_secs(1)).unwrap();
        a.record_ok(Duration::from_millis(1));
        a.record_rejected("invalid_state", Duration::from_millis(2));
        let mut b = PhaseStats::new(Duration::from_secs(1)).unwrap();
        b.record_ok(Duration::from_millis(3));
        b.record_failed("timed_out");
        b.record_rejected("invalid_state", Duration::from_millis(4));
        b.remember_failure(|| "first".to_owned());
        b.remember_failure(|| "second".to_owned());
        a.merge(&b).unwrap();
        assert_eq!(a.ok, 2);
        assert_eq!(a.rejected.get("invalid_state"), Some(&2));
        assert_eq!(a.failed.get("timed_out"), Some(&1));
        assert_eq!(a.errors(), 3);
        assert_eq!(a.latency().samples, 4);
        assert_eq!(a.first_failure.as_deref(), Some("first"));
    }
}
