//! Writing a batch's usage records, the SQLite way.

use std::collections::HashSet;

use diesel::QueryResult;
use diesel_async::RunQueryDsl;

use crate::Conn;
use crate::schema::usage_records;
use crate::usage::UsageRow;

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
