//! W3C trace context (`traceparent`, `tracestate`) in NATS headers, so one trace follows
//! a request across the bus: the sender injects its span's context, the receiver makes
//! it the parent of the span that handles the message.
//!
//! Every function here starts with [`enabled`], one relaxed atomic load, and does nothing
//! more unless [`init`](crate::init) installed an OTLP exporter: with export off no
//! header is parsed, no string is built and no OpenTelemetry context is touched. (Without
//! the OpenTelemetry layer `span.context()` would only yield an empty context anyway, but
//! the flag also skips the header look-ups and the propagator's lock.)
//!
//! Parents are set with [`OpenTelemetrySpanExt::set_parent`], which only works before the
//! span is first entered (or its context read): create the span, call
//! [`set_parent`]/[`set_parent_traceparent`], then enter or instrument with it.

use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::{HeaderMap, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::Context;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The W3C trace-context header naming the trace and the parent span.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header carrying vendor trace state.
pub const TRACESTATE: &str = "tracestate";

/// Set once spans are exported: trace context is worth carrying.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Turns propagation on; [`init`](crate::init) does it when it installs the exporter
/// (after the global propagator).
pub(crate) fn enable() {
    EXPORTING.store(true, Ordering::Relaxed);
}

/// Whether spans are exported, so trace context is carried. Cheap enough to check per
/// message; use it to skip building spans that only matter to a trace.
#[inline]
pub fn enabled() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Writes the trace context of `span` into `headers` (replacing any there). Nothing when
/// export is off or the span is not recorded.
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    if !enabled() {
        return;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return;
    }
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&cx, &mut HeaderInjector(headers));
    });
}

/// Headers carrying only the trace context of `span`, or `None` when there is none to
/// carry (export off): callers then send without headers, as before.
pub fn headers(span: &tracing::Span) -> Option<HeaderMap> {
    if !enabled() {
        return None;
    }
    let mut headers = HeaderMap::new();
    inject(span, &mut headers);
    (!headers.is_empty()).then_some(headers)
}

/// The W3C `traceparent` of `span` (to store with what it writes), or `None` when export
/// is off or the span is not recorded.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = TraceparentOnly(None);
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.inject_context(&cx, &mut carrier));
    carrier.0
}

/// Whether a W3C `traceparent` (`00-<trace>-<span>-<flags>`) says its trace is sampled
/// (flag bit 0). Spans that would only matter to an exported trace are skipped for an
/// unsampled one; the `traceparent` itself still travels on, so downstream services make
/// the same decision.
pub fn sampled(traceparent: &str) -> bool {
    let flags = traceparent.rsplit('-').next().unwrap_or("");
    flags.len() == 2 && u8::from_str_radix(flags, 16).is_ok_and(|flags| flags & 1 == 1)
}

/// Whether `value` is a W3C `traceparent` of version 00: `00-<32 hex>-<16 hex>-<2 hex>`,
/// lowercase, with a trace id and a parent id that are not all zeros. Anything else is
/// ignored (the receiver starts a new trace) and never stored.
pub fn valid(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    matches!(parts.as_slice(), [version, trace, parent, flags]
        if *version == "00" && hex(trace, 32) && nonzero(trace) && hex(parent, 16) && nonzero(parent) && hex(flags, 2))
}

/// The `traceparent` header of `headers` when it is [`valid`].
pub fn header(headers: Option<&HeaderMap>) -> Option<String> {
    headers?
        .get(TRACEPARENT)
        .map(|v| v.as_str())
        .filter(|v| valid(v))
        .map(str::to_owned)
}

/// Whether `headers` carry a trace context (a `traceparent`), with export on.
pub fn carried(headers: Option<&HeaderMap>) -> bool {
    enabled() && headers.and_then(|h| h.get(TRACEPARENT)).is_some()
}

/// Makes the sender's span, from the trace context in `headers`, the parent of `span`.
/// Without a valid context there `span` becomes the root of a new trace (not a child of
/// whatever span happens to be current). Must be called before `span` is first entered.
pub fn set_parent(span: &tracing::Span, headers: Option<&HeaderMap>) {
    if !enabled() {
        return;
    }
    let parent = match headers {
        Some(headers) => opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract_with_context(&Context::new(), &HeaderExtractor(headers))
        }),
        None => Context::new(),
    };
    // Fails only for a disabled span or one already started: nothing to parent then.
    let _ = span.set_parent(parent);
}

/// [`set_parent`] from a stored `traceparent` (an event's `metadata.traceparent`).
pub fn set_parent_traceparent(span: &tracing::Span, traceparent: Option<&str>) {
    if !enabled() {
        return;
    }
    let parent = match traceparent {
        Some(value) => opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract_with_context(&Context::new(), &StoredTraceparent(value))
        }),
        None => Context::new(),
    };
    let _ = span.set_parent(parent);
}

/// Writes propagator fields into NATS headers.
struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // An empty `tracestate` says nothing; a value NATS cannot carry is dropped.
        if value.is_empty() {
            return;
        }
        if let Ok(value) = value.parse::<HeaderValue>() {
            self.0.insert(key, value);
        }
    }
}

/// Reads propagator fields from NATS headers.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(HeaderValue::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        [TRACEPARENT, TRACESTATE]
            .into_iter()
            .filter(|key| self.0.get(*key).is_some())
            .collect()
    }
}

/// A carrier of the `traceparent` field alone.
struct TraceparentOnly(Option<String>);

impl Injector for TraceparentOnly {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = Some(value);
        }
    }
}

/// A stored `traceparent`, read as a carrier.
struct StoredTraceparent<'a>(&'a str);

impl Extractor for StoredTraceparent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    const REMOTE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn ids(span: &tracing::Span) -> (TraceId, SpanId) {
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        (sc.trace_id(), sc.span_id())
    }

    #[test]
    fn only_well_formed_traceparents_are_valid() {
        assert!(valid(REMOTE));
        for bad in [
            "garbage",
            "",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            " 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert!(!valid(bad), "{bad:?}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, "garbage");
        assert_eq!(header(Some(&headers)), None);
        headers.insert(TRACEPARENT, REMOTE);
        assert_eq!(header(Some(&headers)).as_deref(), Some(REMOTE));
    }

    /// Off (the default), then on: one test, since the switch is process-wide.
    #[test]
    fn context_travels_through_headers_only_when_export_is_on() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let provider = SdkTracerProvider::builder().build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let mut remote = HeaderMap::new();
            remote.insert(TRACEPARENT, REMOTE);

            // Off: nothing is written, nothing parsed.
            let span = tracing::info_span!("off");
            set_parent(&span, Some(&remote));
            assert!(headers(&span).is_none());
            assert!(traceparent(&span).is_none());
            assert!(!carried(Some(&remote)));

            enable();
            assert!(carried(Some(&remote)));
            // A received context becomes the parent.
            let child = tracing::info_span!("handle");
            set_parent(&child, Some(&remote));
            let (trace, span_id) = ids(&child);
            assert_eq!(trace.to_string(), "0af7651916cd43dd8448eb211c80319c");
            let injected = headers(&child).unwrap();
            let value = injected.get(TRACEPARENT).unwrap().as_str();
            assert_eq!(value, format!("00-{trace}-{span_id}-01"));
            assert!(injected.get(TRACESTATE).is_none(), "no empty tracestate header");
            assert_eq!(traceparent(&child).as_deref(), Some(value));

            // A stored traceparent works the same way.
            let next = tracing::info_span!("publish");
            set_parent_traceparent(&next, Some(value));
            assert_eq!(ids(&next).0, trace);
            let mut written = HeaderMap::new();
            inject(&next, &mut written);
            assert!(written
                .get(TRACEPARENT)
                .unwrap()
                .as_str()
                .contains(&ids(&next).1.to_string()));

            // The sampled flag of a traceparent.
            assert!(sampled(REMOTE));
            assert!(sampled("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03"));
            assert!(!sampled("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"));
            assert!(!sampled("garbage"));
            assert!(!sampled(""));

            // No context: a new trace, not a child of the current span.
            let _inside = child.enter();
            let root = tracing::info_span!("root");
            set_parent(&root, Some(&HeaderMap::new()));
            assert_ne!(ids(&root).0, trace);
            let root = tracing::info_span!("root");
            set_parent_traceparent(&root, Some("garbage"));
            assert_ne!(ids(&root).0, trace);
        });
    }
}
