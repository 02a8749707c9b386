//! The metric families, grouped by the service that records them. The names are what
//! the dashboard and alerts in `deploy/observability/` query: keep them.
//!
//! Each group is created, and registered with the process registry, on first use.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;

use super::{register, Counters2};

/// Buckets of `flexcore_command_duration_seconds`: 0.5 ms … 5 s, with 250 ms (the p95
/// alert) a bound.
const COMMAND_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Buckets of `flexcore_schedule_fire_lag_seconds`: 5 ms … 5 min, with 5 s (the p99
/// alert) a bound.
const FIRE_LAG_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

fn command_histogram() -> Histogram {
    Histogram::new(COMMAND_BUCKETS)
}

/// A label set whose values are owned (created once per handle, then cached by callers).
type OwnedLabels<const N: usize> = [(&'static str, String); N];

/// The command service: `flexcore_commands_processed_total{command_type,status}` and
/// `flexcore_command_duration_seconds{command_type}`. Look the handles up once per label
/// set and keep them: the look-up allocates the label strings.
#[derive(Debug)]
pub struct CommandMetrics {
    processed: Family<OwnedLabels<2>, Counter>,
    duration: Family<OwnedLabels<1>, Histogram, fn() -> Histogram>,
    /// `flexcore_command_cache_checks_total{outcome="current"}` and `{outcome="stale"}`.
    cache_current: Counter,
    cache_stale: Counter,
}

impl CommandMetrics {
    /// The counter of commands of `command_type` answered with `status` (`ok` or the
    /// error code).
    pub fn processed(&self, command_type: &str, status: &str) -> Counter {
        self.processed
            .get_or_create_owned(&[("command_type", command_type.to_owned()), ("status", status.to_owned())])
    }

    /// The duration histogram (decode to reply, in seconds) of `command_type`.
    pub fn duration(&self, command_type: &str) -> Histogram {
        self.duration
            .get_or_create_owned(&[("command_type", command_type.to_owned())])
    }

    /// Counts a cached aggregate state checked against the log: `stale` when another
    /// replica had moved the aggregate on.
    pub fn cache_checked(&self, stale: bool) {
        if stale {
            self.cache_stale.inc();
        } else {
            self.cache_current.inc();
        }
    }
}

// Help texts of registered metrics have no final period: the encoder adds one.

/// The command service's families.
pub fn commands() -> &'static CommandMetrics {
    static METRICS: LazyLock<CommandMetrics> = LazyLock::new(|| {
        let cache: Family<[(&'static str, &'static str); 1], Counter> = Family::default();
        // One statement each: the family's read guard lives to the end of the statement,
        // and a second look-up (a write) within it would wait for it forever.
        let cache_current = cache.get_or_create(&[("outcome", "current")]).clone();
        let cache_stale = cache.get_or_create(&[("outcome", "stale")]).clone();
        let metrics = CommandMetrics {
            processed: Family::default(),
            duration: Family::new_with_constructor(command_histogram as fn() -> Histogram),
            cache_current,
            cache_stale,
        };
        register(|r| {
            r.register(
                "flexcore_commands_processed",
                "Commands answered, by command type and status (ok or the error code)",
                metrics.processed.clone(),
            );
            r.register(
                "flexcore_command_duration_seconds",
                "Time from receiving a command to its reply being ready, by command type",
                metrics.duration.clone(),
            );
            r.register(
                "flexcore_command_cache_checks",
                "Cached aggregate states checked against the event log, by outcome (current, or stale: moved on by another replica)",
                cache,
            );
        });
        metrics
    });
    &METRICS
}

/// The event store and its relay: `flexcore_events_appended_total{aggregate_type,event_type}`
/// and `flexcore_relay_lag_seconds`.
#[derive(Debug)]
pub struct StoreMetrics {
    /// Events committed, by aggregate type and event type.
    pub appended: Counters2,
    relay: Arc<RelayLag>,
}

impl StoreMetrics {
    /// Unpublished events wait; the oldest was recorded at `oldest`. The lag grows with
    /// the clock from now on, until [`Self::relay_published`] (so a stuck relay shows).
    pub fn relay_pending(&self, oldest: SystemTime) {
        self.relay.pending_since.store(micros(oldest), Ordering::Relaxed);
    }

    /// A batch was acknowledged by JetStream; its last event was recorded at `last`. The
    /// lag is now `now − last`, until events wait again.
    pub fn relay_published(&self, last: SystemTime) {
        let delay = micros(SystemTime::now()).saturating_sub(micros(last)).max(0);
        self.relay.delay.store(delay.unsigned_abs(), Ordering::Relaxed);
        self.relay.pending_since.store(NOT_PENDING, Ordering::Relaxed);
    }

    /// This process does not lead the relay: it reports no lag (the leader does).
    pub fn relay_standby(&self) {
        self.relay.delay.store(0, Ordering::Relaxed);
        self.relay.pending_since.store(NOT_PENDING, Ordering::Relaxed);
    }

    /// The lag reported now, in seconds.
    pub fn relay_lag_seconds(&self) -> f64 {
        self.relay.seconds()
    }
}

const NOT_PENDING: i64 = i64::MIN;

/// Microseconds since the Unix epoch (negative before it).
fn micros(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

/// `flexcore_relay_lag_seconds`, computed at scrape time: the age of the oldest waiting
/// event while some wait, else the delay of the last published one.
#[derive(Debug)]
struct RelayLag {
    pending_since: AtomicI64,
    delay: AtomicU64,
}

impl RelayLag {
    fn seconds(&self) -> f64 {
        let since = self.pending_since.load(Ordering::Relaxed);
        let micros = if since == NOT_PENDING {
            i64::try_from(self.delay.load(Ordering::Relaxed)).unwrap_or(i64::MAX)
        } else {
            micros(SystemTime::now()).saturating_sub(since).max(0)
        };
        micros as f64 / 1e6
    }
}

impl Collector for RelayLag {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = ConstGauge::new(self.seconds());
        let metric = encoder.encode_descriptor(
            "flexcore_relay_lag_seconds",
            "Age of the oldest event the relay has not yet published, or (when none waits) how long after being recorded the last one was published.",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)
    }
}

/// The event store's families.
pub fn store() -> &'static StoreMetrics {
    static METRICS: LazyLock<StoreMetrics> = LazyLock::new(|| {
        let metrics = StoreMetrics {
            appended: Counters2::new(["aggregate_type", "event_type"]),
            relay: Arc::new(RelayLag {
                pending_since: AtomicI64::new(NOT_PENDING),
                delay: AtomicU64::new(0),
            }),
        };
        register(|r| {
            r.register(
                "flexcore_events_appended",
                "Events committed to the event store, by aggregate type and event type",
                metrics.appended.family.clone(),
            );
            r.register_collector(Box::new(metrics.relay.clone()));
        });
        metrics
    });
    &METRICS
}

/// The projection service: `flexcore_projection_lag_events{projection}`,
/// `flexcore_queries_executed_total{query_type,status}` and
/// `flexcore_list_cache_lookups_total{outcome}`.
#[derive(Debug)]
pub struct ProjectionMetrics {
    lag: Family<[(&'static str, &'static str); 1], Gauge>,
    queries: Family<[(&'static str, &'static str); 2], Counter>,
    /// `flexcore_list_cache_lookups_total{outcome="hit"}` and `{outcome="miss"}`.
    list_hit: Counter,
    list_miss: Counter,
}

impl ProjectionMetrics {
    /// Sets how many events `projection` is behind the event log.
    pub fn set_lag(&self, projection: &'static str, events: i64) {
        self.lag.get_or_create(&[("projection", projection)]).set(events);
    }

    /// Counts one query of `query_type` answered with `status` (`ok` or the error code).
    pub fn query(&self, query_type: &'static str, status: &'static str) {
        self.queries
            .get_or_create(&[("query_type", query_type), ("status", status)])
            .inc();
    }

    /// Counts one list query looked up among the kept pages: `hit` when answered from one.
    pub fn list_cache(&self, hit: bool) {
        if hit {
            self.list_hit.inc();
        } else {
            self.list_miss.inc();
        }
    }
}

/// The projection service's families.
pub fn projections() -> &'static ProjectionMetrics {
    static METRICS: LazyLock<ProjectionMetrics> = LazyLock::new(|| {
        let lookups: Family<[(&'static str, &'static str); 1], Counter> = Family::default();
        // One statement each (see `commands`).
        let list_hit = lookups.get_or_create(&[("outcome", "hit")]).clone();
        let list_miss = lookups.get_or_create(&[("outcome", "miss")]).clone();
        let metrics = ProjectionMetrics {
            lag: Family::default(),
            queries: Family::default(),
            list_hit,
            list_miss,
        };
        register(|r| {
            r.register(
                "flexcore_projection_lag_events",
                "Events in the log a projection has not applied yet",
                metrics.lag.clone(),
            );
            r.register(
                "flexcore_queries_executed",
                "Queries answered, by query type and status (ok or the error code)",
                metrics.queries.clone(),
            );
            r.register(
                "flexcore_list_cache_lookups",
                "List queries looked up among the recent pages kept: hit when answered from one",
                lookups,
            );
        });
        metrics
    });
    &METRICS
}

/// The plugin runner: `flexcore_plugin_executions_total{plugin_name,status}`,
/// `flexcore_run_records_total{pipeline,stream}`, `flexcore_runner_slots_busy` and
/// `flexcore_runner_slots` (the denominator of saturation).
#[derive(Debug)]
pub struct RunnerMetrics {
    /// Plugin stage executions, by plugin name and status (`ok` or the failure code).
    pub plugin_executions: Counters2,
    /// Records delivered to loaders, by pipeline name and stream.
    pub run_records: Counters2,
    slots_busy: Gauge,
    slots: Gauge,
}

impl RunnerMetrics {
    /// Marks one slot busy until the guard is dropped.
    pub fn busy(&self) -> BusySlot {
        self.slots_busy.inc();
        BusySlot(self.slots_busy.clone())
    }

    /// Adds `n` slots to the process's total until the guard is dropped.
    pub fn offer(&self, n: usize) -> OfferedSlots {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.slots.inc_by(n);
        OfferedSlots(self.slots.clone(), n)
    }

    /// Slots busy now.
    pub fn slots_busy(&self) -> i64 {
        self.slots_busy.get()
    }
}

/// A busy slot ([`RunnerMetrics::busy`]); dropping it frees it.
#[derive(Debug)]
pub struct BusySlot(Gauge);

impl Drop for BusySlot {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Slots a runner offers ([`RunnerMetrics::offer`]); dropping it withdraws them.
#[derive(Debug)]
pub struct OfferedSlots(Gauge, i64);

impl Drop for OfferedSlots {
    fn drop(&mut self) {
        self.0.dec_by(self.1);
    }
}

/// The runner's families.
pub fn runner() -> &'static RunnerMetrics {
    static METRICS: LazyLock<RunnerMetrics> = LazyLock::new(|| {
        let metrics = RunnerMetrics {
            plugin_executions: Counters2::new(["plugin_name", "status"]),
            run_records: Counters2::new(["pipeline", "stream"]),
            slots_busy: Gauge::default(),
            slots: Gauge::default(),
        };
        register(|r| {
            r.register(
                "flexcore_plugin_executions",
                "Plugin stage executions, by plugin name and status (ok, or the failure code: timeout, memory, trap, protocol, output_limit, exit_status, cancelled, digest, sandbox, aborted)",
                metrics.plugin_executions.family.clone(),
            );
            r.register(
                "flexcore_run_records",
                "Records delivered to the loader, by pipeline name and stream",
                metrics.run_records.family.clone(),
            );
            r.register(
                "flexcore_runner_slots_busy",
                "Run attempts executing now",
                metrics.slots_busy.clone(),
            );
            r.register(
                "flexcore_runner_slots",
                "Run attempts this process can execute at once (runner.slots)",
                metrics.slots.clone(),
            );
        });
        metrics
    });
    &METRICS
}

/// The scheduler: `flexcore_schedule_fire_lag_seconds`.
#[derive(Debug)]
pub struct SchedulerMetrics {
    fire_lag: Histogram,
}

impl SchedulerMetrics {
    /// A slot was fired `lag_seconds` after its time (negative counts as 0).
    pub fn fired(&self, lag_seconds: f64) {
        self.fire_lag.observe(lag_seconds.max(0.0));
    }
}

/// The scheduler's families.
pub fn scheduler() -> &'static SchedulerMetrics {
    static METRICS: LazyLock<SchedulerMetrics> = LazyLock::new(|| {
        let metrics = SchedulerMetrics {
            fire_lag: Histogram::new(FIRE_LAG_BUCKETS),
        };
        register(|r| {
            r.register(
                "flexcore_schedule_fire_lag_seconds",
                "How long after its slot time a cron slot was fired",
                metrics.fire_lag.clone(),
            );
        });
        metrics
    });
    &METRICS
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn relay_lag_grows_while_events_wait_and_is_the_publish_delay_after() {
        let lag = RelayLag {
            pending_since: AtomicI64::new(NOT_PENDING),
            delay: AtomicU64::new(0),
        };
        assert_eq!(lag.seconds(), 0.0);
        lag.pending_since
            .store(micros(SystemTime::now() - Duration::from_secs(30)), Ordering::Relaxed);
        let waiting = lag.seconds();
        assert!((30.0..31.0).contains(&waiting), "{waiting}");
        lag.pending_since.store(NOT_PENDING, Ordering::Relaxed);
        lag.delay.store(250_000, Ordering::Relaxed);
        assert_eq!(lag.seconds(), 0.25);
    }

    #[test]
    fn busy_slots_are_freed_on_drop() {
        let before = runner().slots_busy();
        let slot = runner().busy();
        assert_eq!(runner().slots_busy(), before + 1);
        drop(slot);
        assert_eq!(runner().slots_busy(), before);
    }
}

/// Buckets of the gateway's own time per request: 50 µs … 50 ms.
const OWN_BUCKETS: [f64; 10] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
];

fn own_histogram() -> Histogram {
    Histogram::new(OWN_BUCKETS)
}

/// The HTTP gateway: `flexcore_http_requests_total{route,status}`,
/// `flexcore_http_request_duration_seconds{route}` (request in to response headers out),
/// and `flexcore_http_gateway_own_seconds` (that time less the time spent waiting on the
/// services over NATS: what the gateway itself adds). Routes are the route templates
/// (`/api/v1/flexcore/pipelines/{id}`), `unmatched` for any other path.
#[derive(Debug)]
pub struct GatewayMetrics {
    /// Requests by route and status code.
    pub requests: Counters2,
    duration: Family<OwnedLabels<1>, Histogram, fn() -> Histogram>,
    /// The gateway's own time per request.
    pub own: Histogram,
}

impl GatewayMetrics {
    /// The duration histogram of `route` (keep the handle: the look-up allocates).
    pub fn duration(&self, route: &str) -> Histogram {
        self.duration.get_or_create_owned(&[("route", route.to_owned())])
    }
}

/// The gateway's families.
pub fn gateway() -> &'static GatewayMetrics {
    static METRICS: LazyLock<GatewayMetrics> = LazyLock::new(|| {
        let metrics = GatewayMetrics {
            requests: Counters2::new(["route", "status"]),
            duration: Family::new_with_constructor(command_histogram as fn() -> Histogram),
            own: own_histogram(),
        };
        register(|r| {
            r.register(
                "flexcore_http_requests",
                "HTTP requests answered by the gateway, by route and status code",
                metrics.requests.family.clone(),
            );
            r.register(
                "flexcore_http_request_duration_seconds",
                "Time from a request's arrival to its response's headers, by route",
                metrics.duration.clone(),
            );
            r.register(
                "flexcore_http_gateway_own_seconds",
                "Time per request spent in the gateway itself (the request's duration less its waits on the services over NATS)",
                metrics.own.clone(),
            );
        });
        metrics
    });
    &METRICS
}
