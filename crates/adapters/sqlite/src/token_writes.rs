//! Writing when tokens were used, the SQLite way.

use chrono::{DateTime, Utc};
use d2_kernel::TokenId;
use diesel::QueryResult;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::sqlite::Sqlite;
use diesel_async::RunQueryDsl;

use crate::Conn;
use crate::id::Id;
use crate::types::{Timestamptz, Uuid};

/// Rows per `UPDATE`: two parameters each, under SQLite's limit of 32,766 (a flush holds
/// one row per token used since the last, so one statement in practice).
const ROWS_PER_STATEMENT: usize = 10_000;

/// Moves each token's `last_used_at` forward to the time given (never back: times are
/// UTC text, whose order is time order); rows it would not move are not written. Returns
/// how many rows changed.
pub(crate) async fn record_usage(
    conn: &mut Conn,
    used: &[(TokenId, DateTime<Utc>)],
) -> QueryResult<usize> {
    let mut changed = 0;
    for chunk in used.chunks(ROWS_PER_STATEMENT) {
        changed += update_statement(chunk).execute(conn).await?;
    }
    Ok(changed)
}

/// `UPDATE ... FROM (VALUES (?, ?), ..)`: the values' columns are `column1` (the id) and
/// `column2` (the time).
fn update_statement(used: &[(TokenId, DateTime<Utc>)]) -> BoxedSqlQuery<'static, Sqlite, SqlQuery> {
    let sql = format!(
        "UPDATE api_tokens SET last_used_at = used.column2 \
         FROM (VALUES {}) AS used \
         WHERE api_tokens.id = used.column1 \
         AND (api_tokens.last_used_at IS NULL OR api_tokens.last_used_at < used.column2)",
        vec!["(?, ?)"; used.len()].join(", ")
    );
    let mut query = diesel::sql_query(sql).into_boxed::<Sqlite>();
    for (id, at) in used {
        query = query
            .bind::<Uuid, _>(Id::from(*id))
            .bind::<Timestamptz, _>(*at);
    }
    query
}
