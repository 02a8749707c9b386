//! `flexctl projection list | rebuild NAME [--wait]`: the read models' positions and lag,
//! and a rebuild (a replay of the event log into fresh tables, swapped in when caught up).
//!
//! A rebuild is the query `projection.rebuild`; the NATS permissions let only the `admin`
//! role publish it (and the gateway, for HTTP callers with the API role `admin`), so with
//! any other identity the server drops the request and flexctl says why.

use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use flexcore_client::ClientError;
use flexcore_contracts::queries::PROJECTIONS;
use flexcore_contracts::views::{ProjectionStatus, RebuildStatus};
use serde_json::json;

use crate::api::Api;
use crate::cli::Output;
use crate::nats::Nats;
use crate::table::{self, Table};

/// How often `rebuild --wait` looks at the progress.
const POLL: Duration = Duration::from_millis(500);

/// `flexctl projection …`.
#[derive(Debug, Subcommand)]
pub enum ProjectionCommand {
    /// Every projection: its position in the event log, lag, events applied, generation
    /// and latest rebuild.
    List,
    /// Replay one projection from the event log into fresh tables and swap them in when
    /// caught up (queries keep being answered from the old ones meanwhile). Admin only.
    Rebuild(RebuildArgs),
}

/// `projection rebuild`.
#[derive(Debug, Clone, Args)]
pub struct RebuildArgs {
    /// The projection.
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(PROJECTIONS))]
    pub name: String,
    /// Wait until the rebuild has finished (swapped in, or failed), showing its progress.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (the rebuild goes on).
    #[arg(long, default_value = "30m", value_parser = crate::duration::parse_duration)]
    pub timeout: Duration,
}

/// Runs a `projection` subcommand.
pub async fn run(nats: &Nats, command: &ProjectionCommand, output: Output) -> anyhow::Result<()> {
    let api = nats.api().await?;
    match command {
        ProjectionCommand::List => {
            let projections = list(&api).await?;
            table::emit(output, &projections, || list_text(&projections))
        }
        ProjectionCommand::Rebuild(args) => {
            let requested = request(&api, &args.name).await?;
            if !args.wait {
                return table::emit(output, &requested, || {
                    format!(
                        "rebuild of {} requested; follow it with `flexctl projection list` (or --wait)",
                        args.name
                    )
                });
            }
            let done = wait(&api, &args.name, args.timeout).await?;
            table::emit(output, &done, || {
                format!(
                    "rebuild of {} {}: {} event(s) replayed{}",
                    args.name,
                    done.state,
                    done.processed,
                    done.events_per_second
                        .map(|r| format!(" at {r:.0} events/s"))
                        .unwrap_or_default()
                )
            })?;
            match done.state.as_str() {
                "done" => Ok(()),
                state => bail!(
                    "the rebuild of {} ended {state}{}",
                    args.name,
                    done.error.map(|e| format!(": {e}")).unwrap_or_default()
                ),
            }
        }
    }
}

/// Every projection's status (`projection.list`).
pub async fn list(api: &Api) -> anyhow::Result<Vec<ProjectionStatus>> {
    Ok(api.query("projection.list", &json!({})).await?)
}

/// Requests a rebuild of projection `name` (`projection.rebuild`).
pub async fn request(api: &Api, name: &str) -> anyhow::Result<RebuildStatus> {
    match api.query("projection.rebuild", &json!({"name": name})).await {
        Ok(status) => Ok(status),
        // The server drops a publish the identity may not make: no reply ever comes.
        Err(error @ ClientError::Unanswered { .. }) => Err(anyhow::Error::new(error).context(
            "no answer to projection.rebuild: only the admin role may rebuild (log in as an admin with \
             --nkey-seed-file), and flexcore-projection must be running",
        )),
        Err(error) => Err(error.into()),
    }
}

/// Waits until the latest rebuild of `name` has finished, up to `timeout`.
pub async fn wait(api: &Api, name: &str, timeout: Duration) -> anyhow::Result<RebuildStatus> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let rebuild = list(api)
            .await?
            .into_iter()
            .find(|p| p.name == name)
            .and_then(|p| p.rebuild);
        if let Some(rebuild) = rebuild.filter(|r| matches!(r.state.as_str(), "done" | "failed" | "interrupted")) {
            return Ok(rebuild);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the rebuild of {name} has not finished within {timeout:?}; it goes on: `flexctl projection list`");
        }
        tokio::time::sleep(POLL).await;
    }
}

fn list_text(projections: &[ProjectionStatus]) -> String {
    let mut t = Table::new(&[
        "PROJECTION",
        "POSITION",
        "LAG",
        "LAG AGE",
        "APPLIED",
        "GENERATION",
        "UPDATED",
        "REBUILD",
    ]);
    for p in projections {
        t.row(vec![
            p.name.clone(),
            p.position.to_string(),
            p.lag_events.to_string(),
            format!("{:.1} s", p.lag_ms as f64 / 1000.0),
            p.events_applied.to_string(),
            p.generation.to_string(),
            table::time(Some(p.updated_at)),
            p.rebuild.as_ref().map_or_else(|| "-".to_owned(), rebuild_text),
        ]);
    }
    t.render("no projections")
}

fn rebuild_text(r: &RebuildStatus) -> String {
    match r.state.as_str() {
        "requested" | "running" => format!("{} {}/{}", r.state, r.processed, r.target),
        state => format!("{state} {}", table::time(r.finished_at.or(r.started_at))),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    #[test]
    fn only_projections_there_are_can_be_rebuilt() {
        let error = crate::cli::Cli::try_parse_from(["flexctl", "projection", "rebuild", "bogus"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("plugins, pipelines, runs, schedules, audit"), "{error}");
        assert!(crate::cli::Cli::try_parse_from(["flexctl", "projection", "rebuild", "runs", "--wait"]).is_ok());
    }
}
