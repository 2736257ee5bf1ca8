//! Writing a batch's usage records and hourly totals, the PostgreSQL way.

use std::collections::HashSet;

use diesel::QueryResult;
use diesel::sql_types::{Array, Int4, Int8, Text, Timestamptz, Uuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::usage::{HourRow, UsageRow};

#[derive(diesel::QueryableByName)]
struct StoredKey {
    #[diesel(sql_type = Text)]
    idempotency_key: String,
}

/// Inserts the records whose keys their account has no record under yet, with one
/// `INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING`: a dozen array parameters
/// whatever the batch size, in a statement PostgreSQL prepares once, where a multi-row
/// `VALUES` list binds one parameter per column and row and is parsed and planned afresh
/// for every batch. Answers the keys stored; a key another transaction is storing waits
/// for that transaction's end, then is stored or not.
pub(crate) async fn insert_new(
    conn: &mut AsyncPgConnection,
    records: &[UsageRow],
) -> QueryResult<HashSet<String>> {
    let stored: Vec<StoredKey> = diesel::sql_query(
        "INSERT INTO usage_records (id, account_id, idempotency_key, meter, subject, \
             operation, input_tokens, output_tokens, invocations, credits, price_version, \
             credential, recorded_at, entry_id) \
         SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT (account_id, idempotency_key) DO NOTHING \
         RETURNING idempotency_key",
    )
    .bind::<Array<Uuid>, _>(records.iter().map(|r| r.id.0).collect::<Vec<_>>())
    .bind::<Array<Uuid>, _>(records.iter().map(|r| r.account_id.0).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(
        records
            .iter()
            .map(|r| r.idempotency_key.as_str())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Text>, _>(records.iter().map(|r| r.meter.as_str()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(
        records
            .iter()
            .map(|r| r.subject.as_str())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Text>, _>(
        records
            .iter()
            .map(|r| r.operation.as_str())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Int8>, _>(records.iter().map(|r| r.input_tokens).collect::<Vec<_>>())
    .bind::<Array<Int8>, _>(records.iter().map(|r| r.output_tokens).collect::<Vec<_>>())
    .bind::<Array<Int8>, _>(records.iter().map(|r| r.invocations).collect::<Vec<_>>())
    .bind::<Array<Int8>, _>(records.iter().map(|r| r.credits).collect::<Vec<_>>())
    .bind::<Array<Int4>, _>(records.iter().map(|r| r.price_version).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(
        records
            .iter()
            .map(|r| r.credential.as_str())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Timestamptz>, _>(records.iter().map(|r| r.recorded_at).collect::<Vec<_>>())
    .bind::<Array<Uuid>, _>(records.iter().map(|r| r.entry_id.0).collect::<Vec<_>>())
    .load(conn)
    .await?;
    Ok(stored.into_iter().map(|row| row.idempotency_key).collect())
}

/// Adds each hour's totals to the stored ones (made when there are none) with one
/// `INSERT ... SELECT FROM unnest(...) ON CONFLICT DO UPDATE`: a batch's hours (one per
/// model or agent operation and credential) in one round trip while the account is held.
/// The rows are distinct hours and dimensions, as one statement requires.
pub(crate) async fn add_hours(conn: &mut AsyncPgConnection, hours: &[HourRow]) -> QueryResult<()> {
    if hours.is_empty() {
        return Ok(());
    }
    diesel::sql_query(
        "INSERT INTO usage_hours (account_id, hour, meter, subject, operation, credential, \
             reports, input_tokens, output_tokens, invocations, credits) \
         SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (account_id, hour, meter, subject, operation, credential) DO UPDATE SET \
             reports = usage_hours.reports + excluded.reports, \
             input_tokens = usage_hours.input_tokens + excluded.input_tokens, \
             output_tokens = usage_hours.output_tokens + excluded.output_tokens, \
             invocations = usage_hours.invocations + excluded.invocations, \
             credits = usage_hours.credits + excluded.credits",
    )
    .bind::<Array<Uuid>, _>(hours.iter().map(|h| h.account_id.0).collect::<Vec<_>>())
    .bind::<Array<Timestamptz>, _>(hours.iter().map(|h| h.hour).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(hours.iter().map(|h| h.meter.as_str()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(hours.iter().map(|h| h.subject.as_str()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(
        hours
            .iter()
            .map(|h| h.operation.as_str())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Text>, _>(
        hours
            .iter()
            .map(|h| h.credential.as_str())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Int8>, _>(hours.iter().map(|h| h.reports).collect::<Vec<_>>())
    .bind::<Array<Int8>, _>(hours.iter().map(|h| h.input_tokens).collect::<Vec<_>>())
    .bind::<Array<Int8>, _>(hours.iter().map(|h| h.output_tokens).collect::<Vec<_>>())
    .bind::<Array<Int8>, _>(hours.iter().map(|h| h.invocations).collect::<Vec<_>>())
    .bind::<Array<Int8>, _>(hours.iter().map(|h| h.credits).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}
