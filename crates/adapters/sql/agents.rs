//! Agents, OAuth clients of their account (`d2_oauth::AgentRepo`), and their rows.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_audit::AuditEntry;
use d2_kernel::{AccountId, Change, Page, PageRequest, SecretDigest, StoreError};
use d2_oauth::{
    Agent, AgentAuditOf, AgentId, AgentRepo, AgentSpec, AgentState, ClientSecrets, MetadataAuditOf,
    PendingRegistration,
};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::write_audit;
use crate::changes::announce;
use crate::error::{TxError, from_diesel};
use crate::errors::corrupt;
use crate::id::Id;
use crate::position::{Side, beyond};
use crate::schema::agents;

fn id_of(id: AgentId) -> Id {
    Id(*id.as_uuid())
}

/// The account's agent `id`, locked until the transaction ends.
async fn locked_agent(
    conn: &mut crate::Conn,
    account: AccountId,
    id: AgentId,
) -> QueryResult<Option<AgentRow>> {
    locked!(
        agents::table
            .filter(agents::account_id.eq(Id::from(account)))
            .filter(agents::id.eq(id_of(id)))
    )
    .select(AgentRow::as_select())
    .first(conn)
    .await
    .optional()
}

async fn read_agent(conn: &mut crate::Conn, id: AgentId) -> Result<Agent, TxError> {
    let row: AgentRow = agents::table
        .find(id_of(id))
        .select(AgentRow::as_select())
        .first(conn)
        .await?;
    Ok(row.into_domain()?)
}

#[async_trait]
impl AgentRepo for crate::Store {
    async fn register(
        &self,
        agent: &Agent,
        registration: &PendingRegistration,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let row = AgentRow::from_domain(agent, Some(registration))?;
        let mut conn = self.writer().await?;
        write_transaction!(conn, async |conn| {
            diesel::insert_into(agents::table)
                .values(&row)
                .execute(conn)
                .await?;
            write_audit(conn, audit).await?;
            Ok::<_, TxError>(())
        })
        .await?;
        Ok(())
    }

    async fn activate(
        &self,
        registration: &SecretDigest,
        secret: &SecretDigest,
        now: DateTime<Utc>,
        audit_of: AgentAuditOf<'_>,
    ) -> Result<Option<Agent>, StoreError> {
        let mut conn = self.writer().await?;
        let agent = write_transaction!(conn, async |conn| {
            // Locked, and checked again after the lock: of concurrent activations with one
            // token, the first spends it and the others find no pending registration.
            let id: Option<Id> = locked!(
                agents::table
                    .filter(agents::registration_digest.eq(registration.as_bytes().as_slice()))
                    .filter(agents::registration_expires_at.gt(now))
                    .filter(agents::state.eq(AgentState::Pending.as_str()))
            )
            .select(agents::id)
            .first(conn)
            .await
            .optional()?;
            let Some(id) = id else {
                return Ok::<_, TxError>(None);
            };
            diesel::update(agents::table.find(id))
                .set((
                    agents::state.eq(AgentState::Active.as_str()),
                    agents::registration_digest.eq(None::<Vec<u8>>),
                    agents::registration_expires_at.eq(None::<DateTime<Utc>>),
                    agents::secret_digest.eq(Some(secret.as_bytes().to_vec())),
                    agents::activated_at.eq(Some(now)),
                    agents::updated_at.eq(now),
                ))
                .execute(conn)
                .await?;
            let agent = read_agent(conn, AgentId::from_uuid(id.0)).await?;
            write_audit(conn, &audit_of(&agent)).await?;
            announce(conn, Change::OAuth(agent.account_id)).await?;
            Ok(Some(agent))
        })
        .await?;
        Ok(agent)
    }

    async fn agent(&self, account: AccountId, id: AgentId) -> Result<Option<Agent>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<AgentRow> = agents::table
            .filter(agents::account_id.eq(Id::from(account)))
            .filter(agents::id.eq(id_of(id)))
            .select(AgentRow::as_select())
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        row.map(AgentRow::into_domain).transpose()
    }

    async fn agents(
        &self,
        account: AccountId,
        page: &PageRequest,
    ) -> Result<Page<Agent>, StoreError> {
        let mut query = agents::table
            .filter(agents::account_id.eq(Id::from(account)))
            .order((agents::created_at.desc(), agents::id.desc()))
            .limit(i64::from(page.limit()) + 1)
            .select(AgentRow::as_select())
            .into_boxed();
        if let Some(cursor) = page.after() {
            let id: AgentId = cursor
                .id_as()
                .map_err(|_| StoreError::corrupt("agent cursor"))?;
            query = query.filter(beyond::<_, crate::types::Uuid, _>(
                "agents.created_at, agents.id",
                Side::Before,
                cursor.at,
                id_of(id),
            ));
        }
        let mut conn = self.conn().await?;
        let rows: Vec<AgentRow> = query.load(&mut conn).await.map_err(from_diesel)?;
        let agents = rows
            .into_iter()
            .map(AgentRow::into_domain)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page.page_from(agents, |a| {
            d2_kernel::Cursor::new(a.created_at, a.id.to_string())
        }))
    }

    async fn update(
        &self,
        account: AccountId,
        id: AgentId,
        spec: &AgentSpec,
        state: Option<AgentState>,
        now: DateTime<Utc>,
        audit_of: AgentAuditOf<'_>,
    ) -> Result<Option<Agent>, StoreError> {
        let spec_row = SpecColumns::from_domain(spec)?;
        let mut conn = self.writer().await?;
        let agent = write_transaction!(conn, async |conn| {
            let Some(row) = locked_agent(conn, account, id).await? else {
                return Ok::<_, TxError>(None);
            };
            // A pending agent stays pending until its registration token is used.
            let current: AgentState = row.state.parse().map_err(|_| corrupt("agent state"))?;
            let state = match state {
                Some(wanted) if current != AgentState::Pending && wanted != AgentState::Pending => {
                    wanted
                }
                _ => current,
            };
            diesel::update(agents::table.find(id_of(id)))
                .set((
                    &spec_row,
                    agents::state.eq(state.as_str()),
                    agents::updated_at.eq(now),
                ))
                .execute(conn)
                .await?;
            let agent = read_agent(conn, id).await?;
            write_audit(conn, &audit_of(&agent)).await?;
            announce(conn, Change::OAuth(account)).await?;
            Ok(Some(agent))
        })
        .await?;
        Ok(agent)
    }

    async fn delete(
        &self,
        account: AccountId,
        id: AgentId,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut conn = self.writer().await?;
        let deleted = write_transaction!(conn, async |conn| {
            let deleted = diesel::delete(
                agents::table
                    .filter(agents::account_id.eq(Id::from(account)))
                    .filter(agents::id.eq(id_of(id))),
            )
            .execute(conn)
            .await?;
            if deleted > 0 {
                write_audit(conn, audit).await?;
                announce(conn, Change::OAuth(account)).await?;
                // Its tool bindings went with it (ON DELETE CASCADE).
                announce(conn, d2_kernel::Change::Catalog(account)).await?;
            }
            Ok::<_, TxError>(deleted > 0)
        })
        .await?;
        Ok(deleted)
    }

    async fn rotate_secret(
        &self,
        account: AccountId,
        id: AgentId,
        secret: &SecretDigest,
        previous_until: DateTime<Utc>,
        audit_of: AgentAuditOf<'_>,
    ) -> Result<Option<Agent>, StoreError> {
        let mut conn = self.writer().await?;
        let agent = write_transaction!(conn, async |conn| {
            let Some(row) = locked_agent(conn, account, id).await? else {
                return Ok::<_, TxError>(None);
            };
            let current = row.secret_digest.clone();
            let agent = row.into_domain()?;
            if agent.state != AgentState::Active || current.is_none() {
                return Ok(Some(agent));
            }
            diesel::update(agents::table.find(id_of(id)))
                .set((
                    agents::secret_digest.eq(Some(secret.as_bytes().to_vec())),
                    agents::previous_secret_digest.eq(current),
                    agents::previous_secret_until.eq(Some(previous_until)),
                ))
                .execute(conn)
                .await?;
            write_audit(conn, &audit_of(&agent)).await?;
            announce(conn, Change::OAuth(account)).await?;
            Ok(Some(agent))
        })
        .await?;
        Ok(agent)
    }

    async fn metadata_client_id(
        &self,
        account: AccountId,
        url: &str,
    ) -> Result<Option<AgentId>, StoreError> {
        let mut conn = self.conn().await?;
        let id: Option<Id> = agents::table
            .filter(agents::account_id.eq(Id::from(account)))
            .filter(agents::metadata_url.eq(url))
            .select(agents::id)
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        Ok(id.map(|id| AgentId::from_uuid(id.0)))
    }

    async fn save_metadata_client(
        &self,
        candidate: &Agent,
        audit_of: MetadataAuditOf<'_>,
    ) -> Result<Agent, StoreError> {
        let Some(url) = candidate.metadata_url.as_deref() else {
            return Err(StoreError::corrupt("a metadata client without its URL"));
        };
        let row = AgentRow::from_domain(candidate, None)?;
        let account = candidate.account_id;
        let mut conn = self.writer().await?;
        let agent = write_transaction!(conn, async |conn| {
            // The unique (account, URL) index decides between concurrent first requests:
            // one inserts, the others update (or find nothing to change).
            let inserted = diesel::insert_into(agents::table)
                .values(&row)
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            if inserted == 1 {
                write_audit(conn, &audit_of(candidate, true)).await?;
                announce(conn, Change::OAuth(account)).await?;
                return Ok::<_, TxError>(candidate.clone());
            }
            let stored: AgentRow = locked!(
                agents::table
                    .filter(agents::account_id.eq(Id::from(account)))
                    .filter(agents::metadata_url.eq(url))
            )
            .select(AgentRow::as_select())
            .first(conn)
            .await?;
            let stored = stored.into_domain()?;
            if stored.spec.document_fields_match(&candidate.spec) {
                return Ok(stored);
            }
            diesel::update(agents::table.find(id_of(stored.id)))
                .set((
                    agents::name.eq(&row.name),
                    agents::description.eq(&row.description),
                    agents::redirect_uris.eq(&row.redirect_uris),
                    agents::auth_method.eq(&row.auth_method),
                    agents::jwks.eq(&row.jwks),
                    agents::jwks_uri.eq(&row.jwks_uri),
                    agents::updated_at.eq(candidate.updated_at),
                ))
                .execute(conn)
                .await?;
            let agent = read_agent(conn, stored.id).await?;
            write_audit(conn, &audit_of(&agent, false)).await?;
            announce(conn, Change::OAuth(account)).await?;
            Ok(agent)
        })
        .await?;
        Ok(agent)
    }

    async fn register_dynamic(
        &self,
        agent: &Agent,
        secret: Option<&SecretDigest>,
        fingerprint: Option<&SecretDigest>,
        audit: &AuditEntry,
    ) -> Result<Agent, StoreError> {
        let row = AgentRow {
            secret_digest: secret.map(|s| s.as_bytes().to_vec()),
            dynamic_fingerprint: fingerprint.map(|f| f.as_bytes().to_vec()),
            ..AgentRow::from_domain(agent, None)?
        };
        let account = agent.account_id;
        let mut conn = self.writer().await?;
        let stored = write_transaction!(conn, async |conn| {
            // The unique (account, fingerprint) index decides between concurrent
            // registrations of one client: one inserts, the others read its agent.
            let inserted = diesel::insert_into(agents::table)
                .values(&row)
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            if inserted == 1 {
                write_audit(conn, audit).await?;
                announce(conn, Change::OAuth(account)).await?;
                return Ok::<_, TxError>(agent.clone());
            }
            let stored: AgentRow = agents::table
                .filter(agents::account_id.eq(Id::from(account)))
                .filter(agents::dynamic_fingerprint.eq(&row.dynamic_fingerprint))
                .select(AgentRow::as_select())
                .first(conn)
                .await?;
            Ok(stored.into_domain()?)
        })
        .await?;
        Ok(stored)
    }

    async fn reap_dynamic(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
        audit_of: AgentAuditOf<'_>,
    ) -> Result<Vec<AccountId>, StoreError> {
        use crate::schema::{delegations, oauth_tokens};
        use diesel::dsl::{exists, not};
        let mut conn = self.writer().await?;
        let reaped = write_transaction!(conn, async |conn| {
            let unused: Vec<AgentRow> = agents::table
                .filter(agents::registered_dynamically.eq(true))
                .filter(agents::created_at.lt(before))
                .filter(not(exists(
                    oauth_tokens::table.filter(oauth_tokens::agent_id.eq(agents::id)),
                )))
                .filter(not(exists(
                    delegations::table
                        .filter(delegations::agent_id.eq(agents::id))
                        .filter(delegations::revoked_at.is_null())
                        .filter(delegations::expires_at.gt(now)),
                )))
                .order(agents::created_at)
                .limit(i64::from(limit))
                .select(AgentRow::as_select())
                .load(conn)
                .await?;
            let mut accounts = Vec::with_capacity(unused.len());
            for row in unused {
                let agent = row.into_domain()?;
                diesel::delete(agents::table.find(id_of(agent.id)))
                    .execute(conn)
                    .await?;
                write_audit(conn, &audit_of(&agent)).await?;
                announce(conn, Change::OAuth(agent.account_id)).await?;
                accounts.push(agent.account_id);
            }
            Ok::<_, TxError>(accounts)
        })
        .await?;
        Ok(reaped)
    }

    async fn client(
        &self,
        id: AgentId,
    ) -> Result<Option<(Agent, Option<ClientSecrets>)>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<AgentRow> = agents::table
            .find(id_of(id))
            .select(AgentRow::as_select())
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        row.map(|row| {
            let secrets = row.secrets()?;
            Ok((row.into_domain()?, secrets))
        })
        .transpose()
    }

    async fn spend_assertion(
        &self,
        agent: AgentId,
        jti: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        use crate::schema::oauth_client_assertions as spent;
        let mut conn = self.writer().await?;
        diesel::delete(
            spent::table
                .filter(spent::agent_id.eq(id_of(agent)))
                .filter(spent::expires_at.lt(now)),
        )
        .execute(&mut conn)
        .await
        .map_err(from_diesel)?;
        // The primary key decides between concurrent spenders: one inserts, the other
        // finds the row.
        let inserted = diesel::insert_into(spent::table)
            .values((
                spent::agent_id.eq(id_of(agent)),
                spent::jti.eq(jti),
                spent::expires_at.eq(expires_at),
            ))
            .on_conflict_do_nothing()
            .execute(&mut conn)
            .await
            .map_err(from_diesel)?;
        Ok(inserted == 1)
    }
}

/// The columns an update replaces: the agent's spec.
#[derive(AsChangeset)]
#[diesel(table_name = agents, treat_none_as_null = true)]
struct SpecColumns {
    name: String,
    description: Option<String>,
    scopes: Value,
    redirect_uris: Value,
    resources: Value,
    attributes: Value,
    auth_method: String,
    jwks: Option<Value>,
    jwks_uri: Option<String>,
    access_token_seconds: i32,
    refresh_token_seconds: Option<i32>,
}

impl SpecColumns {
    fn from_domain(spec: &AgentSpec) -> Result<Self, StoreError> {
        let seconds = |s: u32| i32::try_from(s).map_err(|_| corrupt("agent token lifetime"));
        Ok(Self {
            name: spec.name.clone(),
            description: spec.description.clone(),
            scopes: Value::from(spec.scopes.clone()),
            redirect_uris: Value::from(spec.redirect_uris.clone()),
            resources: Value::from(spec.resources.clone()),
            attributes: Value::Object(spec.attributes.clone()),
            auth_method: spec.auth_method.as_str().to_owned(),
            jwks: spec.jwks.clone(),
            jwks_uri: spec.jwks_uri.clone(),
            access_token_seconds: seconds(spec.access_token_seconds)?,
            refresh_token_seconds: spec.refresh_token_seconds.map(seconds).transpose()?,
        })
    }
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = agents, check_for_backend(crate::Db))]
pub(crate) struct AgentRow {
    pub id: Id,
    pub account_id: Id,
    pub name: String,
    pub description: Option<String>,
    pub scopes: Value,
    pub redirect_uris: Value,
    pub resources: Value,
    pub attributes: Value,
    pub auth_method: String,
    pub jwks: Option<Value>,
    pub jwks_uri: Option<String>,
    pub access_token_seconds: i32,
    pub refresh_token_seconds: Option<i32>,
    pub state: String,
    pub registered_by: Option<Id>,
    pub registration_digest: Option<Vec<u8>>,
    pub registration_expires_at: Option<DateTime<Utc>>,
    pub secret_digest: Option<Vec<u8>>,
    pub previous_secret_digest: Option<Vec<u8>>,
    pub previous_secret_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub activated_at: Option<DateTime<Utc>>,
    pub metadata_url: Option<String>,
    pub registered_dynamically: bool,
    pub dynamic_fingerprint: Option<Vec<u8>>,
}

impl AgentRow {
    fn from_domain(
        agent: &Agent,
        registration: Option<&PendingRegistration>,
    ) -> Result<Self, StoreError> {
        let spec = SpecColumns::from_domain(&agent.spec)?;
        Ok(Self {
            id: id_of(agent.id),
            account_id: Id::from(agent.account_id),
            name: spec.name,
            description: spec.description,
            scopes: spec.scopes,
            redirect_uris: spec.redirect_uris,
            resources: spec.resources,
            attributes: spec.attributes,
            auth_method: spec.auth_method,
            jwks: spec.jwks,
            jwks_uri: spec.jwks_uri,
            access_token_seconds: spec.access_token_seconds,
            refresh_token_seconds: spec.refresh_token_seconds,
            state: agent.state.as_str().to_owned(),
            registered_by: agent.registered_by.map(Id::from),
            registration_digest: registration.map(|r| r.digest.as_bytes().to_vec()),
            registration_expires_at: registration.map(|r| r.expires_at),
            secret_digest: None,
            previous_secret_digest: None,
            previous_secret_until: None,
            created_at: agent.created_at,
            updated_at: agent.updated_at,
            activated_at: agent.activated_at,
            metadata_url: agent.metadata_url.clone(),
            registered_dynamically: agent.registered_dynamically,
            dynamic_fingerprint: None,
        })
    }

    fn into_domain(self) -> Result<Agent, StoreError> {
        let list = |value: Value| {
            serde_json::from_value::<Vec<String>>(value).map_err(|_| corrupt("agent list"))
        };
        let seconds = |s: i32| u32::try_from(s).map_err(|_| corrupt("agent token lifetime"));
        Ok(Agent {
            id: AgentId::from_uuid(self.id.0),
            account_id: AccountId::from_uuid(self.account_id.0),
            spec: AgentSpec {
                name: self.name,
                description: self.description,
                scopes: list(self.scopes)?,
                redirect_uris: list(self.redirect_uris)?,
                resources: list(self.resources)?,
                attributes: match self.attributes {
                    Value::Object(map) => map,
                    _ => return Err(corrupt("agent attributes")),
                },
                auth_method: self
                    .auth_method
                    .parse()
                    .map_err(|_| corrupt("agent auth method"))?,
                jwks: self.jwks,
                jwks_uri: self.jwks_uri,
                access_token_seconds: seconds(self.access_token_seconds)?,
                refresh_token_seconds: self.refresh_token_seconds.map(seconds).transpose()?,
            },
            state: self.state.parse().map_err(|_| corrupt("agent state"))?,
            registered_by: self
                .registered_by
                .map(|id| d2_kernel::UserId::from_uuid(id.0)),
            metadata_url: self.metadata_url,
            registered_dynamically: self.registered_dynamically,
            created_at: self.created_at,
            updated_at: self.updated_at,
            activated_at: self.activated_at,
        })
    }

    fn secrets(&self) -> Result<Option<ClientSecrets>, StoreError> {
        let digest = |bytes: &Vec<u8>| {
            SecretDigest::from_bytes(bytes).ok_or_else(|| corrupt("agent secret digest"))
        };
        let Some(current) = self.secret_digest.as_ref().map(digest).transpose()? else {
            return Ok(None);
        };
        let previous = match (&self.previous_secret_digest, self.previous_secret_until) {
            (Some(bytes), Some(until)) => Some((digest(bytes)?, until)),
            _ => None,
        };
        Ok(Some(ClientSecrets { current, previous }))
    }
}
