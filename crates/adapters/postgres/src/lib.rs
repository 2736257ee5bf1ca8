#![doc = include_str!("../README.md")]

mod accounts;
mod audit;
mod error;
mod events;
mod jobs;
mod jwks;
mod listener;
mod migrate;
mod models;
mod policies;
mod pool;
mod position;
#[rustfmt::skip]
mod schema;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;
mod tokens;

pub use error::ConnectError;
pub use jobs::JobLock;
pub use listener::{CHANGE_CHANNEL, Change, ChangeListener};
pub use migrate::{MigrateError, ensure_database, pending_migrations, run_migrations};
pub use pool::{PgStore, PoolSettings};
