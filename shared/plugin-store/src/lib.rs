//! Plugin modules stored content-addressed (sha256) in the JetStream object store bucket
//! `flexcore-plugins`. The object name is the digest (`sha256:<hex>`); bytes are checked
//! against it on every load, so a tampered object is refused, never executed.
//!
//! # Layout
//! Everything is in this file: [`digest_of`], [`ensure_bucket`], [`upload`], [`download`].

use async_nats::jetstream::{self, object_store};
use flexcore_contracts::values::Digest;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt;

/// Name of the object store bucket holding plugin modules.
pub const BUCKET: &str = "flexcore-plugins";

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
    /// NATS / JetStream failed.
    #[error("plugin store: {0}")]
    Nats(String),
}

/// The `sha256:<hex>` digest of `bytes`.
pub fn digest_of(bytes: &[u8]) -> Digest {
    let text = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
    // A sha256 hex digest always parses.
    text.parse().unwrap_or_else(|_| unreachable_digest())
}

#[allow(clippy::panic)]
fn unreachable_digest() -> Digest {
    panic!("sha256 hex digests are always valid digests")
}

/// Opens the bucket, creating it on first use.
pub async fn ensure_bucket(js: &jetstream::Context) -> Result<object_store::ObjectStore, PluginStoreError> {
    match js.get_object_store(BUCKET).await {
        Ok(store) => Ok(store),
        Err(_) => js
            .create_object_store(object_store::Config {
                bucket: BUCKET.to_owned(),
                description: Some("FlexCore plugin modules, named by sha256 digest".to_owned()),
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| PluginStoreError::Nats(format!("create bucket {BUCKET}: {e}"))),
    }
}

/// Stores `bytes` under their digest (idempotent) and returns the digest.
pub async fn upload(js: &jetstream::Context, bytes: &[u8]) -> Result<Digest, PluginStoreError> {
    let digest = digest_of(bytes);
    let store = ensure_bucket(js).await?;
    if store.info(digest.as_str()).await.is_ok() {
        return Ok(digest);
    }
    let mut reader = bytes;
    store
        .put(digest.as_str(), &mut reader)
        .await
        .map_err(|e| PluginStoreError::Nats(format!("upload {digest}: {e}")))?;
    Ok(digest)
}

/// Loads the module stored under `digest` and verifies its bytes.
pub async fn download(js: &jetstream::Context, digest: &Digest) -> Result<Vec<u8>, PluginStoreError> {
    let store = js
        .get_object_store(BUCKET)
        .await
        .map_err(|_| PluginStoreError::NotFound(digest.to_string()))?;
    let mut object = store.get(digest.as_str()).await.map_err(|e| match e.kind() {
        object_store::GetErrorKind::NotFound => PluginStoreError::NotFound(digest.to_string()),
        _ => PluginStoreError::Nats(format!("download {digest}: {e}")),
    })?;
    let mut bytes = Vec::new();
    object
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| PluginStoreError::Nats(format!("read {digest}: {e}")))?;
    verify(digest, &bytes)?;
    Ok(bytes)
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
