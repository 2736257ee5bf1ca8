//! The SQLite schema's own migrations (`crates/adapters/sqlite/migrations`), embedded in
//! the binary and applied through the store's writer connection (so an in-memory database
//! is migrated too).

use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::pool::SqliteStore;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot reach the SQLite database: {0}")]
    Unavailable(String),
    #[error("migration failed: {0}")]
    Migration(String),
}

/// Applies every pending migration; returns the versions applied.
pub async fn run_migrations(store: &SqliteStore) -> Result<Vec<String>, MigrateError> {
    let mut conn = store
        .writer()
        .await
        .map_err(|e| MigrateError::Unavailable(e.to_string()))?;
    let applied = conn
        .spawn_blocking(|conn| {
            Ok(conn
                .run_pending_migrations(MIGRATIONS)
                .map(|applied| applied.iter().map(ToString::to_string).collect::<Vec<_>>())
                .map_err(|e| e.to_string()))
        })
        .await
        .map_err(|e| MigrateError::Unavailable(e.to_string()))?;
    applied.map_err(MigrateError::Migration)
}

/// Applies the pending migrations whose names sort before `version` (a name's date and
/// number, `2026-12-01-000007`): a database as it stood before that migration, for testing
/// what it does to existing rows.
#[cfg(test)]
pub(crate) async fn run_migrations_before(
    store: &SqliteStore,
    version: &str,
) -> Result<(), MigrateError> {
    let version = version.to_owned();
    let mut conn = store
        .writer()
        .await
        .map_err(|e| MigrateError::Unavailable(e.to_string()))?;
    let applied = conn
        .spawn_blocking(move |conn| {
            let mut step = || -> Result<(), String> {
                loop {
                    let pending = conn
                        .pending_migrations(MIGRATIONS)
                        .map_err(|e| e.to_string())?;
                    match pending.first() {
                        Some(next) if next.name().to_string() < version => {
                            conn.run_migration(next.as_ref())
                                .map_err(|e| e.to_string())?;
                        }
                        _ => return Ok(()),
                    }
                }
            };
            Ok(step())
        })
        .await
        .map_err(|e| MigrateError::Unavailable(e.to_string()))?;
    applied.map_err(MigrateError::Migration)
}

/// Reverts the last migration applied (its `down.sql`); returns its version.
#[cfg(test)]
pub(crate) async fn revert_last_migration(store: &SqliteStore) -> Result<String, MigrateError> {
    let mut conn = store
        .writer()
        .await
        .map_err(|e| MigrateError::Unavailable(e.to_string()))?;
    let reverted = conn
        .spawn_blocking(|conn| {
            Ok(conn
                .revert_last_migration(MIGRATIONS)
                .map(|version| version.to_string())
                .map_err(|e| e.to_string()))
        })
        .await
        .map_err(|e| MigrateError::Unavailable(e.to_string()))?;
    reverted.map_err(MigrateError::Migration)
}

/// The versions of the migrations not yet applied.
pub async fn pending_migrations(store: &SqliteStore) -> Result<Vec<String>, MigrateError> {
    let mut conn = store
        .conn()
        .await
        .map_err(|e| MigrateError::Unavailable(e.to_string()))?;
    let pending = conn
        .spawn_blocking(|conn| {
            Ok(conn
                .pending_migrations(MIGRATIONS)
                .map(|pending| {
                    pending
                        .iter()
                        .map(|m| m.name().to_string())
                        .collect::<Vec<_>>()
                })
                .map_err(|e| e.to_string()))
        })
        .await
        .map_err(|e| MigrateError::Unavailable(e.to_string()))?;
    pending.map_err(MigrateError::Migration)
}
