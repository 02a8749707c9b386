use clap::Parser as _;
use flexctl::cli::{run, Cli};

use crate::spawn_service;

fn cli(nats_url: &str, args: &[&str]) -> Cli {
    let keys = flexcore_testkit::nats::kit_dir();
    let seed = keys.join("flexctl.nk").display().to_string();
    let identities = keys.join("identities.json").display().to_string();
    let global = [
        "flexctl",
        "--nats-url",
        nats_url,
        "--nkey-seed-file",
        &seed,
        "--identities-file",
        &identities,
        "plugin",
        "register",
    ];
    Cli::try_parse_from([&global[..], args].concat()).unwrap()
}

#[tokio::test]
async fn plugin_register_uploads_registers_and_refuses_duplicates_and_bad_input() {
    let service = spawn_service().await;
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("csv.wasm");
    std::fs::write(&module, b"\0asm\x01\0\0\0 test module").unwrap();
    let schema = dir.path().join("schema.json");
    std::fs::write(&schema, r#"{"type":"object","properties":{"path":{"type":"string"}}}"#).unwrap();
    let file = module.to_str().unwrap();
    let base = ["--name", "csv", "--version", "1.0.0", "--kind", "extractor"];
    let args: Vec<&str> = [
        &[file][..],
        &base[..],
        &[
            "--grant",
            "dir:/data:/input:ro",
            "--limit",
            "memory=64MiB",
            "--config-schema",
            schema.to_str().unwrap(),
        ][..],
    ]
    .concat();
    run(cli(&service.nats.url, &args)).await.unwrap();

    // The module is in the object store under its digest, and the plugin is registered with it.
    let js = async_nats::jetstream::new(service.nats.client().await.unwrap());
    let digest = flexcore_plugin_store::digest_of(&std::fs::read(&module).unwrap());
    assert_eq!(
        flexcore_plugin_store::download(&js, &digest).await.unwrap(),
        std::fs::read(&module).unwrap()
    );
    let data: serde_json::Value = sqlx::query_scalar("SELECT data FROM events WHERE event_type = 'plugin.registered'")
        .fetch_one(&service.db.pool)
        .await
        .unwrap();
    assert_eq!(data["module_digest"], serde_json::json!(digest.to_string()));
    assert_eq!(data["grants"]["dirs"][0]["guest_path"], serde_json::json!("/input"));
    assert_eq!(data["limits"]["memory_bytes"], serde_json::json!(64 << 20));

    let again = run(cli(&service.nats.url, &args)).await.unwrap_err().to_string();
    assert!(again.contains("already registered"), "{again}");
    let not_wasm = dir.path().join("notes.txt");
    std::fs::write(&not_wasm, "hello").unwrap();
    let bad = run(cli(
        &service.nats.url,
        &[&[not_wasm.to_str().unwrap()][..], &base[..]].concat(),
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(bad.contains("not a WebAssembly module"), "{bad}");
    let bad_version = run(cli(
        &service.nats.url,
        &[file, "--name", "csv", "--version", "one", "--kind", "extractor"],
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(bad_version.contains("semantic version"), "{bad_version}");
    service.shutdown.cancel();
}

#[tokio::test]
async fn plugin_register_without_nats_says_so() {
    let err = run(cli(
        "nats://127.0.0.1:1",
        &["x.wasm", "--name", "a", "--version", "1.0.0", "--kind", "loader"],
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("cannot connect to NATS"), "{err}");
}
