//! Notice endpoints and threshold notices (`d2_billing::NoticeRepo`), and their rows.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_billing::{EntryKind, Notice, NoticeEndpoint, NoticeId, NoticeRepo, RaisedNotice};
use d2_kernel::{AccountId, StoreError};
use diesel::dsl::exists;
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};

use crate::audit::write_audit;
use crate::credits::{read, stored};
use crate::error::{TxError, from_diesel};
use crate::errors::corrupt;
use crate::id::Id;
use crate::schema::{
    accounts, billing_budgets, billing_notice_endpoints, billing_notices, credit_entries,
    credit_grants,
};
use crate::tasks::enqueue;

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = billing_notices, check_for_backend(crate::Db))]
pub(crate) struct NoticeRow {
    id: Id,
    account_id: Id,
    subject: String,
    period_start: DateTime<Utc>,
    threshold: i16,
    used: i64,
    allowed: i64,
    created_at: DateTime<Utc>,
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = billing_notice_endpoints, check_for_backend(crate::Db))]
pub(crate) struct EndpointRow {
    account_id: Id,
    url: String,
    updated_at: DateTime<Utc>,
}

impl NoticeRow {
    fn from_domain(notice: &Notice) -> Result<Self, StoreError> {
        Ok(Self {
            id: Id(*notice.id.as_uuid()),
            account_id: Id::from(notice.account_id),
            subject: notice.subject.clone(),
            period_start: notice.period_start,
            threshold: i16::from(notice.threshold),
            used: stored(notice.used)?,
            allowed: stored(notice.limit)?,
            created_at: notice.created_at,
        })
    }

    fn into_domain(self) -> Result<Notice, StoreError> {
        Ok(Notice {
            id: NoticeId::from_uuid(self.id.0),
            account_id: AccountId::from(self.account_id),
            subject: self.subject,
            period_start: self.period_start,
            threshold: u8::try_from(self.threshold).map_err(|_| corrupt("notice threshold"))?,
            used: read(self.used)?,
            limit: read(self.allowed)?,
            created_at: self.created_at,
        })
    }
}

#[async_trait]
impl NoticeRepo for crate::Store {
    async fn notice_endpoint(
        &self,
        account: AccountId,
    ) -> Result<Option<NoticeEndpoint>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<EndpointRow> = billing_notice_endpoints::table
            .filter(billing_notice_endpoints::account_id.eq(Id::from(account)))
            .select(EndpointRow::as_select())
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        Ok(row.map(|row| NoticeEndpoint {
            url: row.url,
            updated_at: row.updated_at,
        }))
    }

    async fn set_notice_endpoint(
        &self,
        account: AccountId,
        endpoint: &NoticeEndpoint,
        audit: &d2_audit::AuditEntry,
    ) -> Result<(), StoreError> {
        let row = EndpointRow {
            account_id: Id::from(account),
            url: endpoint.url.clone(),
            updated_at: endpoint.updated_at,
        };
        let mut conn = self.writer().await?;
        write_transaction!(conn, async |conn| {
            diesel::insert_into(billing_notice_endpoints::table)
                .values(&row)
                .on_conflict(billing_notice_endpoints::account_id)
                .do_update()
                .set((
                    billing_notice_endpoints::url.eq(excluded(billing_notice_endpoints::url)),
                    billing_notice_endpoints::updated_at
                        .eq(excluded(billing_notice_endpoints::updated_at)),
                ))
                .execute(conn)
                .await?;
            write_audit(conn, audit).await?;
            Ok::<_, TxError>(())
        })
        .await?;
        Ok(())
    }

    async fn delete_notice_endpoint(
        &self,
        account: AccountId,
        audit: &d2_audit::AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut conn = self.writer().await?;
        let deleted = write_transaction!(conn, async |conn| {
            let deleted = diesel::delete(
                billing_notice_endpoints::table
                    .filter(billing_notice_endpoints::account_id.eq(Id::from(account))),
            )
            .execute(conn)
            .await?;
            if deleted > 0 {
                write_audit(conn, audit).await?;
            }
            Ok::<_, TxError>(deleted > 0)
        })
        .await?;
        Ok(deleted)
    }

    async fn notice_candidates(
        &self,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<AccountId>, StoreError> {
        let mut conn = self.conn().await?;
        // Each account is probed through its ledger's (account_id, created_at) index.
        let spent = credit_entries::table
            .filter(credit_entries::account_id.eq(accounts::id))
            .filter(credit_entries::kind.eq_any(EntryKind::SPENDING.map(EntryKind::as_str)))
            .filter(credit_entries::created_at.ge(since));
        let budgeted = billing_budgets::table.filter(billing_budgets::account_id.eq(accounts::id));
        let included = credit_grants::table
            .filter(credit_grants::account_id.eq(accounts::id))
            .filter(credit_grants::source.eq("plan"))
            .filter(credit_grants::effective_at.le(now))
            .filter(
                credit_grants::expires_at
                    .is_null()
                    .or(credit_grants::expires_at.gt(now)),
            );
        let ids: Vec<Id> = accounts::table
            .filter(exists(budgeted).or(exists(included)))
            .filter(exists(spent))
            .select(accounts::id)
            .order(accounts::id.asc())
            .load(&mut conn)
            .await
            .map_err(from_diesel)?;
        Ok(ids.into_iter().map(AccountId::from).collect())
    }

    async fn raise_notices(&self, notices: &[RaisedNotice]) -> Result<u64, StoreError> {
        let rows = notices
            .iter()
            .map(|raised| NoticeRow::from_domain(&raised.notice))
            .collect::<Result<Vec<_>, _>>()?;
        let mut conn = self.writer().await?;
        let raised = write_transaction!(conn, async |conn| {
            let mut raised = 0_u64;
            for (row, notice) in rows.iter().zip(notices) {
                let inserted = diesel::insert_into(billing_notices::table)
                    .values(row)
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?;
                if inserted == 0 {
                    continue;
                }
                write_audit(conn, &notice.audit).await?;
                enqueue(conn, &notice.task, notice.notice.created_at).await?;
                raised = raised.saturating_add(1);
            }
            Ok::<_, TxError>(raised)
        })
        .await?;
        Ok(raised)
    }

    async fn notices(&self, account: AccountId, limit: u32) -> Result<Vec<Notice>, StoreError> {
        let mut conn = self.conn().await?;
        let rows: Vec<NoticeRow> = billing_notices::table
            .filter(billing_notices::account_id.eq(Id::from(account)))
            .order((
                billing_notices::created_at.desc(),
                billing_notices::threshold.desc(),
                billing_notices::id.desc(),
            ))
            .limit(i64::from(limit))
            .select(NoticeRow::as_select())
            .load(&mut conn)
            .await
            .map_err(from_diesel)?;
        rows.into_iter().map(NoticeRow::into_domain).collect()
    }

    async fn notice(&self, account: AccountId, id: NoticeId) -> Result<Option<Notice>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<NoticeRow> = billing_notices::table
            .filter(billing_notices::account_id.eq(Id::from(account)))
            .filter(billing_notices::id.eq(Id(*id.as_uuid())))
            .select(NoticeRow::as_select())
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        row.map(NoticeRow::into_domain).transpose()
    }
}
