//! A fresh PostgreSQL database per test.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context as _;
use flexcore_config::url_text::redact;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::Connection as _;

/// Variable naming the server (any database on it) test databases are created on.
pub const DATABASE_URL_VAR: &str = "FLEXCORE_TEST_DATABASE_URL";
/// Used when [`DATABASE_URL_VAR`] is unset.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Prefix of every test database's name (handy to clean up after crashed runs).
pub const NAME_PREFIX: &str = "flexcore_t_";

/// Connections in a [`TestDb::pool`].
const POOL_SIZE: u32 = 32;
/// How long `Drop` waits for the database to be dropped.
const DROP_TIMEOUT: Duration = Duration::from_secs(10);

/// A database of its own for one test, on the server of `$FLEXCORE_TEST_DATABASE_URL`,
/// named `flexcore_t_<uuid>`; dropped (best effort, at most 10 s) when this is dropped.
#[derive(Debug)]
pub struct TestDb {
    /// Connection URL of this database (for code under test that connects itself).
    pub url: String,
    /// A pool on this database, up to 32 connections.
    pub pool: PgPool,
    name: String,
    admin_url: String,
    /// Roles made by [`TestDb::reader`], dropped with the database.
    roles: std::sync::Mutex<Vec<String>>,
}

impl TestDb {
    /// Creates a fresh database and applies the workspace migrations
    /// ([`TestDb::migrations_dir`]), read at run time.
    pub async fn create() -> anyhow::Result<Self> {
        let db = Self::create_empty().await?;
        db.migrate().await?;
        Ok(db)
    }

    /// Creates a fresh database without applying any migration.
    pub async fn create_empty() -> anyhow::Result<Self> {
        let admin_url = std::env::var(DATABASE_URL_VAR).unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
        let name = format!("{NAME_PREFIX}{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .with_context(|| format!("connecting to {} ({DATABASE_URL_VAR})", redact(&admin_url)))?;
        sqlx::raw_sql(&format!(r#"CREATE DATABASE "{name}""#))
            .execute(&mut admin)
            .await
            .with_context(|| format!("creating database {name}"))?;
        let _ = admin.close().await;

        let url = with_database(&admin_url, &name)?;
        // From here on, `Drop` removes the database even if connecting fails.
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(Duration::from_secs(30))
            .connect_lazy(&url)
            .with_context(|| format!("configuring a pool for {name}"))?;
        let db = Self {
            url,
            pool,
            name,
            admin_url,
            roles: Default::default(),
        };
        db.pool
            .acquire()
            .await
            .with_context(|| format!("connecting to {}", db.name))?;
        Ok(db)
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A login role of its own that may only read the event log (`SELECT` on `events`),
    /// and this database's URL as that role (no password: the test server trusts local
    /// logins). Dropped with the database.
    pub async fn reader(&self) -> anyhow::Result<String> {
        let role = format!("{}_reader", self.name);
        sqlx::raw_sql(&format!(
            r#"CREATE ROLE "{role}" LOGIN; GRANT SELECT ON events TO "{role}""#
        ))
        .execute(&self.pool)
        .await
        .with_context(|| format!("creating the reader role of {}", self.name))?;
        self.roles.lock().unwrap_or_else(|e| e.into_inner()).push(role.clone());
        with_user(&self.url, &role)
    }

    /// The workspace's `migrations/` directory.
    pub fn migrations_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations")
    }

    /// Applies every migration found in [`TestDb::migrations_dir`] (none if it is
    /// missing).
    async fn migrate(&self) -> anyhow::Result<()> {
        let dir = Self::migrations_dir();
        if !dir.is_dir() {
            tracing::warn!(dir = %dir.display(), "no migrations directory; database left empty");
            return Ok(());
        }
        let migrator = Migrator::new(dir.as_path())
            .await
            .with_context(|| format!("reading migrations from {}", dir.display()))?;
        migrator
            .run(&self.pool)
            .await
            .with_context(|| format!("migrating {}", self.name))?;
        Ok(())
    }
}

/// Whether the table (or view) `name` (schema-qualified, e.g. `read.events_g2`) exists.
pub async fn table_exists(pool: &PgPool, name: &str) -> anyhow::Result<bool> {
    let found: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(name)
        .fetch_one(pool)
        .await
        .with_context(|| format!("looking up table {name}"))?;
    Ok(found.is_some())
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // The test's runtime may be a current-thread one (or already gone), so the drop
        // runs on a thread with a runtime of its own, and is waited for with a cap.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let roles = std::mem::take(&mut *self.roles.lock().unwrap_or_else(|e| e.into_inner()));
        let (done, finished) = mpsc::channel();
        let spawned = std::thread::Builder::new().name(format!("drop-{name}")).spawn(move || {
            let _ = done.send(drop_database(&admin_url, &name, &roles));
        });
        if let Err(err) = spawned {
            tracing::warn!(db = %self.name, error = %err, "could not drop test database");
            return;
        }
        match finished.recv_timeout(DROP_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::warn!(db = %self.name, error = format!("{err:#}"), "could not drop test database");
            }
            Err(_) => {
                tracing::warn!(db = %self.name, "timed out dropping test database");
            }
        }
    }
}

/// `DROP DATABASE … WITH (FORCE)`: the test's pool may still hold connections. Then the
/// database's `roles` (their privileges went with it).
fn drop_database(admin_url: &str, name: &str, roles: &[String]) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut admin = PgConnection::connect(admin_url).await?;
        sqlx::raw_sql(&format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))
            .execute(&mut admin)
            .await?;
        for role in roles {
            sqlx::raw_sql(&format!(r#"DROP ROLE IF EXISTS "{role}""#))
                .execute(&mut admin)
                .await?;
        }
        let _ = admin.close().await;
        Ok(())
    })
}

/// `url` with its user replaced by `user` (and no password).
fn with_user(url: &str, user: &str) -> anyhow::Result<String> {
    let authority_start = url
        .find("://")
        .map(|i| i + 3)
        .with_context(|| format!("{DATABASE_URL_VAR} is not a URL: {}", redact(url)))?;
    let rest = &url[authority_start..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let host = match rest[..authority_end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    Ok(format!("{}{user}@{host}", &url[..authority_start]))
}

/// `url` with its database (path) replaced by `database`, keeping any query string.
fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let (base, query) = url.split_at(url.find('?').unwrap_or(url.len()));
    let authority_start = base
        .find("://")
        .map(|i| i + 3)
        .with_context(|| format!("{DATABASE_URL_VAR} is not a URL: {}", redact(url)))?;
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    Ok(format!("{}/{database}{query}", &base[..authority_end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_is_replaced_and_the_query_kept() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x").unwrap(),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "x").unwrap(),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:5432", "x").unwrap(), "postgres://h:5432/x");
        assert!(with_database("nonsense", "x").is_err());
    }

    #[test]
    fn the_user_is_replaced_and_the_password_dropped() {
        assert_eq!(
            with_user("postgres://postgres@127.0.0.1:5432/db", "r").unwrap(),
            "postgres://r@127.0.0.1:5432/db"
        );
        assert_eq!(
            with_user("postgres://u:p@h/db?sslmode=disable", "r").unwrap(),
            "postgres://r@h/db?sslmode=disable"
        );
        assert_eq!(
            with_user("postgres://h:5432/db", "r").unwrap(),
            "postgres://r@h:5432/db"
        );
        assert!(with_user("nonsense", "r").is_err());
    }
}
