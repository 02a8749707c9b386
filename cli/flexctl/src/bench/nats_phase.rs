//! The command phase: every client owns a pipeline and toggles it (`pipeline.pause` /
//! `pipeline.resume`, each with a fresh `command_id`) as fast as replies come back.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Phase, Window};

/// Clients per NATS connection.
const CLIENTS_PER_CONNECTION: usize = 16;

async fn request(client: &async_nats::Client, command: &str, body: &Value) -> anyhow::Result<Value> {
    let subject = flexcore_contracts::subjects::command(
        command.split_once('.').map_or("", |c| c.0),
        command.split_once('.').map_or("", |c| c.1),
    );
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(subject, serde_json::to_vec(body)?.into()),
    )
    .await
    .context("no reply within 10 s")?
    .map_err(|e| match e.kind() {
        async_nats::RequestErrorKind::NoResponders => {
            anyhow::anyhow!("no command service answers on flexcore.cmd.>: start flexcore-command first")
        }
        _ => anyhow::anyhow!("request {command} failed: {e}"),
    })?;
    Ok(serde_json::from_slice(&reply.payload)?)
}

async fn setup(client: &async_nats::Client, clients: usize) -> anyhow::Result<Vec<Uuid>> {
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(b"flexctl bench plugin")));
    for (name, kind) in [("bench-extractor", "extractor"), ("bench-loader", "loader")] {
        let reply = request(
            client,
            "plugin.register",
            &json!({"name": name, "version": "1.0.0", "kind": kind, "module_digest": digest}),
        )
        .await?;
        let refused_other = reply["ok"] != json!(true) && reply["error"]["code"] != json!("conflict");
        anyhow::ensure!(!refused_other, "registering {name} failed: {reply}");
    }
    let run = Uuid::new_v4().simple().to_string();
    let mut pipelines = Vec::with_capacity(clients);
    for i in 0..clients {
        let body = json!({"name": format!("bench-{}-{i}", &run[..8]), "owner": "bench",
            "steps": [{"plugin": "bench-extractor@1.0.0"}, {"plugin": "bench-loader@1.0.0"}]});
        let reply = request(client, "pipeline.create", &body).await?;
        let id = reply["aggregate_id"]
            .as_str()
            .with_context(|| format!("creating a pipeline failed: {reply}"))?;
        pipelines.push(id.parse()?);
    }
    Ok(pipelines)
}

/// Runs the phase against the command service reachable at `nats_url`.
pub async fn run(nats_url: &str, clients: usize, warmup: Duration, duration: Duration) -> anyhow::Result<Phase> {
    let connections = clients.div_ceil(CLIENTS_PER_CONNECTION);
    let mut nats = Vec::with_capacity(connections);
    for _ in 0..connections {
        nats.push(
            async_nats::connect(nats_url)
                .await
                .with_context(|| format!("cannot connect to NATS at {nats_url}"))?,
        );
    }
    let pipelines = setup(&nats[0], clients).await?;
    let window = Window::starting_now(warmup, duration);
    let tasks: Vec<_> = pipelines
        .into_iter()
        .enumerate()
        .map(|(i, pipeline)| {
            tokio::spawn(client_loop(
                nats[i / CLIENTS_PER_CONNECTION].clone(),
                pipeline,
                window,
                duration,
            ))
        })
        .collect();
    let mut total = Phase::new(duration)?;
    for t in tasks {
        total.merge(t.await??)?;
    }
    Ok(total)
}

async fn client_loop(
    client: async_nats::Client,
    pipeline: Uuid,
    window: Window,
    duration: Duration,
) -> anyhow::Result<Phase> {
    let mut phase = Phase::new(duration)?;
    let mut paused = false;
    while Instant::now() < window.until {
        let action = if paused { "pipeline.resume" } else { "pipeline.pause" };
        let body = json!({"pipeline_id": pipeline, "command_id": Uuid::new_v4()});
        let started = Instant::now();
        let outcome = request(&client, action, &body).await;
        let measured = started >= window.from && Instant::now() <= window.until;
        match outcome {
            Ok(reply) if reply["ok"] == json!(true) => {
                paused = !paused;
                if measured {
                    phase.ok += 1;
                    phase
                        .latency
                        .record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX).max(1))?;
                }
            }
            Ok(reply) => {
                let code = reply["error"]["code"].as_str().unwrap_or("unknown").to_owned();
                // Out of step (a timed-out request that did commit): flip and go on.
                if code == "invalid_state" {
                    paused = !paused;
                }
                if measured {
                    *phase.errors.entry(code).or_default() += 1;
                }
            }
            Err(error) => {
                tracing::debug!(%error, "request failed");
                if measured {
                    *phase.errors.entry("transport".into()).or_default() += 1;
                }
            }
        }
    }
    Ok(phase)
}
