//! The SQL types the shared repository code names, on SQLite:
//!
//! - `Uuid`: text, the hyphenated form, whose byte order is the order of the uuid's bytes
//!   (as PostgreSQL orders `uuid`), read and written for `crate::id::Id`;
//! - `Timestamptz`: diesel's SQLite timestamp, UTC text (`2026-11-22 10:00:00.123456+00:00`).
//!   With the offset always `+00:00`, text order is time order: the fraction is left-aligned
//!   and `+` sorts before `.` and every digit;
//! - `Jsonb`: JSON text.

use diesel::deserialize::{self, FromSql};
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::{SqlType, Text};
use diesel::sqlite::{Sqlite, SqliteValue};

pub use diesel::sql_types::{Json as Jsonb, TimestamptzSqlite as Timestamptz};

use crate::id::Id;

#[derive(Debug, Clone, Copy, Default, SqlType, diesel::query_builder::QueryId)]
#[diesel(sqlite_type(name = "Text"))]
pub struct Uuid;

impl FromSql<Uuid, Sqlite> for Id {
    fn from_sql(value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Self> {
        let text = <String as FromSql<Text, Sqlite>>::from_sql(value)?;
        Ok(Id(uuid::Uuid::parse_str(&text)?))
    }
}

impl ToSql<Uuid, Sqlite> for Id {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(self.0.hyphenated().to_string());
        Ok(IsNull::No)
    }
}
