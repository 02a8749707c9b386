//! How `process` stages are contained, found out once per runner: a PID namespace per
//! stage through util-linux `unshare` (every descendant, even one that called `setsid`,
//! dies with the stage's first process), rlimits set before the plugin's `exec` through
//! util-linux `prlimit`, and an unprivileged uid/gid when the runner is root.
//!
//! Without `unshare` (or where the host refuses namespaces, e.g. an unprivileged
//! container) a stage is killed with its process group only: a descendant that leaves the
//! group (`setsid`) can outlive it. Without `prlimit` the rlimits are set just after the
//! spawn instead. Both are logged once at start-up.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::ProcessIsolation;

/// What this host offers for containing process stages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessWrap {
    /// `unshare`, when PID namespaces work here and are wanted.
    pub unshare: Option<PathBuf>,
    /// `prlimit`, when present.
    pub prlimit: Option<PathBuf>,
    /// The uid/gid stages run as (only when the runner is root).
    pub run_as: Option<(u32, u32)>,
    /// RLIMIT_NOFILE.
    pub max_open_files: u64,
    /// RLIMIT_NPROC, only with `run_as`.
    pub max_processes: Option<u64>,
}

fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/sbin:/usr/bin:/sbin:/bin"));
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn works(program: &Path, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl ProcessWrap {
    /// Probes the host for what `isolation` asks.
    pub(crate) fn probe(isolation: &ProcessIsolation) -> Self {
        let root = rustix::process::geteuid().is_root();
        let run_as = isolation.run_as.filter(|_| root);
        let unshare = if isolation.pid_namespace {
            let found = find("unshare").filter(|unshare| {
                let true_ = find("true").unwrap_or_else(|| PathBuf::from("/bin/true"));
                let true_ = true_.to_string_lossy();
                works(unshare, &["--pid", "--fork", "--kill-child", "--", &true_])
            });
            if found.is_none() {
                tracing::warn!(
                    "PID namespaces are not available (no util-linux unshare, or the host refuses them): \
                     process stages are killed with their process group only, and a descendant that \
                     leaves the group (setsid) can outlive its stage"
                );
            }
            found
        } else {
            None
        };
        let prlimit = find("prlimit");
        if prlimit.is_none() {
            tracing::warn!(
                "util-linux prlimit not found: process stages get their rlimits just after they start, not before"
            );
        }
        Self {
            unshare,
            prlimit,
            run_as,
            max_open_files: isolation.max_open_files,
            max_processes: run_as.map(|_| isolation.max_processes),
        }
    }

    /// The program and arguments that run `executable args` contained, with a memory
    /// (RLIMIT_DATA) cap of `memory_bytes`: `[unshare …] [prlimit …] executable args`.
    pub(crate) fn command(&self, executable: &Path, memory_bytes: u64) -> (PathBuf, Vec<OsString>) {
        let mut argv: Vec<OsString> = Vec::new();
        if let Some(unshare) = &self.unshare {
            argv.push(unshare.clone().into());
            argv.extend(["--pid", "--fork", "--kill-child"].map(OsString::from));
            if let Some((uid, gid)) = self.run_as {
                argv.extend([format!("--setgid={gid}"), format!("--setuid={uid}")].map(OsString::from));
            }
            argv.push("--".into());
        }
        if let Some(prlimit) = &self.prlimit {
            argv.push(prlimit.clone().into());
            argv.push(format!("--data={memory_bytes}:{memory_bytes}").into());
            argv.push(format!("--nofile={0}:{0}", self.max_open_files).into());
            argv.push("--core=0:0".into());
            if let Some(n) = self.max_processes {
                argv.push(format!("--nproc={n}:{n}").into());
            }
            argv.push("--".into());
        }
        argv.push(executable.into());
        let program = PathBuf::from(argv.remove(0));
        (program, argv)
    }

    /// Whether the uid must be dropped by the spawn itself (no `unshare` to do it).
    pub(crate) fn spawn_as(&self) -> Option<(u32, u32)> {
        self.run_as.filter(|_| self.unshare.is_none())
    }

    /// Whether rlimits are set before `exec` (else right after the spawn).
    pub(crate) fn limits_before_exec(&self) -> bool {
        self.prlimit.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wrapper_chain_puts_the_namespace_first_and_the_plugin_last() {
        let wrap = ProcessWrap {
            unshare: Some("/usr/bin/unshare".into()),
            prlimit: Some("/usr/bin/prlimit".into()),
            run_as: Some((65534, 65534)),
            max_open_files: 64,
            max_processes: Some(8),
        };
        let (program, args) = wrap.command(Path::new("/opt/tap"), 1024);
        assert_eq!(program, PathBuf::from("/usr/bin/unshare"));
        let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            args,
            [
                "--pid",
                "--fork",
                "--kill-child",
                "--setgid=65534",
                "--setuid=65534",
                "--",
                "/usr/bin/prlimit",
                "--data=1024:1024",
                "--nofile=64:64",
                "--core=0:0",
                "--nproc=8:8",
                "--",
                "/opt/tap"
            ]
        );
        assert_eq!(wrap.spawn_as(), None);
        let bare = ProcessWrap {
            unshare: None,
            prlimit: None,
            ..wrap
        };
        assert_eq!(
            bare.command(Path::new("/opt/tap"), 1),
            (PathBuf::from("/opt/tap"), vec![])
        );
        assert_eq!(bare.spawn_as(), Some((65534, 65534)));
    }
}
