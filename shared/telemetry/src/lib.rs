//! Tracing initialisation for every FlexCore binary: logs to stderr (text or JSON)
//! and, when an endpoint is configured, span export over OTLP/gRPC.
//!
//! # Layout
//! - [`init`] and [`TelemetryGuard`] (here): install the global subscriber once; the
//!   guard flushes and stops span export when dropped.
//! - `otlp`: the OTLP pipeline (resource, exporter, the runtime exports run on).
//! - [`propagation`]: W3C trace context in NATS headers (inject on send, parent on
//!   receipt), a no-op unless spans are exported.
//! - [`collector`] (feature `collector`): an OTLP/gRPC trace receiver, for tests and the
//!   `otlp_sink` example.
//!
//! The W3C trace-context propagator is installed globally by [`init`], so code that
//! injects or extracts trace context in NATS headers uses
//! `opentelemetry::global::get_text_map_propagator` (through [`propagation`]).

#[cfg(feature = "collector")]
pub mod collector;
mod otlp;
pub mod propagation;

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use flexcore_config::{LogFormat, TelemetrySettings};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

use crate::otlp::{OtlpPipeline, ServiceIdentity};

/// Set once a call to [`init`] has installed the global subscriber.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// How long one OTLP export may take before it is abandoned.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Keeps span export alive; dropping it flushes pending spans and shuts the exporter
/// down. Hold it in `main` until the process is about to exit.
#[must_use = "dropping the guard stops span export"]
pub struct TelemetryGuard {
    otlp: Option<OtlpPipeline>,
}

impl TelemetryGuard {
    /// Whether this guard owns an active OTLP exporter (false when export is off or
    /// when [`init`] had already run).
    pub fn exports_spans(&self) -> bool {
        self.otlp.is_some()
    }
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("exports_spans", &self.exports_spans())
            .finish()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(mut otlp) = self.otlp.take() {
            otlp.shutdown();
        }
    }
}

/// Installs the global `tracing` subscriber for the service `service_name`.
///
/// - Filter: `RUST_LOG` when set, else `settings.log_filter`.
/// - Logs go to stderr, as text or JSON per `settings.log_format` (`auto`: text when
///   stderr is a terminal).
/// - With `settings.otlp_endpoint`, spans are exported over OTLP/gRPC with the resource
///   attributes `service.name`, `service.version` (the workspace version, shared by
///   every FlexCore crate) and `service.instance.id` (`settings.service_instance`, else
///   host name and process id).
///
/// Callable from inside or outside a Tokio runtime. Only the first successful call
/// installs anything; later calls (or a call after some other code installed a global
/// subscriber) return a guard that does nothing.
pub fn init(service_name: &str, settings: &TelemetrySettings) -> anyhow::Result<TelemetryGuard> {
    let inert = TelemetryGuard { otlp: None };
    if INSTALLED.load(Ordering::SeqCst) {
        return Ok(inert);
    }

    let filter = build_filter(std::env::var("RUST_LOG").ok().as_deref(), &settings.log_filter)?;
    let json = match settings.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    // Trace-only spans are kept out of the log layers, which would otherwise format their
    // fields on creation for log lines that never come.
    let json_layer = json.then(|| json_logs(service_name, std::io::stderr).with_filter(filter_fn(not_trace_only)));
    let text_layer = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .with_filter(filter_fn(not_trace_only))
    });

    let otlp = match &settings.otlp_endpoint {
        Some(endpoint) => {
            let service = ServiceIdentity {
                name: service_name,
                version: env!("CARGO_PKG_VERSION"),
                instance: settings.service_instance.clone().unwrap_or_else(default_instance_id),
            };
            Some(OtlpPipeline::new(
                endpoint,
                &service,
                EXPORT_TIMEOUT,
                settings.trace_sample_ratio.get(),
            )?)
        }
        None => None,
    };
    let otel_layer = otlp.as_ref().map(|pipeline| {
        tracing_opentelemetry::layer()
            .with_tracer(pipeline.provider().tracer("flexcore"))
            // The exporter's own transport logs would otherwise feed back into export; the
            // sandbox's spans (one per WASI call of a plugin) would swamp every run's trace.
            .with_filter(filter_fn(|meta| {
                !is_exporter_internal(meta.target()) && !is_per_plugin_call(meta.target())
            }))
    });

    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(json_layer)
        .with(text_layer)
        .with(otel_layer)
        .try_init();
    if installed.is_err() {
        // Another subscriber won the race; `otlp` is dropped (shut down) here.
        return Ok(inert);
    }
    INSTALLED.store(true, Ordering::SeqCst);

    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    if let Some(pipeline) = &otlp {
        opentelemetry::global::set_tracer_provider(pipeline.provider().clone());
        propagation::enable();
        tracing::info!(service = service_name, "exporting spans over OTLP");
    }
    Ok(TelemetryGuard { otlp })
}

/// The target of spans that only matter to an exported trace (the event store's append
/// and commit, the relay's publish, the scheduler's apply and command): they exist only
/// while spans are exported, and the log layers leave them out, so log lines show the
/// spans that carry their context (command, run, attempt, stage) and creating a
/// trace-only span formats nothing.
pub const TRACE_ONLY: &str = "flexcore::trace";

/// Whether `meta` is anything but a trace-only span ([`TRACE_ONLY`]).
fn not_trace_only(meta: &tracing::Metadata<'_>) -> bool {
    !(meta.is_span() && meta.target() == TRACE_ONLY)
}

/// The JSON log layer: one object per line with `service`, the event's fields, the
/// current span and every enclosing span's fields (`spans`: correlation, aggregate and
/// run ids set on the command, run and attempt spans show on every line logged inside
/// them).
pub fn json_logs<S, W>(service: &str, writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let inner = tracing_subscriber::fmt::format()
        .json()
        .with_current_span(true)
        .with_span_list(true);
    tracing_subscriber::fmt::layer()
        .json()
        .event_format(WithService {
            prefix: format!("{{\"service\":{},", serde_json::Value::from(service)),
            inner,
        })
        .with_writer(writer)
}

/// Puts `"service":"<name>"` first in every JSON log line.
struct WithService<F> {
    prefix: String,
    inner: F,
}

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for WithService<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, tracing_subscriber::fmt::format::Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => {
                writer.write_str(&self.prefix)?;
                writer.write_str(rest)
            }
            None => writer.write_str(&line),
        }
    }
}

/// `RUST_LOG` (when set and not blank) wins over the configured directives.
fn build_filter(rust_log: Option<&str>, configured: &str) -> anyhow::Result<EnvFilter> {
    match rust_log.filter(|directives| !directives.trim().is_empty()) {
        Some(directives) => EnvFilter::try_new(directives).with_context(|| format!("invalid RUST_LOG {directives:?}")),
        None => EnvFilter::try_new(configured).with_context(|| format!("invalid telemetry.log_filter {configured:?}")),
    }
}

/// Targets of the crates that carry the OTLP export itself.
fn is_exporter_internal(target: &str) -> bool {
    ["opentelemetry", "tonic", "h2", "hyper", "tower"]
        .iter()
        .any(|prefix| target.starts_with(prefix))
}

/// Targets of wasmtime's WASI host functions, which open a span per plugin system call.
fn is_per_plugin_call(target: &str) -> bool {
    ["wasmtime", "wiggle"].iter().any(|prefix| target.starts_with(prefix))
}

/// `<host>-<pid>`: unique per process, and recognisable in a trace backend.
fn default_instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_carry_the_service_and_the_ids_of_every_enclosing_span() {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(json_logs("flexcore-test", move || sink.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let command = tracing::info_span!("command", correlation_id = "c-1", aggregate_id = "a-1");
            let _c = command.enter();
            let step = tracing::info_span!("step", run_id = "r-1");
            let _s = step.enter();
            tracing::info!(records = 3, "stage done");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["service"], "flexcore-test", "{line}");
        assert_eq!(line["fields"]["message"], "stage done");
        assert_eq!(line["fields"]["records"], 3);
        assert_eq!(line["span"]["run_id"], "r-1");
        assert_eq!(line["spans"][0]["correlation_id"], "c-1", "{line}");
        assert_eq!(line["spans"][0]["aggregate_id"], "a-1");
    }

    #[test]
    fn rust_log_wins_over_the_configured_filter() {
        let filter = build_filter(Some("warn,flexcore=trace"), "info").unwrap();
        assert_eq!(filter.to_string(), "flexcore=trace,warn");
        let filter = build_filter(Some("  "), "debug").unwrap();
        assert_eq!(filter.to_string(), "debug");
        let filter = build_filter(None, "info").unwrap();
        assert_eq!(filter.to_string(), "info");
    }

    #[test]
    fn an_invalid_filter_is_an_error_naming_its_source() {
        let err = build_filter(None, "info,[=").unwrap_err();
        assert!(err.to_string().contains("telemetry.log_filter"), "{err:#}");
        let err = build_filter(Some("[="), "info").unwrap_err();
        assert!(err.to_string().contains("RUST_LOG"), "{err:#}");
    }

    #[test]
    fn exporter_transport_logs_are_not_exported() {
        assert!(is_exporter_internal("h2::codec"));
        assert!(is_exporter_internal("opentelemetry_sdk"));
        assert!(!is_exporter_internal("flexcore_command"));
    }

    #[test]
    fn wasi_call_spans_are_not_exported() {
        assert!(is_per_plugin_call("wasmtime_wasi::p1"));
        assert!(!is_per_plugin_call("flexcore_runner::executor"));
    }
}
