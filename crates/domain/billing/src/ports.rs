use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_accounts::Account;
use d2_audit::AuditEntry;
use d2_kernel::{AccountId, StoreError};

use crate::credits::CreditGrant;
use crate::ledger::LedgerEntry;
use crate::provider::ProviderEvent;
use crate::subscription::Subscription;

/// What became of a provider event. The name is recorded with the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    /// Its report was applied (the subscription, the account, or the customer's link).
    Applied,
    /// It changed nothing (an invoice that agrees with the subscription's status).
    Unchanged,
    /// A newer event about the subscription was applied before it: kept as it is.
    Stale,
    /// Nothing D2 acts on, or no account it knows: why.
    Ignored(String),
    /// The event was received before: nothing is done again.
    Duplicate,
}

impl EventOutcome {
    pub fn as_str(&self) -> &str {
        match self {
            EventOutcome::Applied => "applied",
            EventOutcome::Unchanged => "unchanged",
            EventOutcome::Stale => "stale",
            EventOutcome::Ignored(_) => "ignored",
            EventOutcome::Duplicate => "duplicate",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            EventOutcome::Ignored(reason) => Some(reason),
            _ => None,
        }
    }
}

/// What an event does to an account, decided from the account and its subscription as
/// they are inside the transaction.
#[derive(Debug)]
pub struct Decision {
    pub outcome: EventOutcome,
    /// The subscription's new state, if it changes.
    pub subscription: Option<Subscription>,
    /// The account's new state (plan, lock), if it changes.
    pub account: Option<Account>,
    /// Credits the event grants, with it.
    pub grant: Option<EventGrant>,
    pub audit: Vec<AuditEntry>,
}

/// Credits an event grants (a paid invoice's included credits, a paid checkout's bought
/// ones): the grant, its ledger entry and its audit record, written once per `origin`.
#[derive(Debug, Clone)]
pub struct EventGrant {
    /// `invoice:<id>`, `checkout:<session id>`: an account has at most one grant of each
    /// origin.
    pub origin: String,
    pub grant: CreditGrant,
    /// Its entry; the store sets `balance_after` from the grants it holds.
    pub entry: LedgerEntry,
    pub audit: AuditEntry,
}

impl Decision {
    pub fn nothing(outcome: EventOutcome) -> Self {
        Self {
            outcome,
            subscription: None,
            account: None,
            grant: None,
            audit: Vec::new(),
        }
    }
}

/// Decides an event's effect from the account, its current subscription, and whether the
/// credits of the event's origin (`ProviderEvent::credits_origin`) were granted
/// before.
pub type DecideOf<'a> =
    &'a (dyn Fn(&Account, Option<&Subscription>, bool) -> Decision + Send + Sync);

/// Storage of subscriptions, the customers linked to accounts, and the provider events
/// received.
#[async_trait]
pub trait BillingRepo: Send + Sync + 'static {
    /// In one transaction: records `event.id` (received again, answers `Duplicate` and
    /// does nothing else; concurrent deliveries of one event are processed once); finds
    /// its account (`event.account`, else the account `event.customer` is linked to) and
    /// holds it; links `event.customer` to it when the event names both and the customer
    /// has no link yet; then writes what `decide(account, subscription, granted)` decides
    /// (`granted`: the account has a grant of the event's included-credits origin): the
    /// subscription, the account (announced as `Change::Account`), the included grant
    /// with its entry, the audit records.
    /// An event that names no existing account is recorded as
    /// `Ignored("unknown_account")`. The outcome is recorded with the event; the account
    /// is answered when found.
    async fn receive_event(
        &self,
        event: &ProviderEvent,
        received_at: DateTime<Utc>,
        decide: DecideOf<'_>,
    ) -> Result<(EventOutcome, Option<AccountId>), StoreError>;

    /// The account's subscription, if the provider reported one.
    async fn subscription(&self, account: AccountId) -> Result<Option<Subscription>, StoreError>;
}

/// The payment provider could not answer (down, slow, or an answer that is not one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProviderUnavailable(pub String);

/// The payment provider's API: its checkout sessions.
#[async_trait]
pub trait CheckoutSessions: Send + Sync + 'static {
    /// The session (the provider's JSON object), or `None` when the provider knows none
    /// of that id.
    async fn checkout_session(
        &self,
        id: &str,
    ) -> Result<Option<serde_json::Value>, ProviderUnavailable>;
}
