//! Writing a batch's usage records and hourly totals, the SQLite way.

use std::collections::HashSet;

use diesel::QueryResult;
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::RunQueryDsl;

use crate::Conn;
use crate::schema::{usage_hours, usage_records};
use crate::usage::{HourRow, UsageRow};

/// Inserts the records whose keys their account has no record under yet, a prepared
/// one-row `INSERT ... ON CONFLICT DO NOTHING` each (SQLite runs in the process, so a
/// statement per row costs no round trip); answers the keys stored.
pub(crate) async fn insert_new(
    conn: &mut Conn,
    records: &[UsageRow],
) -> QueryResult<HashSet<String>> {
    let mut stored = HashSet::with_capacity(records.len());
    for record in records {
        let inserted = diesel::insert_into(usage_records::table)
            .values(record)
            .on_conflict((usage_records::account_id, usage_records::idempotency_key))
            .do_nothing()
            .execute(conn)
            .await?;
        if inserted == 1 {
            stored.insert(record.idempotency_key.clone());
        }
    }
    Ok(stored)
}

/// Adds each hour's totals to the stored ones (made when there are none), a prepared
/// one-row upsert each.
pub(crate) async fn add_hours(conn: &mut Conn, hours: &[HourRow]) -> QueryResult<()> {
    for hour in hours {
        diesel::insert_into(usage_hours::table)
            .values(hour)
            .on_conflict((
                usage_hours::account_id,
                usage_hours::hour,
                usage_hours::meter,
                usage_hours::subject,
                usage_hours::operation,
                usage_hours::credential,
            ))
            .do_update()
            .set((
                usage_hours::reports.eq(usage_hours::reports + excluded(usage_hours::reports)),
                usage_hours::input_tokens
                    .eq(usage_hours::input_tokens + excluded(usage_hours::input_tokens)),
                usage_hours::output_tokens
                    .eq(usage_hours::output_tokens + excluded(usage_hours::output_tokens)),
                usage_hours::invocations
                    .eq(usage_hours::invocations + excluded(usage_hours::invocations)),
                usage_hours::credits.eq(usage_hours::credits + excluded(usage_hours::credits)),
            ))
            .execute(conn)
            .await?;
    }
    Ok(())
}
