//! The change feed between processes sharing the database file (the API, a worker,
//! `d2ctl`): a write appends what it changed to `changes` inside its transaction, so it is
//! visible exactly when the write commits; every server polls for rows after the last it
//! saw. The polling costs one indexed read per interval.

use std::time::Duration;

use chrono::Utc;
use d2_kernel::Change;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Conn;
use crate::pool::SqliteStore;
use crate::schema::changes;

/// How often a server looks for changes made by other processes.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Rows older than this are pruned; a process that has not polled for this long resyncs.
const KEEP_FOR: chrono::Duration = chrono::Duration::minutes(10);
const PRUNE_EVERY: u32 = 240;
const BATCH: i64 = 1000;

/// Announces `change` to every process, inside the caller's transaction.
pub(crate) async fn announce(conn: &mut Conn, change: Change) -> QueryResult<()> {
    let Some(payload) = change.payload() else {
        return Ok(());
    };
    diesel::insert_into(changes::table)
        .values((
            changes::payload.eq(payload),
            changes::created_at.eq(Utc::now()),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Nothing to do: a write transaction holds SQLite's one write lock until it ends, which
/// already serialises every transaction that would take a named lock.
pub(crate) async fn lock(_conn: &mut Conn, _name: &str) -> QueryResult<()> {
    Ok(())
}

#[derive(Debug)]
pub struct ChangeListener;

impl ChangeListener {
    /// Polls until `shutdown` is cancelled. Starts with `Change::Resync`, and sends it again
    /// whenever announcements may have been missed (a failed poll, rows pruned unseen).
    pub fn spawn<F>(store: SqliteStore, shutdown: CancellationToken, on_change: F) -> JoinHandle<()>
    where
        F: Fn(Change) + Send + Sync + 'static,
    {
        tokio::spawn(async move {
            let mut last_seen: Option<i64> = None;
            let mut polls = 0u32;
            loop {
                match poll(&store, last_seen, &on_change).await {
                    Ok(seen) => last_seen = Some(seen),
                    Err(error) => {
                        if last_seen.take().is_some() {
                            tracing::warn!(error = %error, "change feed poll failed; resyncing");
                        }
                    }
                }
                polls = polls.wrapping_add(1);
                if polls.is_multiple_of(PRUNE_EVERY)
                    && let Err(error) = prune(&store).await
                {
                    tracing::warn!(error = %error, "cannot prune the change feed");
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(POLL_INTERVAL) => {}
                }
            }
        })
    }
}

/// Delivers the changes after `last_seen`; returns the newest id seen. With no position
/// yet, starts from the newest row and resyncs.
async fn poll<F>(store: &SqliteStore, last_seen: Option<i64>, on_change: &F) -> Result<i64, String>
where
    F: Fn(Change),
{
    let mut conn = store.conn().await.map_err(|e| e.to_string())?;
    let Some(mut last) = last_seen else {
        let newest: Option<i64> = changes::table
            .select(diesel::dsl::max(changes::id))
            .first(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        on_change(Change::Resync);
        return Ok(newest.unwrap_or(0));
    };
    loop {
        let rows: Vec<(i64, String)> = changes::table
            .filter(changes::id.gt(last))
            .order(changes::id.asc())
            .limit(BATCH)
            .select((changes::id, changes::payload))
            .load(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        // Ids are consecutive (only pruning deletes): a gap means rows went unseen.
        if matches!(rows.as_slice(), [(first, _), ..] if *first > last + 1) {
            on_change(Change::Resync);
        }
        let full = i64::try_from(rows.len()).unwrap_or(i64::MAX) == BATCH;
        for (id, payload) in rows {
            match Change::parse(&payload) {
                Some(change) => on_change(change),
                None => tracing::warn!("ignoring a malformed change record"),
            }
            last = id;
        }
        if !full {
            return Ok(last);
        }
    }
}

async fn prune(store: &SqliteStore) -> Result<(), String> {
    let mut conn = store.writer().await.map_err(|e| e.to_string())?;
    diesel::delete(changes::table.filter(changes::created_at.lt(Utc::now() - KEEP_FOR)))
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}
