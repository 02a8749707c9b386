//! A real OTLP/gRPC trace receiver (feature `collector`): the collector service generated
//! in `opentelemetry-proto` (the exporter's own types), served over HTTP/2 with hyper.
//! It either keeps every span in memory (tests that assert on traces) or only counts
//! them (the `otlp_sink` example, the far end of a benchmark with export on).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use tokio::task::JoinHandle;

/// One received span, ids in lowercase hex.
#[derive(Debug, Clone)]
pub struct Span {
    /// `service.name` of the exporting process.
    pub service: String,
    /// The span's name.
    pub name: String,
    /// The trace id (32 hex digits).
    pub trace_id: String,
    /// The span id (16 hex digits).
    pub span_id: String,
    /// `None` for a root span.
    pub parent: Option<String>,
    /// String and integer attributes.
    pub attributes: HashMap<String, String>,
}

impl Span {
    /// The attribute `key`, if the span has it (as a string).
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Debug, Clone, Default)]
struct Received {
    /// Kept spans; `None` when only counting.
    spans: Option<Arc<Mutex<Vec<Span>>>>,
    count: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let request = request.into_inner();
        self.requests.fetch_add(1, Ordering::Relaxed);
        let spans = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len() as u64)
            .sum::<u64>();
        self.count.fetch_add(spans, Ordering::Relaxed);
        if let Some(kept) = &self.spans {
            keep(request, &mut kept.lock().unwrap_or_else(PoisonError::into_inner));
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Appends the spans of `request` to `received`, each with its service's name.
fn keep(request: ExportTraceServiceRequest, received: &mut Vec<Span>) {
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|r| attributes(&r.attributes).remove("service.name"))
            .unwrap_or_default();
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            received.push(Span {
                service: service.clone(),
                name: span.name,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent: (!span.parent_span_id.is_empty()).then(|| hex(&span.parent_span_id)),
                attributes: attributes(&span.attributes),
            });
        }
    }
}

fn attributes(pairs: &[KeyValue]) -> HashMap<String, String> {
    pairs
        .iter()
        .filter_map(|kv| {
            let value = match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => s.clone(),
                Value::IntValue(i) => i.to_string(),
                Value::BoolValue(b) => b.to_string(),
                _ => return None,
            };
            Some((kv.key.clone(), value))
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The receiver, listening until dropped.
#[derive(Debug)]
pub struct Collector {
    /// `http://127.0.0.1:<port>`, for `telemetry.otlp_endpoint`.
    pub endpoint: String,
    received: Received,
    task: JoinHandle<()>,
}

impl Collector {
    /// A receiver on a random local port that keeps every span (see [`Collector::spans`]).
    pub async fn start() -> std::io::Result<Self> {
        Self::listen(SocketAddr::from(([127, 0, 0, 1], 0)), true).await
    }

    /// A receiver on `addr`; `keep` keeps every span, else spans are only counted.
    pub async fn listen(addr: SocketAddr, keep: bool) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let received = Received {
            spans: keep.then(Arc::default),
            ..Received::default()
        };
        let service = TraceServiceServer::new(received.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let service = TowerToHyperService::new(service.clone());
                tokio::spawn(async move {
                    // A connection that breaks off only ends itself.
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            endpoint,
            received,
            task,
        })
    }

    /// Every span received so far (none when only counting).
    pub fn spans(&self) -> Vec<Span> {
        self.received
            .spans
            .as_ref()
            .map(|kept| kept.lock().unwrap_or_else(PoisonError::into_inner).clone())
            .unwrap_or_default()
    }

    /// Spans received so far.
    pub fn span_count(&self) -> u64 {
        self.received.count.load(Ordering::Relaxed)
    }

    /// Export requests (batches) received so far.
    pub fn request_count(&self) -> u64 {
        self.received.requests.load(Ordering::Relaxed)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}
