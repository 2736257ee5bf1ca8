#![doc = include_str!("../README.md")]

// Macros first: the shared modules below use them.
/// A write transaction on `conn` that takes SQLite's write lock at `BEGIN IMMEDIATE`:
/// waiting for another process's writer happens there, under the busy timeout, instead of
/// failing when a read turns into a write.
macro_rules! write_transaction {
    ($conn:expr, $body:expr) => {
        $conn.immediate_transaction($body)
    };
}

/// `query` as it is: a write transaction already excludes every other writer.
macro_rules! locked {
    ($query:expr) => {
        $query
    };
}

/// `query` as it is (see `locked!`).
macro_rules! held {
    ($query:expr) => {
        $query
    };
}

/// `query` as it is (see `locked!`).
macro_rules! locked_skipping {
    ($query:expr) => {
        $query
    };
}

/// Inserts `rows` into `table` one at a time (diesel's multi-row insert is not available
/// on the async SQLite connection); inside a transaction this costs no disk sync per row.
macro_rules! insert_rows {
    ($conn:expr, $table:expr, $rows:expr) => {
        for row in &$rows {
            diesel_async::RunQueryDsl::execute(
                diesel::insert_into($table).values(row),
                &mut *$conn,
            )
            .await?;
        }
    };
}

mod analytics_sql;
mod audit_sql;
mod changes;
mod error;
mod event_writes;
mod issuance_writes;
mod jobs;
mod migrate;
mod pool;
mod token_writes;
mod usage_writes;
#[rustfmt::skip]
mod schema;
#[cfg(test)]
mod schema_check;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;
mod types;

// The repository code both SQL adapters share, compiled here against this crate's schema,
// connection and helpers (see crates/adapters/sql/README.md).
#[path = "../../sql/mod.rs"]
mod sql;
use sql::*;

type Db = diesel::sqlite::Sqlite;
type Conn = diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>;
type Store = SqliteStore;
/// Issuance groups written at once: one, as SQLite has one writer.
const ISSUANCE_WRITERS: usize = 1;

pub use changes::ChangeListener;
pub use error::ConnectError;
pub use jobs::JobLock;
pub use migrate::{MigrateError, pending_migrations, run_migrations};
pub use pool::{SqliteSettings, SqliteStore, Target};
pub use transfer::{RowPage, TABLES as TRANSFER_TABLES};
