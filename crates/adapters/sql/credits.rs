//! The credits ledger (`d2_billing::CreditRepo`): grants and their movements, and their
//! rows.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_audit::AuditEntry;
use d2_billing::{Burn, CreditGrant, CreditRepo, EntryOf, LedgerEntry, SpendOf, SpendOutcome};
use d2_kernel::{AccountId, StoreError};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::audit::write_audit;
use crate::error::{TxError, from_diesel};
use crate::errors::corrupt;
use crate::id::Id;
use crate::schema::{accounts, credit_entries, credit_grants};

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = credit_grants, check_for_backend(crate::Db))]
pub(crate) struct GrantRow {
    pub id: Id,
    pub account_id: Id,
    pub source: String,
    pub amount: i64,
    pub remaining: i64,
    pub priority: i16,
    pub effective_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = credit_entries, check_for_backend(crate::Db))]
pub(crate) struct EntryRow {
    pub id: Id,
    pub account_id: Id,
    pub kind: String,
    pub amount: i64,
    pub balance_after: i64,
    pub grant_id: Option<Id>,
    pub burns: Value,
    pub idempotency_key: Option<String>,
    pub reason: Option<String>,
    pub actor: String,
    pub created_at: DateTime<Utc>,
}

fn stored(amount: u64) -> Result<i64, StoreError> {
    i64::try_from(amount)
        .map_err(|_| StoreError::corrupt("a credit amount beyond the store's range"))
}

fn read(amount: i64) -> Result<u64, StoreError> {
    u64::try_from(amount).map_err(|_| corrupt("credit amount"))
}

impl GrantRow {
    fn from_domain(
        account: AccountId,
        grant: &CreditGrant,
        created_at: DateTime<Utc>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            id: Id::from(grant.id),
            account_id: Id::from(account),
            source: grant.source.as_str().to_owned(),
            amount: stored(grant.amount)?,
            remaining: stored(grant.remaining)?,
            priority: i16::from(grant.priority),
            effective_at: grant.effective_at,
            expires_at: grant.expires_at,
            created_at,
        })
    }

    fn into_domain(self) -> Result<CreditGrant, StoreError> {
        Ok(CreditGrant {
            id: self.id.into(),
            source: self.source.parse().map_err(|_| corrupt("grant source"))?,
            amount: read(self.amount)?,
            remaining: read(self.remaining)?,
            priority: u8::try_from(self.priority).map_err(|_| corrupt("grant priority"))?,
            effective_at: self.effective_at,
            expires_at: self.expires_at,
        })
    }
}

impl EntryRow {
    fn from_domain(account: AccountId, entry: &LedgerEntry) -> Result<Self, StoreError> {
        let burns: Vec<Value> = entry
            .burns
            .iter()
            .map(|burn| json!({ "grant_id": burn.grant, "amount": burn.amount }))
            .collect();
        Ok(Self {
            id: Id::from(entry.id),
            account_id: Id::from(account),
            kind: entry.kind.as_str().to_owned(),
            amount: stored(entry.amount)?,
            balance_after: stored(entry.balance_after)?,
            grant_id: entry.grant_id.map(Id::from),
            burns: Value::Array(burns),
            idempotency_key: entry.idempotency_key.clone(),
            reason: entry.reason.clone(),
            actor: entry.actor.clone(),
            created_at: entry.created_at,
        })
    }

    fn into_domain(self) -> Result<LedgerEntry, StoreError> {
        let Value::Array(burns) = self.burns else {
            return Err(corrupt("entry burns"));
        };
        let burns = burns
            .iter()
            .map(|burn| {
                Some(Burn {
                    grant: burn.get("grant_id")?.as_str()?.parse().ok()?,
                    amount: burn.get("amount")?.as_u64()?,
                })
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| corrupt("entry burns"))?;
        Ok(LedgerEntry {
            id: self.id.into(),
            kind: self.kind.parse().map_err(|_| corrupt("entry kind"))?,
            amount: read(self.amount)?,
            balance_after: read(self.balance_after)?,
            grant_id: self.grant_id.map(Into::into),
            burns,
            idempotency_key: self.idempotency_key,
            reason: self.reason,
            actor: self.actor,
            created_at: self.created_at,
        })
    }
}

/// Holds the account (its grants and ledger change one writer at a time) and reads its
/// grants, oldest first.
async fn held_grants(conn: &mut crate::Conn, account: Id) -> Result<Vec<CreditGrant>, TxError> {
    let held: Option<Id> = locked!(accounts::table.find(account))
        .select(accounts::id)
        .first(conn)
        .await
        .optional()?;
    if held.is_none() {
        return Err(TxError::from(StoreError::corrupt(
            "credits of an unknown account",
        )));
    }
    let grants = credit_grants::table
        .filter(credit_grants::account_id.eq(account))
        .order((credit_grants::created_at.asc(), credit_grants::id.asc()))
        .select(GrantRow::as_select())
        .load(conn)
        .await?
        .into_iter()
        .map(GrantRow::into_domain)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(grants)
}

#[async_trait]
impl CreditRepo for crate::Store {
    async fn add_grant(
        &self,
        account: AccountId,
        grant: &CreditGrant,
        entry_of: EntryOf<'_>,
        audit: &AuditEntry,
    ) -> Result<LedgerEntry, StoreError> {
        let id = Id::from(account);
        let mut conn = self.writer().await?;
        let entry = write_transaction!(conn, async |conn| {
            let mut grants = held_grants(conn, id).await?;
            let row = GrantRow::from_domain(account, grant, audit.occurred_at)?;
            diesel::insert_into(credit_grants::table)
                .values(&row)
                .execute(conn)
                .await?;
            grants.push(grant.clone());
            let entry = entry_of(&grants);
            diesel::insert_into(credit_entries::table)
                .values(EntryRow::from_domain(account, &entry)?)
                .execute(conn)
                .await?;
            write_audit(conn, audit).await?;
            Ok::<_, TxError>(entry)
        })
        .await?;
        Ok(entry)
    }

    async fn credit_grants(&self, account: AccountId) -> Result<Vec<CreditGrant>, StoreError> {
        let mut conn = self.conn().await?;
        let rows: Vec<GrantRow> = credit_grants::table
            .filter(credit_grants::account_id.eq(Id::from(account)))
            .order((credit_grants::created_at.asc(), credit_grants::id.asc()))
            .select(GrantRow::as_select())
            .load(&mut conn)
            .await
            .map_err(from_diesel)?;
        rows.into_iter().map(GrantRow::into_domain).collect()
    }

    async fn spend(
        &self,
        account: AccountId,
        key: &str,
        decide: SpendOf<'_>,
    ) -> Result<SpendOutcome, StoreError> {
        let id = Id::from(account);
        let mut conn = self.writer().await?;
        let outcome = write_transaction!(conn, async |conn| {
            // The account held first: its spends go one at a time, each reading what the
            // previous one left (and finding its key if it was the same spend).
            let grants = held_grants(conn, id).await?;
            let earlier: Option<EntryRow> = credit_entries::table
                .filter(credit_entries::account_id.eq(id))
                .filter(credit_entries::idempotency_key.eq(key))
                .select(EntryRow::as_select())
                .first(conn)
                .await
                .optional()?;
            if let Some(earlier) = earlier {
                return Ok(SpendOutcome::Replayed(earlier.into_domain()?));
            }
            let (entry, audit) = match decide(&grants) {
                Ok(decided) => decided,
                Err(refusal) => return Ok(SpendOutcome::Refused(refusal)),
            };
            for burn in &entry.burns {
                let taken = stored(burn.amount)?;
                let updated = diesel::update(
                    credit_grants::table
                        .filter(credit_grants::id.eq(Id::from(burn.grant)))
                        .filter(credit_grants::account_id.eq(id))
                        .filter(credit_grants::remaining.ge(taken)),
                )
                .set(credit_grants::remaining.eq(credit_grants::remaining - taken))
                .execute(conn)
                .await?;
                if updated != 1 {
                    return Err(TxError::from(StoreError::corrupt(
                        "a burn above its grant's remaining credits",
                    )));
                }
            }
            diesel::insert_into(credit_entries::table)
                .values(EntryRow::from_domain(account, &entry)?)
                .execute(conn)
                .await?;
            write_audit(conn, &audit).await?;
            Ok(SpendOutcome::Spent(entry))
        })
        .await?;
        Ok(outcome)
    }

    async fn ledger(&self, account: AccountId, limit: u32) -> Result<Vec<LedgerEntry>, StoreError> {
        let mut conn = self.conn().await?;
        let rows: Vec<EntryRow> = credit_entries::table
            .filter(credit_entries::account_id.eq(Id::from(account)))
            .order((credit_entries::created_at.desc(), credit_entries::id.desc()))
            .limit(i64::from(limit))
            .select(EntryRow::as_select())
            .load(&mut conn)
            .await
            .map_err(from_diesel)?;
        rows.into_iter().map(EntryRow::into_domain).collect()
    }
}
