//! Plugin modules stored content-addressed (sha256) in the JetStream object store bucket
//! `flexcore-plugins`. The object name is the digest (`sha256:<hex>`); bytes are checked
//! against it on every load, so a tampered object is refused, never executed.
//!
//! Modules are bounded in size ([`MAX_MODULE_BYTES`] unless the caller says otherwise): an
//! upload over the limit is refused before anything is sent, a download before anything
//! is read (the object's recorded size is checked first, and the read is capped too).
//!
//! # Layout
//! Everything is in this file: [`digest_of`], [`bucket`], [`upload`] /
//! [`upload_at_most`], [`download`] / [`download_at_most`], [`stored_size`].

use async_nats::jetstream::{self, object_store};
use flexcore_contracts::values::Digest;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt;

/// Name of the object store bucket holding plugin modules.
pub const BUCKET: &str = "flexcore-plugins";

/// Largest module [`upload`] and [`download`] accept (64 MiB): the runner's default
/// `runner.max_module_bytes`.
pub const MAX_MODULE_BYTES: u64 = 64 << 20;

/// Why a module could not be stored or loaded.
#[derive(Debug, thiserror::Error)]
pub enum PluginStoreError {
    /// No module with that digest is stored.
    #[error("no plugin module with digest {0} is stored in bucket {BUCKET}: upload it with `flexctl plugin register`")]
    NotFound(String),
    /// The stored bytes do not hash to the digest they are stored under.
    #[error("plugin module {expected} is corrupt or tampered with: its bytes hash to {actual}")]
    DigestMismatch {
        /// The digest asked for.
        expected: String,
        /// The digest of the stored bytes.
        actual: String,
    },
    /// The module is larger than allowed.
    #[error("plugin module {digest} is {bytes} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// Its digest.
        digest: String,
        /// Its size (at least this much, for a download cut at the limit).
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// NATS / JetStream failed doing `what`; the client's error is kept as it came.
    #[error("plugin store: {what}: {cause}")]
    Nats {
        /// What was being done (`download <digest>`).
        what: String,
        /// The async-nats error.
        cause: async_nats::Error,
    },
}

/// The `sha256:<hex>` digest of `bytes`.
pub fn digest_of(bytes: &[u8]) -> Digest {
    let text = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
    // A sha256 hex digest always parses.
    text.parse().unwrap_or_else(|_| unreachable_digest())
}

fn nats(what: String, cause: impl Into<async_nats::Error>) -> PluginStoreError {
    PluginStoreError::Nats {
        what,
        cause: cause.into(),
    }
}

#[allow(clippy::panic)]
fn unreachable_digest() -> Digest {
    panic!("sha256 hex digests are always valid digests")
}

/// Opens the bucket. Only the setup identity creates it (`flexcore-command setup`), so a
/// missing bucket is reported as such.
pub async fn bucket(js: &jetstream::Context) -> Result<object_store::ObjectStore, PluginStoreError> {
    js.get_object_store(BUCKET).await.map_err(|e| {
        nats(
            format!(
                "bucket {BUCKET} not usable (it is created by `flexcore-command setup`, run as the setup identity)"
            ),
            e,
        )
    })
}

/// Stores `bytes` under their digest (idempotent) and returns the digest; at most
/// [`MAX_MODULE_BYTES`].
pub async fn upload(js: &jetstream::Context, bytes: &[u8]) -> Result<Digest, PluginStoreError> {
    upload_at_most(js, bytes, MAX_MODULE_BYTES).await
}

/// [`upload`] with a size limit of `max_bytes`.
pub async fn upload_at_most(js: &jetstream::Context, bytes: &[u8], max_bytes: u64) -> Result<Digest, PluginStoreError> {
    let digest = digest_of(bytes);
    let len = bytes.len() as u64;
    if len > max_bytes {
        return Err(PluginStoreError::TooLarge {
            digest: digest.to_string(),
            bytes: len,
            limit: max_bytes,
        });
    }
    let store = bucket(js).await?;
    if store.info(digest.as_str()).await.is_ok() {
        return Ok(digest);
    }
    let mut reader = bytes;
    store
        .put(digest.as_str(), &mut reader)
        .await
        .map_err(|e| nats(format!("upload {digest}"), e))?;
    Ok(digest)
}

/// Loads the module stored under `digest` and verifies its bytes; at most
/// [`MAX_MODULE_BYTES`].
pub async fn download(js: &jetstream::Context, digest: &Digest) -> Result<Vec<u8>, PluginStoreError> {
    download_at_most(js, digest, MAX_MODULE_BYTES).await
}

/// [`download`] with a size limit of `max_bytes`: a larger object is refused from its
/// recorded size, before its bytes are read, and the read stops at the limit anyway.
pub async fn download_at_most(
    js: &jetstream::Context,
    digest: &Digest,
    max_bytes: u64,
) -> Result<Vec<u8>, PluginStoreError> {
    let too_large = |bytes: u64| PluginStoreError::TooLarge {
        digest: digest.to_string(),
        bytes,
        limit: max_bytes,
    };
    let store = js
        .get_object_store(BUCKET)
        .await
        .map_err(|_| PluginStoreError::NotFound(digest.to_string()))?;
    let mut object = store.get(digest.as_str()).await.map_err(|e| match e.kind() {
        object_store::GetErrorKind::NotFound => PluginStoreError::NotFound(digest.to_string()),
        _ => nats(format!("download {digest}"), e),
    })?;
    let size = object.info().size as u64;
    if size > max_bytes {
        return Err(too_large(size));
    }
    let mut bytes = Vec::new();
    (&mut object)
        .take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| nats(format!("read {digest}"), e))?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(bytes.len() as u64));
    }
    verify(digest, &bytes)?;
    Ok(bytes)
}

/// The recorded size of the stored module `digest`; `None` when it (or the bucket) is not
/// there. Reads only the object's metadata.
pub async fn stored_size(js: &jetstream::Context, digest: &Digest) -> Result<Option<u64>, PluginStoreError> {
    let Ok(store) = js.get_object_store(BUCKET).await else {
        return Ok(None);
    };
    match store.info(digest.as_str()).await {
        Ok(info) => Ok(Some(info.size as u64)),
        Err(e) if e.kind() == object_store::InfoErrorKind::NotFound => Ok(None),
        Err(e) => Err(nats(format!("look up {digest}"), e)),
    }
}

/// Checks that `bytes` hash to `digest`.
pub fn verify(digest: &Digest, bytes: &[u8]) -> Result<(), PluginStoreError> {
    let actual = digest_of(bytes);
    if actual != *digest {
        return Err(PluginStoreError::DigestMismatch {
            expected: digest.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}
