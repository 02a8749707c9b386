//! `flexctl plugin register`: uploads a module content-addressed to the plugin object
//! store, then registers `name@version` with its digest, limits and grants.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use flexcore_contracts::commands::{DeprecatePlugin, DisablePlugin, EnablePlugin, RegisterPlugin};
use flexcore_contracts::lifecycle::PluginStatus;
use flexcore_contracts::model::{DirAccess, DirGrant, Grants, PluginKind, PluginRuntime, ResourceLimits};
use flexcore_contracts::views::PluginView;
use flexcore_contracts::{ids, ErrorReason};

use crate::api::Api;
use crate::cli::Output;
use crate::nats::Nats;
use crate::write_stdout;

/// Options of `flexctl plugin register`.
#[derive(Debug, Clone, Args)]
pub struct RegisterArgs {
    /// The WASI module (`.wasm`); omit for `--runtime process`.
    pub file: Option<PathBuf>,
    /// Plugin name (a-z, 0-9, '-', '_').
    #[arg(long)]
    pub name: String,
    /// Semantic version, e.g. 1.0.0.
    #[arg(long)]
    pub version: String,
    /// What the plugin does.
    #[arg(long, value_enum)]
    pub kind: Kind,
    /// `wasm` (sandboxed) or `process` (native executable, NOT sandboxed).
    #[arg(long, value_enum, default_value_t = Runtime::Wasm)]
    pub runtime: Runtime,
    /// Executable on runner hosts (process runtime).
    #[arg(long)]
    pub executable: Option<String>,
    /// JSON Schema file that step configs must satisfy.
    #[arg(long, value_name = "FILE")]
    pub config_schema: Option<PathBuf>,
    /// Capability grant, repeatable: `dir:HOST_PATH:GUEST_PATH[:ro|rw]`, `env:NAME`, `host:HOST:PORT`.
    #[arg(long = "grant", value_name = "GRANT")]
    pub grants: Vec<String>,
    /// Resource limit, repeatable: `memory=256MiB`, `timeout=60s`, `fuel=1000000`, `output=10MiB`.
    #[arg(long = "limit", value_name = "LIMIT")]
    pub limits: Vec<String>,
    /// Description.
    #[arg(long)]
    pub description: Option<String>,
}

/// Plugin kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// A tap.
    Extractor,
    /// Messages in, messages out.
    Transformer,
    /// A target.
    Loader,
}

/// Plugin runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Runtime {
    /// WASI module in the wasmtime sandbox.
    Wasm,
    /// Native executable, unsandboxed.
    Process,
}

/// Parses `--grant` values into grants.
pub fn parse_grants(values: &[String]) -> anyhow::Result<Grants> {
    let mut grants = Grants::default();
    for v in values {
        match v.split(':').collect::<Vec<_>>().as_slice() {
            ["dir", host, guest] | ["dir", host, guest, "ro"] => {
                grants.dirs.push(dir(host, guest, DirAccess::ReadOnly))
            }
            ["dir", host, guest, "rw"] => grants.dirs.push(dir(host, guest, DirAccess::ReadWrite)),
            ["env", name] if !name.is_empty() => grants.env.push((*name).to_owned()),
            ["host", host, port] if port.parse::<u16>().is_ok() => grants.allowed_hosts.push(format!("{host}:{port}")),
            _ => bail!("--grant {v:?} is not dir:HOST_PATH:GUEST_PATH[:ro|rw], env:NAME or host:HOST:PORT"),
        }
    }
    Ok(grants)
}

fn dir(host: &str, guest: &str, access: DirAccess) -> DirGrant {
    DirGrant {
        host_path: host.to_owned(),
        guest_path: guest.to_owned(),
        access,
    }
}

/// Parses `--limit` values into limits.
pub fn parse_limits(values: &[String]) -> anyhow::Result<ResourceLimits> {
    let mut limits = ResourceLimits::default();
    for v in values {
        let (key, value) = v
            .split_once('=')
            .with_context(|| format!("--limit {v:?} is not KEY=VALUE"))?;
        match key {
            "memory" => limits.memory_bytes = Some(bytes(value)?),
            "output" => limits.max_output_bytes = Some(bytes(value)?),
            "fuel" => {
                limits.fuel = Some(
                    value
                        .parse()
                        .with_context(|| format!("fuel {value:?} is not a number"))?,
                )
            }
            "timeout" => {
                limits.timeout_seconds = Some(
                    crate::duration::parse_duration(value)
                        .map_err(anyhow::Error::msg)?
                        .as_secs()
                        .max(1),
                )
            }
            other => bail!("unknown limit {other:?}: use memory, output, fuel or timeout"),
        }
    }
    Ok(limits)
}

fn bytes(v: &str) -> anyhow::Result<u64> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let n: u64 = n.parse().with_context(|| format!("{v:?} is not a size like 256MiB"))?;
    let factor = match unit {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        other => bail!("unknown size unit {other:?} in {v:?}: use B, KiB, MiB or GiB"),
    };
    Ok(n * factor)
}

/// What [`submit`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// Registered now (with the module's digest, for wasm).
    Registered(Option<String>),
    /// name@version was registered before (versions are immutable).
    AlreadyRegistered,
}

/// Uploads (wasm) and registers the plugin.
pub async fn register(nats: &Nats, args: &RegisterArgs, output: Output) -> anyhow::Result<()> {
    let api = nats.api().await?;
    let digest = match submit(&api, args).await? {
        Submitted::Registered(digest) => digest,
        Submitted::AlreadyRegistered => bail!(
            "plugin {}@{} is already registered; versions are immutable, register a new version",
            args.name,
            args.version
        ),
    };
    let id = ids::plugin_id(&args.name, &args.version);
    match output {
        Output::Json => {
            let out = serde_json::json!({"plugin_id": id, "name": args.name, "version": args.version, "module_digest": digest});
            write_stdout(&serde_json::to_string(&out)?)
        }
        Output::Text => write_stdout(&format!(
            "registered plugin {}@{} (id {id}{})",
            args.name,
            args.version,
            digest.map(|d| format!(", module {d}")).unwrap_or_default()
        )),
    }
}

/// Uploads the module (content-addressed, so a repeat upload is a no-op) and sends
/// `plugin.register`.
pub async fn submit(api: &Api, args: &RegisterArgs) -> anyhow::Result<Submitted> {
    let js = async_nats::jetstream::new(api.client().clone());
    let digest = match (args.runtime, &args.file) {
        (Runtime::Wasm, Some(file)) => {
            // Refused before reading: the runner would refuse it anyway (runner.max_module_bytes).
            let len = std::fs::metadata(file)
                .with_context(|| format!("cannot read {}", file.display()))?
                .len();
            anyhow::ensure!(
                len <= flexcore_plugin_store::MAX_MODULE_BYTES,
                "{} is {len} bytes; modules may be at most {} bytes",
                file.display(),
                flexcore_plugin_store::MAX_MODULE_BYTES
            );
            let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            anyhow::ensure!(
                bytes.starts_with(b"\0asm"),
                "{} is not a WebAssembly module",
                file.display()
            );
            Some(flexcore_plugin_store::upload(&js, &bytes).await?)
        }
        (Runtime::Wasm, None) => bail!("a wasm plugin needs its module file: flexctl plugin register FILE.wasm …"),
        (Runtime::Process, _) => None,
    };
    let config_schema = args.config_schema.as_deref().map(read_json).transpose()?;
    let command = RegisterPlugin {
        name: args.name.parse()?,
        version: args.version.parse()?,
        kind: match args.kind {
            Kind::Extractor => PluginKind::Extractor,
            Kind::Transformer => PluginKind::Transformer,
            Kind::Loader => PluginKind::Loader,
        },
        runtime: match args.runtime {
            Runtime::Wasm => PluginRuntime::Wasm,
            Runtime::Process => PluginRuntime::Process,
        },
        module_digest: digest.clone(),
        executable: args.executable.clone(),
        config_schema,
        limits: parse_limits(&args.limits)?,
        grants: parse_grants(&args.grants)?,
        description: args.description.clone(),
    };
    match api.send(&command).await {
        Ok(_) => Ok(Submitted::Registered(digest.map(|d| d.to_string()))),
        Err(e) if e.reason() == Some(ErrorReason::Exists) => Ok(Submitted::AlreadyRegistered),
        Err(e) => Err(e.into()),
    }
}

/// `flexctl plugin …`.
#[derive(Debug, clap::Subcommand)]
pub enum PluginCommand {
    /// Upload a module (content-addressed, sha256) and register name@version.
    Register(RegisterArgs),
    /// List plugins.
    List(ListArgs),
    /// Show one plugin (id or name@version).
    Show(PluginTarget),
    /// Deprecate: only a mark, shown with its reason by `plugin list` and `plugin show`;
    /// pipelines may still use it (nothing warns when they do).
    Deprecate(ReasonArgs),
    /// Disable: no pipeline may use it and runs using it fail.
    Disable(ReasonArgs),
    /// Enable a disabled or deprecated plugin again.
    Enable(PluginTarget),
}

/// A plugin by id or name@version.
#[derive(Debug, Clone, Args)]
pub struct PluginTarget {
    /// Plugin id or name@version.
    pub plugin: String,
}

/// A plugin and a reason.
#[derive(Debug, Clone, Args)]
pub struct ReasonArgs {
    /// Plugin id or name@version.
    pub plugin: String,
    /// Why (recorded in the event).
    #[arg(long)]
    pub reason: Option<String>,
}

/// `plugin list` filters.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only this kind (extractor, transformer, loader).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only plugins in this state.
    #[arg(long, value_parser = crate::table::states(PluginStatus::ALL, PluginStatus::as_str))]
    pub state: Option<String>,
    /// Only names matching (exact, or a prefix ending in `*`).
    #[arg(long)]
    pub name: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 200)]
    pub limit: usize,
}

/// Runs a `plugin` subcommand.
pub async fn run(nats: &Nats, command: &PluginCommand, output: Output) -> anyhow::Result<()> {
    if let PluginCommand::Register(args) = command {
        return register(nats, args, output).await;
    }
    let api = nats.api().await?;
    let simple = |action: &'static str, plugin: String, reason: Option<String>| {
        let api = api.clone();
        async move {
            let id = api.plugin_id(&plugin).await?;
            let accepted = match action {
                "deprecate" => api.send(&DeprecatePlugin { plugin_id: id, reason }).await?,
                "disable" => api.send(&DisablePlugin { plugin_id: id, reason }).await?,
                _ => api.send(&EnablePlugin { plugin_id: id }).await?,
            };
            let result = serde_json::json!({"plugin_id": id, "action": action, "version": accepted.version});
            crate::table::emit(output, &result, || format!("plugin {plugin}: {action} done"))
        }
    };
    match command {
        PluginCommand::Register(_) => Ok(()),
        PluginCommand::List(a) => {
            let filter = serde_json::json!({"kind": a.kind, "state": a.state, "name": a.name, "sort_by": "name",
                                            "order": "asc", "limit": a.limit.clamp(1, 1000)});
            let items: Vec<PluginView> = api
                .list_all("plugin.list", &crate::pipeline::strip_nulls(filter), a.limit)
                .await?;
            crate::table::emit(output, &items, || list_text(&items))
        }
        PluginCommand::Show(t) => {
            let id = api.plugin_id(&t.plugin).await?;
            let p: PluginView = api.query("plugin.get", &serde_json::json!({"id": id})).await?;
            crate::table::emit(output, &p, || show_text(&p))
        }
        PluginCommand::Deprecate(a) => simple("deprecate", a.plugin.clone(), a.reason.clone()).await,
        PluginCommand::Disable(a) => simple("disable", a.plugin.clone(), a.reason.clone()).await,
        PluginCommand::Enable(t) => simple("enable", t.plugin.clone(), None).await,
    }
}

fn lower<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn list_text(items: &[PluginView]) -> String {
    let mut t = crate::table::Table::new(&["NAME", "VERSION", "KIND", "RUNTIME", "STATE", "DIGEST", "ID"]);
    let ids = crate::table::short_ids(&items.iter().map(|p| p.plugin_id).collect::<Vec<_>>());
    for (p, id) in items.iter().zip(ids) {
        t.row(vec![
            p.name.clone(),
            p.version.clone(),
            lower(&p.kind),
            lower(&p.runtime),
            p.state.clone(),
            p.module_digest
                .as_deref()
                .map_or_else(|| "-".to_owned(), |d| d.chars().take(19).collect()),
            id,
        ]);
    }
    t.render("no plugins (register one: flexctl plugin register FILE.wasm --name … --version … --kind …)")
}

fn show_text(p: &PluginView) -> String {
    crate::table::fields(&[
        ("plugin", format!("{}@{}", p.name, p.version)),
        ("id", p.plugin_id.to_string()),
        ("kind", lower(&p.kind)),
        ("runtime", lower(&p.runtime)),
        (
            "state",
            format!(
                "{}{}",
                p.state,
                p.state_reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default()
            ),
        ),
        ("module", p.module_digest.clone().unwrap_or_else(|| "-".into())),
        ("executable", p.executable.clone().unwrap_or_else(|| "-".into())),
        ("limits", serde_json::to_string(&p.limits).unwrap_or_default()),
        ("grants", serde_json::to_string(&p.grants).unwrap_or_default()),
        (
            "config schema",
            p.config_schema
                .as_ref()
                .map_or_else(|| "-".into(), |s| serde_json::to_string(s).unwrap_or_default()),
        ),
        ("description", p.description.clone().unwrap_or_default()),
        ("registered", crate::table::time(Some(p.created_at))),
    ])
}

/// A JSON file's content, exactly as written.
fn read_json(path: &Path) -> anyhow::Result<flexcore_contracts::OpaqueJson> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    flexcore_contracts::OpaqueJson::parse(text.trim()).with_context(|| format!("{} is not valid JSON", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_parse_and_bad_ones_are_explained() {
        let g = parse_grants(&[
            "dir:/data/in:/input".into(),
            "dir:/data/out:/output:rw".into(),
            "env:TZ".into(),
            "host:db:5432".into(),
        ])
        .unwrap();
        assert_eq!(g.dirs[0].access, DirAccess::ReadOnly);
        assert_eq!(g.dirs[1].access, DirAccess::ReadWrite);
        assert_eq!(g.env, vec!["TZ"]);
        assert_eq!(g.allowed_hosts, vec!["db:5432"]);
        assert!(parse_grants(&["dir:/only-one".into()])
            .unwrap_err()
            .to_string()
            .contains("dir:HOST_PATH"));
        assert!(parse_grants(&["host:db:notaport".into()]).is_err());
    }

    #[test]
    fn limits_parse_with_units() {
        let l = parse_limits(&[
            "memory=256MiB".into(),
            "timeout=2m".into(),
            "fuel=1000".into(),
            "output=10MiB".into(),
        ])
        .unwrap();
        assert_eq!(l.memory_bytes, Some(256 << 20));
        assert_eq!(l.timeout_seconds, Some(120));
        assert_eq!(l.fuel, Some(1000));
        assert_eq!(l.max_output_bytes, Some(10 << 20));
        assert!(parse_limits(&["memory=12XB".into()]).is_err());
        assert!(parse_limits(&["speed=9".into()]).is_err());
    }
}
