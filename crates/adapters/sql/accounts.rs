use crate::id::Id;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_accounts::{Account, AccountPatch, AccountRepo, AuditOf, JobAuditOf, User};
use d2_kernel::{AccountId, LockReason, Plan, StoreError};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::audit::write_audit;
use crate::changes::announce;
use crate::error::{TxError, from_diesel};
use crate::models::{AccountRow, UserRow};
use crate::schema::{accounts, users};
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
            let row = locked!(accounts::table.find(Id::from(id)))
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

    async fn count_users(&self, id: AccountId) -> Result<u64, StoreError> {
        let mut conn = self.conn().await?;
        let count: i64 = users::table
            .filter(users::account_id.eq(Id::from(id)))
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

    async fn list_users(&self, id: AccountId) -> Result<Vec<User>, StoreError> {
        let mut conn = self.conn().await?;
        let rows = users::table
            .filter(users::account_id.eq(Id::from(id)))
            .order((users::created_at.asc(), users::id.asc()))
            .select(UserRow::as_select())
            .load(&mut conn)
            .await
            .map_err(from_diesel)?;
        rows.into_iter().map(UserRow::into_domain).collect()
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
