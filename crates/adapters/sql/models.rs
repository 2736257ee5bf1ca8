//! The rows of accounts and users, and their conversion to and from domain values.

use std::collections::BTreeMap;

use crate::errors::corrupt;
use crate::id::Id;
use chrono::{DateTime, Utc};
use d2_accounts::{Account, AccountName, Role, SampleRate, User};
use d2_kernel::StoreError;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::schema::{accounts, users};

/// An account as stored. It is read and written whole: an update sets every column,
/// `None` included (a lifted lock is written as `NULL`, not skipped).
#[derive(Queryable, Selectable, Insertable, AsChangeset, Serialize, Deserialize)]
#[diesel(table_name = accounts, check_for_backend(crate::Db), treat_none_as_null = true)]
pub(crate) struct AccountRow {
    pub id: Id,
    pub name: String,
    pub plan: String,
    pub trial_expires_at: Option<DateTime<Utc>>,
    pub metrics_enabled: bool,
    pub event_sample: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub require_publisher_key_approval: bool,
    /// With `lock_reason`, the account's lock: both set or both `NULL`.
    pub locked_at: Option<DateTime<Utc>>,
    pub lock_reason: Option<String>,
}

impl AccountRow {
    pub fn from_domain(account: &Account, updated_at: DateTime<Utc>) -> Self {
        let sample: serde_json::Map<String, Value> = account
            .event_sample
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.get())))
            .collect();
        Self {
            id: Id::from(account.id),
            name: account.name.as_str().to_owned(),
            plan: account.plan.as_str().to_owned(),
            trial_expires_at: account.trial_expires_at,
            metrics_enabled: account.metrics_enabled,
            event_sample: Value::Object(sample),
            created_at: account.created_at,
            updated_at,
            require_publisher_key_approval: account.require_publisher_key_approval,
            locked_at: account.locked.map(|lock| lock.since),
            lock_reason: account.locked.map(|lock| lock.reason.as_str().to_owned()),
        }
    }

    pub fn into_domain(self) -> Result<Account, StoreError> {
        let Value::Object(sample) = self.event_sample else {
            return Err(corrupt("event_sample"));
        };
        let event_sample = sample
            .into_iter()
            .map(|(k, v)| {
                let rate = v
                    .as_f64()
                    .and_then(|r| SampleRate::new(r).ok())
                    .ok_or_else(|| corrupt("event_sample"))?;
                Ok((k, rate))
            })
            .collect::<Result<BTreeMap<_, _>, StoreError>>()?;
        let locked = match (self.locked_at, self.lock_reason) {
            (None, None) => None,
            (Some(since), Some(reason)) => Some(d2_kernel::AccountLock {
                since,
                reason: reason.parse().map_err(|_| corrupt("lock_reason"))?,
            }),
            _ => return Err(corrupt("lock")),
        };
        Ok(Account {
            id: self.id.into(),
            name: AccountName::parse(&self.name).map_err(|_| corrupt("account name"))?,
            plan: self.plan.parse().map_err(|_| corrupt("plan"))?,
            trial_expires_at: self.trial_expires_at,
            locked,
            metrics_enabled: self.metrics_enabled,
            event_sample,
            require_publisher_key_approval: self.require_publisher_key_approval,
            created_at: self.created_at,
        })
    }
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = users, check_for_backend(crate::Db))]
pub(crate) struct UserRow {
    pub id: Id,
    pub account_id: Id,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub full_name: Option<String>,
    pub role: String,
    pub created_at: DateTime<Utc>,
}

impl UserRow {
    pub fn from_domain(user: &User) -> Self {
        Self {
            id: Id::from(user.id),
            account_id: Id::from(user.account_id),
            email: user.email.clone(),
            display_name: user.display_name.clone(),
            full_name: user.full_name.clone(),
            role: user.role.as_str().to_owned(),
            created_at: user.created_at,
        }
    }

    pub fn into_domain(self) -> Result<User, StoreError> {
        Ok(User {
            id: self.id.into(),
            account_id: self.account_id.into(),
            email: self.email,
            display_name: self.display_name,
            full_name: self.full_name,
            role: self.role.parse::<Role>().map_err(|_| corrupt("role"))?,
            created_at: self.created_at,
        })
    }
}
