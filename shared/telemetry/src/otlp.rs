//! The OTLP/gRPC span pipeline.
//!
//! The SDK's default batch processor exports from its own OS thread with
//! `futures_executor::block_on`, but the tonic transport needs a Tokio reactor, so a
//! plain tonic exporter there panics ("no reactor running") and silently drops every
//! span. [`RuntimeExporter`] runs each export on a small Tokio runtime owned by the
//! pipeline instead. That also makes the pipeline independent of the caller's runtime:
//! `init` works before `#[tokio::main]` starts, and shutting down from a
//! current-thread runtime (tests) cannot deadlock.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::RwLock;

/// Identity of the process, exported as resource attributes.
pub(crate) struct ServiceIdentity<'a> {
    /// `service.name`.
    pub name: &'a str,
    /// `service.version`.
    pub version: &'a str,
    /// `service.instance.id`.
    pub instance: String,
}

/// A tracer provider exporting over OTLP/gRPC, and the runtime its exports run on.
pub(crate) struct OtlpPipeline {
    provider: SdkTracerProvider,
    runtime: Option<Runtime>,
}

impl OtlpPipeline {
    /// Builds the pipeline; nothing is sent until spans end.
    /// Traces are sampled at `sample_ratio` where they start (by trace id); a span with a
    /// remote or local parent follows its parent's decision.
    pub(crate) fn new(
        endpoint: &str,
        service: &ServiceIdentity<'_>,
        export_timeout: Duration,
        sample_ratio: f64,
    ) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("flexcore-otlp")
            .enable_all()
            .build()
            .context("starting the OTLP export runtime")?;
        // Tonic's lazy channel spawns its worker on the current runtime.
        let exporter = {
            let _entered = runtime.enter();
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(export_timeout)
                .build()
                .with_context(|| format!("building the OTLP exporter for {endpoint}"))?
        };
        let resource = Resource::builder()
            .with_service_name(service.name.to_owned())
            .with_attributes([
                KeyValue::new("service.version", service.version.to_owned()),
                KeyValue::new("service.instance.id", service.instance.clone()),
            ])
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(RuntimeExporter {
                inner: Arc::new(RwLock::new(exporter)),
                runtime: runtime.handle().clone(),
            })
            .with_resource(resource)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(sample_ratio))))
            .build();
        Ok(Self {
            provider,
            runtime: Some(runtime),
        })
    }

    /// The tracer provider.
    pub(crate) fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// Flushes pending spans and stops exporting.
    pub(crate) fn shutdown(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            if let Err(err) = self.provider.shutdown() {
                tracing::warn!(error = %err, "OTLP span export did not shut down cleanly");
            }
            // `shutdown_background` never blocks, so the guard may drop inside async code.
            runtime.shutdown_background();
        }
    }
}

impl Drop for OtlpPipeline {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Runs every export of `inner` as a task on `runtime`.
#[derive(Debug)]
struct RuntimeExporter<E> {
    inner: Arc<RwLock<E>>,
    runtime: Handle,
}

impl<E: SpanExporter + 'static> SpanExporter for RuntimeExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let inner = Arc::clone(&self.inner);
        self.runtime
            .spawn(async move { inner.read().await.export(batch).await })
            .await
            .map_err(|err| OTelSdkError::InternalFailure(format!("OTLP export task: {err}")))?
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        // The batch processor calls this after its last export has finished, so the
        // lock is free; `try_write` keeps this from ever blocking.
        match self.inner.try_write() {
            Ok(mut inner) => inner.shutdown_with_timeout(timeout),
            Err(_) => Err(OTelSdkError::InternalFailure(
                "OTLP exporter busy at shutdown".to_owned(),
            )),
        }
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        match self.inner.try_write() {
            Ok(mut inner) => inner.force_flush(),
            Err(_) => Ok(()),
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Called while the provider is built, before any export.
        if let Ok(mut inner) = self.inner.try_write() {
            inner.set_resource(resource);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::Instant;

    use opentelemetry::trace::{Tracer as _, TracerProvider as _};

    use super::*;

    fn identity() -> ServiceIdentity<'static> {
        ServiceIdentity {
            name: "telemetry-test",
            version: "0.0.0",
            instance: "test-1".to_owned(),
        }
    }

    /// The exporter really connects (no "no reactor" panic on the batch thread), even
    /// when driven from a current-thread runtime, and shutdown is bounded.
    #[tokio::test]
    async fn spans_are_sent_from_a_current_thread_runtime() {
        let collector = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", collector.local_addr().unwrap());
        let mut pipeline = OtlpPipeline::new(&endpoint, &identity(), Duration::from_millis(500), 1.0).unwrap();
        pipeline.provider().tracer("test").in_span("work", |_cx| {});
        // The silent "collector" never answers, so the export times out, after connecting.
        let _ = pipeline.provider().force_flush();
        collector.set_nonblocking(true).unwrap();
        assert!(collector.accept().is_ok(), "the exporter never connected");
        let started = Instant::now();
        pipeline.shutdown();
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn an_unreachable_collector_does_not_block_shutdown_without_a_runtime() {
        let mut pipeline =
            OtlpPipeline::new("http://127.0.0.1:1", &identity(), Duration::from_millis(500), 1.0).unwrap();
        pipeline.provider().tracer("test").in_span("work", |_cx| {});
        let started = Instant::now();
        pipeline.shutdown();
        pipeline.shutdown();
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
