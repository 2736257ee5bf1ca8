use async_trait::async_trait;
use d2_audit::{AuditEntry, AuditFilter, AuditLog, AuditRecord};
use d2_kernel::{AccountId, Cursor, Page, PageRequest, StoreError};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::error::from_diesel;
use crate::id::Id;
use crate::models::{AuditRow, NewAuditRow};
use crate::position::{Side, beyond};
use crate::schema::audit_logs;
use diesel::sql_types::BigInt;

/// Writes an audit record inside the caller's transaction.
pub(crate) async fn write_audit(conn: &mut crate::Conn, entry: &AuditEntry) -> QueryResult<()> {
    diesel::insert_into(audit_logs::table)
        .values(NewAuditRow::from_domain(entry))
        .execute(conn)
        .await?;
    Ok(())
}

fn cursor_of(record: &AuditRecord) -> Cursor {
    Cursor::new(record.entry.occurred_at, record.id.to_string())
}

#[async_trait]
impl AuditLog for crate::Store {
    async fn search(
        &self,
        account_id: AccountId,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditRecord>, StoreError> {
        let mut query = audit_logs::table
            .filter(audit_logs::account_id.eq(Id::from(account_id)))
            .select(AuditRow::as_select())
            .order((audit_logs::created_at.desc(), audit_logs::id.desc()))
            .limit(i64::from(page.limit()) + 1)
            .into_boxed();
        if let Some(action) = filter.action {
            query = query.filter(audit_logs::action.eq(action.as_str()));
        }
        if let Some(actor) = &filter.actor {
            query = query.filter(audit_logs::actor.eq(actor.clone()));
        }
        if let Some(since) = filter.since {
            query = query.filter(audit_logs::created_at.ge(since));
        }
        if let Some(until) = filter.until {
            query = query.filter(audit_logs::created_at.lt(until));
        }
        if let Some(cursor) = page.after() {
            let id: i64 = cursor
                .id_as()
                .map_err(|_| StoreError::corrupt("audit cursor"))?;
            query = query.filter(beyond::<_, BigInt, _>(
                "created_at, id",
                Side::Before,
                cursor.at,
                id,
            ));
        }
        let mut conn = self.conn().await?;
        let rows = query.load(&mut conn).await.map_err(from_diesel)?;
        let records = rows
            .into_iter()
            .map(AuditRow::into_domain)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page.page_from(records, cursor_of))
    }
}
