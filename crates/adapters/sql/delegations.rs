//! Delegation grants (`d2_oauth::DelegationRepo`), and their rows.

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_audit::AuditEntry;
use d2_kernel::{AccountId, Change, Page, PageRequest, StoreError};
use d2_oauth::{
    AgentId, Delegation, DelegationAuditOf, DelegationFilter, DelegationId, DelegationRepo,
    DelegationRevocation, DelegationRevoke, Grantor, PrincipalId, RevokeScope, revocation_reasons,
};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::write_audit;
use crate::changes::announce;
use crate::error::{TxError, from_diesel};
use crate::errors::corrupt;
use crate::id::Id;
use crate::oauth_tokens::revoke_reached;
use crate::position::{Side, beyond};
use crate::schema::delegations;

fn id_of(id: DelegationId) -> Id {
    Id(*id.as_uuid())
}

#[async_trait]
impl DelegationRepo for crate::Store {
    async fn create_delegation(
        &self,
        delegation: &Delegation,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let row = DelegationRow::from_domain(delegation);
        let mut conn = self.writer().await?;
        let written = write_transaction!(conn, async |conn| {
            diesel::insert_into(delegations::table)
                .values(&row)
                .execute(conn)
                .await?;
            write_audit(conn, audit).await?;
            Ok::<_, TxError>(())
        })
        .await;
        match written {
            Ok(()) => Ok(true),
            // Its grantor or its agent was deleted since the service read them.
            Err(TxError::Diesel(DieselError::DatabaseError(
                DatabaseErrorKind::ForeignKeyViolation,
                _,
            ))) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    async fn delegation(
        &self,
        account: AccountId,
        id: DelegationId,
    ) -> Result<Option<Delegation>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<DelegationRow> = delegations::table
            .filter(delegations::account_id.eq(Id::from(account)))
            .filter(delegations::id.eq(id_of(id)))
            .select(DelegationRow::as_select())
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        row.map(DelegationRow::into_domain).transpose()
    }

    async fn delegations(
        &self,
        account: AccountId,
        filter: &DelegationFilter,
        page: &PageRequest,
    ) -> Result<Page<Delegation>, StoreError> {
        let mut query = delegations::table
            .filter(delegations::account_id.eq(Id::from(account)))
            .order((delegations::created_at.desc(), delegations::id.desc()))
            .limit(i64::from(page.limit()) + 1)
            .select(DelegationRow::as_select())
            .into_boxed();
        match filter.grantor {
            Some(Grantor::Principal(id)) => {
                query = query.filter(delegations::grantor_principal_id.eq(Id(*id.as_uuid())));
            }
            Some(Grantor::Agent(id)) => {
                query = query.filter(delegations::grantor_agent_id.eq(Id(*id.as_uuid())));
            }
            None => {}
        }
        if let Some(agent) = filter.agent_id {
            query = query.filter(delegations::agent_id.eq(Id(*agent.as_uuid())));
        }
        if let Some(at) = filter.active_at {
            query = query
                .filter(delegations::revoked_at.is_null())
                .filter(delegations::expires_at.gt(at));
        }
        if let Some(cursor) = page.after() {
            let id: DelegationId = cursor
                .id_as()
                .map_err(|_| StoreError::corrupt("delegation cursor"))?;
            query = query.filter(beyond::<_, crate::types::Uuid, _>(
                "delegations.created_at, delegations.id",
                Side::Before,
                cursor.at,
                id_of(id),
            ));
        }
        let mut conn = self.conn().await?;
        let rows: Vec<DelegationRow> = query.load(&mut conn).await.map_err(from_diesel)?;
        let delegations = rows
            .into_iter()
            .map(DelegationRow::into_domain)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page.page_from(delegations, |d| {
            d2_kernel::Cursor::new(d.created_at, d.id.to_string())
        }))
    }

    async fn revoked_delegations(
        &self,
        account: AccountId,
        now: DateTime<Utc>,
    ) -> Result<Vec<(DelegationId, DateTime<Utc>)>, StoreError> {
        let mut conn = self.conn().await?;
        let rows: Vec<(Id, DateTime<Utc>)> = delegations::table
            .filter(delegations::account_id.eq(Id::from(account)))
            .filter(delegations::revoked_at.is_not_null())
            .filter(delegations::expires_at.gt(now))
            .order((delegations::expires_at.asc(), delegations::id.asc()))
            .select((delegations::id, delegations::expires_at))
            .load(&mut conn)
            .await
            .map_err(from_diesel)?;
        Ok(rows
            .into_iter()
            .map(|(id, at)| (DelegationId::from_uuid(id.0), at))
            .collect())
    }

    async fn revoke_delegation(
        &self,
        account: AccountId,
        id: DelegationId,
        revocation: &DelegationRevocation,
        audit_of: DelegationAuditOf<'_>,
    ) -> Result<DelegationRevoke, StoreError> {
        let mut conn = self.writer().await?;
        let outcome = write_transaction!(conn, async |conn| {
            let target = delegations::table
                .filter(delegations::account_id.eq(Id::from(account)))
                .filter(delegations::id.eq(id_of(id)));
            let row: Option<DelegationRow> = locked!(target.select(DelegationRow::as_select()))
                .first(conn)
                .await
                .optional()?;
            let Some(row) = row else {
                return Ok::<_, TxError>(DelegationRevoke::NotFound);
            };
            let mut delegation = row.into_domain()?;
            if delegation.revocation.is_some() {
                return Ok(DelegationRevoke::AlreadyRevoked(Box::new(delegation)));
            }
            diesel::update(target)
                .set((
                    delegations::revoked_at.eq(revocation.at),
                    delegations::revoked_reason.eq(&revocation.reason),
                    delegations::revoked_by.eq(&revocation.by),
                ))
                .execute(conn)
                .await?;
            delegation.revocation = Some(revocation.clone());
            let revoked = revoke_reached(
                conn,
                account,
                RevokeScope::Delegation(id),
                revocation_reasons::DELEGATION,
                revocation.at,
            )
            .await?;
            write_audit(conn, &audit_of(&delegation, &revoked)).await?;
            if !revoked.is_empty() {
                announce(conn, Change::OAuth(account)).await?;
            }
            Ok(DelegationRevoke::Revoked(Box::new(delegation)))
        })
        .await?;
        Ok(outcome)
    }
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = delegations, check_for_backend(crate::Db))]
pub(crate) struct DelegationRow {
    pub id: Id,
    pub account_id: Id,
    pub grantor_principal_id: Option<Id>,
    pub grantor_agent_id: Option<Id>,
    pub agent_id: Id,
    pub scopes: Value,
    pub tools: Option<Value>,
    pub resources: Value,
    pub task_id: Option<String>,
    pub max_depth: i32,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub created_by: String,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_reason: Option<String>,
    pub revoked_by: Option<String>,
}

fn texts(set: &BTreeSet<String>) -> Value {
    Value::Array(set.iter().cloned().map(Value::String).collect())
}

fn set_of(value: Value, what: &str) -> Result<BTreeSet<String>, StoreError> {
    serde_json::from_value(value).map_err(|_| corrupt(what))
}

impl DelegationRow {
    fn from_domain(delegation: &Delegation) -> Self {
        let (principal, agent) = match delegation.grantor {
            Grantor::Principal(id) => (Some(Id(*id.as_uuid())), None),
            Grantor::Agent(id) => (None, Some(Id(*id.as_uuid()))),
        };
        Self {
            id: id_of(delegation.id),
            account_id: Id::from(delegation.account_id),
            grantor_principal_id: principal,
            grantor_agent_id: agent,
            agent_id: Id(*delegation.agent_id.as_uuid()),
            scopes: texts(&delegation.scopes),
            tools: delegation.tools.as_ref().map(texts),
            resources: texts(&delegation.resources),
            task_id: delegation.task_id.clone(),
            max_depth: i32::from(delegation.max_depth),
            created_at: delegation.created_at,
            expires_at: delegation.expires_at,
            created_by: delegation.created_by.clone(),
            revoked_at: None,
            revoked_reason: None,
            revoked_by: None,
        }
    }

    fn into_domain(self) -> Result<Delegation, StoreError> {
        let grantor = match (self.grantor_principal_id, self.grantor_agent_id) {
            (Some(id), None) => Grantor::Principal(PrincipalId::from_uuid(id.0)),
            (None, Some(id)) => Grantor::Agent(AgentId::from_uuid(id.0)),
            _ => return Err(corrupt("delegation grantor")),
        };
        let revocation = match (self.revoked_at, self.revoked_reason, self.revoked_by) {
            (Some(at), Some(reason), Some(by)) => Some(DelegationRevocation { at, reason, by }),
            (None, _, _) => None,
            _ => return Err(corrupt("delegation revocation")),
        };
        Ok(Delegation {
            id: DelegationId::from_uuid(self.id.0),
            account_id: AccountId::from_uuid(self.account_id.0),
            grantor,
            agent_id: AgentId::from_uuid(self.agent_id.0),
            scopes: set_of(self.scopes, "delegation scopes")?,
            tools: self
                .tools
                .map(|tools| set_of(tools, "delegation tools"))
                .transpose()?,
            resources: set_of(self.resources, "delegation resources")?,
            task_id: self.task_id,
            max_depth: u8::try_from(self.max_depth).map_err(|_| corrupt("delegation depth"))?,
            created_at: self.created_at,
            expires_at: self.expires_at,
            created_by: self.created_by,
            revocation,
        })
    }
}
