//! Writing a batch of usage reports (their ledger entries and records), the PostgreSQL way.

use diesel::QueryResult;
use diesel::sql_types::{Array, Int4, Int8, Jsonb, Nullable, Text, Timestamptz, Uuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::credits::EntryRow;
use crate::usage::UsageRow;

/// Inserts a batch's ledger entries, then its usage records, one
/// `INSERT ... SELECT FROM unnest(...)` each: a dozen array parameters whatever the batch
/// size, in a statement PostgreSQL prepares once, where a multi-row `VALUES` list binds
/// one parameter per column and row and is parsed and planned afresh for every batch.
pub(crate) async fn insert(
    conn: &mut AsyncPgConnection,
    entries: &[EntryRow],
    records: &[UsageRow],
) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO credit_entries (id, account_id, kind, amount, balance_after, grant_id, \
             burns, idempotency_key, reason, actor, created_at) \
         SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind::<Array<Uuid>, _>(entries.iter().map(|e| e.id.0).collect::<Vec<_>>())
    .bind::<Array<Uuid>, _>(entries.iter().map(|e| e.account_id.0).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(entries.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>())
    .bind::<Array<Int8>, _>(entries.iter().map(|e| e.amount).collect::<Vec<_>>())
    .bind::<Array<Int8>, _>(entries.iter().map(|e| e.balance_after).collect::<Vec<_>>())
    .bind::<Array<Nullable<Uuid>>, _>(
        entries
            .iter()
            .map(|e| e.grant_id.map(|id| id.0))
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Jsonb>, _>(entries.iter().map(|e| &e.burns).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(
        entries
            .iter()
            .map(|e| e.idempotency_key.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Nullable<Text>>, _>(
        entries
            .iter()
            .map(|e| e.reason.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Text>, _>(entries.iter().map(|e| e.actor.as_str()).collect::<Vec<_>>())
    .bind::<Array<Timestamptz>, _>(entries.iter().map(|e| e.created_at).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    diesel::sql_query(
        "INSERT INTO usage_records (id, account_id, idempotency_key, meter, subject, \
             operation, input_tokens, output_tokens, invocations, credits, price_version, \
             credential, recorded_at) \
         SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
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
    .execute(conn)
    .await?;
    Ok(())
}
