//! Writing a batch of events, and where they stand in the export stream, the PostgreSQL way.

use chrono::{DateTime, Utc};
use d2_events::{Decision, NewEvent};
use d2_kernel::AppName;
use diesel::QueryResult;
use diesel::sql_types::{
    Array, Bytea, Double, Jsonb, Nullable, SmallInt, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// A batch as one array per column, for one `INSERT ... SELECT FROM unnest(...)`: fifteen
/// parameters whatever the batch size, where a multi-row `VALUES` list would bind (and
/// PostgreSQL plan) fifteen per event.
struct EventColumns<'a> {
    account_id: Vec<uuid::Uuid>,
    event_key: Vec<&'a [u8]>,
    token_id: Vec<Option<uuid::Uuid>>,
    event_type: Vec<&'a str>,
    occurred_at: Vec<DateTime<Utc>>,
    ingested_at: Vec<DateTime<Utc>>,
    app_name: Vec<Option<&'a str>>,
    service: Vec<Option<&'a str>>,
    host: Vec<Option<&'a str>>,
    source_ip: Vec<Option<&'a str>>,
    request_id: Vec<Option<&'a str>>,
    decision: Vec<Option<i16>>,
    tool: Vec<Option<&'a str>>,
    latency_ms: Vec<Option<f64>>,
    payload: Vec<&'a serde_json::Value>,
}

impl<'a> EventColumns<'a> {
    fn of(events: &'a [NewEvent]) -> Self {
        Self {
            account_id: events.iter().map(|e| *e.account_id.as_uuid()).collect(),
            event_key: events.iter().map(|e| e.key.as_slice()).collect(),
            token_id: events
                .iter()
                .map(|e| e.token_id.map(|id| *id.as_uuid()))
                .collect(),
            event_type: events.iter().map(|e| e.event_type.as_str()).collect(),
            occurred_at: events.iter().map(|e| e.occurred_at).collect(),
            ingested_at: events.iter().map(|e| e.ingested_at).collect(),
            app_name: events
                .iter()
                .map(|e| e.app_name.as_ref().map(AppName::as_str))
                .collect(),
            service: events.iter().map(|e| e.service.as_deref()).collect(),
            host: events.iter().map(|e| e.host.as_deref()).collect(),
            source_ip: events.iter().map(|e| e.source_ip.as_deref()).collect(),
            request_id: events.iter().map(|e| e.request_id.as_deref()).collect(),
            decision: events
                .iter()
                .map(|e| e.facts.decision.map(Decision::as_i16))
                .collect(),
            tool: events.iter().map(|e| e.facts.tool.as_deref()).collect(),
            latency_ms: events.iter().map(|e| e.facts.latency_ms).collect(),
            payload: events.iter().map(|e| &e.payload).collect(),
        }
    }
}

#[derive(diesel::QueryableByName)]
struct InsertedKey {
    #[diesel(sql_type = Bytea)]
    event_key: Vec<u8>,
}

/// The places in the export stream that are final. An event's `stream_position` is the id of
/// the transaction that inserted it (the column's default, `pg_current_xact_id()`); a
/// transaction id below the oldest one still running (`xmin` of the statement's snapshot)
/// belongs to a transaction that has ended, so its events are visible now or never will
/// be, and every transaction yet to write gets a larger id. Ids that are not final yet are
/// left for a later read, whoever holds them back: an ingest in flight, or any long
/// transaction on the server.
pub(crate) const FINAL_POSITIONS: &str =
    "stream_position < pg_snapshot_xmin(pg_current_snapshot())::text::bigint";

/// Inserts the events not stored before, in one statement (atomic without an explicit
/// transaction); returns the keys of those inserted. Their `stream_position` is the
/// column's default.
pub(crate) async fn insert(
    conn: &mut AsyncPgConnection,
    batch: &[NewEvent],
) -> QueryResult<Vec<Vec<u8>>> {
    let columns = EventColumns::of(batch);
    let keys: Vec<InsertedKey> = diesel::sql_query(
        "INSERT INTO events (account_id, event_key, token_id, event_type, occurred_at, \
             ingested_at, app_name, service, host, source_ip, request_id, decision, tool, \
             latency_ms, payload) \
         SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
             $14, $15) \
         ON CONFLICT (account_id, occurred_at, event_key) DO NOTHING RETURNING event_key",
    )
    .bind::<Array<SqlUuid>, _>(&columns.account_id)
    .bind::<Array<Bytea>, _>(&columns.event_key)
    .bind::<Array<Nullable<SqlUuid>>, _>(&columns.token_id)
    .bind::<Array<Text>, _>(&columns.event_type)
    .bind::<Array<Timestamptz>, _>(&columns.occurred_at)
    .bind::<Array<Timestamptz>, _>(&columns.ingested_at)
    .bind::<Array<Nullable<Text>>, _>(&columns.app_name)
    .bind::<Array<Nullable<Text>>, _>(&columns.service)
    .bind::<Array<Nullable<Text>>, _>(&columns.host)
    .bind::<Array<Nullable<Text>>, _>(&columns.source_ip)
    .bind::<Array<Nullable<Text>>, _>(&columns.request_id)
    .bind::<Array<Nullable<SmallInt>>, _>(&columns.decision)
    .bind::<Array<Nullable<Text>>, _>(&columns.tool)
    .bind::<Array<Nullable<Double>>, _>(&columns.latency_ms)
    .bind::<Array<Jsonb>, _>(&columns.payload)
    .load(conn)
    .await?;
    Ok(keys.into_iter().map(|row| row.event_key).collect())
}

/// Moves the id sequences past the ids a copy wrote, so new rows do not collide with them.
pub(crate) async fn continue_ids(conn: &mut AsyncPgConnection) -> QueryResult<()> {
    for table in ["events", "audit_logs"] {
        diesel::sql_query(format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table} \
             HAVING max(id) IS NOT NULL"
        ))
        .execute(conn)
        .await?;
    }
    Ok(())
}
