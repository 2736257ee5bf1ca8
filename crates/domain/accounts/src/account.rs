use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use d2_kernel::{AccountId, AccountLock, LockReason, Plan};
use serde_json::{Map, Value, json};

use crate::sampling::SampleRate;

/// An account's display name: trimmed, 1 to 200 characters, no control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an account name must be 1 to 200 characters without control characters")]
pub struct InvalidAccountName;

impl AccountName {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(raw: &str) -> Result<Self, InvalidAccountName> {
        let name = raw.trim();
        let length = name.chars().count();
        if length == 0 || length > Self::MAX_CHARS || name.chars().any(char::is_control) {
            return Err(InvalidAccountName);
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct Account {
    pub id: AccountId,
    pub name: AccountName,
    /// The plan subscribed to. A lock keeps it: an expired trial stays `Trial`.
    pub plan: Plan,
    pub trial_expires_at: Option<DateTime<Utc>>,
    /// The lock recorded for this account. An expired trial is locked from its end even
    /// before the trial locker records it: use [`Account::lock_at`] to decide what to serve.
    pub locked: Option<AccountLock>,
    pub metrics_enabled: bool,
    /// Per-event-type sampling rates set for this account; they win over configuration.
    pub event_sample: BTreeMap<String, SampleRate>,
    /// Publisher keys registered by credentials without the `admin` scope wait for an
    /// admin's approval before they authorise a publish.
    pub require_publisher_key_approval: bool,
    pub created_at: DateTime<Utc>,
}

impl Account {
    pub fn new_trial(
        id: AccountId,
        name: AccountName,
        now: DateTime<Utc>,
        trial_days: u32,
    ) -> Self {
        Self {
            id,
            name,
            plan: Plan::Trial,
            trial_expires_at: Some(
                Duration::try_days(i64::from(trial_days))
                    .map_or(DateTime::<Utc>::MAX_UTC, |days| d2_kernel::later(now, days)),
            ),
            locked: None,
            metrics_enabled: true,
            event_sample: BTreeMap::new(),
            require_publisher_key_approval: false,
            created_at: now,
        }
    }

    /// The lock in force at `now`: the one recorded, else the one a trial past its end is
    /// due ([`Account::trial_ended_lock`]), so a trial locks the moment it expires.
    pub fn lock_at(&self, now: DateTime<Utc>) -> Option<AccountLock> {
        self.locked.or_else(|| self.trial_ended_lock(now))
    }

    /// The lock of a trial whose end has come by `now`: `TrialEnded`, since that end. This
    /// is what the trial locker records; it says nothing of a lock already recorded.
    pub fn trial_ended_lock(&self, now: DateTime<Utc>) -> Option<AccountLock> {
        match (self.plan, self.trial_expires_at) {
            (Plan::Trial, Some(expires)) if expires <= now => Some(AccountLock {
                since: expires,
                reason: LockReason::TrialEnded,
            }),
            _ => None,
        }
    }
}

/// A change to an account's settings. Fields left `None` are kept.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccountPatch {
    pub name: Option<AccountName>,
    pub metrics_enabled: Option<bool>,
    /// Per event type: `Some(rate)` sets the account's rate, `None` removes the override.
    pub event_sample: BTreeMap<String, Option<SampleRate>>,
    pub require_publisher_key_approval: Option<bool>,
}

impl AccountPatch {
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.metrics_enabled.is_none()
            && self.event_sample.is_empty()
            && self.require_publisher_key_approval.is_none()
    }

    pub fn apply(&self, account: &mut Account) {
        if let Some(name) = &self.name {
            account.name = name.clone();
        }
        if let Some(enabled) = self.metrics_enabled {
            account.metrics_enabled = enabled;
        }
        if let Some(required) = self.require_publisher_key_approval {
            account.require_publisher_key_approval = required;
        }
        for (event_type, rate) in &self.event_sample {
            match rate {
                Some(rate) => {
                    account.event_sample.insert(event_type.clone(), *rate);
                }
                None => {
                    account.event_sample.remove(event_type);
                }
            }
        }
    }

    /// The audit metadata of this change: each changed field with its old and new value.
    pub fn describe(before: &Account, after: &Account) -> Value {
        let mut changes = Map::new();
        if before.name != after.name {
            changes.insert(
                "name".into(),
                json!({ "old": before.name.as_str(), "new": after.name.as_str() }),
            );
        }
        if before.metrics_enabled != after.metrics_enabled {
            changes.insert(
                "metrics_enabled".into(),
                json!({ "old": before.metrics_enabled, "new": after.metrics_enabled }),
            );
        }
        if before.require_publisher_key_approval != after.require_publisher_key_approval {
            changes.insert(
                "require_publisher_key_approval".into(),
                json!({
                    "old": before.require_publisher_key_approval,
                    "new": after.require_publisher_key_approval,
                }),
            );
        }
        if before.event_sample != after.event_sample {
            let rates = |account: &Account| -> BTreeMap<String, f64> {
                account
                    .event_sample
                    .iter()
                    .map(|(k, v)| (k.clone(), v.get()))
                    .collect()
            };
            changes.insert(
                "event_sample".into(),
                json!({ "old": rates(before), "new": rates(after) }),
            );
        }
        json!({ "changes": changes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(AccountName::parse("  Acme ").unwrap().as_str(), "Acme");
        assert!(AccountName::parse("   ").is_err());
        assert!(AccountName::parse(&"a".repeat(201)).is_err());
        assert!(AccountName::parse("a\u{0}b").is_err());
    }

    #[test]
    fn a_trial_is_locked_from_its_end_on_and_keeps_its_plan() {
        let now = Utc::now();
        let mut account = Account::new_trial(
            AccountId::random(),
            AccountName::parse("Acme").unwrap(),
            now,
            14,
        );
        let end = account.trial_expires_at.unwrap();
        let ended = AccountLock {
            since: end,
            reason: LockReason::TrialEnded,
        };
        assert_eq!(account.lock_at(now), None);
        assert_eq!(
            account.lock_at(d2_kernel::earlier(end, Duration::microseconds(1))),
            None
        );
        assert_eq!(account.lock_at(end), Some(ended), "expiring now is expired");
        assert_eq!(
            account.trial_ended_lock(d2_kernel::later(end, Duration::days(1))),
            Some(ended)
        );
        assert_eq!(account.plan, Plan::Trial);

        // A recorded lock holds whatever the time; a paid plan has no trial to end.
        let recorded = AccountLock {
            since: now,
            reason: LockReason::TrialEnded,
        };
        account.locked = Some(recorded);
        assert_eq!(account.lock_at(now), Some(recorded));
        account.locked = None;
        account.plan = Plan::Pro;
        assert_eq!(
            account.lock_at(d2_kernel::later(end, Duration::days(1))),
            None
        );
    }

    #[test]
    fn a_patch_changes_only_what_it_names_and_describes_it() {
        let now = Utc::now();
        let mut account = Account::new_trial(
            AccountId::random(),
            AccountName::parse("Acme").unwrap(),
            now,
            14,
        );
        account
            .event_sample
            .insert("policy_poll_interval".into(), SampleRate::new(0.2).unwrap());
        let before = account.clone();
        let patch = AccountPatch {
            metrics_enabled: Some(false),
            require_publisher_key_approval: Some(true),
            event_sample: BTreeMap::from([
                (
                    "authz_decision".to_owned(),
                    Some(SampleRate::new(0.5).unwrap()),
                ),
                ("policy_poll_interval".to_owned(), None),
            ]),
            ..AccountPatch::default()
        };
        patch.apply(&mut account);
        assert_eq!(account.name, before.name);
        assert!(!account.metrics_enabled);
        assert!(account.require_publisher_key_approval);
        assert_eq!(account.event_sample.len(), 1);
        let described = AccountPatch::describe(&before, &account);
        assert_eq!(described["changes"]["metrics_enabled"]["new"], false);
        assert_eq!(
            described["changes"]["require_publisher_key_approval"],
            json!({ "old": false, "new": true })
        );
        assert!(described["changes"].get("name").is_none());
    }
}
