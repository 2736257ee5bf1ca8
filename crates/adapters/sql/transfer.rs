//! Moving a whole store to another (`d2ctl migrate-store`): every table, row for row, as
//! JSON rows both adapters read and write. Token digests, sealed keys, signed bundles and
//! event ids are copied as they are, so tokens, keys, bundles and the export checkpoint
//! stay valid; audit records keep their order and are numbered by the target.

use chrono::{DateTime, Utc};
use d2_kernel::StoreError;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{TxError, from_diesel};
use crate::events::EventRow;
use crate::id::Id;
use crate::models::{AccountRow, PolicyRow, PublisherKeyRow, SigningKeyRow, UserRow};
use crate::schema::{
    accounts, api_tokens, audit_logs, events, ingest_refusals, job_checkpoints, policies,
    publisher_keys, signing_keys, users,
};

/// The tables copied, in an order that satisfies every foreign key.
pub const TABLES: [&str; 10] = [
    "accounts",
    "users",
    "api_tokens",
    "signing_keys",
    "publisher_keys",
    "policies",
    "audit_logs",
    "events",
    "ingest_refusals",
    "job_checkpoints",
];

/// Rows per page of the tables read in pages (audit records and events).
const PAGE: i64 = 5_000;

/// Some of a table's rows, and where the next page starts (`None`: the table is done).
pub type RowPage = (Vec<Value>, Option<i64>);

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

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = job_checkpoints, check_for_backend(crate::Db))]
struct CheckpointCopy {
    job: String,
    ingested_at: DateTime<Utc>,
    event_id: i64,
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
fn by_id(rows: Vec<Value>, last_id: Option<i64>) -> RowPage {
    let full = i64::try_from(rows.len()).unwrap_or(i64::MAX) >= PAGE;
    (rows, last_id.filter(|_| full))
}

fn unknown(table: &str) -> StoreError {
    StoreError::corrupt(format!("no table {table} to copy"))
}

impl crate::Store {
    /// A page of `table`'s rows after `after` (the `next` of the previous page).
    pub async fn export_rows(
        &self,
        table: &str,
        after: Option<i64>,
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
                    .filter(audit_logs::id.gt(after.unwrap_or(0)))
                    .order(audit_logs::id)
                    .limit(PAGE)
                    .select((audit_logs::id, AuditCopy::as_select()))
                    .load(conn)
                    .await
                    .map_err(from_diesel)?;
                let last = rows.last().map(|(id, _)| *id);
                by_id(
                    to_json(rows.into_iter().map(|(_, row)| row).collect())?,
                    last,
                )
            }
            "events" => {
                let rows: Vec<EventRow> = events::table
                    .filter(events::id.gt(after.unwrap_or(0)))
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
            "job_checkpoints" => whole(to_json(
                job_checkpoints::table
                    .order(job_checkpoints::job)
                    .select(CheckpointCopy::as_select())
                    .load(conn)
                    .await
                    .map_err(from_diesel)?,
            )?),
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
                    insert_rows!(
                        conn,
                        job_checkpoints::table,
                        from_json::<CheckpointCopy>(rows)?
                    );
                }
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
