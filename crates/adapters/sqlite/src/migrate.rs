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
