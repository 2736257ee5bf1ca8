//! The OAuth catalog of each account (`d2_oauth::ToolRepo`, `d2_oauth::ScopeRepo`): tools,
//! scopes, the accounts whose scopes were seeded, the tools bound to agents, and their
//! rows. Every write takes the account's catalog lock first, so what it checked (a name
//! free, an agent and a tool of the account, the scopes a change was decided from) still
//! holds when it commits; each announces `Change::Catalog` in its transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_audit::AuditEntry;
use d2_kernel::{AccountId, Change, Page, PageRequest, StoreError};
use d2_oauth::{
    AgentId, BindOutcome, CatalogError, OAuthScope, ScopeChange, ScopePlan, ScopeRepo, ScopeSpec,
    Tool, ToolAuditOf, ToolFilter, ToolId, ToolRepo, ToolSpec, ToolWrite, UnbindOutcome,
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
use crate::position::{Side, beyond};
use crate::schema::{agent_tools, agents, oauth_catalogs, oauth_scopes, tools};

fn tool_id(id: ToolId) -> Id {
    Id(*id.as_uuid())
}

fn agent_id(id: AgentId) -> Id {
    Id(*id.as_uuid())
}

/// The name of the lock every catalog write of `account` takes.
fn catalog_lock(account: AccountId) -> String {
    format!("catalog:{account}")
}

/// Takes the account's catalog lock and returns the account as stored.
async fn locked_catalog(conn: &mut crate::Conn, account: AccountId) -> QueryResult<Id> {
    lock(conn, &catalog_lock(account)).await?;
    Ok(Id::from(account))
}

async fn tool_row(conn: &mut crate::Conn, account: Id, id: ToolId) -> QueryResult<Option<ToolRow>> {
    tools::table
        .filter(tools::account_id.eq(account))
        .filter(tools::id.eq(tool_id(id)))
        .select(ToolRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Whether another tool of the account than `except` is called `name`.
async fn name_taken(
    conn: &mut crate::Conn,
    account: Id,
    name: &str,
    except: ToolId,
) -> QueryResult<bool> {
    let found: Option<Id> = tools::table
        .filter(tools::account_id.eq(account))
        .filter(tools::name.eq(name))
        .filter(tools::id.ne(tool_id(except)))
        .select(tools::id)
        .first(conn)
        .await
        .optional()?;
    Ok(found.is_some())
}

async fn agent_exists(conn: &mut crate::Conn, account: Id, agent: AgentId) -> QueryResult<bool> {
    let found: Option<Id> = agents::table
        .filter(agents::account_id.eq(account))
        .filter(agents::id.eq(agent_id(agent)))
        .select(agents::id)
        .first(conn)
        .await
        .optional()?;
    Ok(found.is_some())
}

async fn tool_exists(conn: &mut crate::Conn, account: Id, tool: ToolId) -> QueryResult<bool> {
    Ok(tool_row(conn, account, tool).await?.is_some())
}

async fn read_scopes(conn: &mut crate::Conn, account: Id) -> Result<Vec<OAuthScope>, TxError> {
    let rows: Vec<ScopeRow> = oauth_scopes::table
        .filter(oauth_scopes::account_id.eq(account))
        .order(oauth_scopes::name)
        .select(ScopeRow::as_select())
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(ScopeRow::into_domain)
        .collect::<Result<Vec<_>, _>>()?)
}

#[async_trait]
impl ToolRepo for crate::Store {
    async fn create_tool(&self, tool: &Tool, audit: &AuditEntry) -> Result<ToolWrite, StoreError> {
        let row = ToolRow::from_domain(tool);
        let mut conn = self.writer().await?;
        let written = write_transaction!(conn, async |conn| {
            let account = locked_catalog(conn, tool.account_id).await?;
            if name_taken(conn, account, &tool.spec.name, tool.id).await? {
                return Ok::<_, TxError>(ToolWrite::NameTaken);
            }
            diesel::insert_into(tools::table)
                .values(&row)
                .execute(conn)
                .await?;
            write_audit(conn, audit).await?;
            announce(conn, Change::Catalog(tool.account_id)).await?;
            Ok(ToolWrite::Done(Box::new(tool.clone())))
        })
        .await?;
        Ok(written)
    }

    async fn tool(&self, account: AccountId, id: ToolId) -> Result<Option<Tool>, StoreError> {
        let mut conn = self.conn().await?;
        let row = tool_row(&mut conn, Id::from(account), id)
            .await
            .map_err(from_diesel)?;
        row.map(ToolRow::into_domain).transpose()
    }

    async fn tool_named(&self, account: AccountId, name: &str) -> Result<Option<Tool>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<ToolRow> = tools::table
            .filter(tools::account_id.eq(Id::from(account)))
            .filter(tools::name.eq(name))
            .select(ToolRow::as_select())
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        row.map(ToolRow::into_domain).transpose()
    }

    async fn tools(
        &self,
        account: AccountId,
        filter: &ToolFilter,
        page: &PageRequest,
    ) -> Result<Page<Tool>, StoreError> {
        let mut query = tools::table
            .filter(tools::account_id.eq(Id::from(account)))
            .order((tools::created_at.desc(), tools::id.desc()))
            .limit(i64::from(page.limit()) + 1)
            .select(ToolRow::as_select())
            .into_boxed();
        if let Some(category) = &filter.category {
            query = query.filter(tools::category.eq(category.clone()));
        }
        if let Some(active) = filter.active {
            query = query.filter(tools::active.eq(active));
        }
        if let Some(cursor) = page.after() {
            let id: ToolId = cursor
                .id_as()
                .map_err(|_| StoreError::corrupt("tool cursor"))?;
            query = query.filter(beyond::<_, crate::types::Uuid, _>(
                "tools.created_at, tools.id",
                Side::Before,
                cursor.at,
                tool_id(id),
            ));
        }
        let mut conn = self.conn().await?;
        let rows: Vec<ToolRow> = query.load(&mut conn).await.map_err(from_diesel)?;
        let tools = rows
            .into_iter()
            .map(ToolRow::into_domain)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page.page_from(tools, |t| {
            d2_kernel::Cursor::new(t.created_at, t.id.to_string())
        }))
    }

    async fn update_tool(
        &self,
        account: AccountId,
        id: ToolId,
        spec: &ToolSpec,
        now: DateTime<Utc>,
        audit_of: ToolAuditOf<'_>,
    ) -> Result<ToolWrite, StoreError> {
        let columns = SpecColumns::from_domain(spec);
        let mut conn = self.writer().await?;
        let written = write_transaction!(conn, async |conn| {
            let stored = locked_catalog(conn, account).await?;
            if tool_row(conn, stored, id).await?.is_none() {
                return Ok::<_, TxError>(ToolWrite::NotFound);
            }
            if name_taken(conn, stored, &spec.name, id).await? {
                return Ok(ToolWrite::NameTaken);
            }
            diesel::update(tools::table.find(tool_id(id)))
                .set((&columns, tools::updated_at.eq(now)))
                .execute(conn)
                .await?;
            let Some(row) = tool_row(conn, stored, id).await? else {
                return Ok(ToolWrite::NotFound);
            };
            let tool = row.into_domain()?;
            write_audit(conn, &audit_of(&tool)).await?;
            announce(conn, Change::Catalog(account)).await?;
            Ok(ToolWrite::Done(Box::new(tool)))
        })
        .await?;
        Ok(written)
    }

    async fn set_tool_active(
        &self,
        account: AccountId,
        id: ToolId,
        active: bool,
        now: DateTime<Utc>,
        audit_of: ToolAuditOf<'_>,
    ) -> Result<ToolWrite, StoreError> {
        let mut conn = self.writer().await?;
        let written = write_transaction!(conn, async |conn| {
            let stored = locked_catalog(conn, account).await?;
            let Some(row) = tool_row(conn, stored, id).await? else {
                return Ok::<_, TxError>(ToolWrite::NotFound);
            };
            let mut tool = row.into_domain()?;
            if tool.active == active {
                return Ok(ToolWrite::Done(Box::new(tool)));
            }
            diesel::update(tools::table.find(tool_id(id)))
                .set((tools::active.eq(active), tools::updated_at.eq(now)))
                .execute(conn)
                .await?;
            tool.active = active;
            tool.updated_at = now;
            write_audit(conn, &audit_of(&tool)).await?;
            announce(conn, Change::Catalog(account)).await?;
            Ok(ToolWrite::Done(Box::new(tool)))
        })
        .await?;
        Ok(written)
    }

    async fn delete_tool(
        &self,
        account: AccountId,
        id: ToolId,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut conn = self.writer().await?;
        let deleted = write_transaction!(conn, async |conn| {
            let stored = locked_catalog(conn, account).await?;
            // Its bindings go with it (ON DELETE CASCADE).
            let deleted = diesel::delete(
                tools::table
                    .filter(tools::account_id.eq(stored))
                    .filter(tools::id.eq(tool_id(id))),
            )
            .execute(conn)
            .await?;
            if deleted > 0 {
                write_audit(conn, audit).await?;
                announce(conn, Change::Catalog(account)).await?;
            }
            Ok::<_, TxError>(deleted > 0)
        })
        .await?;
        Ok(deleted)
    }

    async fn bind_tool(
        &self,
        account: AccountId,
        agent: AgentId,
        tool: ToolId,
        now: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<BindOutcome, StoreError> {
        let mut conn = self.writer().await?;
        let outcome = write_transaction!(conn, async |conn| {
            let stored = locked_catalog(conn, account).await?;
            if !agent_exists(conn, stored, agent).await? {
                return Ok::<_, TxError>(BindOutcome::AgentNotFound);
            }
            if !tool_exists(conn, stored, tool).await? {
                return Ok(BindOutcome::ToolNotFound);
            }
            let inserted = diesel::insert_into(agent_tools::table)
                .values(BindingRow {
                    account_id: stored,
                    agent_id: agent_id(agent),
                    tool_id: tool_id(tool),
                    created_at: now,
                })
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            if inserted == 0 {
                return Ok(BindOutcome::AlreadyBound);
            }
            write_audit(conn, audit).await?;
            announce(conn, Change::Catalog(account)).await?;
            Ok(BindOutcome::Bound)
        })
        .await?;
        Ok(outcome)
    }

    async fn unbind_tool(
        &self,
        account: AccountId,
        agent: AgentId,
        tool: ToolId,
        audit: &AuditEntry,
    ) -> Result<UnbindOutcome, StoreError> {
        let mut conn = self.writer().await?;
        let outcome = write_transaction!(conn, async |conn| {
            let stored = locked_catalog(conn, account).await?;
            if !agent_exists(conn, stored, agent).await? {
                return Ok::<_, TxError>(UnbindOutcome::AgentNotFound);
            }
            if !tool_exists(conn, stored, tool).await? {
                return Ok(UnbindOutcome::ToolNotFound);
            }
            let deleted = diesel::delete(
                agent_tools::table
                    .filter(agent_tools::account_id.eq(stored))
                    .filter(agent_tools::agent_id.eq(agent_id(agent)))
                    .filter(agent_tools::tool_id.eq(tool_id(tool))),
            )
            .execute(conn)
            .await?;
            if deleted == 0 {
                return Ok(UnbindOutcome::NotBound);
            }
            write_audit(conn, audit).await?;
            announce(conn, Change::Catalog(account)).await?;
            Ok(UnbindOutcome::Unbound)
        })
        .await?;
        Ok(outcome)
    }

    async fn agent_tools(
        &self,
        account: AccountId,
        agent: AgentId,
    ) -> Result<Option<Vec<Tool>>, StoreError> {
        let stored = Id::from(account);
        let mut conn = self.conn().await?;
        if !agent_exists(&mut conn, stored, agent)
            .await
            .map_err(from_diesel)?
        {
            return Ok(None);
        }
        let rows: Vec<ToolRow> = agent_tools::table
            .inner_join(tools::table)
            .filter(agent_tools::account_id.eq(stored))
            .filter(agent_tools::agent_id.eq(agent_id(agent)))
            .filter(tools::account_id.eq(stored))
            .order(tools::name)
            .select(ToolRow::as_select())
            .load(&mut conn)
            .await
            .map_err(from_diesel)?;
        rows.into_iter()
            .map(ToolRow::into_domain)
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

#[async_trait]
impl ScopeRepo for crate::Store {
    async fn scopes(&self, account: AccountId) -> Result<Option<Vec<OAuthScope>>, StoreError> {
        let stored = Id::from(account);
        let mut conn = self.conn().await?;
        let seeded: Option<Id> = oauth_catalogs::table
            .find(stored)
            .select(oauth_catalogs::account_id)
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        if seeded.is_none() {
            return Ok(None);
        }
        Ok(Some(read_scopes(&mut conn, stored).await?))
    }

    async fn seed_scopes(
        &self,
        account: AccountId,
        defaults: &[OAuthScope],
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let rows: Vec<ScopeRow> = defaults.iter().map(ScopeRow::from_domain).collect();
        let mut conn = self.writer().await?;
        let seeded = write_transaction!(conn, async |conn| {
            // Of concurrent first uses, one inserts the mark; the others wait for its
            // commit (the primary key) and insert nothing.
            let marked = diesel::insert_into(oauth_catalogs::table)
                .values((
                    oauth_catalogs::account_id.eq(Id::from(account)),
                    oauth_catalogs::seeded_at.eq(audit.occurred_at),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            if marked == 0 {
                return Ok::<_, TxError>(false);
            }
            insert_rows!(conn, oauth_scopes::table, rows);
            write_audit(conn, audit).await?;
            announce(conn, Change::Catalog(account)).await?;
            Ok(true)
        })
        .await?;
        Ok(seeded)
    }

    async fn change_scopes(
        &self,
        account: AccountId,
        plan: ScopePlan<'_>,
    ) -> Result<Result<ScopeChange, CatalogError>, StoreError> {
        let mut conn = self.writer().await?;
        let outcome = write_transaction!(conn, async |conn| {
            let stored = locked_catalog(conn, account).await?;
            let current = read_scopes(conn, stored).await?;
            let (change, audit) = match plan(&current) {
                Ok(planned) => planned,
                Err(refused) => return Ok::<_, TxError>(Err(refused)),
            };
            match &change {
                ScopeChange::Create(scope) => {
                    let inserted = diesel::insert_into(oauth_scopes::table)
                        .values(ScopeRow::from_domain(scope))
                        .on_conflict_do_nothing()
                        .execute(conn)
                        .await?;
                    if inserted == 0 {
                        return Ok(Err(CatalogError::ScopeNameTaken(scope.spec.name.clone())));
                    }
                }
                ScopeChange::Update(scope) => {
                    let row = ScopeRow::from_domain(scope);
                    let updated = diesel::update(
                        oauth_scopes::table
                            .filter(oauth_scopes::account_id.eq(stored))
                            .filter(oauth_scopes::name.eq(&row.name)),
                    )
                    .set((
                        oauth_scopes::description.eq(&row.description),
                        oauth_scopes::category.eq(&row.category),
                        oauth_scopes::implies.eq(&row.implies),
                        oauth_scopes::updated_at.eq(row.updated_at),
                    ))
                    .execute(conn)
                    .await?;
                    if updated == 0 {
                        return Ok(Err(CatalogError::ScopeNotFound(row.name)));
                    }
                }
                ScopeChange::Delete(name) => {
                    let deleted = diesel::delete(
                        oauth_scopes::table
                            .filter(oauth_scopes::account_id.eq(stored))
                            .filter(oauth_scopes::name.eq(name)),
                    )
                    .execute(conn)
                    .await?;
                    if deleted == 0 {
                        return Ok(Err(CatalogError::ScopeNotFound(name.clone())));
                    }
                }
            }
            write_audit(conn, &audit).await?;
            announce(conn, Change::Catalog(account)).await?;
            Ok(Ok(change))
        })
        .await?;
        Ok(outcome)
    }
}

fn names(value: Value, what: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_value::<Vec<String>>(value).map_err(|_| corrupt(what))
}

/// The columns an update of a tool replaces: its spec.
#[derive(AsChangeset)]
#[diesel(table_name = tools, treat_none_as_null = true)]
struct SpecColumns {
    name: String,
    description: Option<String>,
    category: Option<String>,
    parameters: Value,
    required_scopes: Value,
}

impl SpecColumns {
    fn from_domain(spec: &ToolSpec) -> Self {
        Self {
            name: spec.name.clone(),
            description: spec.description.clone(),
            category: spec.category.clone(),
            parameters: spec.parameters.clone(),
            required_scopes: Value::from(spec.required_scopes.clone()),
        }
    }
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = tools, check_for_backend(crate::Db))]
pub(crate) struct ToolRow {
    pub id: Id,
    pub account_id: Id,
    pub name: String,
    pub description: Option<String>,
    pub category: Option<String>,
    pub parameters: Value,
    pub required_scopes: Value,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ToolRow {
    fn from_domain(tool: &Tool) -> Self {
        let spec = SpecColumns::from_domain(&tool.spec);
        Self {
            id: tool_id(tool.id),
            account_id: Id::from(tool.account_id),
            name: spec.name,
            description: spec.description,
            category: spec.category,
            parameters: spec.parameters,
            required_scopes: spec.required_scopes,
            active: tool.active,
            created_at: tool.created_at,
            updated_at: tool.updated_at,
        }
    }

    fn into_domain(self) -> Result<Tool, StoreError> {
        Ok(Tool {
            id: ToolId::from_uuid(self.id.0),
            account_id: AccountId::from_uuid(self.account_id.0),
            spec: ToolSpec {
                name: self.name,
                description: self.description,
                category: self.category,
                parameters: self.parameters,
                required_scopes: names(self.required_scopes, "tool required scopes")?,
            },
            active: self.active,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = oauth_scopes, check_for_backend(crate::Db))]
pub(crate) struct ScopeRow {
    pub account_id: Id,
    pub name: String,
    pub description: Option<String>,
    pub category: Option<String>,
    pub implies: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ScopeRow {
    fn from_domain(scope: &OAuthScope) -> Self {
        Self {
            account_id: Id::from(scope.account_id),
            name: scope.spec.name.clone(),
            description: scope.spec.description.clone(),
            category: scope.spec.category.clone(),
            implies: Value::from(scope.spec.implies.clone()),
            created_at: scope.created_at,
            updated_at: scope.updated_at,
        }
    }

    fn into_domain(self) -> Result<OAuthScope, StoreError> {
        Ok(OAuthScope {
            account_id: AccountId::from_uuid(self.account_id.0),
            spec: ScopeSpec {
                name: self.name,
                description: self.description,
                category: self.category,
                implies: names(self.implies, "scope implications")?,
            },
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = oauth_catalogs, check_for_backend(crate::Db))]
pub(crate) struct CatalogRow {
    pub account_id: Id,
    pub seeded_at: DateTime<Utc>,
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = agent_tools, check_for_backend(crate::Db))]
pub(crate) struct BindingRow {
    pub account_id: Id,
    pub agent_id: Id,
    pub tool_id: Id,
    pub created_at: DateTime<Utc>,
}
