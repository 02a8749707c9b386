//! The deployment files agree with the code: `Dockerfile`, `docker-compose.yml`,
//! `deploy/` (kustomize manifests, the OTLP collector config, the NATS config).
//!
//! - Every `FLEXCORE__…` variable they set is loaded by the real loader
//!   ([`Settings::load_with`] over the repository's `config/`, which is what the image
//!   carries as `/etc/flexcore`), so a typo or a key that does not exist fails here
//!   instead of at start-up in a cluster.
//! - [`compose`]: the image, Compose (health checks, dependencies on healthy NATS /
//!   Postgres, one image), the collector config.
//! - [`kube`]: probes, requests and limits, one image repository, existing files behind
//!   every kustomization entry, HPAs and PDBs aimed at existing Deployments (read as
//!   kustomize renders them, [`kustomize`]).
//! - [`nats`]: every subject constant of `shared/contracts/src/subjects.rs` appears in the
//!   permissions, each service user holds the subjects its code uses, and each Deployment
//!   logs in as its user with credentials from a Secret.
//!
//! Here: the services, reading files and YAML, and the config loader check.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod compose;
mod kube;
mod kustomize;
mod nats;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use flexcore_config::{ConfigError, Settings};
use serde::Deserialize;
use serde_yaml::Value;

/// A service running a FlexCore binary.
struct Service {
    /// Its Compose service, and its identity (NKey) of `flexctl security init`.
    name: &'static str,
    binary: &'static str,
    /// The command and projection services use Postgres; the scheduler, the runner and
    /// the gateway talk to NATS only (see each service's `main.rs`).
    uses_postgres: bool,
}

const SERVICES: [Service; 5] = [
    Service {
        name: "command",
        binary: "flexcore-command",
        uses_postgres: true,
    },
    Service {
        name: "projection",
        binary: "flexcore-projection",
        uses_postgres: true,
    },
    Service {
        name: "scheduler",
        binary: "flexcore-scheduler",
        uses_postgres: false,
    },
    Service {
        name: "runner",
        binary: "flexcore-runner",
        uses_postgres: false,
    },
    Service {
        name: "gateway",
        binary: "flexcore-gateway",
        uses_postgres: false,
    },
];

/// The port of every service's admin server (health checks and probes).
const ADMIN_PORT: u64 = 9090;
/// The gateway's HTTP API port (its own Service: exposing the API never exposes `/metrics`).
const GATEWAY_PORT: u64 = 8080;

/// The service that runs `binary`.
fn service_of(binary: &str) -> &'static Service {
    SERVICES
        .iter()
        .find(|s| s.binary == binary)
        .unwrap_or_else(|| panic!("unknown binary {binary}"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------- config loader

/// Loads `vars` the way a service does: the repository's `config/base.yaml`, then the
/// variables (instead of the process environment).
fn load(vars: &BTreeMap<String, String>) -> Result<Settings, ConfigError> {
    let vars: HashMap<String, String> = vars.clone().into_iter().collect();
    Settings::load_with(Some(&root().join("config")), None, Some(vars))
}

fn assert_loads(what: &str, vars: &BTreeMap<String, String>) {
    assert!(!vars.is_empty(), "{what}: no FLEXCORE__ variables found");
    if let Err(error) = load(vars) {
        panic!("{what}: the config loader refuses its FLEXCORE__ variables: {error}\n{vars:#?}");
    }
}

/// What every service's environment must hold, in Compose and on Kubernetes: settings the
/// loader accepts, the admin server the health checks use, NATS, and a database URL
/// exactly where the service uses Postgres.
fn assert_service_env(what: &str, service: &Service, env: &BTreeMap<String, String>) {
    assert_loads(what, env);
    assert_eq!(
        env.get("FLEXCORE__ADMIN__LISTEN").map(String::as_str),
        Some("0.0.0.0:9090"),
        "{what}: the health checks need the admin server on port {ADMIN_PORT}"
    );
    assert!(env.contains_key("FLEXCORE__NATS__URL"), "{what}: NATS URL");
    assert_eq!(
        env.contains_key("FLEXCORE__DATABASE__URL"),
        service.uses_postgres,
        "{what}: database URL only where used"
    );
}

#[test]
fn the_config_loader_refuses_a_typo() {
    let good = BTreeMap::from([("FLEXCORE__NATS__URL".to_owned(), "nats://nats:4222".to_owned())]);
    assert!(load(&good).is_ok(), "control: the correct key loads");
    for (typo, field) in [("FLEXCORE__NATS__ULR", "ulr"), ("FLEXCORE__NATZ__URL", "natz")] {
        let wrong = BTreeMap::from([(typo.to_owned(), "nats://nats:4222".to_owned())]);
        let error = load(&wrong).expect_err("a misspelt key must be refused").to_string();
        assert!(error.contains(field), "{typo}: the error names the bad key: {error}");
    }
}

// ---------------------------------------------------------------------------- YAML

/// Every YAML document of a file (multi-document files too), empty ones skipped.
fn documents(path: &Path) -> Vec<Value> {
    documents_of(&read(path), &path.display().to_string())
}

fn documents_of(text: &str, what: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{what}: invalid YAML: {e}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(*key))
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(value, path).and_then(Value::as_str)
}

fn seq_at<'a>(value: &'a Value, path: &[&str]) -> &'a [Value] {
    at(value, path).and_then(Value::as_sequence).map_or(&[], Vec::as_slice)
}
