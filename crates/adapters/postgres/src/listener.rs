//! The change feed: `LISTEN` on a dedicated connection, so a token revoked or rotated
//! through any replica is dropped from every replica's cache within a second.

use std::time::Duration;

use d2_kernel::TokenId;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::pool::{connect, describe_target};

/// The channel revokes and rotations are announced on; the payload is the token id.
pub const TOKEN_CHANNEL: &str = "d2_token_changed";

/// How often an idle listening connection is checked, so a silently dead connection is
/// noticed and replaced.
const HEARTBEAT: Duration = Duration::from_secs(15);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What the listener tells its subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Token(TokenId),
    /// The feed was (re)connected: announcements may have been missed, so everything
    /// cached must be considered stale.
    Resync,
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
    diesel::sql_query(format!("LISTEN {TOKEN_CHANNEL}"))
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
                        Some(Ok(notification)) => match notification.payload.parse::<TokenId>() {
                            Ok(id) => on_change(Change::Token(id)),
                            Err(_) => tracing::warn!(channel = %notification.channel, "ignoring a malformed change notification"),
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
