//! Locked accounts. Being locked is a state of an account, not a plan: a locked account
//! keeps its plan (an expired trial is still a `trial`), so lifting the lock restores what
//! it had. While locked it keeps its data and its reads and is served nothing new (no
//! bundle, no publish, no ingest: 402 `locked`), with the quotas of `plans.locked`.

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown lock reason `{0}`")]
pub struct UnknownLockReason(pub String);

crate::named_values! {
    /// Why an account is locked. The names are stored.
    ///
    /// A subscription the payment provider reports as served again lifts any of them.
    pub enum LockReason (unknown: UnknownLockReason) {
        /// The trial ended without a paid plan.
        TrialEnded = "trial_ended",
        /// The subscription's payments lapsed (unpaid, or paused without a payment
        /// method).
        PaymentLapsed = "payment_lapsed",
        /// The subscription ended (canceled), since its end.
        SubscriptionEnded = "subscription_ended",
    }
}

/// An account's lock: since when, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountLock {
    /// When the account became locked (for [`LockReason::TrialEnded`], the end of the
    /// trial).
    pub since: DateTime<Utc>,
    pub reason: LockReason,
}

impl AccountLock {
    /// How the wire and the audit trail name the locked state where they expect a plan
    /// (`"plan": "locked"` in `GET /v1/accounts/me`, `"to": "locked"` in `account.lock`
    /// records), and the key of its quotas (`plans.locked`). It is no plan of the domain.
    pub const NAME: &'static str = "locked";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip() {
        for reason in LockReason::ALL {
            assert_eq!(reason.as_str().parse::<LockReason>(), Ok(reason));
        }
        assert_eq!(
            "locked".parse::<LockReason>(),
            Err(UnknownLockReason("locked".to_owned()))
        );
    }
}
