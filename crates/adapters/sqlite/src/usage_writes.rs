//! Writing a batch of usage reports (their ledger entries and records), the SQLite way.

use diesel::QueryResult;
use diesel_async::RunQueryDsl;

use crate::Conn;
use crate::credits::EntryRow;
use crate::schema::{credit_entries, usage_records};
use crate::usage::UsageRow;

/// Inserts a batch's ledger entries, then its usage records, a prepared one-row `INSERT`
/// each: SQLite runs in the process, so a statement per row costs no round trip.
pub(crate) async fn insert(
    conn: &mut Conn,
    entries: &[EntryRow],
    records: &[UsageRow],
) -> QueryResult<()> {
    for entry in entries {
        diesel::insert_into(credit_entries::table)
            .values(entry)
            .execute(conn)
            .await?;
    }
    for record in records {
        diesel::insert_into(usage_records::table)
            .values(record)
            .execute(conn)
            .await?;
    }
    Ok(())
}
