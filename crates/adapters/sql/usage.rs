//! Usage records and their hourly totals (`d2_billing::UsageRepo`), and their rows.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_billing::{
    Budget, Dimension, Earlier, EntryKind, HourTotal, Meter, MeterKind, RecordFilter, RecordOf,
    Recording, Refusal, Totals, UsageRecord, UsageRepo,
};
use d2_kernel::{AccountId, Page, PageRequest, StoreError};
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};

use crate::audit::write_audit;
use crate::credits::{EntryRow, held_grants, read, stored, take_burns};
use crate::error::{TxError, from_diesel};
use crate::errors::corrupt;
use crate::id::Id;
use crate::position::{Side, beyond};
use crate::schema::{billing_budgets, credit_entries, usage_hours, usage_records};

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = usage_records, check_for_backend(crate::Db))]
pub(crate) struct UsageRow {
    pub id: Id,
    pub account_id: Id,
    pub idempotency_key: String,
    pub meter: String,
    pub subject: String,
    pub operation: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub invocations: i64,
    pub credits: i64,
    pub price_version: i32,
    pub credential: String,
    pub recorded_at: DateTime<Utc>,
    pub entry_id: Id,
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = usage_hours, check_for_backend(crate::Db))]
pub(crate) struct HourRow {
    pub account_id: Id,
    pub hour: DateTime<Utc>,
    pub meter: String,
    pub subject: String,
    pub operation: String,
    pub credential: String,
    pub reports: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub invocations: i64,
    pub credits: i64,
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = billing_budgets, check_for_backend(crate::Db))]
pub(crate) struct BudgetRow {
    pub account_id: Id,
    pub meter: String,
    pub subject: String,
    pub monthly_credits: i64,
    pub updated_at: DateTime<Utc>,
}

impl BudgetRow {
    fn into_domain(self) -> Result<Budget, StoreError> {
        Ok(Budget {
            kind: self.meter.parse().map_err(|_| corrupt("budget kind"))?,
            subject: self.subject,
            monthly_credits: read(self.monthly_credits)?,
            updated_at: self.updated_at,
        })
    }
}

impl UsageRow {
    fn from_domain(account: AccountId, record: &UsageRecord) -> Result<Self, StoreError> {
        let (subject, operation, input, output, invocations) = match &record.meter {
            Meter::Model {
                model,
                input_tokens,
                output_tokens,
            } => (model, "", *input_tokens, *output_tokens, 0),
            Meter::Agent {
                agent,
                operation,
                invocations,
            } => (agent, operation.as_str(), 0, 0, *invocations),
        };
        Ok(Self {
            id: Id::from(record.id),
            account_id: Id::from(account),
            idempotency_key: record.idempotency_key.clone(),
            meter: record.meter.kind().as_str().to_owned(),
            subject: subject.clone(),
            operation: operation.to_owned(),
            input_tokens: stored(input)?,
            output_tokens: stored(output)?,
            invocations: stored(invocations)?,
            credits: stored(record.credits)?,
            price_version: i32::try_from(record.price_version)
                .map_err(|_| StoreError::corrupt("a price version beyond the store's range"))?,
            credential: record.credential.clone(),
            recorded_at: record.recorded_at,
            entry_id: Id::from(record.entry_id),
        })
    }

    fn into_domain(self) -> Result<UsageRecord, StoreError> {
        let meter = match self.meter.as_str() {
            "model" => Meter::Model {
                model: self.subject,
                input_tokens: read(self.input_tokens)?,
                output_tokens: read(self.output_tokens)?,
            },
            "agent" => Meter::Agent {
                agent: self.subject,
                operation: self.operation,
                invocations: read(self.invocations)?,
            },
            _ => return Err(corrupt("usage meter")),
        };
        Ok(UsageRecord {
            id: self.id.into(),
            entry_id: self.entry_id.into(),
            idempotency_key: self.idempotency_key,
            meter,
            credits: read(self.credits)?,
            price_version: u32::try_from(self.price_version)
                .map_err(|_| corrupt("usage price version"))?,
            credential: self.credential,
            recorded_at: self.recorded_at,
        })
    }
}

impl HourRow {
    fn from_domain(account: AccountId, total: &HourTotal) -> Result<Self, StoreError> {
        Ok(Self {
            account_id: Id::from(account),
            hour: total.hour,
            meter: total.dimension.kind.clone(),
            subject: total.dimension.subject.clone(),
            operation: total.dimension.operation.clone(),
            credential: total.dimension.credential.clone(),
            reports: stored(total.totals.reports)?,
            input_tokens: stored(total.totals.input_tokens)?,
            output_tokens: stored(total.totals.output_tokens)?,
            invocations: stored(total.totals.invocations)?,
            credits: stored(total.totals.credits)?,
        })
    }

    fn into_domain(self) -> Result<HourTotal, StoreError> {
        Ok(HourTotal {
            hour: self.hour,
            dimension: Dimension {
                kind: self.meter,
                subject: self.subject,
                operation: self.operation,
                credential: self.credential,
            },
            totals: Totals {
                reports: read(self.reports)?,
                input_tokens: read(self.input_tokens)?,
                output_tokens: read(self.output_tokens)?,
                invocations: read(self.invocations)?,
                credits: read(self.credits)?,
            },
        })
    }
}

/// Why a batch's transaction rolls back: a store error, or the batch refused (its new
/// records were stored before it was decided).
enum Rollback {
    Store(TxError),
    Refused(Refusal),
}

impl From<diesel::result::Error> for Rollback {
    fn from(error: diesel::result::Error) -> Self {
        Self::Store(TxError::from(error))
    }
}

impl From<TxError> for Rollback {
    fn from(error: TxError) -> Self {
        Self::Store(error)
    }
}

impl From<StoreError> for Rollback {
    fn from(error: StoreError) -> Self {
        Self::Store(TxError::from(error))
    }
}

/// What `batch`'s keys named before it: the records of the keys `usage_writes` did not
/// store, and the keys of spends or reservations (read with the account held, as spends
/// read theirs).
async fn earlier(
    conn: &mut crate::Conn,
    account: Id,
    batch: &[UsageRow],
    stored: &HashSet<String>,
) -> Result<Earlier, TxError> {
    let taken: Vec<&str> = batch
        .iter()
        .map(|row| row.idempotency_key.as_str())
        .filter(|key| !stored.contains(*key))
        .collect();
    let records = if taken.is_empty() {
        Vec::new()
    } else {
        usage_records::table
            .filter(usage_records::account_id.eq(account))
            .filter(usage_records::idempotency_key.eq_any(&taken))
            .select(UsageRow::as_select())
            .load(conn)
            .await?
            .into_iter()
            .map(UsageRow::into_domain)
            .collect::<Result<_, _>>()?
    };
    let keys: Vec<&str> = batch
        .iter()
        .map(|row| row.idempotency_key.as_str())
        .collect();
    let spent_keys = credit_entries::table
        .filter(credit_entries::account_id.eq(account))
        .filter(credit_entries::kind.ne(EntryKind::Usage.as_str()))
        .filter(credit_entries::idempotency_key.eq_any(&keys))
        .select(credit_entries::idempotency_key)
        .load::<Option<String>>(conn)
        .await?
        .into_iter()
        .flatten()
        .collect();
    Ok(Earlier {
        records,
        spent_keys,
    })
}

#[async_trait]
impl UsageRepo for crate::Store {
    async fn record_usage(
        &self,
        account: AccountId,
        batch: &[UsageRecord],
        record: RecordOf<'_>,
    ) -> Result<Result<Recording, Refusal>, StoreError> {
        let id = Id::from(account);
        let mut rows = batch
            .iter()
            .map(|record| UsageRow::from_domain(account, record))
            .collect::<Result<Vec<_>, _>>()?;
        // In key order: concurrent batches sharing keys wait for each other's in one order,
        // never in a cycle.
        rows.sort_unstable_by(|a, b| a.idempotency_key.cmp(&b.idempotency_key));
        let mut conn = self.writer().await?;
        let recorded = write_transaction!(conn, async |conn| {
            // The records first, before the account is held: the bulk of the batch's writes
            // run beside other batches of the account, not one after another.
            let stored = crate::usage_writes::insert_new(conn, &rows).await?;
            // Held like a spend: the account's charges go one at a time.
            let grants = held_grants(conn, id).await?;
            let earlier = earlier(conn, id, &rows, &stored).await?;
            let recording = record(&grants, &earlier).map_err(Rollback::Refused)?;
            if let Some(entry) = &recording.entry {
                take_burns(conn, id, &entry.burns).await?;
                diesel::insert_into(credit_entries::table)
                    .values(EntryRow::from_domain(account, entry)?)
                    .execute(conn)
                    .await?;
            }
            let hours = recording
                .hours
                .iter()
                .map(|total| HourRow::from_domain(account, total))
                .collect::<Result<Vec<_>, _>>()?;
            crate::usage_writes::add_hours(conn, &hours).await?;
            if let Some(audit) = &recording.audit {
                write_audit(conn, audit).await?;
            }
            Ok::<_, Rollback>(recording)
        })
        .await;
        match recorded {
            Ok(recording) => Ok(Ok(recording)),
            Err(Rollback::Refused(refusal)) => Ok(Err(refusal)),
            Err(Rollback::Store(error)) => Err(error.into()),
        }
    }

    async fn set_budget(
        &self,
        account: AccountId,
        budget: &Budget,
        audit: &d2_audit::AuditEntry,
    ) -> Result<(), StoreError> {
        let row = BudgetRow {
            account_id: Id::from(account),
            meter: budget.kind.as_str().to_owned(),
            subject: budget.subject.clone(),
            monthly_credits: stored(budget.monthly_credits)?,
            updated_at: budget.updated_at,
        };
        let mut conn = self.writer().await?;
        write_transaction!(conn, async |conn| {
            diesel::insert_into(billing_budgets::table)
                .values(&row)
                .on_conflict((
                    billing_budgets::account_id,
                    billing_budgets::meter,
                    billing_budgets::subject,
                ))
                .do_update()
                .set((
                    billing_budgets::monthly_credits.eq(excluded(billing_budgets::monthly_credits)),
                    billing_budgets::updated_at.eq(excluded(billing_budgets::updated_at)),
                ))
                .execute(conn)
                .await?;
            write_audit(conn, audit).await?;
            Ok::<_, TxError>(())
        })
        .await?;
        Ok(())
    }

    async fn delete_budget(
        &self,
        account: AccountId,
        kind: MeterKind,
        subject: &str,
        audit: &d2_audit::AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut conn = self.writer().await?;
        let deleted = write_transaction!(conn, async |conn| {
            let deleted = diesel::delete(
                billing_budgets::table
                    .filter(billing_budgets::account_id.eq(Id::from(account)))
                    .filter(billing_budgets::meter.eq(kind.as_str()))
                    .filter(billing_budgets::subject.eq(subject)),
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

    async fn budgets(&self, account: AccountId) -> Result<Vec<Budget>, StoreError> {
        let mut conn = self.conn().await?;
        let rows: Vec<BudgetRow> = billing_budgets::table
            .filter(billing_budgets::account_id.eq(Id::from(account)))
            .order((billing_budgets::meter.asc(), billing_budgets::subject.asc()))
            .select(BudgetRow::as_select())
            .load(&mut conn)
            .await
            .map_err(from_diesel)?;
        rows.into_iter().map(BudgetRow::into_domain).collect()
    }

    async fn usage_records(
        &self,
        account: AccountId,
        filter: &RecordFilter,
        page: &PageRequest,
    ) -> Result<Page<UsageRecord>, StoreError> {
        let mut query = usage_records::table
            .filter(usage_records::account_id.eq(Id::from(account)))
            .order((usage_records::recorded_at.desc(), usage_records::id.desc()))
            .limit(i64::from(page.limit()) + 1)
            .select(UsageRow::as_select())
            .into_boxed();
        if let Some(kind) = filter.kind {
            query = query.filter(usage_records::meter.eq(kind.as_str()));
        }
        if let Some(subject) = &filter.subject {
            query = query.filter(usage_records::subject.eq(subject.clone()));
        }
        if let Some(credential) = &filter.credential {
            query = query.filter(usage_records::credential.eq(credential.clone()));
        }
        if let Some(since) = filter.since {
            query = query.filter(usage_records::recorded_at.ge(since));
        }
        if let Some(until) = filter.until {
            query = query.filter(usage_records::recorded_at.lt(until));
        }
        if let Some(cursor) = page.after() {
            let id: d2_billing::UsageRecordId = cursor
                .id_as()
                .map_err(|_| StoreError::corrupt("usage cursor"))?;
            query = query.filter(beyond::<_, crate::types::Uuid, _>(
                "usage_records.recorded_at, usage_records.id",
                Side::Before,
                cursor.at,
                Id::from(id),
            ));
        }
        let mut conn = self.conn().await?;
        let rows: Vec<UsageRow> = query.load(&mut conn).await.map_err(from_diesel)?;
        let records = rows
            .into_iter()
            .map(UsageRow::into_domain)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page.page_from(records, UsageRecord::cursor))
    }

    async fn usage_hours(
        &self,
        account: AccountId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<HourTotal>, StoreError> {
        let mut conn = self.conn().await?;
        let rows: Vec<HourRow> = usage_hours::table
            .filter(usage_hours::account_id.eq(Id::from(account)))
            .filter(usage_hours::hour.ge(from))
            .filter(usage_hours::hour.lt(to))
            .order((
                usage_hours::hour.asc(),
                usage_hours::meter.asc(),
                usage_hours::subject.asc(),
                usage_hours::operation.asc(),
                usage_hours::credential.asc(),
            ))
            .select(HourRow::as_select())
            .load(&mut conn)
            .await
            .map_err(from_diesel)?;
        rows.into_iter().map(HourRow::into_domain).collect()
    }
}
