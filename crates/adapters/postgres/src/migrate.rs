use diesel::Connection as _;
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::pool::describe_target;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../../migrations");

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot connect to PostgreSQL at {target}: {message}")]
    Connect { target: String, message: String },
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("the database URL is not valid: {0}")]
    InvalidUrl(String),
    #[error("the migration task stopped unexpectedly")]
    Aborted,
}

/// Runs the diesel migration harness on a blocking thread (it is synchronous).
async fn with_harness<T, F>(url: &str, work: F) -> Result<T, MigrateError>
where
    T: Send + 'static,
    F: FnOnce(&mut AsyncConnectionWrapper<AsyncPgConnection>) -> Result<T, MigrateError>
        + Send
        + 'static,
{
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut conn =
            AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url).map_err(|e| {
                MigrateError::Connect {
                    target: describe_target(&url),
                    message: e.to_string(),
                }
            })?;
        work(&mut conn)
    })
    .await
    .map_err(|_| MigrateError::Aborted)?
}

/// Applies every pending migration; returns the versions applied.
pub async fn run_migrations(url: &str) -> Result<Vec<String>, MigrateError> {
    with_harness(url, |conn| {
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| MigrateError::Migration(e.to_string()))?;
        Ok(applied.iter().map(ToString::to_string).collect())
    })
    .await
}

/// Applies the pending migrations whose names sort before `version` (a name's date and
/// number, `2026-12-01-000007`): a database as it stood before that migration, for testing
/// what it does to existing rows.
#[cfg(test)]
pub(crate) async fn run_migrations_before(url: &str, version: &str) -> Result<(), MigrateError> {
    let version = version.to_owned();
    with_harness(url, move |conn| {
        let failed =
            |e: Box<dyn std::error::Error + Send + Sync>| MigrateError::Migration(e.to_string());
        loop {
            let pending = conn.pending_migrations(MIGRATIONS).map_err(failed)?;
            match pending.first() {
                Some(next) if next.name().to_string() < version => {
                    conn.run_migration(next.as_ref()).map_err(failed)?;
                }
                _ => return Ok(()),
            }
        }
    })
    .await
}

/// Reverts the last migration applied (its `down.sql`); returns its version.
#[cfg(test)]
pub(crate) async fn revert_last_migration(url: &str) -> Result<String, MigrateError> {
    with_harness(url, |conn| {
        conn.revert_last_migration(MIGRATIONS)
            .map(|version| version.to_string())
            .map_err(|e| MigrateError::Migration(e.to_string()))
    })
    .await
}

/// The versions of the migrations not yet applied.
pub async fn pending_migrations(url: &str) -> Result<Vec<String>, MigrateError> {
    with_harness(url, |conn| {
        let pending = conn
            .pending_migrations(MIGRATIONS)
            .map_err(|e| MigrateError::Migration(e.to_string()))?;
        Ok(pending.iter().map(|m| m.name().to_string()).collect())
    })
    .await
}

/// Creates the database named in `url` if it does not exist (connecting to the server's
/// `postgres` database to do so). Returns whether it was created.
pub async fn ensure_database(url: &str) -> Result<bool, MigrateError> {
    let mut config = url
        .parse::<tokio_postgres::Config>()
        .map_err(|e| MigrateError::InvalidUrl(e.to_string()))?;
    let name = config.get_dbname().unwrap_or("postgres").to_owned();
    config.dbname("postgres");
    let target = describe_target(url);
    let connect_error = |e: tokio_postgres::Error| MigrateError::Connect {
        target: target.clone(),
        message: e.to_string(),
    };
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(connect_error)?;
    let driver = tokio::spawn(connection);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(connect_error)?
        .is_some();
    let created = if exists {
        false
    } else {
        let quoted = name.replace('"', "\"\"");
        match client
            .batch_execute(&format!("CREATE DATABASE \"{quoted}\""))
            .await
        {
            Ok(()) => true,
            // Another process created it at the same moment.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {
                false
            }
            Err(e) => return Err(connect_error(e)),
        }
    };
    drop(client);
    driver.abort();
    Ok(created)
}
