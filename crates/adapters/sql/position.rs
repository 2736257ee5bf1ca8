//! Keyset positions: "after this (time, id)" (or this place in the export stream) as one
//! row comparison.
//!
//! `(created_at, id) < ($1, $2)` is a range bound of a `(.., created_at, id)` index, so a
//! page deep in a list (or an export batch deep in the stream) starts where the previous
//! one stopped. The equivalent `created_at < $1 OR (created_at = $1 AND id < $2)` is only a
//! filter: PostgreSQL walks the index from its start and discards every row before.

use crate::Db;
use chrono::{DateTime, Utc};
use diesel::expression::{AsExpression, BoxableExpression, ValidGrouping, is_aggregate};
use diesel::query_builder::QueryFragment;
use diesel::sql_types::{BigInt, Bool, SingleValue};

use crate::types::Timestamptz;

/// Which side of the position.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Side {
    /// Older: newest-first lists.
    Before,
    /// Newer: the export stream.
    After,
    /// The position and older: what an export has passed.
    UpTo,
}

/// `(time_column, id_column) <, > or <= (at, id)`. The column names are the adapter's own
/// constants, never input.
pub(crate) fn beyond<QS, IdType, Id>(
    columns: &'static str,
    side: Side,
    at: DateTime<Utc>,
    id: Id,
) -> impl BoxableExpression<QS, Db, SqlType = Bool> + ValidGrouping<(), IsAggregate = is_aggregate::Never>
where
    IdType: SingleValue + Send + 'static,
    Id: AsExpression<IdType> + Send + 'static,
    Id::Expression: QueryFragment<Db> + Send,
    QS: 'static,
{
    let op = match side {
        Side::Before => "<",
        Side::After => ">",
        Side::UpTo => "<=",
    };
    diesel::dsl::sql::<Bool>(&format!("({columns}) {op} ("))
        .bind::<Timestamptz, _>(at)
        .sql(", ")
        .bind::<IdType, _>(id)
        .sql(")")
}

/// `(stream_position, id) >, < or <= (position, id)`: a place in the export stream of events
/// (`ExportCursor`), a range bound of the `(stream_position, id)` index.
pub(crate) fn in_stream<QS>(
    side: Side,
    position: i64,
    id: i64,
) -> impl BoxableExpression<QS, Db, SqlType = Bool> + ValidGrouping<(), IsAggregate = is_aggregate::Never>
where
    QS: 'static,
{
    let op = match side {
        Side::Before => "<",
        Side::After => ">",
        Side::UpTo => "<=",
    };
    diesel::dsl::sql::<Bool>(&format!("(stream_position, id) {op} ("))
        .bind::<BigInt, _>(position)
        .sql(", ")
        .bind::<BigInt, _>(id)
        .sql(")")
}
