//! Phase 0 (not timed): the placeholder plugins and one pipeline per client; and the
//! clean-up after phase 1, which archives those pipelines.

use anyhow::anyhow;
use flexcore_client::Client;
use flexcore_contracts::commands::{ArchivePipeline, CreatePipeline, RegisterPlugin};
use flexcore_contracts::model::{Grants, PluginKind, PluginRuntime, ResourceLimits, RetryPolicy, StepSpec};
use flexcore_contracts::ErrorCode;
use futures::future::{join_all, try_join_all};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use super::commands::{send, Failure, Outcome, CLIENTS_PER_CONNECTION, NO_SERVICE, REQUEST_TIMEOUT};

/// The placeholder plugins every bench pipeline uses: `(name, kind)`.
const PLUGINS: [(&str, PluginKind); 2] = [
    ("bench-extractor", PluginKind::Extractor),
    ("bench-loader", PluginKind::Loader),
];
/// Version of the placeholder plugins.
const PLUGIN_VERSION: &str = "1.0.0";
/// Owner of the bench pipelines.
const OWNER: &str = "bench";

/// The error of a setup request that did not succeed.
fn setup_error(what: &str, outcome: Outcome) -> anyhow::Error {
    match outcome {
        Outcome::Failed(Failure::NoResponders, _) => anyhow!(NO_SERVICE),
        Outcome::Failed(Failure::TimedOut, _) => {
            anyhow!("{what}: no reply within {REQUEST_TIMEOUT:?}; is flexcore-command overloaded or stuck?")
        }
        Outcome::Failed(_, detail) => anyhow!("{what}: {detail}"),
        Outcome::Rejected(error) => anyhow!("{what} was refused: {error}"),
        Outcome::Accepted => anyhow!("{what}: accepted, yet treated as a failure (a bug in flexctl)"),
    }
}

/// Digest of the placeholder module: the plugins are registered, never run.
fn module_digest() -> String {
    format!(
        "sha256:{:x}",
        Sha256::digest(b"flexctl bench commands: placeholder module")
    )
}

/// Registers the placeholder plugins; `conflict` means registered by an earlier run.
pub async fn register_plugins(client: &Client) -> anyhow::Result<()> {
    for (name, kind) in PLUGINS {
        let command = RegisterPlugin {
            name: name.parse()?,
            version: PLUGIN_VERSION.parse()?,
            kind,
            runtime: PluginRuntime::Wasm,
            module_digest: Some(module_digest().parse()?),
            executable: None,
            config_schema: None,
            limits: ResourceLimits::default(),
            grants: Grants::default(),
            description: Some("Placeholder of flexctl bench commands; never run.".to_owned()),
        };
        match send(client, &command).await {
            Outcome::Accepted => tracing::info!(plugin = name, "registered"),
            Outcome::Rejected(e) if e.code == ErrorCode::Conflict => {
                tracing::debug!(plugin = name, "already registered");
            }
            other => {
                return Err(setup_error(
                    &format!("registering plugin {name}@{PLUGIN_VERSION}"),
                    other,
                ))
            }
        }
    }
    Ok(())
}

/// The steps of a bench pipeline: the placeholder plugins.
pub fn steps() -> anyhow::Result<Vec<StepSpec>> {
    PLUGINS
        .iter()
        .map(|(name, _)| {
            Ok(StepSpec {
                plugin: format!("{name}@{PLUGIN_VERSION}").parse()?,
                config: flexcore_contracts::StepConfig::empty(),
            })
        })
        .collect()
}

/// Creates one pipeline per client, named `bench-<run>-<client>`, each allowing
/// `max_active_runs` runs at once; returns their ids.
pub async fn create_pipelines(
    connections: &[Client],
    clients: usize,
    max_active_runs: u32,
) -> anyhow::Result<Vec<Uuid>> {
    let run: String = Uuid::new_v4().simple().to_string().chars().take(8).collect();
    let steps = steps()?;
    let creations = (0..clients).map(|i| {
        let client = &connections[i / CLIENTS_PER_CONNECTION];
        let steps = steps.clone();
        let run = &run;
        async move {
            let name = format!("bench-{run}-{i}");
            let pipeline_id = Uuid::new_v4();
            let command = CreatePipeline {
                pipeline_id: Some(pipeline_id),
                name: name.parse()?,
                owner: OWNER.parse()?,
                description: Some("Toggled by flexctl bench commands.".to_owned()),
                tags: Vec::new(),
                steps,
                max_active_runs,
                retry: RetryPolicy::default(),
                run_timeout_seconds: 3600,
            };
            match send(client, &command).await {
                Outcome::Accepted => Ok(pipeline_id),
                other => Err(setup_error(&format!("creating pipeline {name}"), other)),
            }
        }
    });
    let ids = try_join_all(creations).await?;
    tracing::info!(pipelines = ids.len(), prefix = %format!("bench-{run}-"), "created");
    Ok(ids)
}

/// Archives the bench pipelines (not timed, best effort) so repeated runs do not pile
/// up active pipelines; their names are free again afterwards.
pub async fn archive_pipelines(connections: &[Client], pipelines: &[Uuid]) {
    let archivals = pipelines.iter().enumerate().map(|(i, &pipeline_id)| async move {
        let client = &connections[i / CLIENTS_PER_CONNECTION];
        let command = ArchivePipeline {
            pipeline_id,
            reason: Some("flexctl bench commands finished".to_owned()),
        };
        send(client, &command).await == Outcome::Accepted
    });
    let failed = join_all(archivals)
        .await
        .into_iter()
        .filter(|archived| !archived)
        .count();
    if failed > 0 {
        tracing::warn!(failed, "some bench pipelines could not be archived");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flexcore_contracts::ErrorBody;

    #[test]
    fn no_responders_in_setup_says_to_start_the_service() {
        let e = setup_error("x", Outcome::Failed(Failure::NoResponders, String::new()));
        assert_eq!(e.to_string(), NO_SERVICE);
        let refused = Outcome::Rejected(ErrorBody::new(flexcore_contracts::ErrorReason::Unauthorized, "no"));
        let e = setup_error("registering", refused);
        assert!(
            e.to_string().starts_with("registering was refused: unauthorized"),
            "{e}"
        );
    }
}
