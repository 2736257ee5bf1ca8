//! Writing a batch of events, and where they stand in the export stream, the SQLite way.

use d2_events::{Decision, NewEvent};
use d2_kernel::AppName;
use diesel::QueryResult;
use diesel::QueryableByName;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::sql_types::{Binary, Double, Nullable, SmallInt, Text};
use diesel::sqlite::Sqlite;
use diesel_async::RunQueryDsl;

use crate::Conn;
use crate::id::Id;
use crate::types::{Jsonb, Timestamptz, Uuid};

/// Rows per `INSERT`: fifteen parameters each, well under SQLite's limit of 32,766.
const ROWS_PER_STATEMENT: usize = 1_000;

/// The places in the export stream that are final: all that a read can see. An event's
/// `stream_position` is its row id (a generated column), which SQLite assigns inside the
/// write transaction; with one writer at a time, a transaction still to commit can only
/// get ids above every committed one (`AUTOINCREMENT` never reuses an id, even after the
/// largest row is deleted), so nothing can appear behind what a reader has seen.
pub(crate) const FINAL_POSITIONS: &str = "true";

/// Inserts the events not stored before, in one transaction of multi-row `INSERT`s;
/// returns the keys of those inserted. Their `stream_position` is their id.
pub(crate) async fn insert(conn: &mut Conn, batch: &[NewEvent]) -> QueryResult<Vec<Vec<u8>>> {
    write_transaction!(conn, async |conn| {
        let mut inserted = Vec::with_capacity(batch.len());
        for chunk in batch.chunks(ROWS_PER_STATEMENT) {
            let keys: Vec<InsertedKey> = insert_statement(chunk).load(conn).await?;
            inserted.extend(keys.into_iter().map(|row| row.event_key));
        }
        Ok(inserted)
    })
    .await
}

#[derive(QueryableByName)]
struct InsertedKey {
    #[diesel(sql_type = Binary)]
    event_key: Vec<u8>,
}

/// `INSERT ... VALUES (..), (..) ON CONFLICT DO NOTHING RETURNING event_key`. (diesel's
/// SQLite batch insert cannot return rows.)
fn insert_statement(events: &[NewEvent]) -> BoxedSqlQuery<'_, Sqlite, SqlQuery> {
    let row = format!("({})", ["?"; 15].join(", "));
    let sql = format!(
        "INSERT INTO events (account_id, event_key, token_id, event_type, occurred_at, \
             ingested_at, app_name, service, host, source_ip, request_id, decision, tool, \
             latency_ms, payload) VALUES {} \
         ON CONFLICT (account_id, occurred_at, event_key) DO NOTHING RETURNING event_key",
        vec![row.as_str(); events.len()].join(", ")
    );
    let mut query = diesel::sql_query(sql).into_boxed::<Sqlite>();
    for event in events {
        query = query
            .bind::<Uuid, _>(Id::from(event.account_id))
            .bind::<Binary, _>(event.key.as_slice())
            .bind::<Nullable<Uuid>, _>(event.token_id.map(Id::from))
            .bind::<Text, _>(event.event_type.as_str())
            .bind::<Timestamptz, _>(event.occurred_at)
            .bind::<Timestamptz, _>(event.ingested_at)
            .bind::<Nullable<Text>, _>(event.app_name.as_ref().map(AppName::as_str))
            .bind::<Nullable<Text>, _>(event.service.as_deref())
            .bind::<Nullable<Text>, _>(event.host.as_deref())
            .bind::<Nullable<Text>, _>(event.source_ip.as_deref())
            .bind::<Nullable<Text>, _>(event.request_id.as_deref())
            .bind::<Nullable<SmallInt>, _>(event.facts.decision.map(Decision::as_i16))
            .bind::<Nullable<Text>, _>(event.facts.tool.as_deref())
            .bind::<Nullable<Double>, _>(event.facts.latency_ms)
            .bind::<Jsonb, _>(&event.payload);
    }
    query
}

/// Nothing to do: SQLite's `AUTOINCREMENT` continues after the largest id stored.
pub(crate) async fn continue_ids(_conn: &mut Conn) -> QueryResult<()> {
    Ok(())
}
