//! Writing when tokens were used, the PostgreSQL way.

use chrono::{DateTime, Utc};
use d2_kernel::TokenId;
use diesel::QueryResult;
use diesel::sql_types::{Array, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// Moves each token's `last_used_at` forward to the time given (never back), in one
/// statement of two array parameters whatever the batch size; rows it would not move are
/// not written. Returns how many rows changed.
pub(crate) async fn record_usage(
    conn: &mut AsyncPgConnection,
    used: &[(TokenId, DateTime<Utc>)],
) -> QueryResult<usize> {
    let ids: Vec<uuid::Uuid> = used.iter().map(|(id, _)| *id.as_uuid()).collect();
    let times: Vec<DateTime<Utc>> = used.iter().map(|(_, at)| *at).collect();
    diesel::sql_query(
        "UPDATE api_tokens AS t SET last_used_at = u.used_at \
         FROM unnest($1::uuid[], $2::timestamptz[]) AS u (id, used_at) \
         WHERE t.id = u.id AND (t.last_used_at IS NULL OR t.last_used_at < u.used_at)",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Array<Timestamptz>, _>(times)
    .execute(conn)
    .await
}
