//! The change feed: `LISTEN` on a dedicated connection, so a token revoked or rotated, or
//! an account changed, through any replica is dropped from every replica's caches within a
//! second.

use std::time::Duration;

use d2_kernel::{AccountId, AppName, TokenId};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::pool::{connect, describe_target};

/// The channel changes are announced on. The payload names what changed:
/// `token:<id>` or `account:<id>`.
pub const CHANGE_CHANNEL: &str = "d2_changes";

/// How often an idle listening connection is checked, so a silently dead connection is
/// noticed and replaced.
const HEARTBEAT: Duration = Duration::from_secs(15);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What the listener tells its subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Token(TokenId),
    Account(AccountId),
    /// An app's policies changed (publish, draft, revoke, revert, rotation).
    App(AccountId, AppName),
    /// An account's signing keys changed.
    Keys(AccountId),
    /// The feed was (re)connected: announcements may have been missed, so everything
    /// cached must be considered stale.
    Resync,
}

impl Change {
    /// The notification payload announcing this change.
    pub fn payload(&self) -> Option<String> {
        match self {
            Change::Token(id) => Some(format!("token:{id}")),
            Change::Account(id) => Some(format!("account:{id}")),
            Change::App(account, app) => Some(format!("app:{account}:{app}")),
            Change::Keys(account) => Some(format!("keys:{account}")),
            Change::Resync => None,
        }
    }

    fn parse(payload: &str) -> Option<Self> {
        match payload.split_once(':')? {
            ("token", id) => id.parse().ok().map(Change::Token),
            ("account", id) => id.parse().ok().map(Change::Account),
            ("app", rest) => {
                let (account, app) = rest.split_once(':')?;
                Some(Change::App(account.parse().ok()?, AppName::normalise(app)))
            }
            ("keys", id) => id.parse().ok().map(Change::Keys),
            _ => None,
        }
    }
}

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
