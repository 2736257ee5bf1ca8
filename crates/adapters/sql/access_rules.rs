//! Access rules (`d2_oauth::AccessRuleRepo`), stored as their validated JSON, and their rows.
//! Every change announces `Change::AccessRules(account)` in its transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_audit::AuditEntry;
use d2_kernel::{AccountId, Change, Page, PageRequest, StoreError};
use d2_oauth::{AccessRule, AccessRuleRepo, RuleAuditOf, RuleId, RuleSpec, RuleWrite};
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
use crate::schema::access_rules;

fn id_of(id: RuleId) -> Id {
    Id(*id.as_uuid())
}

/// Writes of one account's rules take this lock, so the name and count checks and the
/// write they allow see no concurrent change.
fn rules_lock(account: AccountId) -> String {
    format!("access_rules:{account}")
}

/// Whether a rule of `account` other than `except` is named `name`.
async fn name_taken(
    conn: &mut crate::Conn,
    account: AccountId,
    name: &str,
    except: Option<RuleId>,
) -> QueryResult<bool> {
    let mut query = access_rules::table
        .filter(access_rules::account_id.eq(Id::from(account)))
        .filter(access_rules::name.eq(name))
        .select(access_rules::id)
        .into_boxed();
    if let Some(except) = except {
        query = query.filter(access_rules::id.ne(id_of(except)));
    }
    Ok(query.first::<Id>(conn).await.optional()?.is_some())
}

#[async_trait]
impl AccessRuleRepo for crate::Store {
    async fn create_rule(
        &self,
        rule: &AccessRule,
        max_rules: usize,
        audit: &AuditEntry,
    ) -> Result<RuleWrite, StoreError> {
        let row = RuleRow::from_domain(rule);
        let max = i64::try_from(max_rules).unwrap_or(i64::MAX);
        let mut conn = self.writer().await?;
        let outcome = write_transaction!(conn, async |conn| {
            lock(conn, &rules_lock(rule.account_id)).await?;
            if name_taken(conn, rule.account_id, &rule.spec.name, None).await? {
                return Ok::<_, TxError>(RuleWrite::NameTaken);
            }
            let held: i64 = access_rules::table
                .filter(access_rules::account_id.eq(Id::from(rule.account_id)))
                .count()
                .get_result(conn)
                .await?;
            if held >= max {
                return Ok(RuleWrite::TooMany(max_rules));
            }
            diesel::insert_into(access_rules::table)
                .values(&row)
                .execute(conn)
                .await?;
            write_audit(conn, audit).await?;
            announce(conn, Change::AccessRules(rule.account_id)).await?;
            Ok(RuleWrite::Written(Box::new(rule.clone())))
        })
        .await?;
        Ok(outcome)
    }

    async fn rule(&self, account: AccountId, id: RuleId) -> Result<Option<AccessRule>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<RuleRow> = access_rules::table
            .filter(access_rules::account_id.eq(Id::from(account)))
            .filter(access_rules::id.eq(id_of(id)))
            .select(RuleRow::as_select())
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        row.map(RuleRow::into_domain).transpose()
    }

    async fn rules(
        &self,
        account: AccountId,
        page: &PageRequest,
    ) -> Result<Page<AccessRule>, StoreError> {
        let mut query = access_rules::table
            .filter(access_rules::account_id.eq(Id::from(account)))
            .order((access_rules::created_at.desc(), access_rules::id.desc()))
            .limit(i64::from(page.limit()) + 1)
            .select(RuleRow::as_select())
            .into_boxed();
        if let Some(cursor) = page.after() {
            let id: RuleId = cursor
                .id_as()
                .map_err(|_| StoreError::corrupt("access rule cursor"))?;
            query = query.filter(beyond::<_, crate::types::Uuid, _>(
                "access_rules.created_at, access_rules.id",
                Side::Before,
                cursor.at,
                id_of(id),
            ));
        }
        let mut conn = self.conn().await?;
        let rows: Vec<RuleRow> = query.load(&mut conn).await.map_err(from_diesel)?;
        let rules = rows
            .into_iter()
            .map(RuleRow::into_domain)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page.page_from(rules, |r| {
            d2_kernel::Cursor::new(r.created_at, r.id.to_string())
        }))
    }

    async fn enabled_rules(&self, account: AccountId) -> Result<Vec<AccessRule>, StoreError> {
        let mut conn = self.conn().await?;
        let rows: Vec<RuleRow> = access_rules::table
            .filter(access_rules::account_id.eq(Id::from(account)))
            .filter(access_rules::enabled.eq(true))
            .select(RuleRow::as_select())
            .load(&mut conn)
            .await
            .map_err(from_diesel)?;
        rows.into_iter().map(RuleRow::into_domain).collect()
    }

    async fn update_rule(
        &self,
        account: AccountId,
        id: RuleId,
        spec: &RuleSpec,
        now: DateTime<Utc>,
        audit_of: RuleAuditOf<'_>,
    ) -> Result<RuleWrite, StoreError> {
        let mut conn = self.writer().await?;
        let outcome = write_transaction!(conn, async |conn| {
            lock(conn, &rules_lock(account)).await?;
            let target = access_rules::table
                .filter(access_rules::account_id.eq(Id::from(account)))
                .filter(access_rules::id.eq(id_of(id)));
            let exists: Option<Id> = target
                .select(access_rules::id)
                .first(conn)
                .await
                .optional()?;
            if exists.is_none() {
                return Ok::<_, TxError>(RuleWrite::NotFound);
            }
            if name_taken(conn, account, &spec.name, Some(id)).await? {
                return Ok(RuleWrite::NameTaken);
            }
            diesel::update(target)
                .set((
                    access_rules::name.eq(&spec.name),
                    access_rules::enabled.eq(spec.enabled),
                    access_rules::document.eq(spec.to_json()),
                    access_rules::updated_at.eq(now),
                ))
                .execute(conn)
                .await?;
            let row: RuleRow = access_rules::table
                .find(id_of(id))
                .select(RuleRow::as_select())
                .first(conn)
                .await?;
            let rule = row.into_domain()?;
            write_audit(conn, &audit_of(&rule)).await?;
            announce(conn, Change::AccessRules(account)).await?;
            Ok(RuleWrite::Written(Box::new(rule)))
        })
        .await?;
        Ok(outcome)
    }

    async fn delete_rule(
        &self,
        account: AccountId,
        id: RuleId,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut conn = self.writer().await?;
        let deleted = write_transaction!(conn, async |conn| {
            let deleted = diesel::delete(
                access_rules::table
                    .filter(access_rules::account_id.eq(Id::from(account)))
                    .filter(access_rules::id.eq(id_of(id))),
            )
            .execute(conn)
            .await?;
            if deleted > 0 {
                write_audit(conn, audit).await?;
                announce(conn, Change::AccessRules(account)).await?;
            }
            Ok::<_, TxError>(deleted > 0)
        })
        .await?;
        Ok(deleted)
    }
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = access_rules, check_for_backend(crate::Db))]
pub(crate) struct RuleRow {
    pub id: Id,
    pub account_id: Id,
    pub name: String,
    pub enabled: bool,
    /// The rule as canonical JSON (`RuleSpec::to_json`).
    pub document: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl RuleRow {
    fn from_domain(rule: &AccessRule) -> Self {
        Self {
            id: id_of(rule.id),
            account_id: Id::from(rule.account_id),
            name: rule.spec.name.clone(),
            enabled: rule.spec.enabled,
            document: rule.spec.to_json(),
            created_at: rule.created_at,
            updated_at: rule.updated_at,
        }
    }

    /// The rule its stored document describes, parsed and compiled again (a document that
    /// no longer reads is a corrupt record, never half a rule).
    fn into_domain(self) -> Result<AccessRule, StoreError> {
        let spec = RuleSpec::from_value(&self.document).map_err(|_| corrupt("access rule"))?;
        Ok(AccessRule {
            id: RuleId::from_uuid(self.id.0),
            account_id: AccountId::from_uuid(self.account_id.0),
            spec,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}
