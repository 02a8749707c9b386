//! The runner's private work directory, where each execution gets a directory for its
//! stages' `config.json` (resolved secrets included) and `state.json`.
//!
//! Layout: `<parent>/runner-<pid>-<random>/exec-<random>/step-<n>/config.json`. The parent
//! (`runner.work_dir`, by default `$XDG_RUNTIME_DIR/flexcore-runner` or
//! `<temp dir>/flexcore-runner-<uid>`) is created 0700 when missing; an existing one must
//! be a real directory (no symlink) owned by the runner's user that no one else may write
//! to. Everything below it is 0700 (directories) and 0600 (files).
//!
//! An execution's directory goes when it ends; a runner's when its `Sandbox` is dropped.
//! A runner that is killed leaves its directory behind, so every runner, when it starts,
//! removes the directories of runners that are gone: each live runner holds an exclusive
//! `flock` on its `.lock` file (released by the kernel however the process dies), so a
//! directory whose lock can be taken has no owner. The lock is taken before the directory
//! gets its `runner-` name (it is created as `tmp-…` and renamed), so a starting runner is
//! never mistaken for a dead one.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{flock, FlockOperation};

/// Prefix of a live (or dead) runner's directory.
const RUNNER_PREFIX: &str = "runner-";
/// Prefix of a directory being set up.
const STAGING_PREFIX: &str = "tmp-";
/// The lock file inside a runner's directory.
const LOCK_FILE: &str = ".lock";
/// A staging directory older than this was abandoned.
const STAGING_MAX_AGE: Duration = Duration::from_secs(60);
/// Execution directories of runners before the private work directory existed
/// (`<temp dir>/flexcore-exec-*`), removed once this old: no run of theirs lasts that long
/// unattended by its runner.
const LEGACY_PREFIX: &str = "flexcore-exec-";
const LEGACY_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// This runner's private directory, locked while it lives and removed on drop.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    /// Held for the directory's lifetime: the lock says "this runner is alive".
    _lock: File,
}

/// The default parent: `$XDG_RUNTIME_DIR/flexcore-runner` (a per-user tmpfs) when set,
/// else `<temp dir>/flexcore-runner-<uid>`.
pub fn default_parent() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("flexcore-runner"),
        None => std::env::temp_dir().join(format!("flexcore-runner-{}", rustix::process::getuid().as_raw())),
    }
}

impl WorkDir {
    /// Makes this runner's directory under `parent` (see the module docs), then removes
    /// what runners that are gone left behind.
    pub fn create(parent: &Path) -> io::Result<Self> {
        ensure_private(parent)?;
        let staging = private_dir(STAGING_PREFIX).tempdir_in(parent)?;
        let lock = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(staging.path().join(LOCK_FILE))?;
        flock(&lock, FlockOperation::NonBlockingLockExclusive)?;
        let suffix = staging
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(STAGING_PREFIX))
            .unwrap_or("x")
            .to_owned();
        let path = parent.join(format!("{RUNNER_PREFIX}{}-{suffix}", std::process::id()));
        fs::rename(staging.path(), &path)?;
        // Renamed away: nothing left for the TempDir to remove.
        let _ = staging.keep();
        let this = Self { path, _lock: lock };
        let removed = sweep(parent, &this.path);
        if removed > 0 {
            tracing::info!(removed, dir = %parent.display(), "removed work directories left by runners that are gone");
        }
        Ok(this)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new private directory for one execution, removed when the handle is dropped.
    pub fn execution_dir(&self) -> io::Result<tempfile::TempDir> {
        private_dir("exec-").tempdir_in(&self.path)
    }
}

/// A temporary directory builder for mode 0700 (tempfile's default follows the umask).
fn private_dir(prefix: &str) -> tempfile::Builder<'_, 'static> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix).permissions(fs::Permissions::from_mode(0o700));
    builder
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(error) = fs::remove_dir_all(&self.path) {
            tracing::warn!(%error, dir = %self.path.display(), "cannot remove the runner's work directory");
        }
    }
}

/// Creates `dir` (0700) if missing; refuses one that is a symlink, not owned by this user
/// or writable by others (someone could swap the directories in it, or plant their own).
/// An existing directory's mode is never changed: given `/tmp` by mistake, a runner must
/// not make it private. Others may read it: what is below it is 0700.
fn ensure_private(dir: &Path) -> io::Result<()> {
    if let Err(e) = DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(e);
        }
    }
    let meta = fs::symlink_metadata(dir)?;
    let refuse = |why: String| io::Error::new(io::ErrorKind::PermissionDenied, format!("{}: {why}", dir.display()));
    if !meta.file_type().is_dir() {
        return Err(refuse(
            "is not a directory (a symlink is refused: give its real path)".into(),
        ));
    }
    let uid = rustix::process::getuid().as_raw();
    if meta.uid() != uid {
        return Err(refuse(format!(
            "is owned by uid {}, not by this runner's uid {uid}: another user could read the plugin configs written there",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(refuse(format!(
            "is writable by other users (mode {:o}); give a directory only the runner's user may write to, e.g. a new subdirectory the runner creates",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Removes the directories under `parent` of runners that are gone, abandoned staging
/// directories and old legacy execution directories; returns how many.
fn sweep(parent: &Path, own: &Path) -> usize {
    let mut removed = 0;
    let now = SystemTime::now();
    let older_than = |meta: &fs::Metadata, age: Duration| {
        meta.modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|a| a > age)
    };
    if let Ok(entries) = fs::read_dir(parent) {
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Ok(meta) = entry.metadata() else { continue };
            if path == own || !meta.is_dir() {
                continue;
            }
            // A free lock: its runner is gone. Held while the directory is removed.
            let (gone, _held) = if name.starts_with(RUNNER_PREFIX) {
                match File::open(path.join(LOCK_FILE)) {
                    Ok(lock) => (
                        flock(&lock, FlockOperation::NonBlockingLockExclusive).is_ok(),
                        Some(lock),
                    ),
                    Err(_) => (older_than(&meta, STAGING_MAX_AGE), None),
                }
            } else {
                (
                    name.starts_with(STAGING_PREFIX) && older_than(&meta, STAGING_MAX_AGE),
                    None,
                )
            };
            if gone && remove(&path) {
                removed += 1;
            }
        }
    }
    let uid = rustix::process::getuid().as_raw();
    if let Ok(entries) = fs::read_dir(std::env::temp_dir()) {
        for entry in entries.flatten() {
            let legacy = entry.file_name().to_string_lossy().starts_with(LEGACY_PREFIX);
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if legacy
                && meta.is_dir()
                && meta.uid() == uid
                && older_than(&meta, LEGACY_MAX_AGE)
                && remove(&entry.path())
            {
                removed += 1;
            }
        }
    }
    removed
}

fn remove(path: &Path) -> bool {
    match fs::remove_dir_all(path) {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, dir = %path.display(), "cannot remove a stale work directory");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn directories_of_runners_that_are_gone_are_removed_and_live_ones_kept() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("work");
        let live = WorkDir::create(&root).unwrap();
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(live.path()), 0o700);
        // A runner killed with its work directory (its lock died with it).
        let dead = root.join("runner-1-dead");
        fs::create_dir_all(dead.join("exec-x/step-0")).unwrap();
        fs::write(dead.join(LOCK_FILE), "").unwrap();
        fs::write(dead.join("exec-x/step-0/config.json"), "{}").unwrap();
        let exec = live.execution_dir().unwrap();
        assert_eq!(mode(exec.path()), 0o700);

        let second = WorkDir::create(&root).unwrap();
        assert!(!dead.exists(), "the dead runner's directory was removed");
        assert!(
            live.path().exists() && exec.path().exists(),
            "a live runner's directory stays"
        );
        let (first_path, second_path) = (live.path().to_owned(), second.path().to_owned());
        drop(exec);
        drop(live);
        assert!(!first_path.exists(), "dropped with its runner");
        assert!(second_path.exists());
    }

    #[test]
    fn legacy_execution_directories_older_than_a_day_are_removed() {
        let name = |age: &str| format!("{LEGACY_PREFIX}test-{age}-{}", std::process::id());
        let (old, young) = (
            std::env::temp_dir().join(name("old")),
            std::env::temp_dir().join(name("young")),
        );
        for dir in [&old, &young] {
            fs::create_dir_all(dir.join("step-0")).unwrap();
            fs::write(dir.join("step-0/config.json"), "{}").unwrap();
        }
        let two_days_ago = SystemTime::now() - 2 * LEGACY_MAX_AGE;
        File::open(&old).unwrap().set_modified(two_days_ago).unwrap();
        let parent = tempfile::tempdir().unwrap();
        let _dir = WorkDir::create(&parent.path().join("work")).unwrap();
        assert!(!old.exists(), "left behind by a runner of the old layout");
        assert!(young.exists(), "may belong to an old runner still running");
        fs::remove_dir_all(&young).unwrap();
    }

    #[test]
    fn a_shared_writable_directory_or_a_symlink_is_refused_and_never_changed() {
        let parent = tempfile::tempdir().unwrap();
        let open = parent.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o1777)).unwrap();
        let refused = WorkDir::create(&open).unwrap_err();
        assert!(refused.to_string().contains("writable by other users"), "{refused}");
        assert_eq!(fs::metadata(&open).unwrap().mode() & 0o7777, 0o1777, "left as it was");
        // Readable by others is fine: the runner's own directory in it is 0700.
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
        let dir = WorkDir::create(&open).unwrap();
        assert_eq!((mode(&open), mode(dir.path())), (0o755, 0o700));
        let link = parent.path().join("link");
        std::os::unix::fs::symlink(&open, &link).unwrap();
        let refused = WorkDir::create(&link).unwrap_err();
        assert!(refused.to_string().contains("symlink"), "{refused}");
    }
}
