use async_trait::async_trait;
use d2_accounts::{Account, AccountPatch, AccountRepo, AuditOf, User};
use d2_kernel::{AccountId, StoreError};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use crate::audit::write_audit;
use crate::error::{TxError, from_diesel};
use crate::listener::{Change, announce};
use crate::models::{AccountRow, UserRow};
use crate::pool::PgStore;
use crate::schema::{accounts, users};

#[async_trait]
impl AccountRepo for PgStore {
    async fn find_account(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
        let mut conn = self.conn().await?;
        let row = accounts::table
            .find(id.as_uuid())
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
        let mut conn = self.conn().await?;
        let updated = conn
            .transaction(async |conn| {
                let row = accounts::table
                    .find(id.as_uuid())
                    .for_update()
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
                diesel::update(accounts::table.find(id.as_uuid()))
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
            .filter(users::account_id.eq(id.as_uuid()))
            .count()
            .get_result(&mut conn)
            .await
            .map_err(from_diesel)?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    async fn list_users(&self, id: AccountId) -> Result<Vec<User>, StoreError> {
        let mut conn = self.conn().await?;
        let rows = users::table
            .filter(users::account_id.eq(id.as_uuid()))
            .order((users::created_at.asc(), users::id.asc()))
            .select(UserRow::as_select())
            .load(&mut conn)
            .await
            .map_err(from_diesel)?;
        rows.into_iter().map(UserRow::into_domain).collect()
    }
}
