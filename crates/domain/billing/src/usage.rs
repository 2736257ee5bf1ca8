//! Usage: what an account's agents consumed (model tokens, agent invocations), priced from
//! the price table and paid for in credits, report by report.
//!
//! A batch of reports is recorded in one transaction, all or nothing: every report costs
//! the credits its price in force makes of it and is stored with the price version and the
//! credential that reported it; the batch's new reports are paid by one spend from the
//! ledger (one immutable entry for the batch, its burns taken from the grants, which every
//! record names), and added to the account's hourly totals (the day and month windows are
//! sums of hours). A report carries its caller's idempotency key: a retry of it is
//! answered with the first record and charges nothing again; the same key for different
//! usage, or a key of a spend or a reservation, is refused.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, Duration, DurationRound, TimeZone, Utc};
use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::{
    AccessError, AccountId, AuthContext, Clock, Code, Cursor, ErrorCode, Page, PageError,
    PageRequest, Scope, StoreError,
};
use serde_json::json;

use crate::budgets::Budget;
use crate::credits::{CreditGrant, InsufficientCredits, balance, cost, plan_spend};
use crate::ledger::{EntryId, EntryKind, LedgerEntry, MAX_CREDITS, checked_key};
use crate::prices::{MAX_METER_CHARS, PriceTable, PriceVersion};

/// Reports in one batch.
pub const MAX_BATCH: usize = 1000;
/// The most tokens or invocations one report counts.
pub const MAX_QUANTITY: u64 = 1_000_000_000_000;
const TOKENS_PER_PRICE_UNIT: u64 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown kind `{0}`: use model or agent")]
pub struct UnknownMeterKind(pub String);

d2_kernel::named_values! {
    /// What a meter measures, and a budget caps. The names are stored.
    pub enum MeterKind (unknown: UnknownMeterKind) {
        /// One model's tokens.
        Model = "model",
        /// One agent's invocations, every operation.
        Agent = "agent",
    }
}

/// What a report measures.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Meter {
    /// A model's tokens.
    Model {
        model: String,
        input_tokens: u64,
        output_tokens: u64,
    },
    /// An agent's invocations of an operation.
    Agent {
        agent: String,
        operation: String,
        invocations: u64,
    },
}

impl Meter {
    pub fn kind(&self) -> MeterKind {
        match self {
            Meter::Model { .. } => MeterKind::Model,
            Meter::Agent { .. } => MeterKind::Agent,
        }
    }

    /// The model, or the agent.
    pub fn subject(&self) -> &str {
        match self {
            Meter::Model { model, .. } => model,
            Meter::Agent { agent, .. } => agent,
        }
    }
}

/// One report of usage, as a caller sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageReport {
    pub idempotency_key: String,
    pub meter: Meter,
}

d2_kernel::typed_id!(
    /// One usage report recorded.
    UsageRecordId
);

/// A report recorded: what it measured, what it cost, at which price, and who reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    pub id: UsageRecordId,
    /// The ledger entry that paid for it, with the rest of its batch.
    pub entry_id: EntryId,
    pub idempotency_key: String,
    pub meter: Meter,
    pub credits: u64,
    pub price_version: u32,
    /// The credential that reported it, as the audit trail names it (`token:<id>`,
    /// `user:<id>`).
    pub credential: String,
    pub recorded_at: DateTime<Utc>,
}

impl UsageRecord {
    /// Its place in a newest-first history.
    pub fn cursor(&self) -> Cursor {
        Cursor::new(self.recorded_at, self.id.to_string())
    }
}

/// Which usage records a history lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordFilter {
    pub kind: Option<MeterKind>,
    /// Only this model's or agent's records.
    pub subject: Option<String>,
    /// Only what this credential reported.
    pub credential: Option<String>,
    /// From this instant (inclusive).
    pub since: Option<DateTime<Utc>>,
    /// Before this instant.
    pub until: Option<DateTime<Utc>>,
}

impl RecordFilter {
    pub fn matches(&self, record: &UsageRecord) -> bool {
        self.kind.is_none_or(|kind| kind == record.meter.kind())
            && self
                .subject
                .as_ref()
                .is_none_or(|subject| subject == record.meter.subject())
            && self
                .credential
                .as_ref()
                .is_none_or(|credential| *credential == record.credential)
            && self.since.is_none_or(|since| record.recorded_at >= since)
            && self.until.is_none_or(|until| record.recorded_at < until)
    }
}

/// What one hour of an account's usage came to, for one model or agent operation and one
/// credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourTotal {
    pub hour: DateTime<Utc>,
    pub dimension: Dimension,
    pub totals: Totals,
}

/// What usage is summed by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dimension {
    /// `model` or `agent`.
    pub kind: String,
    /// The model, or the agent.
    pub subject: String,
    /// The agent's operation; empty for a model.
    pub operation: String,
    pub credential: String,
}

/// Sums of usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub reports: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub invocations: u64,
    pub credits: u64,
}

impl Totals {
    pub(crate) fn add(&mut self, other: &Totals) {
        self.reports = self.reports.saturating_add(other.reports);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.invocations = self.invocations.saturating_add(other.invocations);
        self.credits = self.credits.saturating_add(other.credits);
    }

    fn of(record: &UsageRecord) -> Self {
        let (input_tokens, output_tokens, invocations) = match &record.meter {
            Meter::Model {
                input_tokens,
                output_tokens,
                ..
            } => (*input_tokens, *output_tokens, 0),
            Meter::Agent { invocations, .. } => (0, 0, *invocations),
        };
        Self {
            reports: 1,
            input_tokens,
            output_tokens,
            invocations,
            credits: record.credits,
        }
    }
}

impl Dimension {
    fn of(record: &UsageRecord) -> Self {
        let (subject, operation) = match &record.meter {
            Meter::Model { model, .. } => (model.clone(), String::new()),
            Meter::Agent {
                agent, operation, ..
            } => (agent.clone(), operation.clone()),
        };
        Self {
            kind: record.meter.kind().as_str().to_owned(),
            subject,
            operation,
            credential: record.credential.clone(),
        }
    }
}

/// The start of the hour `at` is in.
pub fn hour_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(Duration::hours(1)).unwrap_or(at)
}

/// `records` summed by hour and dimension.
pub fn hour_totals(records: &[UsageRecord]) -> Vec<HourTotal> {
    let mut sums: BTreeMap<(DateTime<Utc>, Dimension), Totals> = BTreeMap::new();
    for record in records {
        sums.entry((hour_of(record.recorded_at), Dimension::of(record)))
            .or_default()
            .add(&Totals::of(record));
    }
    sums.into_iter()
        .map(|((hour, dimension), totals)| HourTotal {
            hour,
            dimension,
            totals,
        })
        .collect()
}

/// What a batch's keys named before it.
#[derive(Debug, Clone, Default)]
pub struct Earlier {
    /// The records reported before under the batch's keys.
    pub records: Vec<UsageRecord>,
    /// The batch's keys that name a spend or a reservation.
    pub spent_keys: Vec<String>,
}

/// One report of a batch, recorded now or before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub record: UsageRecord,
    /// A retry of a report recorded before: its first record, nothing charged again.
    pub replayed: bool,
}

/// What recording a batch writes and answers.
#[derive(Debug, Clone)]
pub struct Recording {
    /// Every report, in the batch's order.
    pub reports: Vec<Recorded>,
    /// The one ledger entry paying for the batch's new reports; `None` when every report
    /// was a retry.
    pub entry: Option<LedgerEntry>,
    /// The new records' hourly totals, to add to the stored ones.
    pub hours: Vec<HourTotal>,
    /// `None` when every report was a retry.
    pub audit: Option<AuditEntry>,
    /// The credits that may be spent once the batch is recorded.
    pub balance: u64,
}

/// Why a batch is refused, decided inside its transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Insufficient(InsufficientCredits),
    /// A key used before for other usage (or for a spend), named.
    KeyReused(String),
}

/// Decides a batch from the account's grants and what its keys named before.
pub type RecordOf<'a> =
    &'a (dyn Fn(&[CreditGrant], &Earlier) -> Result<Recording, Refusal> + Send + Sync);

/// Storage of usage records and their hourly totals.
#[async_trait]
pub trait UsageRepo: Send + Sync + 'static {
    /// In one transaction: stores each record of `batch` whose key names no record yet
    /// (finding the records the others name: `earlier.records`), then, with the account
    /// held as a spend holds it, finds which keys name a spend or a reservation
    /// (`earlier.spent_keys`) and calls `record(grants, &earlier)`. When it records: the
    /// entry's burns taken from their grants, the entry written, the hourly totals added
    /// and the audit record written; when it refuses, nothing is written. The records
    /// `record` answers as new are exactly those of `batch` whose keys `earlier.records`
    /// does not name. Concurrent batches sharing a key: one stores it, the other finds it.
    async fn record_usage(
        &self,
        account: AccountId,
        batch: &[UsageRecord],
        record: RecordOf<'_>,
    ) -> Result<Result<Recording, Refusal>, StoreError>;

    /// Sets the account's budget of `budget.kind` and `budget.subject` (made, or replaced)
    /// and writes the audit record, in one transaction.
    async fn set_budget(
        &self,
        account: AccountId,
        budget: &Budget,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;

    /// Deletes the account's budget of `kind` and `subject` and writes the audit record, in
    /// one transaction; `false` (nothing written) when there is none.
    async fn delete_budget(
        &self,
        account: AccountId,
        kind: MeterKind,
        subject: &str,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError>;

    /// The account's budgets, by kind then subject.
    async fn budgets(&self, account: AccountId) -> Result<Vec<Budget>, StoreError>;

    /// A page of the account's usage records that `filter` matches, newest first (by
    /// time, then id).
    async fn usage_records(
        &self,
        account: AccountId,
        filter: &RecordFilter,
        page: &PageRequest,
    ) -> Result<Page<UsageRecord>, StoreError>;

    /// The account's hourly totals of the hours in `[from, to)`, oldest first.
    async fn usage_hours(
        &self,
        account: AccountId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<HourTotal>, StoreError>;
}

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("{0}")]
    Invalid(String),
    #[error("model `{0}` has no price in force")]
    UnknownModel(String),
    #[error("operation `{0}` has no price in force")]
    UnknownOperation(String),
    #[error(transparent)]
    Insufficient(#[from] InsufficientCredits),
    #[error("idempotency key `{0}` was used for other usage or a spend")]
    KeyReused(String),
    #[error(transparent)]
    Page(#[from] PageError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for UsageError {
    fn code(&self) -> Code {
        match self {
            UsageError::Access(error) => error.code(),
            UsageError::Invalid(_) => Code::InvalidUsage,
            UsageError::UnknownModel(_) => Code::UnknownModel,
            UsageError::UnknownOperation(_) => Code::UnknownOperation,
            UsageError::Insufficient(_) => Code::InsufficientCredits,
            UsageError::KeyReused(_) => Code::IdempotencyKeyReused,
            UsageError::Page(error) => error.code(),
            UsageError::Store(error) => error.code(),
        }
    }
}

impl From<Refusal> for UsageError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Insufficient(refusal) => UsageError::Insufficient(refusal),
            Refusal::KeyReused(key) => UsageError::KeyReused(key),
        }
    }
}

/// The windows usage is summed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Hour,
    Day,
    Month,
}

impl Window {
    /// The start of the window `at` is in (UTC).
    pub fn start_of(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let day = at.duration_trunc(Duration::days(1)).unwrap_or(at);
        match self {
            Window::Hour => hour_of(at),
            Window::Day => day,
            Window::Month => Utc
                .with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0)
                .single()
                .unwrap_or(day),
        }
    }

    /// The longest span one query may cover.
    fn longest(self) -> Duration {
        match self {
            Window::Hour => Duration::days(31),
            Window::Day => Duration::days(400),
            Window::Month => Duration::days(3 * 366),
        }
    }

    /// The span asked when a query names no start.
    fn default_span(self) -> Duration {
        match self {
            Window::Hour => Duration::hours(48),
            Window::Day => Duration::days(30),
            Window::Month => Duration::days(365),
        }
    }
}

/// Which usage a query sums.
#[derive(Debug, Clone)]
pub struct UsageQuery {
    pub window: Window,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Only this model's or agent's usage.
    pub subject: Option<String>,
    /// Only what this credential reported.
    pub credential: Option<String>,
}

/// One window of usage: its totals, and how they divide by dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub start: DateTime<Utc>,
    pub totals: Totals,
    /// By model or agent operation and credential, in dimension order.
    pub by: Vec<(Dimension, Totals)>,
}

/// An account's usage over a span, window by window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageWindows {
    pub window: Window,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub totals: Totals,
    /// Windows with usage, oldest first.
    pub buckets: Vec<Bucket>,
}

/// `hours` summed into `window`s.
pub fn windows_of(hours: &[HourTotal], window: Window) -> Vec<Bucket> {
    let mut sums: BTreeMap<DateTime<Utc>, BTreeMap<Dimension, Totals>> = BTreeMap::new();
    for hour in hours {
        sums.entry(window.start_of(hour.hour))
            .or_default()
            .entry(hour.dimension.clone())
            .or_default()
            .add(&hour.totals);
    }
    sums.into_iter()
        .map(|(start, by)| {
            let mut totals = Totals::default();
            for sum in by.values() {
                totals.add(sum);
            }
            Bucket {
                start,
                totals,
                by: by.into_iter().collect(),
            }
        })
        .collect()
}

/// Records usage and answers what it came to.
pub struct UsageMeter {
    repo: Arc<dyn UsageRepo>,
    prices: Arc<PriceTable>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for UsageMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageMeter").finish_non_exhaustive()
    }
}

pub(crate) fn checked_name(field: &str, name: &str) -> Result<(), UsageError> {
    if name.is_empty()
        || name.chars().count() > MAX_METER_CHARS
        || name.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(UsageError::Invalid(format!(
            "{field}: 1 to 128 characters, no spaces or control characters"
        )));
    }
    Ok(())
}

fn checked_quantity(field: &str, quantity: u64) -> Result<(), UsageError> {
    if quantity > MAX_QUANTITY {
        return Err(UsageError::Invalid(format!("{field}: at most 10^12")));
    }
    Ok(())
}

impl UsageMeter {
    pub fn new(repo: Arc<dyn UsageRepo>, prices: Arc<PriceTable>, clock: Arc<dyn Clock>) -> Self {
        Self {
            repo,
            prices,
            clock,
        }
    }

    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }

    /// What `meter` costs at `at`, and the price version it is priced at.
    fn price(&self, meter: &Meter, at: DateTime<Utc>) -> Result<(u64, PriceVersion), UsageError> {
        let overflow = || UsageError::Invalid("usage: its cost is beyond 10^12 credits".to_owned());
        let (credits, price) = match meter {
            Meter::Model {
                model,
                input_tokens,
                output_tokens,
            } => {
                let price = self
                    .prices
                    .model(model, at)
                    .ok_or_else(|| UsageError::UnknownModel(model.clone()))?;
                // Input and output are summed in millionths of a credit, then rounded up
                // once, so a report never pays two roundings.
                let millionths = input_tokens
                    .checked_mul(price.input_per_million)
                    .and_then(|input| {
                        output_tokens
                            .checked_mul(price.output_per_million)
                            .and_then(|output| input.checked_add(output))
                    })
                    .ok_or_else(overflow)?;
                (cost(millionths, 1, TOKENS_PER_PRICE_UNIT), price)
            }
            Meter::Agent {
                operation,
                invocations,
                ..
            } => {
                let price = self
                    .prices
                    .operation(operation, at)
                    .ok_or_else(|| UsageError::UnknownOperation(operation.clone()))?;
                (cost(*invocations, price.per_invocation, 1), price)
            }
        };
        let credits = credits
            .filter(|credits| *credits <= MAX_CREDITS)
            .ok_or_else(overflow)?;
        Ok((credits, price))
    }

    /// What `meter` would cost at `at`, and the price version, once its quantities and
    /// names are checked.
    pub fn quote(
        &self,
        meter: &Meter,
        at: DateTime<Utc>,
    ) -> Result<(u64, PriceVersion), UsageError> {
        Self::checked_meter(meter)?;
        self.price(meter, at)
    }

    fn checked(report: &UsageReport) -> Result<(), UsageError> {
        checked_key(&report.idempotency_key)
            .map_err(|problem| UsageError::Invalid(problem.to_owned()))?;
        Self::checked_meter(&report.meter)
    }

    fn checked_meter(meter: &Meter) -> Result<(), UsageError> {
        match meter {
            Meter::Model {
                model,
                input_tokens,
                output_tokens,
            } => {
                checked_name("model", model)?;
                checked_quantity("input_tokens", *input_tokens)?;
                checked_quantity("output_tokens", *output_tokens)?;
                if *input_tokens == 0 && *output_tokens == 0 {
                    return Err(UsageError::Invalid(
                        "a model report counts input or output tokens".to_owned(),
                    ));
                }
            }
            Meter::Agent {
                agent,
                operation,
                invocations,
            } => {
                checked_name("agent", agent)?;
                checked_name("operation", operation)?;
                checked_quantity("invocations", *invocations)?;
                if *invocations == 0 {
                    return Err(UsageError::Invalid(
                        "an agent report counts at least one invocation".to_owned(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Records a batch of reports of the caller's account (scope `usage.report`), all or
    /// nothing; answers each report's record in the batch's order (a retry's the first
    /// one's, its entry `None`) and the balance after. Audited once per batch as
    /// `billing.usage_record`.
    pub async fn record(
        &self,
        ctx: &AuthContext,
        reports: Vec<UsageReport>,
    ) -> Result<Recording, UsageError> {
        ctx.require(Scope::UsageReport)?;
        if reports.is_empty() || reports.len() > MAX_BATCH {
            return Err(UsageError::Invalid(
                "reports: 1 to 1000 in one batch".to_owned(),
            ));
        }
        let mut keys = HashSet::new();
        for report in &reports {
            Self::checked(report)?;
            if !keys.insert(report.idempotency_key.as_str()) {
                return Err(UsageError::Invalid(format!(
                    "idempotency_key `{}` appears twice in the batch",
                    report.idempotency_key.escape_debug()
                )));
            }
        }
        let now = self.clock.now();
        let credential = ctx.actor();
        let entry_id = EntryId::random();
        let batch = reports
            .into_iter()
            .map(|report| {
                let (credits, price) = self.price(&report.meter, now)?;
                Ok(UsageRecord {
                    id: UsageRecordId::random(),
                    entry_id,
                    idempotency_key: report.idempotency_key,
                    meter: report.meter,
                    credits,
                    price_version: price.version,
                    credential: credential.clone(),
                    recorded_at: now,
                })
            })
            .collect::<Result<Vec<_>, UsageError>>()?;
        let decide = |grants: &[CreditGrant], earlier: &Earlier| {
            if let Some(key) = earlier.spent_keys.first() {
                return Err(Refusal::KeyReused(key.clone()));
            }
            let first: HashMap<&str, &UsageRecord> = earlier
                .records
                .iter()
                .map(|record| (record.idempotency_key.as_str(), record))
                .collect();
            let mut answers = Vec::with_capacity(batch.len());
            let mut new_records = Vec::new();
            for record in &batch {
                match first.get(record.idempotency_key.as_str()) {
                    Some(first) if first.meter == record.meter => answers.push(Recorded {
                        record: (*first).clone(),
                        replayed: true,
                    }),
                    Some(_) => return Err(Refusal::KeyReused(record.idempotency_key.clone())),
                    None => {
                        new_records.push(record.clone());
                        answers.push(Recorded {
                            record: record.clone(),
                            replayed: false,
                        });
                    }
                }
            }
            if new_records.is_empty() {
                return Ok(Recording {
                    reports: answers,
                    entry: None,
                    hours: Vec::new(),
                    audit: None,
                    balance: balance(grants, now),
                });
            }
            let charged = new_records
                .iter()
                .fold(0_u64, |sum, record| sum.saturating_add(record.credits));
            let burns = plan_spend(grants, charged, now).map_err(Refusal::Insufficient)?;
            let mut after = grants.to_vec();
            for burn in &burns {
                if let Some(grant) = after.iter_mut().find(|grant| grant.id == burn.grant) {
                    grant.remaining = grant.remaining.saturating_sub(burn.amount);
                }
            }
            let balance_after = balance(&after, now);
            let entry = LedgerEntry {
                id: entry_id,
                kind: EntryKind::Usage,
                amount: charged,
                balance_after,
                grant_id: None,
                burns,
                idempotency_key: None,
                reason: Some(format!("{} usage reports", new_records.len())),
                actor: credential.clone(),
                created_at: now,
            };
            let audit = AuditEntry::by(ctx, AuditAction::BillingUsageRecord, now).metadata(json!({
                "entry_id": entry_id,
                "reports": new_records.len(),
                "credits": charged,
                "balance_after": balance_after,
            }));
            Ok(Recording {
                reports: answers,
                entry: Some(entry),
                hours: hour_totals(&new_records),
                audit: Some(audit),
                balance: balance_after,
            })
        };
        Ok(self
            .repo
            .record_usage(ctx.account_id, &batch, &decide)
            .await??)
    }

    /// The caller's account's usage records (admin), newest first, a page at a time.
    pub async fn records(
        &self,
        ctx: &AuthContext,
        filter: &RecordFilter,
        page: &PageRequest,
    ) -> Result<Page<UsageRecord>, UsageError> {
        ctx.require(Scope::Admin)?;
        if let (Some(since), Some(until)) = (filter.since, filter.until)
            && since >= until
        {
            return Err(UsageError::Invalid(
                "since must come before until".to_owned(),
            ));
        }
        if let Some(cursor) = page.after() {
            cursor.id_as::<EntryId>()?;
        }
        Ok(self
            .repo
            .usage_records(ctx.account_id, filter, page)
            .await?)
    }

    /// The caller's account's usage (admin) over a span, window by window.
    pub async fn usage(
        &self,
        ctx: &AuthContext,
        query: UsageQuery,
    ) -> Result<UsageWindows, UsageError> {
        ctx.require(Scope::Admin)?;
        let window = query.window;
        let to = query.to.unwrap_or_else(|| self.clock.now());
        let from = window.start_of(
            query
                .from
                .unwrap_or_else(|| d2_kernel::earlier(to, window.default_span())),
        );
        if from >= to || to.signed_duration_since(from) > window.longest() {
            return Err(UsageError::Invalid(format!(
                "from must come before to, at most {} days apart for this window",
                window.longest().num_days()
            )));
        }
        let hours: Vec<HourTotal> = self
            .repo
            .usage_hours(ctx.account_id, from, to)
            .await?
            .into_iter()
            .filter(|hour| {
                query
                    .subject
                    .as_ref()
                    .is_none_or(|subject| *subject == hour.dimension.subject)
                    && query
                        .credential
                        .as_ref()
                        .is_none_or(|credential| *credential == hour.dimension.credential)
            })
            .collect();
        let buckets = windows_of(&hours, window);
        let mut totals = Totals::default();
        for bucket in &buckets {
            totals.add(&bucket.totals);
        }
        Ok(UsageWindows {
            window,
            from,
            to,
            totals,
            buckets,
        })
    }
}
