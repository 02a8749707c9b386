//! `flexctl security …`: the identities of a deployment, offline.
//!
//! - `init --dir DIR`: one NKey per service role, `flexctl` (admin) and `app` (client):
//!   the identities file every service reads, the nats-server accounts block, and one
//!   seed file per identity (0600, in a 0700 directory).
//! - `add --dir DIR NAME ROLE` / `remove --dir DIR NAME`: another identity (a second
//!   runner, an application, the new key of a rotation), or one retired.
//! - `accounts --identities FILE`: the accounts block of an identities file.
//!
//! After `add` or `remove`, give the services the new identities file and the server the
//! new accounts block (`nats-server --signal reload`): docs/operations.md, "Identities".

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use flexcore_security::kit::{self, Kit, ACCOUNTS_FILE, IDENTITIES_FILE, STANDARD};
use flexcore_security::{Role, Trust};
use serde_json::json;

use crate::cli::Output;
use crate::table;

/// `flexctl security …`.
#[derive(Debug, Subcommand)]
pub enum SecurityCommand {
    /// Generate the identities of a new deployment into a directory.
    Init(InitArgs),
    /// Add an identity (new key) to a directory made by `init`.
    Add(AddArgs),
    /// Remove an identity from a directory made by `init`.
    Remove(RemoveArgs),
    /// Print the nats-server accounts block of an identities file.
    Accounts(AccountsArgs),
}

/// `flexctl security init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to write (created; an existing identities file there is never replaced).
    #[arg(long)]
    pub dir: PathBuf,
}

/// `flexctl security add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// Directory made by `init`.
    #[arg(long)]
    pub dir: PathBuf,
    /// The new identity's name (`[a-z0-9][a-z0-9-]{0,62}`), recorded as the actor.
    pub name: String,
    /// Its role: command, projection, scheduler, runner, admin, client or setup.
    pub role: String,
}

/// `flexctl security remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Directory made by `init`.
    #[arg(long)]
    pub dir: PathBuf,
    /// The identity to remove.
    pub name: String,
}

/// `flexctl security accounts`.
#[derive(Debug, Args)]
pub struct AccountsArgs {
    /// The identities file.
    #[arg(long)]
    pub identities: PathBuf,
}

/// Runs a `flexctl security` command; with `--output json`, one JSON object says what was
/// written where.
pub fn run(command: &SecurityCommand, output: Output) -> anyhow::Result<()> {
    match command {
        SecurityCommand::Init(args) => init(&args.dir, output),
        SecurityCommand::Add(args) => {
            let role: Role = args.role.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            let seed = kit::add_to_dir(&args.dir, &args.name, role)?;
            let (identities, accounts) = (args.dir.join(IDENTITIES_FILE), args.dir.join(ACCOUNTS_FILE));
            let result = json!({
                "added": args.name, "role": role.to_string(), "seed_file": seed,
                "identities_file": identities, "accounts_file": accounts,
            });
            table::emit(output, &result, || {
                format!(
                    "added {} (role {role}); its seed: {}\n{}",
                    args.name,
                    seed.display(),
                    next_step(&identities, &accounts)
                )
            })
        }
        SecurityCommand::Remove(args) => {
            kit::remove_from_dir(&args.dir, &args.name)?;
            let (identities, accounts) = (args.dir.join(IDENTITIES_FILE), args.dir.join(ACCOUNTS_FILE));
            let result = json!({"removed": args.name, "identities_file": identities, "accounts_file": accounts});
            table::emit(output, &result, || {
                format!("removed {}\n{}", args.name, next_step(&identities, &accounts))
            })
        }
        SecurityCommand::Accounts(args) => {
            let trust = Trust::load(&args.identities)?;
            let mut identities: Vec<_> = trust.identities().cloned().collect();
            identities.sort_by(|a, b| a.name.cmp(&b.name));
            let block = kit::accounts_block(&identities, &[]);
            let block = block.trim_end();
            table::emit(output, &json!({"accounts": block}), || block.to_owned())
        }
    }
}

/// What to do after the identities changed.
fn next_step(identities: &Path, accounts: &Path) -> String {
    format!(
        "next: give the services {} and the server {} (nats-server --signal reload)",
        identities.display(),
        accounts.display()
    )
}

fn init(dir: &Path, output: Output) -> anyhow::Result<()> {
    if dir.join(IDENTITIES_FILE).exists() {
        bail!(
            "{} exists: keep it, or add identities with `flexctl security add --dir {} NAME ROLE`",
            dir.join(IDENTITIES_FILE).display(),
            dir.display()
        );
    }
    let seeds = Kit::generate(&STANDARD)
        .write(dir)
        .with_context(|| format!("writing {}", dir.display()))?;
    let result = json!({
        "dir": dir, "identities_file": dir.join(IDENTITIES_FILE),
        "accounts_file": dir.join(ACCOUNTS_FILE), "seed_files": seeds,
    });
    table::emit(output, &result, || {
        format!(
            "wrote {} identities to {}:\n  {}        the identities file (every service: security.identities_file)\n  {}   the nats-server accounts block (include it in the server's config)\n{}",
            seeds.len(),
            dir.display(),
            IDENTITIES_FILE,
            ACCOUNTS_FILE,
            seeds
                .iter()
                .map(|s| format!("  {}  a seed (0600): nats.nkey_seed_file of that identity", s.display()))
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}
