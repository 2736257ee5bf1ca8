//! The credits ledger (`d2_billing::CreditRepo`): grants and their movements, and their
//! rows.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_audit::AuditEntry;
use d2_billing::{
    Burn, CloseOf, CloseRefusal, Closing, CreditGrant, CreditRepo, EntryId, EntryOf, LedgerEntry,
    LedgerFilter, Reservation, ReservationStatus, SpendOf, SpendOutcome,
};
use d2_kernel::{AccountId, Page, PageRequest, StoreError};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::audit::write_audit;
use crate::error::{TxError, from_diesel};
use crate::errors::corrupt;
use crate::id::Id;
use crate::position::{Side, beyond};
use crate::schema::{accounts, credit_entries, credit_grants, credit_reservations, usage_records};

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
    /// What made it once (`invoice:<id>`), for grants made by an event.
    pub origin: Option<String>,
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

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = credit_reservations, check_for_backend(crate::Db))]
pub(crate) struct ReservationRow {
    pub id: Id,
    pub account_id: Id,
    pub amount: i64,
    pub burns: Value,
    pub status: String,
    pub settled_amount: Option<i64>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
}

impl ReservationRow {
    fn from_domain(account: AccountId, reservation: &Reservation) -> Result<Self, StoreError> {
        Ok(Self {
            id: Id::from(reservation.id),
            account_id: Id::from(account),
            amount: stored(reservation.amount)?,
            burns: burns_to_json(&reservation.burns),
            status: reservation.status.as_str().to_owned(),
            settled_amount: reservation.settled_amount.map(stored).transpose()?,
            expires_at: reservation.expires_at,
            created_at: reservation.created_at,
            closed_at: reservation.closed_at,
        })
    }

    fn into_domain(self) -> Result<Reservation, StoreError> {
        Ok(Reservation {
            id: self.id.into(),
            amount: read(self.amount)?,
            burns: burns_from_json(self.burns)?,
            status: self
                .status
                .parse()
                .map_err(|_| corrupt("reservation status"))?,
            settled_amount: self.settled_amount.map(read).transpose()?,
            expires_at: self.expires_at,
            created_at: self.created_at,
            closed_at: self.closed_at,
        })
    }
}

fn burns_to_json(burns: &[Burn]) -> Value {
    Value::Array(
        burns
            .iter()
            .map(|burn| json!({ "grant_id": burn.grant, "amount": burn.amount }))
            .collect(),
    )
}

fn burns_from_json(burns: Value) -> Result<Vec<Burn>, StoreError> {
    let Value::Array(burns) = burns else {
        return Err(corrupt("entry burns"));
    };
    burns
        .iter()
        .map(|burn| {
            Some(Burn {
                grant: burn.get("grant_id")?.as_str()?.parse().ok()?,
                amount: burn.get("amount")?.as_u64()?,
            })
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| corrupt("entry burns"))
}

pub(crate) fn stored(amount: u64) -> Result<i64, StoreError> {
    i64::try_from(amount)
        .map_err(|_| StoreError::corrupt("a credit amount beyond the store's range"))
}

pub(crate) fn read(amount: i64) -> Result<u64, StoreError> {
    u64::try_from(amount).map_err(|_| corrupt("credit amount"))
}

impl GrantRow {
    fn from_domain(
        account: AccountId,
        grant: &CreditGrant,
        origin: Option<&str>,
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
            origin: origin.map(str::to_owned),
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
    pub(crate) fn from_domain(account: AccountId, entry: &LedgerEntry) -> Result<Self, StoreError> {
        Ok(Self {
            id: Id::from(entry.id),
            account_id: Id::from(account),
            kind: entry.kind.as_str().to_owned(),
            amount: stored(entry.amount)?,
            balance_after: stored(entry.balance_after)?,
            grant_id: entry.grant_id.map(Id::from),
            burns: burns_to_json(&entry.burns),
            idempotency_key: entry.idempotency_key.clone(),
            reason: entry.reason.clone(),
            actor: entry.actor.clone(),
            created_at: entry.created_at,
        })
    }

    pub(crate) fn into_domain(self) -> Result<LedgerEntry, StoreError> {
        let burns = burns_from_json(self.burns)?;
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
pub(crate) async fn held_grants(
    conn: &mut crate::Conn,
    account: Id,
) -> Result<Vec<CreditGrant>, TxError> {
    let held: Option<Id> = held!(accounts::table.find(account))
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

/// With the account held: stores a grant (of `origin`, when an event made it) and its
/// ledger entry `entry_of(grants)`, the account's grants with the new one last.
pub(crate) async fn insert_grant(
    conn: &mut crate::Conn,
    account: AccountId,
    grant: &CreditGrant,
    origin: Option<&str>,
    created_at: DateTime<Utc>,
    entry_of: EntryOf<'_>,
) -> Result<LedgerEntry, TxError> {
    let mut grants = held_grants(conn, Id::from(account)).await?;
    diesel::insert_into(credit_grants::table)
        .values(GrantRow::from_domain(account, grant, origin, created_at)?)
        .execute(conn)
        .await?;
    grants.push(grant.clone());
    let entry = entry_of(&grants);
    diesel::insert_into(credit_entries::table)
        .values(EntryRow::from_domain(account, &entry)?)
        .execute(conn)
        .await?;
    Ok(entry)
}

/// Whether the account has a grant of `origin`.
pub(crate) async fn has_origin(
    conn: &mut crate::Conn,
    account: Id,
    origin: &str,
) -> Result<bool, TxError> {
    let found: Option<Id> = credit_grants::table
        .filter(credit_grants::account_id.eq(account))
        .filter(credit_grants::origin.eq(origin))
        .select(credit_grants::id)
        .first(conn)
        .await
        .optional()?;
    Ok(found.is_some())
}

/// Gives `burns` back to their grants of the account `account`; more than a grant's amount
/// fails the transaction.
async fn give_back(conn: &mut crate::Conn, account: Id, burns: &[Burn]) -> Result<(), TxError> {
    for burn in burns {
        let given = stored(burn.amount)?;
        let updated = diesel::update(
            credit_grants::table
                .filter(credit_grants::id.eq(Id::from(burn.grant)))
                .filter(credit_grants::account_id.eq(account))
                .filter((credit_grants::remaining + given).le(credit_grants::amount)),
        )
        .set(credit_grants::remaining.eq(credit_grants::remaining + given))
        .execute(conn)
        .await?;
        if updated != 1 {
            return Err(TxError::from(StoreError::corrupt(
                "a release above its grant's amount",
            )));
        }
    }
    Ok(())
}

/// Takes `burns` from their grants of the account `account` (several from one grant
/// summed into one update). A burn above what its grant has left fails the transaction.
pub(crate) async fn take_burns<'a>(
    conn: &mut crate::Conn,
    account: Id,
    burns: impl IntoIterator<Item = &'a Burn>,
) -> Result<(), TxError> {
    let mut by_grant: std::collections::BTreeMap<Id, u64> = std::collections::BTreeMap::new();
    for burn in burns {
        let sum = by_grant.entry(Id::from(burn.grant)).or_default();
        *sum = sum.saturating_add(burn.amount);
    }
    for (grant, amount) in by_grant {
        let taken = stored(amount)?;
        let updated = diesel::update(
            credit_grants::table
                .filter(credit_grants::id.eq(grant))
                .filter(credit_grants::account_id.eq(account))
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
    Ok(())
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
        let mut conn = self.writer().await?;
        let entry = write_transaction!(conn, async |conn| {
            let entry =
                insert_grant(conn, account, grant, None, audit.occurred_at, entry_of).await?;
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
            let reported: Option<Id> = usage_records::table
                .filter(usage_records::account_id.eq(id))
                .filter(usage_records::idempotency_key.eq(key))
                .select(usage_records::id)
                .first(conn)
                .await
                .optional()?;
            if reported.is_some() {
                return Ok(SpendOutcome::KeyOfUsage);
            }
            let spending = match decide(&grants) {
                Ok(spending) => spending,
                Err(refusal) => return Ok(SpendOutcome::Refused(refusal)),
            };
            take_burns(conn, id, &spending.entry.burns).await?;
            diesel::insert_into(credit_entries::table)
                .values(EntryRow::from_domain(account, &spending.entry)?)
                .execute(conn)
                .await?;
            if let Some(reservation) = &spending.reservation {
                diesel::insert_into(credit_reservations::table)
                    .values(ReservationRow::from_domain(account, reservation)?)
                    .execute(conn)
                    .await?;
            }
            write_audit(conn, &spending.audit).await?;
            Ok::<_, TxError>(SpendOutcome::Spent(spending.entry))
        })
        .await?;
        Ok(outcome)
    }

    async fn reservation(
        &self,
        account: AccountId,
        id: EntryId,
    ) -> Result<Option<Reservation>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<ReservationRow> = credit_reservations::table
            .filter(credit_reservations::id.eq(Id::from(id)))
            .filter(credit_reservations::account_id.eq(Id::from(account)))
            .select(ReservationRow::as_select())
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        row.map(ReservationRow::into_domain).transpose()
    }

    async fn close_reservation(
        &self,
        account: AccountId,
        id: EntryId,
        close: CloseOf<'_>,
    ) -> Result<Option<Result<Closing, CloseRefusal>>, StoreError> {
        let account_id = Id::from(account);
        let mut conn = self.writer().await?;
        let closed = write_transaction!(conn, async |conn| {
            // Held like a spend: a settlement and the expiry job never both give back.
            let grants = held_grants(conn, account_id).await?;
            let row: Option<ReservationRow> = credit_reservations::table
                .filter(credit_reservations::id.eq(Id::from(id)))
                .filter(credit_reservations::account_id.eq(account_id))
                .select(ReservationRow::as_select())
                .first(conn)
                .await
                .optional()?;
            let Some(row) = row else {
                return Ok(None);
            };
            let closing = match close(&grants, &row.into_domain()?) {
                Ok(closing) => closing,
                Err(refusal) => return Ok(Some(Err(refusal))),
            };
            if let Some(release) = &closing.release {
                give_back(conn, account_id, &release.burns).await?;
                diesel::insert_into(credit_entries::table)
                    .values(EntryRow::from_domain(account, release)?)
                    .execute(conn)
                    .await?;
                let after = ReservationRow::from_domain(account, &closing.reservation)?;
                diesel::update(credit_reservations::table.find(after.id))
                    .set((
                        credit_reservations::status.eq(&after.status),
                        credit_reservations::settled_amount.eq(after.settled_amount),
                        credit_reservations::closed_at.eq(after.closed_at),
                    ))
                    .execute(conn)
                    .await?;
            }
            if let Some(audit) = &closing.audit {
                write_audit(conn, audit).await?;
            }
            Ok::<_, TxError>(Some(Ok(closing)))
        })
        .await?;
        Ok(closed)
    }

    async fn due_reservations(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(AccountId, EntryId)>, StoreError> {
        let mut conn = self.conn().await?;
        let due: Vec<(Id, Id)> = credit_reservations::table
            .filter(credit_reservations::status.eq(ReservationStatus::Held.as_str()))
            .filter(credit_reservations::expires_at.le(now))
            .order((
                credit_reservations::expires_at.asc(),
                credit_reservations::id.asc(),
            ))
            .limit(i64::from(limit))
            .select((credit_reservations::account_id, credit_reservations::id))
            .load(&mut conn)
            .await
            .map_err(from_diesel)?;
        Ok(due
            .into_iter()
            .map(|(account, id)| (account.into(), id.into()))
            .collect())
    }

    async fn ledger(
        &self,
        account: AccountId,
        filter: &LedgerFilter,
        page: &PageRequest,
    ) -> Result<Page<LedgerEntry>, StoreError> {
        let mut query = credit_entries::table
            .filter(credit_entries::account_id.eq(Id::from(account)))
            .order((credit_entries::created_at.desc(), credit_entries::id.desc()))
            .limit(i64::from(page.limit()) + 1)
            .select(EntryRow::as_select())
            .into_boxed();
        if let Some(kind) = filter.kind {
            query = query.filter(credit_entries::kind.eq(kind.as_str()));
        }
        if let Some(since) = filter.since {
            query = query.filter(credit_entries::created_at.ge(since));
        }
        if let Some(until) = filter.until {
            query = query.filter(credit_entries::created_at.lt(until));
        }
        if let Some(cursor) = page.after() {
            let id: EntryId = cursor
                .id_as()
                .map_err(|_| StoreError::corrupt("ledger cursor"))?;
            query = query.filter(beyond::<_, crate::types::Uuid, _>(
                "credit_entries.created_at, credit_entries.id",
                Side::Before,
                cursor.at,
                Id::from(id),
            ));
        }
        let mut conn = self.conn().await?;
        let rows: Vec<EntryRow> = query.load(&mut conn).await.map_err(from_diesel)?;
        let entries = rows
            .into_iter()
            .map(EntryRow::into_domain)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page.page_from(entries, LedgerEntry::cursor))
    }
}
