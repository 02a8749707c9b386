//! `flexctl api-key …`: the HTTP gateway's API keys, offline, in its keys file
//! (`gateway.api_keys_file`; each gateway replica reads the same file and picks up a
//! change within 2 s).
//!
//! - `create NAME --role viewer|operator|admin`: a new key, printed once; only its
//!   SHA-256 is stored (the file is 0600).
//! - `revoke NAME`: the key stops working at the gateways' next reload.
//! - `list`: names, roles and creation times (never a key).

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};
use flexcore_gateway::auth::KeysFile;
use flexcore_security::ApiRole;

use crate::cli::Output;

/// `flexctl api-key …`.
#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key and print it (once).
    Create(CreateArgs),
    /// Revoke a key by name.
    Revoke(NamedArgs),
    /// List the keys (names and roles, never the keys).
    List(FileArgs),
}

/// The keys file.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// The gateway's API keys file (created if missing).
    #[arg(long, env = "FLEXCORE__GATEWAY__API_KEYS_FILE", value_name = "FILE")]
    pub file: PathBuf,
}

/// `flexctl api-key create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The key's name (1 to 64 of A-Z a-z 0-9 - _ .): the events' actor is `key:<name>`.
    pub name: String,
    /// What it may do: viewer (queries), operator (runs, pause/resume), admin (everything).
    #[arg(long, value_parser = parse_role)]
    pub role: ApiRole,
    /// The keys file.
    #[command(flatten)]
    pub file: FileArgs,
}

/// `flexctl api-key revoke`.
#[derive(Debug, Args)]
pub struct NamedArgs {
    /// The key's name.
    pub name: String,
    /// The keys file.
    #[command(flatten)]
    pub file: FileArgs,
}

/// Runs a `flexctl api-key` command.
pub fn run(command: &ApiKeyCommand, output: Output) -> anyhow::Result<()> {
    match command {
        ApiKeyCommand::Create(args) => {
            let mut keys = KeysFile::read(&args.file.file)?;
            let key = keys.create(&args.name, args.role)?;
            keys.write(&args.file.file)?;
            let text = match output {
                Output::Json => serde_json::json!({"name": args.name, "role": args.role, "key": key}).to_string(),
                Output::Text => format!(
                    "created API key {} (role {}); it is shown only now:\n{key}\nuse it as: Authorization: Bearer <key>",
                    args.name, args.role
                ),
            };
            crate::write_stdout(&text)
        }
        ApiKeyCommand::Revoke(args) => {
            let mut keys = KeysFile::read(&args.file.file)?;
            if !keys.revoke(&args.name) {
                bail!("no API key called {:?} in {}", args.name, args.file.file.display());
            }
            keys.write(&args.file.file)?;
            crate::write_stdout(&match output {
                Output::Json => serde_json::json!({"revoked": args.name}).to_string(),
                Output::Text => format!(
                    "revoked API key {}; the gateways stop accepting it within 2 s",
                    args.name
                ),
            })
        }
        ApiKeyCommand::List(args) => {
            let keys = KeysFile::read(&args.file)?;
            let text = match output {
                Output::Json => serde_json::to_string(
                    &keys
                        .keys
                        .iter()
                        .map(|k| serde_json::json!({"name": k.name, "role": k.role, "created_at": k.created_at}))
                        .collect::<Vec<_>>(),
                )?,
                Output::Text => {
                    let mut table = crate::table::Table::new(&["NAME", "ROLE", "CREATED"]);
                    for k in &keys.keys {
                        table.row(vec![k.name.clone(), k.role.to_string(), k.created_at.clone()]);
                    }
                    table.render("no API keys")
                }
            };
            crate::write_stdout(&text)
        }
    }
}

fn parse_role(text: &str) -> Result<ApiRole, String> {
    text.parse()
}
