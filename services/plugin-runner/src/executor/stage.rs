//! What a stage is, and turning it into something runnable: limits resolved against the
//! runner's defaults, config/state files written, the module verified and compiled.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flexcore_contracts::model::{Grants, PluginKind, ResourceLimits};
use flexcore_contracts::OpaqueJson;

use super::failure::{code, ExecFailure};
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
            Self::Process { executable, args } => f
                .debug_struct("Process")
                .field("executable", executable)
                .field("args", args)
                .finish(),
        }
    }
}

/// One stage of a pipeline execution.
#[derive(Debug, Clone)]
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
    /// Environment names and directories the stage may use (wasm: nothing else).
    pub grants: Grants,
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

/// Checks the pipeline's shape: one extractor, transformers, one loader.
pub(crate) fn check_shape(stages: &[Stage]) -> Result<(), ExecFailure> {
    let n = stages.len();
    let bad = |msg: String| Err(ExecFailure::new(code::PROTOCOL, msg, None, false));
    if n < 2 {
        return bad(format!("a pipeline needs an extractor and a loader; got {n} stage(s)"));
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
    let is_wasm = matches!(program, Program::Wasm { .. });
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
    let dir = root.join(format!("step-{index}"));
    let state = if index == 0 { state } else { None };
    write_files(&dir, &config, state).await.map_err(|e| {
        ExecFailure::internal(
            Some(index),
            format!("step {index} ({name}): cannot write its files: {e}"),
        )
    })?;
    let runnable = match program {
        Program::Wasm { digest, bytes } => Runnable::Wasm(
            sandbox
                .modules()
                .get_or_compile(&digest, bytes)
                .await
                .map_err(|e| ExecFailure::from_sandbox(index, &name, &e))?,
        ),
        Program::Process { executable, args } => Runnable::Process { executable, args },
    };
    Ok(Prepared {
        index,
        name,
        runnable,
        limits,
        grants,
        dir,
        has_state: state.is_some(),
    })
}

/// Writes the config and state files: the exact JSON texts (every digit, key order).
async fn write_files(dir: &Path, config: &OpaqueJson, state: Option<&OpaqueJson>) -> std::io::Result<()> {
    tokio::fs::create_dir(dir).await?;
    tokio::fs::write(dir.join("config.json"), config.as_str()).await?;
    if let Some(state) = state {
        tokio::fs::write(dir.join("state.json"), state.as_str()).await?;
    }
    Ok(())
}
