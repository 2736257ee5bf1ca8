//! Principals, each account's end users (`d2_oauth::PrincipalRepo`), and their rows.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_audit::AuditEntry;
use d2_kernel::{AccountId, Change, Page, PageRequest, StoreError};
use d2_oauth::{
    Principal, PrincipalAuditOf, PrincipalId, PrincipalRepo, PrincipalSpec, PrincipalWrite,
    RevokeScope, revocation_reasons,
};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::write_audit;
use crate::changes::{announce, lock};
use crate::error::{TxError, from_diesel};
use crate::errors::corrupt;
use crate::id::Id;
use crate::members::lower;
use crate::oauth_tokens::revoke_reached;
use crate::position::{Side, beyond};
use crate::schema::principals;

fn id_of(id: PrincipalId) -> Id {
    Id(*id.as_uuid())
}

/// Writes of one account's principals take this lock, so a username check and the write it
/// allows see no concurrent change.
fn principals_lock(account: AccountId) -> String {
    format!("principals:{account}")
}

/// Whether a principal of `account` other than `except` has `username`.
async fn username_taken(
    conn: &mut crate::Conn,
    account: AccountId,
    username: &str,
    except: Option<PrincipalId>,
) -> QueryResult<bool> {
    let mut query = principals::table
        .filter(principals::account_id.eq(Id::from(account)))
        .filter(principals::username.eq(username))
        .select(principals::id)
        .into_boxed();
    if let Some(except) = except {
        query = query.filter(principals::id.ne(id_of(except)));
    }
    Ok(query.first::<Id>(conn).await.optional()?.is_some())
}

#[async_trait]
impl PrincipalRepo for crate::Store {
    async fn create_principal(
        &self,
        principal: &Principal,
        audit: &AuditEntry,
    ) -> Result<PrincipalWrite, StoreError> {
        let row = PrincipalRow::from_domain(principal);
        let mut conn = self.writer().await?;
        let outcome = write_transaction!(conn, async |conn| {
            lock(conn, &principals_lock(principal.account_id)).await?;
            if username_taken(conn, principal.account_id, &principal.spec.username, None).await? {
                return Ok::<_, TxError>(PrincipalWrite::UsernameTaken);
            }
            diesel::insert_into(principals::table)
                .values(&row)
                .execute(conn)
                .await?;
            write_audit(conn, audit).await?;
            Ok(PrincipalWrite::Written(Box::new(principal.clone())))
        })
        .await?;
        Ok(outcome)
    }

    async fn principal(
        &self,
        account: AccountId,
        id: PrincipalId,
    ) -> Result<Option<Principal>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<PrincipalRow> = principals::table
            .filter(principals::account_id.eq(Id::from(account)))
            .filter(principals::id.eq(id_of(id)))
            .select(PrincipalRow::as_select())
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        row.map(PrincipalRow::into_domain).transpose()
    }

    async fn active_principals_by_email(
        &self,
        account: AccountId,
        email: &str,
        limit: u32,
    ) -> Result<Vec<Principal>, StoreError> {
        let mut conn = self.conn().await?;
        let rows: Vec<PrincipalRow> = principals::table
            .filter(principals::account_id.eq(Id::from(account)))
            .filter(principals::active.eq(true))
            .filter(lower(principals::email).eq(email.to_lowercase()))
            .order((principals::created_at.asc(), principals::id.asc()))
            .limit(i64::from(limit))
            .select(PrincipalRow::as_select())
            .load(&mut conn)
            .await
            .map_err(from_diesel)?;
        rows.into_iter().map(PrincipalRow::into_domain).collect()
    }

    async fn principals(
        &self,
        account: AccountId,
        active: Option<bool>,
        page: &PageRequest,
    ) -> Result<Page<Principal>, StoreError> {
        let mut query = principals::table
            .filter(principals::account_id.eq(Id::from(account)))
            .order((principals::created_at.desc(), principals::id.desc()))
            .limit(i64::from(page.limit()) + 1)
            .select(PrincipalRow::as_select())
            .into_boxed();
        if let Some(active) = active {
            query = query.filter(principals::active.eq(active));
        }
        if let Some(cursor) = page.after() {
            let id: PrincipalId = cursor
                .id_as()
                .map_err(|_| StoreError::corrupt("principal cursor"))?;
            query = query.filter(beyond::<_, crate::types::Uuid, _>(
                "principals.created_at, principals.id",
                Side::Before,
                cursor.at,
                id_of(id),
            ));
        }
        let mut conn = self.conn().await?;
        let rows: Vec<PrincipalRow> = query.load(&mut conn).await.map_err(from_diesel)?;
        let principals = rows
            .into_iter()
            .map(PrincipalRow::into_domain)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page.page_from(principals, |p| {
            d2_kernel::Cursor::new(p.created_at, p.id.to_string())
        }))
    }

    async fn update_principal(
        &self,
        account: AccountId,
        id: PrincipalId,
        spec: &PrincipalSpec,
        now: DateTime<Utc>,
        audit_of: PrincipalAuditOf<'_>,
    ) -> Result<PrincipalWrite, StoreError> {
        let mut conn = self.writer().await?;
        let outcome = write_transaction!(conn, async |conn| {
            lock(conn, &principals_lock(account)).await?;
            let target = principals::table
                .filter(principals::account_id.eq(Id::from(account)))
                .filter(principals::id.eq(id_of(id)));
            let exists: Option<Id> = target.select(principals::id).first(conn).await.optional()?;
            if exists.is_none() {
                return Ok::<_, TxError>(PrincipalWrite::NotFound);
            }
            if username_taken(conn, account, &spec.username, Some(id)).await? {
                return Ok(PrincipalWrite::UsernameTaken);
            }
            diesel::update(target)
                .set((
                    principals::username.eq(&spec.username),
                    principals::email.eq(&spec.email),
                    principals::display_name.eq(&spec.display_name),
                    principals::attributes.eq(Value::Object(spec.attributes.clone())),
                    principals::active.eq(spec.active),
                    principals::updated_at.eq(now),
                ))
                .execute(conn)
                .await?;
            let row: PrincipalRow = principals::table
                .find(id_of(id))
                .select(PrincipalRow::as_select())
                .first(conn)
                .await?;
            let principal = row.into_domain()?;
            let revoked = if spec.active {
                Vec::new()
            } else {
                revoke_reached(
                    conn,
                    account,
                    RevokeScope::Principal(id),
                    revocation_reasons::PRINCIPAL,
                    now,
                )
                .await?
            };
            write_audit(conn, &audit_of(&principal, &revoked)).await?;
            if !revoked.is_empty() {
                announce(conn, Change::OAuth(account)).await?;
            }
            Ok(PrincipalWrite::Written(Box::new(principal)))
        })
        .await?;
        Ok(outcome)
    }

    async fn delete_principal(
        &self,
        account: AccountId,
        id: PrincipalId,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut conn = self.writer().await?;
        let deleted = write_transaction!(conn, async |conn| {
            let deleted = diesel::delete(
                principals::table
                    .filter(principals::account_id.eq(Id::from(account)))
                    .filter(principals::id.eq(id_of(id))),
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
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = principals, check_for_backend(crate::Db))]
pub(crate) struct PrincipalRow {
    pub id: Id,
    pub account_id: Id,
    pub username: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub attributes: Value,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl PrincipalRow {
    fn from_domain(principal: &Principal) -> Self {
        Self {
            id: id_of(principal.id),
            account_id: Id::from(principal.account_id),
            username: principal.spec.username.clone(),
            email: principal.spec.email.clone(),
            display_name: principal.spec.display_name.clone(),
            attributes: Value::Object(principal.spec.attributes.clone()),
            active: principal.spec.active,
            created_at: principal.created_at,
            updated_at: principal.updated_at,
        }
    }

    fn into_domain(self) -> Result<Principal, StoreError> {
        let Value::Object(attributes) = self.attributes else {
            return Err(corrupt("principal attributes"));
        };
        Ok(Principal {
            id: PrincipalId::from_uuid(self.id.0),
            account_id: AccountId::from_uuid(self.account_id.0),
            spec: PrincipalSpec {
                username: self.username,
                email: self.email,
                display_name: self.display_name,
                attributes,
                active: self.active,
            },
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}
