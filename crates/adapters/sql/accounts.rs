use std::collections::BTreeMap;

use crate::id::Id;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_accounts::{
    Account, AccountName, AccountPatch, AccountRepo, AuditOf, JobAuditOf, SampleRate,
};
use d2_kernel::{AccountId, LockReason, Plan, Role, StoreError, UserId};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::write_audit;
use crate::changes::announce;
use crate::error::{TxError, from_diesel};
use crate::errors::corrupt;
use crate::schema::{accounts, members};
use d2_kernel::Change;

#[async_trait]
impl AccountRepo for crate::Store {
    async fn find_account(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
        let mut conn = self.conn().await?;
        let row = accounts::table
            .find(Id::from(id))
            .select(AccountRow::as_select())
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        row.map(AccountRow::into_domain).transpose()
    }

    async fn update(
        &self,
        id: AccountId,
        patch: &AccountPatch,
        audit_of: AuditOf<'_>,
    ) -> Result<Option<Account>, StoreError> {
        let mut conn = self.writer().await?;
        let updated = write_transaction!(conn, async |conn| {
            let row = held!(accounts::table.find(Id::from(id)))
                .select(AccountRow::as_select())
                .first(conn)
                .await
                .optional()?;
            let Some(row) = row else {
                return Ok::<_, TxError>(None);
            };
            let before = row.into_domain()?;
            let mut after = before.clone();
            patch.apply(&mut after);
            let audit = audit_of(&before, &after);
            diesel::update(accounts::table.find(Id::from(id)))
                .set(AccountRow::from_domain(&after, audit.occurred_at))
                .execute(conn)
                .await?;
            write_audit(conn, &audit).await?;
            announce(conn, Change::Account(id)).await?;
            Ok(Some(after))
        })
        .await?;
        Ok(updated)
    }

    async fn count_members(&self, id: AccountId) -> Result<u64, StoreError> {
        let mut conn = self.conn().await?;
        let count: i64 = members::table
            .filter(members::account_id.eq(Id::from(id)))
            .count()
            .get_result(&mut conn)
            .await
            .map_err(from_diesel)?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    async fn has_accounts(&self) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let any: Option<Id> = accounts::table
            .select(accounts::id)
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        Ok(any.is_some())
    }

    async fn first_owner(&self, id: AccountId) -> Result<Option<UserId>, StoreError> {
        let mut conn = self.conn().await?;
        let owner: Option<Id> = members::table
            .filter(members::account_id.eq(Id::from(id)))
            .filter(members::role.eq(Role::Owner.as_str()))
            .order((members::created_at.asc(), members::user_id.asc()))
            .select(members::user_id)
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        Ok(owner.map(Into::into))
    }

    async fn lock_expired_trials(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        audit_of: JobAuditOf<'_>,
    ) -> Result<Vec<AccountId>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.writer().await?;
        let locked = write_transaction!(conn, async |conn| {
            // Rows another transaction holds (an update, another worker) are left for
            // a later run rather than waited for.
            let ids: Vec<Id> = locked_skipping!(
                accounts::table
                    .filter(accounts::plan.eq(Plan::Trial.as_str()))
                    .filter(accounts::locked_at.is_null())
                    .filter(accounts::trial_expires_at.le(now))
                    .order(accounts::id.asc())
                    .limit(i64::from(limit))
                    .select(accounts::id)
            )
            .load(conn)
            .await?;
            if ids.is_empty() {
                return Ok::<_, TxError>(Vec::new());
            }
            // Locked since the trial's end (`Account::trial_ended_lock`); the plan stays.
            let rows: Vec<AccountRow> =
                diesel::update(accounts::table.filter(accounts::id.eq_any(&ids)))
                    .set((
                        accounts::locked_at.eq(accounts::trial_expires_at),
                        accounts::lock_reason.eq(LockReason::TrialEnded.as_str()),
                        accounts::updated_at.eq(now),
                    ))
                    .returning(AccountRow::as_returning())
                    .get_results(conn)
                    .await?;
            let mut locked = rows
                .into_iter()
                .map(AccountRow::into_domain)
                .collect::<Result<Vec<_>, _>>()?;
            locked.sort_by_key(|account| account.id);
            for account in &locked {
                write_audit(conn, &audit_of(account)).await?;
                announce(conn, Change::Account(account.id)).await?;
            }
            Ok(locked.into_iter().map(|account| account.id).collect())
        })
        .await?;
        Ok(locked)
    }
}

// The rows of accounts and users, and their conversion to and from domain values.

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
