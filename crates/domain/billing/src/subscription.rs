//! An account's subscription as the payment provider last reported it, and what it makes
//! of the account's plan and lock.

use chrono::{DateTime, Utc};
use d2_accounts::Account;
use d2_kernel::{AccountId, AccountLock, LockReason, Plan};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown subscription status `{0}`")]
pub struct UnknownStatus(pub String);

d2_kernel::named_values! {
    /// A subscription's status, as the payment provider names it. The names are stored.
    pub enum SubscriptionStatus (unknown: UnknownStatus) {
        /// In its trial period: served on its tier.
        Trialing = "trialing",
        /// Paid: served on its tier.
        Active = "active",
        /// A payment failed and is being retried: still served on its tier.
        PastDue = "past_due",
        /// The first payment is not made yet: the account stays as it was.
        Incomplete = "incomplete",
        /// The first payment was never made: the account stays as it was.
        IncompleteExpired = "incomplete_expired",
        /// The retries ran out without payment: the account is locked (`payment_lapsed`).
        Unpaid = "unpaid",
        /// Paused at the end of a trial without a payment method: locked
        /// (`payment_lapsed`).
        Paused = "paused",
        /// Ended (canceled now, or at the end of its period): locked
        /// (`subscription_ended`). A canceled subscription never comes back; a new one
        /// lifts the lock.
        Canceled = "canceled",
    }
}

impl SubscriptionStatus {
    /// What the status does to the account: serve it on the tier, lock it, or leave it.
    fn standing(self) -> Standing {
        match self {
            SubscriptionStatus::Trialing
            | SubscriptionStatus::Active
            | SubscriptionStatus::PastDue => Standing::Served,
            SubscriptionStatus::Incomplete | SubscriptionStatus::IncompleteExpired => {
                Standing::Unchanged
            }
            SubscriptionStatus::Unpaid | SubscriptionStatus::Paused => {
                Standing::Locked(LockReason::PaymentLapsed)
            }
            SubscriptionStatus::Canceled => Standing::Locked(LockReason::SubscriptionEnded),
        }
    }
}

enum Standing {
    Served,
    Unchanged,
    Locked(LockReason),
}

/// A subscription of one account, as of the newest event that reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub account_id: AccountId,
    /// The provider's subscription id (`sub_...`).
    pub subscription_id: String,
    /// The provider's customer id (`cus_...`).
    pub customer_id: String,
    /// The tier its price is configured as (`billing.prices`).
    pub plan: Plan,
    pub status: SubscriptionStatus,
    pub current_period_start: Option<DateTime<Utc>>,
    pub current_period_end: Option<DateTime<Utc>>,
    /// Canceled by the customer, ending with the current period.
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// When the provider created the event this state comes from: an older event never
    /// overwrites it.
    pub event_created_at: DateTime<Utc>,
    /// The event this state comes from.
    pub event_id: String,
    pub updated_at: DateTime<Utc>,
}

impl Subscription {
    /// Whether the provider's event of `created` about `subscription_id` comes after this
    /// state: not older, and not about a subscription this one replaced. A canceled
    /// subscription is final: no later event about it changes it (the provider sends
    /// none; a late duplicate must not revive it).
    pub fn is_superseded_by(&self, subscription_id: &str, created: DateTime<Utc>) -> bool {
        if created < self.event_created_at {
            return false;
        }
        !(self.subscription_id == subscription_id && self.status == SubscriptionStatus::Canceled)
    }

    /// The account as this subscription makes it, at `now`: served on its tier (any lock
    /// lifted), locked since the lapse or the end (an existing lock keeps its time), or
    /// unchanged.
    pub fn apply_to(&self, account: &Account, now: DateTime<Utc>) -> Account {
        let mut after = account.clone();
        match self.status.standing() {
            Standing::Served => {
                after.plan = self.plan;
                after.locked = None;
            }
            Standing::Unchanged => {}
            Standing::Locked(reason) => {
                let since = match reason {
                    LockReason::SubscriptionEnded => self.ended_at.unwrap_or(now),
                    _ => now,
                };
                after.locked = Some(match account.locked {
                    Some(lock) => AccountLock { reason, ..lock },
                    None => AccountLock { since, reason },
                });
            }
        }
        after
    }
}
