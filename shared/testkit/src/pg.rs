//! A private PostgreSQL server for tests that must stop, kill or restart it: its own data
//! directory (a temp dir) and a random port on `127.0.0.1`, trust authentication. Run as
//! the `postgres` user when the tests run as root (Postgres refuses root).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};

/// A private Postgres cluster; stopped (immediately) and deleted when dropped.
#[derive(Debug)]
pub struct TestPostgres {
    dir: tempfile::TempDir,
    port: u16,
    as_user: Option<&'static str>,
}

impl TestPostgres {
    /// Creates a cluster with `initdb` and starts it.
    pub async fn start() -> anyhow::Result<Self> {
        let as_user = if is_root() { Some("postgres") } else { None };
        let dir = tempfile::Builder::new()
            .prefix("flexcore-pg-")
            .tempdir()
            .context("creating the Postgres directory")?;
        let pg = Self {
            dir,
            port: crate::unused_port()?,
            as_user,
        };
        if let Some(user) = as_user {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(pg.dir.path(), std::fs::Permissions::from_mode(0o755))?;
            let status = Command::new("chown")
                .args(["-R", &format!("{user}:")])
                .arg(pg.dir.path())
                .status()?;
            if !status.success() {
                bail!("chown of {} to {user} failed ({status})", pg.dir.path().display());
            }
        }
        let status = pg
            .tool("initdb")
            .arg("-D")
            .arg(pg.data())
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running initdb (install postgresql)")?;
        if !status.success() {
            bail!("initdb into {} failed ({status})", pg.data().display());
        }
        pg.start_again().await?;
        Ok(pg)
    }

    /// The URL of database `postgres` (create others on it).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The URL of `database`.
    pub fn url_of(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server (again) on the same port and data, waiting until it accepts
    /// connections.
    pub async fn start_again(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log");
        let status = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-o", &options, "-l"])
            .arg(&log)
            .args(["-w", "-t", "60", "start"])
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("pg_ctl start failed ({status}); log:\n{tail}");
        }
        Ok(())
    }

    /// Stops the server (`fast`: open transactions are rolled back, connections closed).
    pub async fn stop(&self) -> anyhow::Result<()> {
        self.pg_ctl_stop("fast")
    }

    /// Kills the server like a crash (`immediate`: no shutdown checkpoint; recovery on the
    /// next start).
    pub async fn kill(&self) -> anyhow::Result<()> {
        self.pg_ctl_stop("immediate")
    }

    fn pg_ctl_stop(&self, mode: &str) -> anyhow::Result<()> {
        let status = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", mode, "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("pg_ctl stop -m {mode} failed ({status})");
        }
        Ok(())
    }

    fn tool(&self, name: &str) -> Command {
        let tool = pg_tool(name);
        match self.as_user {
            None => Command::new(tool),
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(tool);
                c
            }
        }
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl_stop("immediate");
        // Give the postmaster a moment to go before the directory is removed.
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

/// A Postgres program: on `PATH`, else the newest under `/usr/lib/postgresql/*/bin`.
fn pg_tool(name: &str) -> PathBuf {
    if let Some(found) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    }) {
        return found;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir(Path::new("/usr/lib/postgresql"))
        .map(|d| d.flatten().map(|e| e.path().join("bin").join(name)).collect())
        .unwrap_or_default();
    versions.sort();
    versions.pop().unwrap_or_else(|| PathBuf::from(name))
}
