//! The runner's NATS side: pulls run attempts from `FLEXCORE_WORK` (durable consumer
//! `flexcore-runner`, shared by every runner; AckWait = lease), one per free slot, and
//! drives each through [`attempt::process`].
//!
//! - [`attempt`]: claim → run → checkpoints → outcome, heartbeats, cancellation.
//! - [`definition`]: the attempt's definition from the event stream.
//! - [`janitor`]: deletes work items that linger below the consumer's ack floor.
//! - [`secrets`]: `${secret:NAME}` resolution (the executor scrubs the values).
//! - [`env`]: the operator's allow-list of environment variables plugins may be granted.
//! - [`metrics`]: slots, plugin executions and records for `/metrics`; readiness checks.

pub mod attempt;
pub mod definition;
pub mod env;
pub mod janitor;
pub mod metrics;
pub mod secrets;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use flexcore_contracts::subjects;
use flexcore_security::Identity;
use flexcore_service::security::Credentials;
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::sandbox::Sandbox;
pub use env::EnvAllowList;
pub use secrets::SecretSource;

/// Durable consumer name shared by all runners.
pub const CONSUMER: &str = "flexcore-runner";

/// Runner settings.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// This runner's id (recorded in `run.claimed`).
    pub runner_id: String,
    /// Attempts run at once.
    pub slots: usize,
    /// Lease: AckWait of the work consumer; heartbeats every third of it.
    pub lease: Duration,
    /// Deliveries of one work item before JetStream gives up on it.
    pub max_deliver: i64,
    /// Where secrets come from.
    pub secrets: SecretSource,
    /// Environment variables plugins may be granted (none by default).
    pub plugin_env_allow: EnvAllowList,
    /// How long shutdown waits for attempts to hand back their work or report it.
    pub shutdown_grace: Duration,
}

/// Runs until `shutdown`: takes work while slots are free; on shutdown stops taking work
/// and stops the attempts in flight (they are handed back for another runner).
pub async fn run(
    client: async_nats::Client,
    sandbox: Arc<Sandbox>,
    config: RunnerConfig,
    credentials: Credentials,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let js = jetstream::new(client.clone());
    // Setup creates the streams; a runner started first waits for them.
    if flexcore_service::streams::wait_for(&js, subjects::LOGS_STREAM, &shutdown)
        .await
        .is_none()
    {
        return Ok(());
    }
    let Some(work) = flexcore_service::streams::wait_for(&js, subjects::WORK_STREAM, &shutdown).await else {
        return Ok(());
    };
    let consumer: consumer::PullConsumer = work
        .get_or_create_consumer(
            CONSUMER,
            consumer::pull::Config {
                durable_name: Some(CONSUMER.to_owned()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: config.lease,
                max_deliver: config.max_deliver,
                ..Default::default()
            },
        )
        .await
        .context("creating the work consumer")?;
    let abandon = CancellationToken::new();
    let commands = flexcore_client::Client::new(client.clone()).with_identity(credentials.identity.clone());
    let ctx = Arc::new(attempt::Context {
        client,
        js,
        sandbox,
        runner_id: config.runner_id.clone(),
        lease: config.lease,
        secrets: config.secrets.clone(),
        plugin_env_allow: config.plugin_env_allow.clone(),
        shutdown: shutdown.clone(),
        abandon: abandon.clone(),
        commands,
        identity: credentials.identity.clone(),
        trust: credentials.trust,
    });
    let slots = Arc::new(Semaphore::new(config.slots.max(1)));
    let _offered = flexcore_service::metrics::runner().offer(config.slots.max(1));
    tracing::info!(runner_id = %config.runner_id, slots = config.slots, "taking run work");
    // Attempts in flight in this runner (the fetch loop's own permit is not one).
    let in_flight = Arc::new(AtomicUsize::new(0));
    let janitor = tokio::spawn(janitor::run(ctx.js.clone(), ctx.commands.clone(), shutdown.clone()));
    let presence = tokio::spawn(announce(
        ctx.client.clone(),
        credentials.identity,
        config.runner_id.clone(),
        config.slots.max(1),
        in_flight.clone(),
        shutdown.clone(),
    ));
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => p?,
        };
        let fetch = async {
            let mut batch = consumer
                .fetch()
                .max_messages(1)
                .expires(FETCH_EXPIRES)
                .messages()
                .await?;
            // A pull request sent just before a disconnection never reaches the server,
            // and async-nats gives up on its answer only 5 s after the expiry: a runner
            // would stand idle that long after every NATS restart. The server answers an
            // expired pull within the expiry, so waiting a second more loses nothing.
            match tokio::time::timeout(FETCH_EXPIRES + Duration::from_secs(1), batch.next()).await {
                Ok(next) => Ok::<_, async_nats::Error>(next),
                Err(_) => Ok(None),
            }
        };
        // A fetch from a server that is gone must not outlive a shutdown.
        let fetched = tokio::select! {
            () = shutdown.cancelled() => break,
            fetched = fetch => fetched,
        };
        let next = match fetched {
            Ok(next) => next,
            Err(error) => {
                tracing::warn!(%error, "fetching work failed");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            }
        };
        if let Some(Ok(message)) = next {
            let busy = flexcore_service::metrics::runner().busy();
            let tracked = flexcore_service::in_flight::track("run attempts");
            in_flight.fetch_add(1, Ordering::Relaxed);
            let in_flight = in_flight.clone();
            let attempt = attempt::process(ctx.clone(), message, permit);
            tokio::spawn(async move {
                attempt.await;
                in_flight.fetch_sub(1, Ordering::Relaxed);
                drop((busy, tracked));
            });
        }
    }
    // Wait for the attempts to hand their work back or report their outcome (bounded by
    // the grace); then what is still unreported is given up.
    let all = u32::try_from(config.slots.max(1)).unwrap_or(u32::MAX);
    if tokio::time::timeout(config.shutdown_grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        let left = in_flight.load(Ordering::Relaxed);
        tracing::warn!(attempts = left, grace = ?config.shutdown_grace, "shutdown grace elapsed: giving up the attempts in flight (their leases lapse and they are retried)");
        abandon.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), slots.acquire_many(all)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), presence).await;
    janitor.abort();
    Ok(())
}

/// How long a pull for work waits on the server for an item.
const FETCH_EXPIRES: Duration = Duration::from_secs(1);

/// How often a runner announces its slots on [`subjects::RUNNER_PRESENCE`].
pub const PRESENCE_INTERVAL: Duration = Duration::from_secs(2);

/// Announces this runner's slots every [`PRESENCE_INTERVAL`] until `shutdown`, then once
/// more with `alive: false`.
async fn announce(
    client: async_nats::Client,
    identity: Identity,
    runner_id: String,
    slots: usize,
    in_flight: Arc<AtomicUsize>,
    shutdown: CancellationToken,
) {
    let total = u32::try_from(slots).unwrap_or(u32::MAX);
    let mut tick = tokio::time::interval(PRESENCE_INTERVAL);
    loop {
        let alive = tokio::select! {
            () = shutdown.cancelled() => false,
            _ = tick.tick() => true,
        };
        let busy = in_flight.load(Ordering::Relaxed).min(slots);
        let presence = flexcore_contracts::work::RunnerPresence {
            runner_id: runner_id.clone(),
            slots: total,
            busy: u32::try_from(busy).unwrap_or(u32::MAX),
            alive,
        };
        if let Ok(payload) = serde_json::to_vec(&presence) {
            let mut headers = identity.signed_headers(subjects::RUNNER_PRESENCE, &payload);
            flexcore_service::reply::name_service(&mut headers, crate::SERVICE);
            if let Err(error) = client
                .publish_with_headers(subjects::RUNNER_PRESENCE, headers, payload.into())
                .await
            {
                tracing::debug!(%error, "announcing runner presence failed");
            }
        }
        if !alive {
            let _ = tokio::time::timeout(flexcore_service::FLUSH_TIMEOUT, client.flush()).await;
            return;
        }
    }
}

/// The runner settings of `settings`, with the runner id derived when unset.
pub fn config_from(settings: &flexcore_config::RunnerSettings) -> anyhow::Result<RunnerConfig> {
    let secrets = match settings.secrets_source.as_str() {
        "env" => SecretSource::Env {
            prefix: settings.secrets_env_prefix.clone(),
        },
        "dir" => SecretSource::Dir(
            settings
                .secrets_dir
                .clone()
                .context("runner.secrets_source is dir but runner.secrets_dir is not set")?
                .into(),
        ),
        other => anyhow::bail!("runner.secrets_source must be env or dir, not {other:?}"),
    };
    let secrets_prefix = match &secrets {
        SecretSource::Env { prefix } => Some(prefix.as_str()),
        SecretSource::Dir(_) => None,
    };
    let plugin_env_allow = EnvAllowList::new(&settings.plugin_env_allow, secrets_prefix).map_err(anyhow::Error::msg)?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "runner".into());
    Ok(RunnerConfig {
        runner_id: settings
            .runner_id
            .clone()
            .unwrap_or_else(|| format!("{host}-{}", std::process::id())),
        slots: settings.slots,
        lease: Duration::from_secs(settings.lease_seconds.max(1)),
        max_deliver: settings.max_deliver,
        secrets,
        plugin_env_allow,
        shutdown_grace: settings.shutdown_grace,
    })
}

/// The sandbox settings of `settings`. `checker` is the executable that runs the compile
/// check (the runner's own binary, see
/// [`run_compile_check_if_asked`](crate::sandbox::run_compile_check_if_asked)).
pub fn sandbox_config_from(
    settings: &flexcore_config::RunnerSettings,
    checker: Option<std::path::PathBuf>,
) -> crate::sandbox::SandboxConfig {
    use crate::sandbox::{CacheLimits, CompileLimits, Defaults, ProcessIsolation, SandboxConfig};
    let base = SandboxConfig::default();
    SandboxConfig {
        defaults: Defaults {
            max_state_bytes: settings.max_state_bytes,
            checkpoint_interval: settings.checkpoint_interval,
            max_run_memory_bytes: settings.run_memory_bytes,
            max_stages: settings.max_stages,
            ..base.defaults
        },
        compile: CompileLimits {
            max_module_bytes: settings.max_module_bytes,
            timeout: Duration::from_secs(settings.compile_timeout_seconds.max(1)),
            memory_bytes: settings.compile_memory_bytes,
            concurrency: settings.compile_concurrency.max(1),
            checker,
        },
        cache: CacheLimits {
            max_modules: settings.module_cache_entries.max(1),
            max_bytes: settings.module_cache_bytes,
            ..base.cache
        },
        process: ProcessIsolation {
            pid_namespace: settings.process_pid_namespace,
            run_as: settings.process_uid.zip(settings.process_gid),
            max_open_files: settings.process_max_open_files,
            max_processes: settings.process_max_processes,
        },
        ..base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_runner_settings_give_the_default_sandbox() {
        let settings = flexcore_config::RunnerSettings::default();
        let checker = std::path::PathBuf::from("/usr/local/bin/flexcore-runner");
        let mut config = sandbox_config_from(&settings, Some(checker.clone()));
        assert_eq!(config.compile.checker, Some(checker));
        config.compile.checker = None;
        assert_eq!(config, crate::sandbox::SandboxConfig::default());
    }
}
