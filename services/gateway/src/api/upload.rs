//! `POST /plugins` as `multipart/form-data`: a module upload and its registration.
//!
//! Two parts, in any order: `metadata`, the `plugin.register` body as JSON (without
//! `module_digest`, or with it as the digest the module must have), and `module`, the
//! WebAssembly module. The module's bytes are hashed as they arrive, bounded by
//! `gateway.max_module_bytes` (413 beyond) and `gateway.upload_timeout_ms` (408 beyond);
//! a module whose digest differs from a declared one is refused before anything is stored.
//! The metadata is checked against the contract before the module is stored, the module
//! is stored content-addressed (`sha256:<hex>`, a repeat upload is a no-op) and then
//! `plugin.register` is sent with its digest, on behalf of the caller, as any create.
//!
//! The module is held in memory once while it arrives (the object store names an object
//! by its digest, known only at the end, and the gateway may not rename or delete
//! objects); at most `gateway.max_uploads` uploads run at once (503 beyond).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::multipart::{Field, MultipartError};
use axum::extract::{FromRequest as _, Multipart, Request};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use flexcore_contracts::ErrorCode;
use flexcore_security::ApiRole;
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::commands::{body_has, send, splice, Request as CommandRequest, Success};
use super::{require, Collection};
use crate::problem::Problem;
use crate::{Caller, Gateway};

/// Largest `metadata` part.
const MAX_METADATA_BYTES: usize = 1 << 20;

/// Whether a request is a multipart upload (by its `Content-Type`).
pub fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("multipart/form-data"))
}

/// The two parts, as received.
pub(crate) struct Parts {
    /// The `plugin.register` body (JSON).
    pub(crate) metadata: Bytes,
    /// The module.
    pub(crate) module: Vec<u8>,
    /// Its digest, `sha256:<hex>`.
    pub(crate) digest: String,
}

/// A place among `gateway.max_uploads` (503 when there is none).
pub(crate) fn upload_permit(gateway: &Gateway) -> Result<tokio::sync::OwnedSemaphorePermit, Problem> {
    gateway.uploads.clone().try_acquire_owned().map_err(|_| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable.as_str(),
            format!(
                "{} module uploads are in progress (gateway.max_uploads); retry shortly",
                gateway.settings.max_uploads
            ),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("5"))
    })
}

/// `POST /plugins` with `multipart/form-data`.
pub async fn register(
    gateway: &Arc<Gateway>,
    caller: &Caller,
    path: &str,
    headers: &HeaderMap,
    request: Request,
) -> Result<Response, Problem> {
    // Nothing is read, let alone stored, for a caller who may not register plugins.
    require(&caller.principal, ApiRole::Admin, "plugin.register")?;
    let _permit = upload_permit(gateway)?;
    let timeout = gateway.settings.upload_timeout;
    let limit = gateway.settings.max_module_bytes;
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| Problem::invalid("header:Content-Type", e.body_text()))?;
    let parts = tokio::time::timeout(timeout, read_parts(&mut multipart, limit))
        .await
        .map_err(|_| {
            Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!(
                    "the upload was not received within {} ms (gateway.upload_timeout_ms)",
                    timeout.as_millis()
                ),
            )
        })??;
    store_and_register(gateway, caller, path, headers, parts).await
}

/// A module and its metadata, as received: checked against the contract, stored, and
/// registered (`plugin.register` on behalf of `caller`).
pub(crate) async fn store_and_register(
    gateway: &Arc<Gateway>,
    caller: &Caller,
    path: &str,
    headers: &HeaderMap,
    parts: Parts,
) -> Result<Response, Problem> {
    let limit = gateway.settings.max_module_bytes;
    let metadata = metadata_with_digest(&parts.metadata, &parts.digest)?;
    // The contract's verdict on the metadata before anything is stored (the command
    // service decides again; this only spares the store a module nobody registers).
    let probe = if body_has(&metadata, "command_id") {
        metadata.clone()
    } else {
        splice(
            &metadata,
            &[("command_id", Value::from(uuid::Uuid::new_v4().to_string()))],
        )?
    };
    let subject = format!("{}.cmd.plugin.register", flexcore_contracts::subjects::ROOT);
    flexcore_contracts::commands::decode(&subject, &probe).map_err(|e| Problem::refused(&e))?;
    let js = async_nats::jetstream::new(gateway.nats.clone());
    flexcore_plugin_store::upload_at_most(&js, &parts.module, limit)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "module upload to the plugin store failed");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable.as_str(),
                "the plugin store did not take the module; retry shortly",
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
        })?;
    drop(parts);
    let mut headers = headers.clone();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let request = CommandRequest {
        command: "plugin.register".to_owned(),
        needed: ApiRole::Admin,
        fields: Vec::new(),
        body: &metadata,
        success: Success::Created(Collection::Plugins),
    };
    send(gateway, caller, &Method::POST, path, &headers, request).await
}

/// The metadata with `module_digest` set to the module's digest; refused when it declares
/// another digest or a runtime without a module.
fn metadata_with_digest(metadata: &[u8], digest: &str) -> Result<Bytes, Problem> {
    let fields: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(metadata).map_err(|e| {
        Problem::invalid(
            "part:metadata",
            format!("the metadata part must be a JSON object (the fields of a JSON POST /api/v1/flexcore/plugins: name, version, kind, …): {e}"),
        )
    })?;
    if let Some(runtime) = fields.get("runtime") {
        if serde_json::from_str::<String>(runtime.get()).ok().as_deref() != Some("wasm") {
            return Err(Problem::invalid(
                "part:metadata/runtime",
                "an uploaded module is a wasm plugin: leave runtime out or set it to \"wasm\" (register a process plugin with a JSON body)",
            ));
        }
    }
    let Some(declared) = fields.get("module_digest") else {
        return splice(metadata, &[("module_digest", Value::from(digest))]);
    };
    if serde_json::from_str::<String>(declared.get()).ok().as_deref() != Some(digest) {
        return Err(Problem::invalid(
            "part:metadata/module_digest",
            format!("the module's digest is {digest}, not the module_digest the metadata declares"),
        ));
    }
    Ok(Bytes::copy_from_slice(metadata))
}

/// Reads the `metadata` and `module` parts, hashing the module as it arrives.
async fn read_parts(multipart: &mut Multipart, limit: u64) -> Result<Parts, Problem> {
    let (mut metadata, mut module) = (None, None);
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("metadata") if metadata.is_none() => metadata = Some(read_metadata(field).await?),
            Some("module") if module.is_none() => module = Some(read_module(field, limit).await?),
            Some(name @ ("metadata" | "module")) => {
                return Err(Problem::invalid(
                    format!("part:{name}"),
                    format!("the part {name} is sent twice"),
                ))
            }
            other => {
                let name: String = other.unwrap_or("").chars().take(64).collect();
                return Err(Problem::invalid(
                    format!("part:{name}"),
                    "unknown part: an upload has the parts `metadata` (JSON) and `module` (the .wasm)",
                ));
            }
        }
    }
    let missing = |name: &str| {
        Problem::invalid(
            format!("part:{name}"),
            format!("the part {name} is missing: an upload has the parts `metadata` (JSON: the fields of a JSON POST /api/v1/flexcore/plugins without module_digest) and `module` (the .wasm)"),
        )
    };
    let metadata = metadata.ok_or_else(|| missing("metadata"))?;
    let (module, digest) = module.ok_or_else(|| missing("module"))?;
    Ok(Parts {
        metadata,
        module,
        digest,
    })
}

async fn read_metadata(mut field: Field<'_>) -> Result<Bytes, Problem> {
    let mut out = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        out.extend_from_slice(&chunk);
        if out.len() > MAX_METADATA_BYTES {
            return Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge.as_str(),
                format!("the metadata part is larger than {MAX_METADATA_BYTES} bytes"),
            ));
        }
    }
    Ok(Bytes::from(out))
}

/// Reads a module part, hashing it as it arrives (413 beyond `limit`; not wasm: 400).
pub(crate) async fn read_module(mut field: Field<'_>, limit: u64) -> Result<(Vec<u8>, String), Problem> {
    let mut hasher = Sha256::new();
    let mut out = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if (out.len() + chunk.len()) as u64 > limit {
            return Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge.as_str(),
                format!("the module is larger than {limit} bytes (gateway.max_module_bytes)"),
            ));
        }
        hasher.update(&chunk);
        out.extend_from_slice(&chunk);
    }
    if !out.starts_with(b"\0asm") {
        return Err(Problem::invalid(
            "part:module",
            "the module is not a WebAssembly module (it does not start with \\0asm)",
        ));
    }
    Ok((out, format!("sha256:{}", hex::encode(hasher.finalize()))))
}

/// A multipart body that cannot be parsed, or that is over the body limit.
pub(crate) fn multipart_error(error: MultipartError) -> Problem {
    let status = error.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return Problem::new(status, ErrorCode::PayloadTooLarge.as_str(), error.body_text());
    }
    Problem::invalid("", format!("the multipart body is malformed: {}", error.body_text()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_digest_is_added_or_checked() {
        let digest = "sha256:00";
        let added = metadata_with_digest(br#"{"name":"a"}"#, digest).unwrap();
        assert_eq!(&added[..], br#"{"module_digest":"sha256:00","name":"a"}"#);
        let empty = metadata_with_digest(b" { } ", digest).unwrap();
        assert_eq!(&empty[..], br#" {"module_digest":"sha256:00" } "#);
        let same = metadata_with_digest(br#"{"module_digest":"sha256:00"}"#, digest).unwrap();
        assert_eq!(&same[..], br#"{"module_digest":"sha256:00"}"#);
        let other = metadata_with_digest(br#"{"module_digest":"sha256:11"}"#, digest).unwrap_err();
        assert_eq!(other.errors[0].field, "part:metadata/module_digest");
        let process = metadata_with_digest(br#"{"runtime":"process"}"#, digest).unwrap_err();
        assert_eq!(process.errors[0].field, "part:metadata/runtime");
        assert!(metadata_with_digest(b"[1]", digest).is_err());
    }
}
