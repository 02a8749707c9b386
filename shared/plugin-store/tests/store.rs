//! Plugin store against a private JetStream server.
#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

use flexcore_plugin_store::{
    bucket, digest_of, download, download_at_most, upload, upload_at_most, PluginStoreError, BUCKET,
};
use flexcore_testkit::TestNats;

#[tokio::test]
async fn modules_round_trip_by_digest_and_tampering_is_refused() {
    let nats = TestNats::start().await.unwrap();
    let js = nats.jetstream().await.unwrap();
    let module = b"\0asm\x01\0\0\0 pretend module".to_vec();
    let digest = upload(&js, &module).await.unwrap();
    assert_eq!(digest, digest_of(&module));
    assert_eq!(
        upload(&js, &module).await.unwrap(),
        digest,
        "uploading twice is idempotent"
    );
    assert_eq!(download(&js, &digest).await.unwrap(), module);

    let missing = digest_of(b"never stored");
    assert!(matches!(
        download(&js, &missing).await,
        Err(PluginStoreError::NotFound(_))
    ));

    // Someone overwrites the object under the same name with other bytes.
    let store = bucket(&js).await.unwrap();
    let mut evil: &[u8] = b"\0asm\x01\0\0\0 evil";
    store.put(digest.as_str(), &mut evil).await.unwrap();
    let err = download(&js, &digest).await.unwrap_err();
    assert!(matches!(err, PluginStoreError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains("tampered"), "{err}");
    assert_eq!(BUCKET, "flexcore-plugins");
}

#[tokio::test]
async fn modules_over_the_size_limit_are_refused_both_ways() {
    let nats = TestNats::start().await.unwrap();
    let js = nats.jetstream().await.unwrap();
    let module = vec![7u8; 4096];
    let err = upload_at_most(&js, &module, 4095).await.unwrap_err();
    assert!(
        matches!(
            err,
            PluginStoreError::TooLarge {
                bytes: 4096,
                limit: 4095,
                ..
            }
        ),
        "{err}"
    );
    let digest = upload_at_most(&js, &module, 4096).await.unwrap();
    // Stored by someone with a higher limit: a reader with a lower one does not read it.
    let err = download_at_most(&js, &digest, 1024).await.unwrap_err();
    assert!(
        matches!(
            err,
            PluginStoreError::TooLarge {
                bytes: 4096,
                limit: 1024,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(download_at_most(&js, &digest, 4096).await.unwrap(), module);
}
