//! The change feed: `LISTEN` on a dedicated connection, so a token revoked or rotated, or
//! an account changed, through any replica is dropped from every replica's caches within a
//! second.

use std::time::Duration;

use d2_kernel::Change;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::pool::{connect, describe_target};

/// The channel changes are announced on; the payload is `Change::payload`.
pub const CHANGE_CHANNEL: &str = "d2_changes";

/// How often an idle listening connection is checked, so a silently dead connection is
/// noticed and replaced.
const HEARTBEAT: Duration = Duration::from_secs(15);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Announces `change` to every listener, inside the caller's transaction: it is delivered
/// exactly when the change commits, and never if it rolls back.
pub(crate) async fn announce(
    conn: &mut AsyncPgConnection,
    change: Change,
) -> diesel::QueryResult<()> {
    let Some(payload) = change.payload() else {
        return Ok(());
    };
    diesel::sql_query("SELECT pg_notify($1, $2)")
        .bind::<diesel::sql_types::Text, _>(CHANGE_CHANNEL)
        .bind::<diesel::sql_types::Text, _>(payload)
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(Debug)]
pub struct ChangeListener;

impl ChangeListener {
    /// Listens until `shutdown` is cancelled, reconnecting with back-off after failures.
    pub fn spawn<F>(url: String, shutdown: CancellationToken, on_change: F) -> JoinHandle<()>
    where
        F: Fn(Change) + Send + Sync + 'static,
    {
        tokio::spawn(async move {
            let target = describe_target(&url);
            let mut backoff = Duration::from_millis(250);
            loop {
                let outcome = tokio::select! {
                    () = shutdown.cancelled() => return,
                    outcome = listen(&url, &on_change) => outcome,
                };
                if let Err(error) = outcome {
                    tracing::warn!(db.target = %target, error = %error, retry_in_ms = backoff.as_millis(), "change feed lost; reconnecting");
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        })
    }
}

/// One connection's life: returns when it fails.
async fn listen<F>(url: &str, on_change: &F) -> Result<(), String>
where
    F: Fn(Change) + Send + Sync,
{
    let mut conn: AsyncPgConnection = connect(url, Duration::from_secs(10), "d2-listener")
        .await
        .map_err(|e| e.to_string())?;
    diesel::sql_query(format!("LISTEN {CHANGE_CHANNEL}"))
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    tracing::debug!("change feed listening");
    on_change(Change::Resync);
    loop {
        {
            let mut notifications = std::pin::pin!(conn.notifications_stream());
            let deadline = tokio::time::sleep(HEARTBEAT);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    () = &mut deadline => break,
                    next = notifications.next() => match next {
                        Some(Ok(notification)) => match Change::parse(&notification.payload) {
                            Some(change) => on_change(change),
                            None => tracing::warn!(channel = %notification.channel, "ignoring a malformed change notification"),
                        },
                        Some(Err(error)) => return Err(error.to_string()),
                        None => return Err("notification stream ended".to_owned()),
                    },
                }
            }
        }
        diesel::sql_query("SELECT 1")
            .execute(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
    }
}

/// Serialises transactions on `name` (an app, an account's keys) until the caller's
/// transaction ends.
pub(crate) async fn lock(conn: &mut AsyncPgConnection, name: &str) -> diesel::QueryResult<()> {
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind::<diesel::sql_types::Text, _>(name)
        .execute(conn)
        .await?;
    Ok(())
}
