//! Answering a request, whatever its answer's size: a reply the NATS server would refuse
//! (over its `max_payload`) becomes a `payload_too_large` error reply, so the requester
//! always hears back instead of waiting out its timeout.

use async_nats::{Client, HeaderMap, Subject};
use bytes::Bytes;
use flexcore_contracts::{ErrorBody, ErrorReason};

/// The header naming the service and version that sent a reply or an announcement
/// (`flexcore-command/0.1.0`): how the gateway's status shows which versions run.
pub const SERVICE_HEADER: &str = flexcore_contracts::envelope::HEADER_SERVICE;

/// `headers` naming `service` (`name/version`) in [`SERVICE_HEADER`].
pub fn name_service(headers: &mut HeaderMap, service: &str) {
    headers.insert(SERVICE_HEADER, service);
}

/// The service and version a message names in [`SERVICE_HEADER`], if it does.
pub fn service_of(headers: Option<&HeaderMap>) -> Option<String> {
    let value = headers?.get(SERVICE_HEADER)?.as_str();
    (!value.is_empty() && value.len() <= 100 && value.chars().all(|c| c.is_ascii_graphic())).then(|| value.to_owned())
}

/// An error reply body: `{"ok":false,"error":…}` (the shape of command and query refusals).
pub fn error_body(error: &ErrorBody) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"ok": false, "error": error})).unwrap_or_else(|_| {
        br#"{"ok":false,"error":{"code":"internal","message":"reply encoding failed","details":{"reason":"internal"}}}"#
            .to_vec()
    })
}

/// `body` if it fits in `limit` bytes, else the error reply saying how large it was.
pub fn fitted(body: Vec<u8>, limit: usize) -> Vec<u8> {
    if body.len() <= limit {
        return body;
    }
    let error = ErrorBody::new(
        ErrorReason::TooLarge,
        format!(
            "the reply would be {} bytes; the NATS server accepts at most {limit} bytes per message: ask for less (a smaller limit or fewer items)",
            body.len()
        ),
    )
    .with("size", body.len())
    .with("limit", limit);
    error_body(&error)
}

/// Publishes the reply to `reply_to` ([`fitted`] to the server's `max_payload`), naming
/// the `service` (`name/version`) that answers; a failure to send is logged, not returned:
/// the requester times out, and nothing else can be done.
pub async fn send(client: &Client, reply_to: Subject, body: Vec<u8>, service: &str) {
    let body = fitted(body, client.max_payload());
    let mut headers = HeaderMap::new();
    name_service(&mut headers, service);
    if let Err(error) = client.publish_with_headers(reply_to, headers, Bytes::from(body)).await {
        tracing::warn!(%error, "reply could not be sent");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_reply_becomes_an_error_reply() {
        assert_eq!(fitted(b"{}".to_vec(), 2), b"{}".to_vec());
        let body = fitted(vec![b' '; 100], 10);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(v["error"]["code"], "payload_too_large");
        assert_eq!(v["error"]["details"]["reason"], "too_large");
        assert_eq!(v["error"]["details"]["size"], 100);
        assert_eq!(v["error"]["details"]["limit"], 10);
    }

    #[test]
    fn a_service_name_is_read_back_and_a_strange_one_ignored() {
        let mut headers = HeaderMap::new();
        name_service(&mut headers, "flexcore-command/0.1.0");
        assert_eq!(service_of(Some(&headers)).as_deref(), Some("flexcore-command/0.1.0"));
        assert_eq!(service_of(None), None);
        let mut odd = HeaderMap::new();
        odd.insert(SERVICE_HEADER, "a b");
        assert_eq!(service_of(Some(&odd)), None);
    }
}
