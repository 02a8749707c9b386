//! What a stage is, and turning it into something runnable: limits resolved against the
//! runner's defaults, environment grants checked, config/state files written (private to
//! the runner's user), the module verified and compiled.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flexcore_contracts::model::{Grants, PluginKind, ResourceLimits};
use flexcore_contracts::OpaqueJson;

use super::failure::{code, ExecFailure};
use super::redact::Secrets;
use crate::sandbox::{CompiledModule, Sandbox};

/// The program behind a stage.
#[derive(Clone)]
pub enum Program {
    /// A WASI preview 1 command module, compiled once per digest.
    Wasm {
        /// The digest the bytes must hash to: `sha256:<64 lowercase hex>`.
        digest: String,
        /// The module (binary format).
        bytes: Arc<[u8]>,
    },
    /// A module this sandbox's cache already holds (see
    /// [`ModuleCache::get`](crate::sandbox::ModuleCache::get)): no bytes to keep around.
    Compiled(CompiledModule),
    /// A native Singer executable: the `process` runtime. Not sandboxed: it sees the host's
    /// filesystem and network. It gets the same wiring, timeout, output caps and a memory
    /// rlimit, runs in its own process group and is killed with its children.
    Process {
        /// The executable.
        executable: PathBuf,
        /// Arguments before the runner's `--config` / `--state`.
        args: Vec<String>,
    },
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Wasm { digest, bytes } => f
                .debug_struct("Wasm")
                .field("digest", digest)
                .field("len", &bytes.len())
                .finish(),
            Self::Compiled(module) => f.debug_tuple("Compiled").field(module).finish(),
            Self::Process { executable, args } => f
                .debug_struct("Process")
                .field("executable", executable)
                .field("args", args)
                .finish(),
        }
    }
}

/// One stage of a pipeline execution. Its `Debug` leaves the config out (it holds
/// resolved secrets).
#[derive(Clone)]
pub struct Stage {
    /// Name used in messages and log events (e.g. the plugin reference).
    pub name: String,
    /// Extractor, transformer or loader.
    pub kind: PluginKind,
    /// What to run.
    pub program: Program,
    /// Written to `config.json` (exactly this text) and passed as `--config`.
    pub config: OpaqueJson,
    /// Limits; unset ones take the runner's [`Defaults`](crate::sandbox::Defaults).
    pub limits: ResourceLimits,
    /// Environment names and directories the stage may use (wasm: nothing else). Names
    /// of the runner's own settings ([`is_runner_setting`]) are refused.
    pub grants: Grants,
    /// The secret values resolved into `config`: the execution scrubs them (in every
    /// encoding) from everything it reports, whichever stage writes them.
    pub secrets: Secrets,
}

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stage")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("program", &self.program)
            .field("config_bytes", &self.config.as_str().len())
            .field("limits", &self.limits)
            .field("grants", &self.grants)
            .field("secrets", &self.secrets)
            .finish()
    }
}

/// Whether `name` is an environment variable of the runner's own configuration
/// (`FLEXCORE_…`: its settings, database and NATS credentials, and by default the secrets
/// `${secret:…}` resolves): never passed to a plugin, whatever its grants say.
pub fn is_runner_setting(name: &str) -> bool {
    name.to_ascii_uppercase().starts_with("FLEXCORE_")
}

/// Longest wall-clock limit honoured (ten years): "practically none".
const MAX_TIMEOUT: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A stage's limits with the runner's defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StageLimits {
    pub(crate) memory_bytes: u64,
    pub(crate) timeout: Duration,
    pub(crate) fuel: Option<u64>,
    pub(crate) max_stdout_bytes: u64,
    pub(crate) max_stderr_bytes: u64,
}

impl StageLimits {
    fn resolve(limits: &ResourceLimits, sandbox: &Sandbox) -> Self {
        let d = sandbox.defaults();
        Self {
            memory_bytes: limits.memory_bytes.unwrap_or(d.memory_bytes),
            // Clamped so that `now + timeout` cannot overflow.
            timeout: limits
                .timeout_seconds
                .map_or(d.timeout, Duration::from_secs)
                .min(MAX_TIMEOUT),
            fuel: limits.fuel,
            max_stdout_bytes: limits.max_output_bytes.unwrap_or(d.max_stdout_bytes),
            max_stderr_bytes: limits.max_output_bytes.unwrap_or(d.max_stderr_bytes),
        }
    }
}

/// How a prepared stage runs.
pub(crate) enum Runnable {
    Wasm(CompiledModule),
    Process { executable: PathBuf, args: Vec<String> },
}

/// A stage ready to start.
pub(crate) struct Prepared {
    pub(crate) index: usize,
    pub(crate) name: String,
    pub(crate) runnable: Runnable,
    pub(crate) limits: StageLimits,
    pub(crate) grants: Grants,
    /// The granted environment variables that are set on the host, with their values.
    pub(crate) env: Vec<(String, OsString)>,
    /// Holds `config.json` (and `state.json`); the wasm guest sees it read-only at
    /// [`GUEST_DIR`].
    pub(crate) dir: PathBuf,
    pub(crate) has_state: bool,
}

/// Where a wasm stage sees its own config directory.
pub(crate) const GUEST_DIR: &str = "/flexcore";

impl Prepared {
    /// The Singer arguments after the program name: `--config C [--state S]`.
    pub(crate) fn singer_args(&self, dir: &Path) -> Vec<String> {
        let mut args = vec![
            "--config".to_owned(),
            dir.join("config.json").to_string_lossy().into_owned(),
        ];
        if self.has_state {
            args.push("--state".to_owned());
            args.push(dir.join("state.json").to_string_lossy().into_owned());
        }
        args
    }
}

/// Checks the pipeline's shape (one extractor, transformers, one loader), its number of
/// stages and the sum of their memory limits against the runner's bounds.
pub(crate) fn check_shape(stages: &[Stage], sandbox: &Sandbox) -> Result<(), ExecFailure> {
    let n = stages.len();
    let bad = |msg: String| Err(ExecFailure::new(code::PROTOCOL, msg, None, false));
    if n < 2 {
        return bad(format!("a pipeline needs an extractor and a loader; got {n} stage(s)"));
    }
    let d = sandbox.defaults();
    if n > d.max_stages {
        return Err(ExecFailure::new(
            code::SANDBOX,
            format!("a pipeline may have at most {} stages; this one has {n}", d.max_stages),
            None,
            false,
        ));
    }
    // Every stage runs at once: their memory adds up. Wasm stages are clamped to the
    // engine's ceiling, as when they run.
    let memory: u64 = stages
        .iter()
        .map(|stage| {
            let limit = StageLimits::resolve(&stage.limits, sandbox).memory_bytes;
            match stage.program {
                Program::Process { .. } => limit,
                _ => limit.min(sandbox.config().max_memory_bytes),
            }
        })
        .fold(0u64, u64::saturating_add);
    if memory > d.max_run_memory_bytes {
        return Err(ExecFailure::new(
            code::MEMORY,
            format!(
                "the stages' memory limits add up to {memory} bytes, more than the runner's per-run budget of {} bytes",
                d.max_run_memory_bytes
            ),
            None,
            false,
        ));
    }
    for (i, stage) in stages.iter().enumerate() {
        let expected = match i {
            0 => PluginKind::Extractor,
            i if i == n - 1 => PluginKind::Loader,
            _ => PluginKind::Transformer,
        };
        if stage.kind != expected {
            return bad(format!(
                "step {i} ({}) is of kind {}, expected kind {} (a pipeline is: extractor, transformers, loader)",
                stage.name,
                stage.kind.as_str(),
                expected.as_str()
            ));
        }
    }
    Ok(())
}

/// Resolves limits, writes files under `root`, verifies and compiles the module.
pub(crate) async fn prepare(
    sandbox: &Sandbox,
    index: usize,
    stage: Stage,
    state: Option<&OpaqueJson>,
    root: &Path,
) -> Result<Prepared, ExecFailure> {
    let Stage {
        name,
        program,
        config,
        limits,
        grants,
        ..
    } = stage;
    let limits = StageLimits::resolve(&limits, sandbox);
    let is_wasm = !matches!(program, Program::Process { .. });
    if is_wasm && limits.fuel.is_some() && !sandbox.config().fuel_metering {
        // A limit that is silently not enforced is worse than none.
        return Err(ExecFailure::at(
            index,
            &name,
            code::SANDBOX,
            "sets a fuel limit but this runner does not meter fuel",
            false,
        ));
    }
    if let Some(setting) = grants.env.iter().find(|n| is_runner_setting(n)) {
        return Err(ExecFailure::at(
            index,
            &name,
            code::SANDBOX,
            format!("is granted the environment variable {setting}, which belongs to the runner's own configuration and is never passed to a plugin; remove the grant"),
            false,
        ));
    }
    let env = grants
        .env
        .iter()
        .filter_map(|n| std::env::var_os(n).map(|v| (n.clone(), v)))
        .collect();
    let dir = root.join(format!("step-{index}"));
    let state = if index == 0 { state } else { None };
    write_files(&dir, &config, state).await.map_err(|e| {
        ExecFailure::internal(
            Some(index),
            format!("step {index} ({name}): cannot write its files: {e}"),
        )
    })?;
    let run_as = sandbox
        .process_wrap()
        .run_as
        .filter(|(uid, _)| *uid != rustix::process::getuid().as_raw());
    if let (Program::Process { .. }, Some((uid, gid))) = (&program, run_as) {
        let top = sandbox.work_dir().path().parent().unwrap_or(root).to_path_buf();
        hand_over(root, &top, &dir, uid, gid).map_err(|e| {
            ExecFailure::internal(
                Some(index),
                format!("step {index} ({name}): cannot hand its files to uid {uid}: {e}"),
            )
        })?;
    }
    let runnable = match program {
        Program::Wasm { digest, bytes } => Runnable::Wasm(
            sandbox
                .modules()
                .get_or_compile(&digest, bytes)
                .await
                .map_err(|e| ExecFailure::from_sandbox(index, &name, &e))?,
        ),
        Program::Compiled(module) => Runnable::Wasm(module),
        Program::Process { executable, args } => Runnable::Process { executable, args },
    };
    Ok(Prepared {
        index,
        name,
        runnable,
        limits,
        grants,
        env,
        dir,
        has_state: state.is_some(),
    })
}

/// Gives a process stage that runs as `uid` its own directory and files; the execution's
/// directory and the runner's work directories above it (up to `top`, the work
/// directory's parent) stay the runner's, traversable but not listable by others (0711):
/// the stage reaches its own directory by a path it is told, and lists nothing else.
fn hand_over(root: &Path, top: &Path, dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let me = rustix::process::getuid().as_raw();
    let mut at = Some(root);
    while let Some(path) = at {
        let meta = std::fs::symlink_metadata(path)?;
        // Only the runner's own private directories are opened for traversal.
        if meta.uid() == me && meta.mode() & 0o077 == 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o711))?;
        }
        at = if path == top { None } else { path.parent() };
    }
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
    for entry in std::fs::read_dir(dir)? {
        std::os::unix::fs::chown(entry?.path(), Some(uid), Some(gid))?;
    }
    Ok(())
}

/// Writes the config and state files: the exact JSON texts (every digit, key order), in
/// a directory only the runner's user may enter (0700), readable only by it (0600): the
/// config holds resolved secrets.
async fn write_files(dir: &Path, config: &OpaqueJson, state: Option<&OpaqueJson>) -> std::io::Result<()> {
    tokio::fs::DirBuilder::new().mode(0o700).create(dir).await?;
    write_private(&dir.join("config.json"), config.as_str()).await?;
    if let Some(state) = state {
        write_private(&dir.join("state.json"), state.as_str()).await?;
    }
    Ok(())
}

async fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await?;
    file.write_all(text.as_bytes()).await?;
    file.flush().await
}
