//! Moving a whole store to another (`d2ctl migrate-store`): every table, row for row, as
//! JSON rows both adapters read and write. Token digests, sealed keys, signed bundles and
//! event ids are copied as they are, so tokens, keys and bundles stay valid; audit records
//! keep their order and are numbered by the target, as are tasks. Places in the export stream are each
//! store's own (a transaction id, a row id), so an export checkpoint travels as the event
//! id up to which every event was exported, and the target turns that back into a place
//! in its own stream.

use chrono::{DateTime, Utc};
use d2_kernel::StoreError;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::access_rules::RuleRow;
use crate::accounts::AccountRow;
use crate::agents::AgentRow;
use crate::billing::{CustomerRow, ProviderEventRow, SubscriptionRow};
use crate::catalog::{BindingRow, CatalogRow, ScopeRow, ToolRow};
use crate::client_policies::ClientPolicyRow;
use crate::credits::{EntryRow, GrantRow, ReservationRow};
use crate::delegations::DelegationRow;
use crate::error::{TxError, from_diesel};
use crate::events::EventRow;
use crate::id::Id;
use crate::invitations::InvitationRow;
use crate::jwks::SigningKeyRow;
use crate::members::{MemberRow, UserRow};
use crate::notices::{EndpointRow, NoticeRow};
use crate::oauth_tokens::TokenRow;
use crate::policies::{PolicyRow, PublisherKeyRow};
use crate::position::{Side, in_stream};
use crate::principals::PrincipalRow;
use crate::schema::{
    access_rules, accounts, agent_tools, agents, api_tokens, audit_logs, billing_budgets,
    billing_customers, billing_events, billing_notice_endpoints, billing_notices,
    billing_subscriptions, credit_entries, credit_grants, credit_reservations, delegations, events,
    ingest_refusals, invitations, job_checkpoints, members, oauth_catalogs, oauth_client_policies,
    oauth_scopes, oauth_tokens, policies, principals, publisher_keys, signing_keys, tasks, tools,
    usage_hours, usage_records, users,
};
use crate::tasks::TaskCopy;
use crate::usage::{BudgetRow, HourRow, UsageRow};

/// The tables copied, in an order that satisfies every foreign key.
pub const TABLES: [&str; 34] = [
    "accounts",
    "billing_customers",
    "billing_subscriptions",
    "billing_events",
    "credit_grants",
    "credit_entries",
    "usage_records",
    "usage_hours",
    "credit_reservations",
    "billing_budgets",
    "billing_notice_endpoints",
    "billing_notices",
    "users",
    "members",
    "invitations",
    "agents",
    "oauth_client_policies",
    "principals",
    "delegations",
    "oauth_tokens",
    "access_rules",
    "tools",
    "agent_tools",
    "oauth_catalogs",
    "oauth_scopes",
    "api_tokens",
    "signing_keys",
    "publisher_keys",
    "policies",
    "audit_logs",
    "events",
    "ingest_refusals",
    "job_checkpoints",
    "tasks",
];

/// The tables `TABLES` leaves out (some exist in one store only), and why. A test holds
/// every table of both stores to one list or the other, so a new table is never silently
/// left behind by a copy.
#[cfg(test)]
pub const NOT_COPIED: [(&str, &str); 5] = [
    (
        "__diesel_schema_migrations",
        "each store's own migration history: the target is migrated by its own migrations",
    ),
    (
        "changes",
        "SQLite's change feed: announcements to the running processes, read within seconds",
    ),
    (
        "oauth_client_assertions",
        "spent client assertions, kept an hour at most to refuse a replay; a copy starts without them",
    ),
    (
        "authorization_codes",
        "codes live a minute and are spent once; a copy starts without them, so a person approves again",
    ),
    (
        "job_locks",
        "SQLite's leases of running jobs: held by processes of the source, not the target",
    ),
];

/// Rows per page of the tables read in pages (audit records, events, tasks and OAuth
/// tokens); a few in the adapters' own tests, so that their copies cross pages.
const PAGE: i64 = if cfg!(test) { 3 } else { 5_000 };

/// Some of a table's rows, and where the next page starts (`None`: the table is done): a
/// cursor the caller hands back as it is (the last id read, a number or a UUID).
pub type RowPage = (Vec<Value>, Option<String>);

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = api_tokens, check_for_backend(crate::Db))]
struct TokenCopy {
    id: Id,
    account_id: Id,
    digest: Vec<u8>,
    kind: String,
    scopes: String,
    name: Option<String>,
    app_name: Option<String>,
    created_by: Option<Id>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    replaced_by: Option<Id>,
    assigned_to: Option<Id>,
    last_used_at: Option<DateTime<Utc>>,
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = audit_logs, check_for_backend(crate::Db))]
struct AuditCopy {
    account_id: Id,
    actor: String,
    token_id: Option<Id>,
    user_id: Option<Id>,
    action: String,
    status: String,
    resource_type: Option<String>,
    resource_id: Option<String>,
    metadata: Value,
    created_at: DateTime<Utc>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = job_checkpoints, check_for_backend(crate::Db))]
struct CheckpointRow {
    job: String,
    stream_position: i64,
    event_id: i64,
    ingested_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// A checkpoint in terms both stores share: every event with an id up to `exported_through`
/// was passed, none above it needs to have been.
#[derive(Serialize, Deserialize)]
struct CheckpointCopy {
    job: String,
    exported_through: i64,
    ingested_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = ingest_refusals, check_for_backend(crate::Db))]
struct RefusalCopy {
    account_id: Id,
    hour: DateTime<Utc>,
    events: i64,
    batches: i64,
}

fn to_json<T: Serialize>(rows: Vec<T>) -> Result<Vec<Value>, StoreError> {
    rows.into_iter()
        .map(|row| serde_json::to_value(row).map_err(|e| StoreError::Internal(Box::new(e))))
        .collect()
}

fn from_json<T: DeserializeOwned>(rows: Vec<Value>) -> Result<Vec<T>, StoreError> {
    rows.into_iter()
        .map(|row| {
            serde_json::from_value(row)
                .map_err(|e| StoreError::corrupt(format!("a copied row does not fit: {e}")))
        })
        .collect()
}

/// The whole table, in one page.
fn whole(rows: Vec<Value>) -> RowPage {
    (rows, None)
}

/// A page of a table read by id; `next` is the last id when the page is full.
fn by_id(rows: Vec<Value>, last_id: Option<impl ToString>) -> RowPage {
    let full = i64::try_from(rows.len()).unwrap_or(i64::MAX) >= PAGE;
    (rows, last_id.filter(|_| full).map(|id| id.to_string()))
}

/// A page of a table with UUID ids, read in id order after the cursor's id.
macro_rules! page_by_uuid {
    ($conn:expr, $after:expr, $table:ident, $row:ty) => {{
        let mut query = $table::table
            .order($table::id)
            .limit(PAGE)
            .select(<$row>::as_select())
            .into_boxed();
        if let Some(after) = $after {
            let after = uuid::Uuid::parse_str(after)
                .map_err(|_| StoreError::corrupt("a copy's page cursor is not a UUID"))?;
            query = query.filter($table::id.gt(Id(after)));
        }
        let rows: Vec<$row> = query.load($conn).await.map_err(from_diesel)?;
        let last = rows.last().map(|row| row.id.0);
        by_id(to_json(rows)?, last)
    }};
}

/// The id a page of a table numbered by `bigint` ids starts after (0 for the first).
fn after_number(after: Option<&str>) -> Result<i64, StoreError> {
    after.map_or(Ok(0), |text| {
        text.parse()
            .map_err(|_| StoreError::corrupt("a copy's page cursor is not an id"))
    })
}

/// A page of a table whose rows the target numbers anew: the rows without their ids, the
/// next page after the last id read.
fn renumbered<T: Serialize>(rows: Vec<(i64, T)>) -> Result<RowPage, StoreError> {
    let last = rows.last().map(|(id, _)| *id);
    let rows = to_json(rows.into_iter().map(|(_, row)| row).collect())?;
    Ok(by_id(rows, last))
}

fn unknown(table: &str) -> StoreError {
    StoreError::corrupt(format!("no table {table} to copy"))
}

/// `row` as the event id up to which every event was passed: just below the smallest id
/// after its place in the stream, or, with no event after it, the largest id stored.
async fn checkpoint_copy(
    conn: &mut crate::Conn,
    row: CheckpointRow,
) -> QueryResult<CheckpointCopy> {
    let first_after: Option<i64> = events::table
        .filter(in_stream(Side::After, row.stream_position, row.event_id))
        .select(diesel::dsl::min(events::id))
        .into_boxed()
        .first(conn)
        .await?;
    let exported_through = match first_after {
        Some(id) => id - 1,
        None => events::table
            .select(diesel::dsl::max(events::id))
            .first::<Option<i64>>(conn)
            .await?
            .unwrap_or(row.event_id),
    };
    Ok(CheckpointCopy {
        job: row.job,
        exported_through,
        ingested_at: row.ingested_at,
        updated_at: row.updated_at,
    })
}

/// Writes a copied checkpoint at the place in this store's stream of the copied event with
/// the largest id up to `exported_through`. The events were copied before, in pages in id
/// order, each page a transaction, so the copied events stand in the stream in id order on
/// either store (SQLite: their ids; PostgreSQL: the pages' transaction ids, then ids): every
/// event up to that place was exported. With no such event nothing was, and no checkpoint
/// is written.
async fn import_checkpoint(conn: &mut crate::Conn, copy: CheckpointCopy) -> Result<(), TxError> {
    let place: Option<(i64, i64)> = events::table
        .filter(events::id.le(copy.exported_through))
        .order(events::id.desc())
        .select((events::stream_position, events::id))
        .first(conn)
        .await
        .optional()?;
    let Some((stream_position, event_id)) = place else {
        return Ok(());
    };
    diesel::insert_into(job_checkpoints::table)
        .values((
            job_checkpoints::job.eq(copy.job),
            job_checkpoints::stream_position.eq(stream_position),
            job_checkpoints::event_id.eq(event_id),
            job_checkpoints::ingested_at.eq(copy.ingested_at),
            job_checkpoints::updated_at.eq(copy.updated_at),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

impl crate::Store {
    /// A page of `table`'s rows after `after` (the `next` of the previous page).
    pub async fn export_rows(
        &self,
        table: &str,
        after: Option<&str>,
    ) -> Result<RowPage, StoreError> {
        let mut conn = self.conn().await?;
        let conn = &mut conn;
        let page = match table {
            "accounts" => whole(to_json(
                accounts::table
                    .order(accounts::id)
                    .select(AccountRow::as_select())
                    .load(conn)
                    .await
                    .map_err(from_diesel)?,
            )?),
            "users" => whole(to_json(
                users::table
                    .order(users::id)
                    .select(UserRow::as_select())
                    .load(conn)
                    .await
                    .map_err(from_diesel)?,
            )?),
            "members" => whole(to_json(
                members::table
                    .order((members::account_id, members::user_id))
                    .select(MemberRow::as_select())
                    .load(conn)
                    .await
                    .map_err(from_diesel)?,
            )?),
            "invitations" => whole(to_json(
                invitations::table
                    .order(invitations::id)
                    .select(InvitationRow::as_select())
                    .load(conn)
                    .await
                    .map_err(from_diesel)?,
            )?),
            "agents" => whole(to_json(
                agents::table
                    .order(agents::id)
                    .select(AgentRow::as_select())
                    .load(conn)
                    .await
                    .map_err(from_diesel)?,
            )?),
            // These tables grow with every token issued, spend and usage report: read in
            // pages, by id.
            "oauth_tokens" => page_by_uuid!(conn, after, oauth_tokens, TokenRow),
            "credit_entries" => page_by_uuid!(conn, after, credit_entries, EntryRow),
            "usage_records" => page_by_uuid!(conn, after, usage_records, UsageRow),
            "credit_reservations" => {
                page_by_uuid!(conn, after, credit_reservations, ReservationRow)
            }
            "tools" => whole(to_json(
                tools::table
                    .order(tools::id)
                    .select(ToolRow::as_select())
                    .load(conn)
                    .await
                    .map_err(from_diesel)?,
            )?),
            "credit_grants" => whole(to_json(
                credit_grants::table
                    .order(credit_grants::id)
                    .select(GrantRow::as_select())
                    .load(conn)
                    .await
                    .map_err(from_diesel)?,
            )?),
            "billing_budgets" => whole(to_json(
                billing_budgets::table
                    .order((
                        billing_budgets::account_id,
                        billing_budgets::meter,
                        billing_budgets::subject,
                    ))
                    .select(BudgetRow::as_select())
                    .load(conn)
                    .await
                    .map_err(from_diesel)?,
            )?),
            "billing_notice_endpoints" => whole(to_json(
                billing_notice_endpoints::table
                    .order(billing_notice_endpoints::account_id)
                    .select(EndpointRow::as_select())
                    .load(conn)
                    .await
                    .map_err(from_diesel)?,
            )?),
            "billing_notices" => whole(to_json(
                billing_notices::table
                    .order(billing_notices::id)
                    .select(NoticeRow::as_select())
                    .load(conn)
                    .await
                    .map_err(from_diesel)?,
            )?),
            "usage_hours" => whole(to_json(
                usage_hours::table
                    .order((
                        usage_hours::account_id,
                        usage_hours::hour,
                        usage_hours::meter,
                        usage_hours::subject,
                        usage_hours::operation,
                        usage_hours::credential,
                    ))
                    .select(HourRow::as_select())
                    .load(conn)
                    .await
                    .map_err(from_diesel)?,
            )?),
            "billing_customers" => whole(to_json(
                billing_customers::table
                    .order(billing_customers::customer_id)
                    .select(CustomerRow::as_select())
                    .load(conn)
                    .await
                    .map_err(from_diesel)?,
            )?),
            "billing_subscriptions" => whole(to_json(
                billing_subscriptions::table
                    .order(billing_subscriptions::account_id)
                    .select(SubscriptionRow::as_select())
                    .load(conn)
                    .await
                    .map_err(from_diesel)?,
            )?),
            "billing_events" => whole(to_json(
                billing_events::table
                    .order(billing_events::event_id)
                    .select(ProviderEventRow::as_select())
                    .load(conn)
                    .await
                    .map_err(from_diesel)?,
            )?),
            "oauth_client_policies" => whole(to_json(
                oauth_client_policies::table
                    .order(oauth_client_policies::account_id)
                    .select(ClientPolicyRow::as_select())
                    .load(conn)
                    .await
                    .map_err(from_diesel)?,
            )?),
            "principals" => whole(to_json(
                principals::table
                    .order(principals::id)
                    .select(PrincipalRow::as_select())
                    .load(conn)
                    .await
                    .map_err(from_diesel)?,
            )?),
            "delegations" => whole(to_json(
                delegations::table
                    .order(delegations::id)
                    .select(DelegationRow::as_select())
                    .load(conn)
                    .await
                    .map_err(from_diesel)?,
            )?),
            "agent_tools" => whole(to_json(
                agent_tools::table
                    .order((agent_tools::agent_id, agent_tools::tool_id))
                    .select(BindingRow::as_select())
                    .load(conn)
                    .await
                    .map_err(from_diesel)?,
            )?),
            "access_rules" => whole(to_json(
                access_rules::table
                    .order(access_rules::id)
                    .select(RuleRow::as_select())
                    .load(conn)
                    .await
                    .map_err(from_diesel)?,
            )?),
            "oauth_catalogs" => whole(to_json(
                oauth_catalogs::table
                    .order(oauth_catalogs::account_id)
                    .select(CatalogRow::as_select())
                    .load(conn)
                    .await
                    .map_err(from_diesel)?,
            )?),
            "oauth_scopes" => whole(to_json(
                oauth_scopes::table
                    .order((oauth_scopes::account_id, oauth_scopes::name))
                    .select(ScopeRow::as_select())
                    .load(conn)
                    .await
                    .map_err(from_diesel)?,
            )?),
            "api_tokens" => whole(to_json(
                api_tokens::table
                    .order(api_tokens::id)
                    .select(TokenCopy::as_select())
                    .load(conn)
                    .await
                    .map_err(from_diesel)?,
            )?),
            "signing_keys" => whole(to_json(
                signing_keys::table
                    .order(signing_keys::kid)
                    .select(SigningKeyRow::as_select())
                    .load(conn)
                    .await
                    .map_err(from_diesel)?,
            )?),
            "publisher_keys" => whole(to_json(
                publisher_keys::table
                    .order((publisher_keys::account_id, publisher_keys::key_id))
                    .select(PublisherKeyRow::as_select())
                    .load(conn)
                    .await
                    .map_err(from_diesel)?,
            )?),
            "policies" => whole(to_json(
                policies::table
                    .order(policies::id)
                    .select(PolicyRow::as_select())
                    .load(conn)
                    .await
                    .map_err(from_diesel)?,
            )?),
            "audit_logs" => {
                let rows: Vec<(i64, AuditCopy)> = audit_logs::table
                    .filter(audit_logs::id.gt(after_number(after)?))
                    .order(audit_logs::id)
                    .limit(PAGE)
                    .select((audit_logs::id, AuditCopy::as_select()))
                    .load(conn)
                    .await
                    .map_err(from_diesel)?;
                renumbered(rows)?
            }
            "events" => {
                let rows: Vec<EventRow> = events::table
                    .filter(events::id.gt(after_number(after)?))
                    .order(events::id)
                    .limit(PAGE)
                    .select(EventRow::as_select())
                    .load(conn)
                    .await
                    .map_err(from_diesel)?;
                let last = rows.last().map(EventRow::id);
                by_id(to_json(rows)?, last)
            }
            "ingest_refusals" => whole(to_json(
                ingest_refusals::table
                    .order((ingest_refusals::account_id, ingest_refusals::hour))
                    .select(RefusalCopy::as_select())
                    .load(conn)
                    .await
                    .map_err(from_diesel)?,
            )?),
            "job_checkpoints" => {
                let rows: Vec<CheckpointRow> = job_checkpoints::table
                    .order(job_checkpoints::job)
                    .select(CheckpointRow::as_select())
                    .load(conn)
                    .await
                    .map_err(from_diesel)?;
                let mut copies = Vec::with_capacity(rows.len());
                for row in rows {
                    copies.push(checkpoint_copy(conn, row).await.map_err(from_diesel)?);
                }
                whole(to_json(copies)?)
            }
            "tasks" => {
                let rows: Vec<(i64, TaskCopy)> = tasks::table
                    .filter(tasks::id.gt(after_number(after)?))
                    .order(tasks::id)
                    .limit(PAGE)
                    .select((tasks::id, TaskCopy::as_select()))
                    .load(conn)
                    .await
                    .map_err(from_diesel)?;
                renumbered(rows)?
            }
            other => return Err(unknown(other)),
        };
        Ok(page)
    }

    /// Writes rows `export_rows` read from another store, in one transaction.
    pub async fn import_rows(&self, table: &str, rows: Vec<Value>) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut conn = self.writer().await?;
        write_transaction!(conn, async |conn| {
            match table {
                "accounts" => insert_rows!(conn, accounts::table, from_json::<AccountRow>(rows)?),
                "users" => insert_rows!(conn, users::table, from_json::<UserRow>(rows)?),
                "members" => insert_rows!(conn, members::table, from_json::<MemberRow>(rows)?),
                "invitations" => {
                    insert_rows!(conn, invitations::table, from_json::<InvitationRow>(rows)?);
                }
                "agents" => insert_rows!(conn, agents::table, from_json::<AgentRow>(rows)?),
                "oauth_tokens" => {
                    insert_rows!(conn, oauth_tokens::table, from_json::<TokenRow>(rows)?);
                }
                "credit_grants" => {
                    insert_rows!(conn, credit_grants::table, from_json::<GrantRow>(rows)?);
                }
                "credit_entries" => {
                    insert_rows!(conn, credit_entries::table, from_json::<EntryRow>(rows)?);
                }
                "usage_records" => {
                    insert_rows!(conn, usage_records::table, from_json::<UsageRow>(rows)?);
                }
                "usage_hours" => {
                    insert_rows!(conn, usage_hours::table, from_json::<HourRow>(rows)?);
                }
                "billing_notice_endpoints" => {
                    insert_rows!(
                        conn,
                        billing_notice_endpoints::table,
                        from_json::<EndpointRow>(rows)?
                    );
                }
                "billing_notices" => {
                    insert_rows!(conn, billing_notices::table, from_json::<NoticeRow>(rows)?);
                }
                "billing_budgets" => {
                    insert_rows!(conn, billing_budgets::table, from_json::<BudgetRow>(rows)?);
                }
                "credit_reservations" => {
                    insert_rows!(
                        conn,
                        credit_reservations::table,
                        from_json::<ReservationRow>(rows)?
                    );
                }
                "billing_customers" => {
                    insert_rows!(
                        conn,
                        billing_customers::table,
                        from_json::<CustomerRow>(rows)?
                    );
                }
                "billing_subscriptions" => {
                    insert_rows!(
                        conn,
                        billing_subscriptions::table,
                        from_json::<SubscriptionRow>(rows)?
                    );
                }
                "billing_events" => {
                    insert_rows!(
                        conn,
                        billing_events::table,
                        from_json::<ProviderEventRow>(rows)?
                    );
                }
                "oauth_client_policies" => {
                    insert_rows!(
                        conn,
                        oauth_client_policies::table,
                        from_json::<ClientPolicyRow>(rows)?
                    );
                }
                "principals" => {
                    insert_rows!(conn, principals::table, from_json::<PrincipalRow>(rows)?);
                }
                "delegations" => {
                    insert_rows!(conn, delegations::table, from_json::<DelegationRow>(rows)?);
                }
                "access_rules" => {
                    insert_rows!(conn, access_rules::table, from_json::<RuleRow>(rows)?);
                }
                "tools" => insert_rows!(conn, tools::table, from_json::<ToolRow>(rows)?),
                "agent_tools" => {
                    insert_rows!(conn, agent_tools::table, from_json::<BindingRow>(rows)?);
                }
                "oauth_catalogs" => {
                    insert_rows!(conn, oauth_catalogs::table, from_json::<CatalogRow>(rows)?);
                }
                "oauth_scopes" => {
                    insert_rows!(conn, oauth_scopes::table, from_json::<ScopeRow>(rows)?);
                }
                "api_tokens" => {
                    // A token names its replacement, which may come later in the table:
                    // inserted without it, then linked.
                    let tokens = from_json::<TokenCopy>(rows)?;
                    let links: Vec<(Id, Id)> = tokens
                        .iter()
                        .filter_map(|t| t.replaced_by.map(|next| (t.id, next)))
                        .collect();
                    let unlinked: Vec<TokenCopy> = tokens
                        .into_iter()
                        .map(|t| TokenCopy {
                            replaced_by: None,
                            ..t
                        })
                        .collect();
                    insert_rows!(conn, api_tokens::table, unlinked);
                    for (id, next) in links {
                        diesel::update(api_tokens::table.find(id))
                            .set(api_tokens::replaced_by.eq(next))
                            .execute(conn)
                            .await?;
                    }
                }
                "signing_keys" => {
                    insert_rows!(conn, signing_keys::table, from_json::<SigningKeyRow>(rows)?);
                }
                "publisher_keys" => {
                    insert_rows!(
                        conn,
                        publisher_keys::table,
                        from_json::<PublisherKeyRow>(rows)?
                    );
                }
                "policies" => insert_rows!(conn, policies::table, from_json::<PolicyRow>(rows)?),
                "audit_logs" => {
                    insert_rows!(conn, audit_logs::table, from_json::<AuditCopy>(rows)?)
                }
                "events" => insert_rows!(conn, events::table, from_json::<EventRow>(rows)?),
                "ingest_refusals" => {
                    insert_rows!(
                        conn,
                        ingest_refusals::table,
                        from_json::<RefusalCopy>(rows)?
                    );
                }
                "job_checkpoints" => {
                    for copy in from_json::<CheckpointCopy>(rows)? {
                        import_checkpoint(conn, copy).await?;
                    }
                }
                "tasks" => insert_rows!(conn, tasks::table, from_json::<TaskCopy>(rows)?),
                other => return Err(TxError::Store(unknown(other))),
            }
            Ok::<_, TxError>(())
        })
        .await?;
        Ok(())
    }

    /// After the copy: ids handed out from now on follow the copied ones.
    pub async fn finish_import(&self) -> Result<(), StoreError> {
        let mut conn = self.writer().await?;
        crate::event_writes::continue_ids(&mut conn)
            .await
            .map_err(from_diesel)
    }
}
