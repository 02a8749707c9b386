//! Prometheus metrics of every FlexCore service, served by the admin server
//! ([`crate::admin`]) as `GET /metrics` in the Prometheus text format (0.0.4).
//!
//! Crate: `prometheus-client`, the Prometheus project's own Rust client. Its handles are
//! plain atomics (a histogram is a short, rarely contended mutex), there is no global
//! recorder to install, no background upkeep and no HTTP listener of its own, and it
//! encodes the classic text format we serve through axum. (`metrics` +
//! `metrics-exporter-prometheus` would add a facade with a key look-up per call, a
//! periodic upkeep task for histograms, and a larger dependency tree.)
//!
//! # Layout
//! - here: the process-wide registry, [`render`], and [`Counters2`], a counter family
//!   with two free-form labels whose handles are cached per label pair.
//! - [`groups`]: the metric families by service ([`commands`], [`store`],
//!   [`projections`], [`runner`], [`scheduler`], [`gateway`]). Each group registers itself on first
//!   use, so a service exposes only its own families (plus the process metrics).
//! - `process`: `process_*` metrics from Linux `/proc` at scrape time.
//!
//! Hot paths keep the handles they got (a `Counter` or `Histogram` is an `Arc` around
//! atomics): recording is then an atomic add, with no allocation and no look-up.

pub mod groups;
mod process;

use std::collections::HashMap;
use std::sync::LazyLock;
use std::sync::{Mutex, PoisonError, RwLock};

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

pub use groups::{
    commands, gateway, projections, runner, scheduler, store, BusySlot, CommandMetrics, GatewayMetrics,
    ProjectionMetrics, RunnerMetrics, SchedulerMetrics, StoreMetrics,
};
pub use prometheus_client::metrics::counter::Counter as CounterHandle;
pub use prometheus_client::metrics::histogram::Histogram as HistogramHandle;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The one registry of the process: the process collector, then each group as it is
/// first used.
static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(process::ProcessCollector));
    Mutex::new(registry)
});

/// Adds families to the process registry (called once per group).
fn register(add: impl FnOnce(&mut Registry)) {
    let mut registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    add(&mut registry);
}

/// Every registered metric in the Prometheus text format (0.0.4).
pub fn render() -> Result<String, std::fmt::Error> {
    let registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    let mut out = String::with_capacity(16 * 1024);
    prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

/// A counter family with two labels of open-ended values (pipeline names, event types,
/// …). The handle of a label pair is cached: after its first use, [`Counters2::inc_by`]
/// is a read lock, two string-keyed look-ups and an atomic add, with no allocation.
#[derive(Debug)]
pub struct Counters2 {
    keys: [&'static str; 2],
    family: Family<[(&'static str, String); 2], Counter>,
    cache: RwLock<HashMap<String, HashMap<String, Counter>>>,
}

impl Counters2 {
    fn new(keys: [&'static str; 2]) -> Self {
        Self {
            keys,
            family: Family::default(),
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// The handle of the pair (`a`, `b`), created on first use.
    pub fn get(&self, a: &str, b: &str) -> Counter {
        let cached = self
            .cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(a)
            .and_then(|by_b| by_b.get(b))
            .cloned();
        if let Some(counter) = cached {
            return counter;
        }
        let labels = [(self.keys[0], a.to_owned()), (self.keys[1], b.to_owned())];
        let counter = self.family.get_or_create_owned(&labels);
        self.cache
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(a.to_owned())
            .or_default()
            .insert(b.to_owned(), counter.clone());
        counter
    }

    /// Adds `n` to the pair (`a`, `b`).
    pub fn inc_by(&self, a: &str, b: &str, n: u64) {
        self.get(a, b).inc_by(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_in_the_text_format_with_their_labels() {
        commands().processed("pipeline.create", "ok").inc();
        commands().duration("pipeline.create").observe(0.003);
        commands().cache_checked(true);
        store().appended.inc_by("pipeline", "pipeline.created", 2);
        let text = render().unwrap();
        assert!(
            text.contains("# TYPE flexcore_commands_processed_total counter"),
            "{text}"
        );
        assert!(
            text.contains(r#"flexcore_commands_processed_total{command_type="pipeline.create",status="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"flexcore_command_cache_checks_total{outcome="stale"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"flexcore_command_duration_seconds_bucket{le="0.005",command_type="pipeline.create"} 1"#)
                || text.contains(
                    r#"flexcore_command_duration_seconds_bucket{command_type="pipeline.create",le="0.005"} 1"#
                ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"flexcore_events_appended_total{aggregate_type="pipeline",event_type="pipeline.created"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE flexcore_relay_lag_seconds gauge"), "{text}");
    }

    #[test]
    fn a_cached_pair_is_the_same_counter() {
        let c = Counters2::new(["a", "b"]);
        c.inc_by("x", "y", 1);
        c.inc_by("x", "y", 2);
        c.inc_by("x", "z", 5);
        assert_eq!(c.get("x", "y").get(), 3);
        assert_eq!(c.get("x", "z").get(), 5);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_come_from_proc() {
        let text = render().unwrap();
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_virtual_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
            "process_threads ",
        ] {
            let line = text
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} in {text}"));
            let value: f64 = line[name.len()..].trim().parse().unwrap();
            assert!(value >= 0.0, "{line}");
        }
    }
}
