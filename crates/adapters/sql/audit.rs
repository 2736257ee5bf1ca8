use async_trait::async_trait;
use d2_audit::{AuditEntry, AuditFilter, AuditLog, AuditRecord};
use d2_kernel::{AccountId, Cursor, Page, PageRequest, StoreError};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::error::from_diesel;
use crate::errors::corrupt;
use crate::id::Id;
use crate::members::PersonNames;
use crate::position::{Side, beyond};
use crate::schema::{audit_logs, users};
use chrono::{DateTime, Utc};
use diesel::sql_types::BigInt;
use serde_json::Value;

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
        // The person of each record read with it; the trail has no foreign keys (it
        // outlives what it names), so a person deleted since is simply not found.
        let mut query = audit_logs::table
            .left_join(users::table.on(audit_logs::user_id.eq(users::id.nullable())))
            .filter(audit_logs::account_id.eq(Id::from(account_id)))
            .select((AuditRow::as_select(), PersonNames::COLUMNS.nullable()))
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
        if let Some(task) = &filter.task_id {
            query = query.filter(
                diesel::dsl::sql::<diesel::sql_types::Bool>(crate::audit_sql::TASK_IS)
                    .bind::<diesel::sql_types::Text, _>(task.clone()),
            );
        }
        if let Some(cursor) = page.after() {
            let id: i64 = cursor
                .id_as()
                .map_err(|_| StoreError::corrupt("audit cursor"))?;
            query = query.filter(beyond::<_, BigInt, _>(
                "audit_logs.created_at, audit_logs.id",
                Side::Before,
                cursor.at,
                id,
            ));
        }
        let mut conn = self.conn().await?;
        let rows: Vec<(AuditRow, Option<PersonNames>)> =
            query.load(&mut conn).await.map_err(from_diesel)?;
        let records = rows
            .into_iter()
            .map(|(row, person)| {
                Ok(AuditRecord {
                    user_name: person.and_then(PersonNames::label),
                    ..row.into_domain()?
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(page.page_from(records, cursor_of))
    }
}

// The rows of this module's tables, and their conversion to and from domain values.

#[derive(Insertable)]
#[diesel(table_name = audit_logs, check_for_backend(crate::Db))]
pub(crate) struct NewAuditRow<'a> {
    pub account_id: Id,
    pub actor: &'a str,
    pub token_id: Option<Id>,
    pub user_id: Option<Id>,
    pub action: &'static str,
    pub status: &'static str,
    pub resource_type: Option<&'a str>,
    pub resource_id: Option<&'a str>,
    pub metadata: &'a Value,
    pub created_at: DateTime<Utc>,
}

impl<'a> NewAuditRow<'a> {
    pub fn from_domain(entry: &'a AuditEntry) -> Self {
        Self {
            account_id: Id::from(entry.account_id),
            actor: &entry.actor,
            token_id: entry.token_id.map(Id::from),
            user_id: entry.user_id.map(Id::from),
            action: entry.action.as_str(),
            status: entry.status.as_str(),
            resource_type: entry.resource_type.as_deref(),
            resource_id: entry.resource_id.as_deref(),
            metadata: &entry.metadata,
            created_at: entry.occurred_at,
        }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = audit_logs, check_for_backend(crate::Db))]
pub(crate) struct AuditRow {
    pub id: i64,
    pub account_id: Id,
    pub actor: String,
    pub token_id: Option<Id>,
    pub user_id: Option<Id>,
    pub action: String,
    pub status: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
}

impl AuditRow {
    pub fn into_domain(self) -> Result<AuditRecord, StoreError> {
        Ok(AuditRecord {
            id: self.id,
            entry: AuditEntry {
                account_id: self.account_id.into(),
                actor: self.actor,
                token_id: self.token_id.map(Into::into),
                user_id: self.user_id.map(Into::into),
                action: self.action.parse().map_err(|_| corrupt("audit action"))?,
                status: self.status.parse().map_err(|_| corrupt("audit status"))?,
                resource_type: self.resource_type,
                resource_id: self.resource_id,
                metadata: self.metadata,
                occurred_at: self.created_at,
            },
            user_name: None,
        })
    }
}
