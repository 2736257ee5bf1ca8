#![doc = include_str!("../README.md")]

// Macros first: the shared modules below use them.
/// A write transaction (`BEGIN` .. `COMMIT`) on `conn`, running `body`.
macro_rules! write_transaction {
    ($conn:expr, $body:expr) => {
        diesel_async::AsyncConnection::transaction(&mut *$conn, $body)
    };
}

/// `query` with its rows locked until the transaction ends (`FOR UPDATE`).
macro_rules! locked {
    ($query:expr) => {
        diesel::QueryDsl::for_update($query)
    };
}

/// `query` with its rows held against other writers of them until the transaction ends,
/// but not against inserts of rows that refer to them (`FOR NO KEY UPDATE`, which a
/// foreign key's check does not wait for): an account's row serialises the writers of
/// the account without making every insert that names the account queue behind them.
macro_rules! held {
    ($query:expr) => {
        diesel::QueryDsl::for_no_key_update($query)
    };
}

/// `query` with the rows no other transaction holds locked, and the rest skipped.
macro_rules! locked_skipping {
    ($query:expr) => {
        diesel::QueryDsl::skip_locked(diesel::QueryDsl::for_update($query))
    };
}

/// Inserts `rows` into `table` with multi-row statements of a thousand rows (PostgreSQL
/// takes at most 65,535 parameters per statement).
macro_rules! insert_rows {
    ($conn:expr, $table:expr, $rows:expr) => {
        for chunk in $rows.chunks(1_000) {
            diesel_async::RunQueryDsl::execute(
                diesel::insert_into($table).values(chunk),
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
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

// The repository code both SQL adapters share, compiled here against this crate's schema,
// connection and helpers (see crates/adapters/sql/README.md).
#[path = "../../sql/mod.rs"]
mod sql;
use sql::*;

/// The SQL types the shared code names: PostgreSQL's own.
mod types {
    use diesel::deserialize::{self, FromSql};
    use diesel::pg::{Pg, PgValue};
    use diesel::serialize::{self, Output, ToSql};
    pub use diesel::sql_types::{Timestamptz, Uuid};

    use crate::id::Id;

    impl ToSql<Uuid, Pg> for Id {
        fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
            ToSql::<Uuid, Pg>::to_sql(&self.0, out)
        }
    }

    impl FromSql<Uuid, Pg> for Id {
        fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
            FromSql::<Uuid, Pg>::from_sql(value).map(Id)
        }
    }
}

type Db = diesel::pg::Pg;
type Conn = diesel_async::AsyncPgConnection;
type Store = PgStore;
/// Issuance groups written at once at most, each on a connection of the pool (more than
/// one only while more waits than one group holds).
const ISSUANCE_WRITERS: usize = 4;

pub use changes::{CHANGE_CHANNEL, ChangeListener};
pub use error::ConnectError;
pub use jobs::JobLock;
pub use migrate::{MigrateError, ensure_database, pending_migrations, run_migrations};
pub use pool::{PgStore, PoolSettings};
pub use transfer::{RowPage, TABLES as TRANSFER_TABLES};
