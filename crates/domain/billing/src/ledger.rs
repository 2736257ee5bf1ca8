//! The credits ledger: grants added, spends burned down from them, every movement an
//! immutable entry with its reason, and spends made idempotent by their caller's key.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::{
    AccessError, AccountId, AuthContext, Clock, Code, Cursor, ErrorCode, Page, PageError,
    PageRequest, Scope, StoreError,
};
use serde_json::json;

use crate::credits::{
    Burn, CreditGrant, GrantId, GrantSource, InsufficientCredits, plan_release, plan_spend,
};
use crate::reservations::{CloseOf, CloseRefusal, Closing, Reservation, ReservationStatus};

d2_kernel::typed_id!(
    /// One movement of the credits ledger.
    EntryId
);

/// The most credits one grant or spend moves (the stores keep amounts as signed 64-bit
/// integers; this leaves room for any balance).
pub const MAX_CREDITS: u64 = 1_000_000_000_000;

/// The longest idempotency key and reason kept.
const MAX_KEY_CHARS: usize = 255;
const MAX_REASON_CHARS: usize = 500;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown ledger entry kind `{0}`")]
pub struct UnknownEntryKind(pub String);

d2_kernel::named_values! {
    /// What a ledger entry records. The names are stored.
    pub enum EntryKind (unknown: UnknownEntryKind) {
        /// Credits granted.
        Grant = "grant",
        /// Credits spent.
        Spend = "spend",
        /// Credits a usage report cost.
        Usage = "usage",
        /// Credits held by a reservation.
        Reserve = "reserve",
        /// Credits a reservation gave back (settled for less, or expired).
        Release = "release",
    }
}

impl EntryKind {
    /// The kinds that take credits from the balance.
    pub const SPENDING: [EntryKind; 3] = [EntryKind::Spend, EntryKind::Usage, EntryKind::Reserve];

    /// Whether it takes credits from the balance.
    pub fn spends(self) -> bool {
        Self::SPENDING.contains(&self)
    }
}

/// One movement of an account's credits. Never changed once written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub id: EntryId,
    pub kind: EntryKind,
    pub amount: u64,
    /// The spendable balance right after it.
    pub balance_after: u64,
    /// The grant a grant entry made.
    pub grant_id: Option<GrantId>,
    /// What a spend took from each grant.
    pub burns: Vec<Burn>,
    /// The caller's key of a spend: a retry with it is answered with this entry.
    pub idempotency_key: Option<String>,
    pub reason: Option<String>,
    /// The caller, as the audit trail names it.
    pub actor: String,
    pub created_at: DateTime<Utc>,
}

/// Which ledger entries a history lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerFilter {
    pub kind: Option<EntryKind>,
    /// From this instant (inclusive).
    pub since: Option<DateTime<Utc>>,
    /// Before this instant.
    pub until: Option<DateTime<Utc>>,
}

impl LedgerFilter {
    pub fn matches(&self, entry: &LedgerEntry) -> bool {
        self.kind.is_none_or(|kind| kind == entry.kind)
            && self.since.is_none_or(|since| entry.created_at >= since)
            && self.until.is_none_or(|until| entry.created_at < until)
    }
}

impl LedgerEntry {
    /// Its place in a newest-first history.
    pub fn cursor(&self) -> Cursor {
        Cursor::new(self.created_at, self.id.to_string())
    }
}

/// What a spend came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpendOutcome {
    Spent(LedgerEntry),
    /// The key was used before, for the same spend: its entry, nothing spent again.
    Replayed(LedgerEntry),
    /// The key names a usage report: nothing spent.
    KeyOfUsage,
    Refused(InsufficientCredits),
}

/// What a spend writes: its entry, a reserve's reservation, the audit record.
#[derive(Debug, Clone)]
pub struct Spending {
    pub entry: LedgerEntry,
    pub reservation: Option<Reservation>,
    pub audit: AuditEntry,
}

/// Decides a spend from the account's grants: what it writes, or the refusal.
pub type SpendOf<'a> =
    &'a (dyn Fn(&[CreditGrant]) -> Result<Spending, InsufficientCredits> + Send + Sync);

/// Makes a grant's ledger entry from the account's grants, the new one included.
pub type EntryOf<'a> = &'a (dyn Fn(&[CreditGrant]) -> LedgerEntry + Send + Sync);

/// Storage of credit grants and the ledger.
#[async_trait]
pub trait CreditRepo: Send + Sync + 'static {
    /// In one transaction, with the account held as a spend holds it: stores a new grant,
    /// its ledger entry `entry_of(grants)` (the account's grants, the new one last) and
    /// the audit record. Answers the entry.
    async fn add_grant(
        &self,
        account: AccountId,
        grant: &CreditGrant,
        entry_of: EntryOf<'_>,
        audit: &AuditEntry,
    ) -> Result<LedgerEntry, StoreError>;

    /// The account's grants, oldest first.
    async fn credit_grants(&self, account: AccountId) -> Result<Vec<CreditGrant>, StoreError>;

    /// In one transaction, with the account held so that its spends go one at a time:
    /// the entry made under `key` (of any kind), if any, is answered `Replayed`, and a usage
    /// record under `key` `KeyOfUsage`, and nothing else is done; else `decide(grants)`
    /// and, when it spends, each burn taken from its grant, the entry, a reserve's
    /// reservation and the audit record written. Concurrent spends never overdraw a grant.
    async fn spend(
        &self,
        account: AccountId,
        key: &str,
        decide: SpendOf<'_>,
    ) -> Result<SpendOutcome, StoreError>;

    /// A reservation of the account.
    async fn reservation(
        &self,
        account: AccountId,
        id: EntryId,
    ) -> Result<Option<Reservation>, StoreError>;

    /// In one transaction, with the account held as a spend holds it: the reservation
    /// (`None` when the account has none of that id), then `close(grants, reservation)`;
    /// when it closes, its release's burns given back to their grants, the release entry,
    /// the reservation as closed and the audit record written.
    async fn close_reservation(
        &self,
        account: AccountId,
        id: EntryId,
        close: CloseOf<'_>,
    ) -> Result<Option<Result<Closing, CloseRefusal>>, StoreError>;

    /// Up to `limit` reservations still held at their expiry (`expires_at <= now`), the
    /// earliest first, of every account.
    async fn due_reservations(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(AccountId, EntryId)>, StoreError>;

    /// A page of the account's ledger entries that `filter` matches, newest first (by
    /// time, then id).
    async fn ledger(
        &self,
        account: AccountId,
        filter: &LedgerFilter,
        page: &PageRequest,
    ) -> Result<Page<LedgerEntry>, StoreError>;
}

#[derive(Debug, thiserror::Error)]
pub enum CreditError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("{0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Insufficient(#[from] InsufficientCredits),
    #[error(
        "this idempotency key was used for another spend (amount or reason differ) or for usage"
    )]
    KeyReused,
    #[error("no such reservation")]
    ReservationNotFound,
    #[error("the reservation expired: its credits were given back")]
    ReservationExpired,
    #[error("the reservation was settled before, for {0} credits")]
    ReservationSettled(u64),
    #[error("amount: at most the {0} credits reserved")]
    AboveReservation(u64),
    #[error(transparent)]
    Page(#[from] PageError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for CreditError {
    fn code(&self) -> Code {
        match self {
            CreditError::Access(error) => error.code(),
            CreditError::Invalid(_) => Code::InvalidCredits,
            CreditError::Insufficient(_) => Code::InsufficientCredits,
            CreditError::KeyReused => Code::IdempotencyKeyReused,
            CreditError::ReservationNotFound => Code::ReservationNotFound,
            CreditError::ReservationExpired => Code::ReservationExpired,
            CreditError::ReservationSettled(_) => Code::ReservationSettled,
            CreditError::AboveReservation(_) => Code::InvalidCredits,
            CreditError::Page(error) => error.code(),
            CreditError::Store(error) => error.code(),
        }
    }
}

/// A grant an admin asks for.
#[derive(Debug, Clone)]
pub struct GrantRequest {
    pub source: GrantSource,
    pub amount: u64,
    pub priority: u8,
    pub effective_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
}

/// A spend made, or the first one again for a retry of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spent {
    pub entry: LedgerEntry,
    /// A retry: nothing was spent again.
    pub replayed: bool,
}

/// A spend a caller reports.
#[derive(Debug, Clone)]
pub struct SpendRequest {
    pub amount: u64,
    pub idempotency_key: String,
    pub reason: Option<String>,
}

/// An account's credits: the balance, its grants and its latest movements.
#[derive(Debug, Clone)]
pub struct CreditsOverview {
    pub balance: u64,
    pub grants: Vec<CreditGrant>,
    pub entries: Vec<LedgerEntry>,
}

pub struct CreditLedger {
    repo: Arc<dyn CreditRepo>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for CreditLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreditLedger").finish_non_exhaustive()
    }
}

/// An idempotency key is 1 to 255 characters, none a control character.
pub(crate) fn checked_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() || key.chars().count() > MAX_KEY_CHARS || key.chars().any(char::is_control) {
        return Err("idempotency_key: 1 to 255 characters, no control characters");
    }
    Ok(())
}

fn checked_reason(reason: Option<&str>) -> Result<(), CreditError> {
    match reason {
        Some(text)
            if text.chars().count() > MAX_REASON_CHARS || text.chars().any(char::is_control) =>
        {
            Err(CreditError::Invalid(
                "reason: at most 500 characters, no control characters",
            ))
        }
        _ => Ok(()),
    }
}

impl CreditLedger {
    pub fn new(repo: Arc<dyn CreditRepo>, clock: Arc<dyn Clock>) -> Self {
        Self { repo, clock }
    }

    /// Grants credits to the caller's account (admin). Audited `billing.credits_add`.
    pub async fn add(
        &self,
        ctx: &AuthContext,
        request: GrantRequest,
    ) -> Result<(CreditGrant, LedgerEntry), CreditError> {
        ctx.require(Scope::Admin)?;
        if !(1..=MAX_CREDITS).contains(&request.amount) {
            return Err(CreditError::Invalid("amount: 1 to 10^12 credits"));
        }
        checked_reason(request.reason.as_deref())?;
        let now = self.clock.now();
        let effective_at = request.effective_at.unwrap_or(now);
        if request
            .expires_at
            .is_some_and(|expiry| expiry <= effective_at)
        {
            return Err(CreditError::Invalid(
                "expires_at: must come after the grant takes effect",
            ));
        }
        let grant = CreditGrant {
            id: GrantId::random(),
            source: request.source,
            amount: request.amount,
            remaining: request.amount,
            priority: request.priority,
            effective_at,
            expires_at: request.expires_at,
        };
        let entry_of = |grants: &[CreditGrant]| LedgerEntry {
            id: EntryId::random(),
            kind: EntryKind::Grant,
            amount: grant.amount,
            balance_after: crate::credits::balance(grants, now),
            grant_id: Some(grant.id),
            burns: Vec::new(),
            idempotency_key: None,
            reason: request.reason.clone(),
            actor: ctx.actor(),
            created_at: now,
        };
        let audit = AuditEntry::by(ctx, AuditAction::BillingCreditsAdd, now)
            .target("credit_grant", grant.id)
            .metadata(json!({
                "source": grant.source.as_str(),
                "amount": grant.amount,
                "priority": grant.priority,
                "effective_at": grant.effective_at,
                "expires_at": grant.expires_at,
                "reason": request.reason,
            }));
        let entry = self
            .repo
            .add_grant(ctx.account_id, &grant, &entry_of, &audit)
            .await?;
        Ok((grant, entry))
    }

    /// Spends credits of the caller's account (admin), burning grants down in order; a
    /// retry with the same key and the same spend answers the first entry.
    pub async fn spend(
        &self,
        ctx: &AuthContext,
        request: SpendRequest,
    ) -> Result<Spent, CreditError> {
        ctx.require(Scope::Admin)?;
        self.take(ctx, &request, None).await
    }

    /// Reserves credits of the caller's account (scope `usage.report`) until `expires_in`
    /// from now: taken from the grants like a spend, until settled or expired. A retry
    /// with the same key and amount answers the first reservation.
    pub async fn reserve(
        &self,
        ctx: &AuthContext,
        request: SpendRequest,
        expires_in: Duration,
    ) -> Result<(Reservation, Spent), CreditError> {
        ctx.require(Scope::UsageReport)?;
        if !(MIN_RESERVATION..=MAX_RESERVATION).contains(&expires_in) {
            return Err(CreditError::Invalid(
                "expires_in_seconds: 10 seconds to 7 days",
            ));
        }
        let spent = self.take(ctx, &request, Some(expires_in)).await?;
        let reservation = self
            .repo
            .reservation(ctx.account_id, spent.entry.id)
            .await?
            .ok_or_else(|| StoreError::corrupt("a reserve entry without its reservation"))?;
        Ok((reservation, spent))
    }

    /// A spend (or, held until `hold`, a reservation) of `request`, idempotent by its key.
    async fn take(
        &self,
        ctx: &AuthContext,
        request: &SpendRequest,
        hold: Option<Duration>,
    ) -> Result<Spent, CreditError> {
        if !(1..=MAX_CREDITS).contains(&request.amount) {
            return Err(CreditError::Invalid("amount: 1 to 10^12 credits"));
        }
        let key = &request.idempotency_key;
        checked_key(key).map_err(CreditError::Invalid)?;
        checked_reason(request.reason.as_deref())?;
        let now = self.clock.now();
        let (kind, action) = match hold {
            None => (EntryKind::Spend, AuditAction::BillingCreditsSpend),
            Some(_) => (EntryKind::Reserve, AuditAction::BillingCreditsReserve),
        };
        let expires_at = hold.map(|hold| d2_kernel::later(now, hold));
        let decide = |grants: &[CreditGrant]| {
            let burns = plan_spend(grants, request.amount, now)?;
            let balance_after = crate::credits::balance(grants, now).saturating_sub(request.amount);
            let entry = LedgerEntry {
                id: EntryId::random(),
                kind,
                amount: request.amount,
                balance_after,
                grant_id: None,
                burns,
                idempotency_key: Some(key.clone()),
                reason: request.reason.clone(),
                actor: ctx.actor(),
                created_at: now,
            };
            let reservation = expires_at.map(|expires_at| Reservation {
                id: entry.id,
                amount: entry.amount,
                burns: entry.burns.clone(),
                status: ReservationStatus::Held,
                settled_amount: None,
                expires_at,
                created_at: now,
                closed_at: None,
            });
            let audit = AuditEntry::by(ctx, action, now)
                .target("credit_entry", entry.id)
                .metadata(json!({
                    "amount": entry.amount,
                    "balance_after": entry.balance_after,
                    "idempotency_key": key,
                    "reason": entry.reason,
                    "expires_at": expires_at,
                    "burns": burns_json(&entry.burns),
                }));
            Ok(Spending {
                entry,
                reservation,
                audit,
            })
        };
        let outcome = self.repo.spend(ctx.account_id, key, &decide).await?;
        match outcome {
            SpendOutcome::Spent(entry) => Ok(Spent {
                entry,
                replayed: false,
            }),
            SpendOutcome::Replayed(entry)
                if entry.kind == kind
                    && entry.amount == request.amount
                    && entry.reason == request.reason =>
            {
                Ok(Spent {
                    entry,
                    replayed: true,
                })
            }
            SpendOutcome::Replayed(_) | SpendOutcome::KeyOfUsage => Err(CreditError::KeyReused),
            SpendOutcome::Refused(refusal) => Err(refusal.into()),
        }
    }

    /// Settles a reservation of the caller's account (scope `usage.report`) for what the
    /// work cost, `amount` (at most what was reserved): the rest goes back to the grants it
    /// was taken from, the last taken first. A retry for the same amount answers the same
    /// settlement and writes nothing; audited as `billing.credits_settle`.
    pub async fn settle(
        &self,
        ctx: &AuthContext,
        id: EntryId,
        amount: u64,
    ) -> Result<(Reservation, Option<LedgerEntry>), CreditError> {
        ctx.require(Scope::UsageReport)?;
        if amount > MAX_CREDITS {
            return Err(CreditError::Invalid("amount: 0 to 10^12 credits"));
        }
        let now = self.clock.now();
        let close = |grants: &[CreditGrant], held: &Reservation| {
            match (held.status, held.settled_amount) {
                (ReservationStatus::Settled, Some(settled)) if settled == amount => {
                    return Ok(Closing {
                        reservation: held.clone(),
                        release: None,
                        audit: None,
                    });
                }
                (ReservationStatus::Settled, settled) => {
                    return Err(CloseRefusal::Settled {
                        amount: settled.unwrap_or_default(),
                    });
                }
                (ReservationStatus::Expired, _) => return Err(CloseRefusal::Expired),
                (ReservationStatus::Held, _) if held.expires_at <= now => {
                    return Err(CloseRefusal::Expired);
                }
                (ReservationStatus::Held, _) => {}
            }
            let back = plan_release(&held.burns, amount).ok_or(CloseRefusal::AboveReservation {
                reserved: held.amount,
            })?;
            let (reservation, release) = released(
                grants,
                held,
                back,
                ReservationStatus::Settled,
                Some(amount),
                &ctx.actor(),
                now,
            );
            let audit = AuditEntry::by(ctx, AuditAction::BillingCreditsSettle, now)
                .target("credit_entry", held.id)
                .metadata(json!({
                    "reserved": held.amount,
                    "settled": amount,
                    "released": release.amount,
                    "balance_after": release.balance_after,
                }));
            Ok(Closing {
                reservation,
                release: Some(release),
                audit: Some(audit),
            })
        };
        match self
            .repo
            .close_reservation(ctx.account_id, id, &close)
            .await?
        {
            None => Err(CreditError::ReservationNotFound),
            Some(Ok(closing)) => Ok((closing.reservation, closing.release)),
            Some(Err(CloseRefusal::Expired | CloseRefusal::NotDue)) => {
                Err(CreditError::ReservationExpired)
            }
            Some(Err(CloseRefusal::Settled { amount })) => {
                Err(CreditError::ReservationSettled(amount))
            }
            Some(Err(CloseRefusal::AboveReservation { reserved })) => {
                Err(CreditError::AboveReservation(reserved))
            }
        }
    }

    /// A reservation of the caller's account (scope `usage.report`).
    pub async fn reservation(
        &self,
        ctx: &AuthContext,
        id: EntryId,
    ) -> Result<Reservation, CreditError> {
        ctx.require(Scope::UsageReport)?;
        self.repo
            .reservation(ctx.account_id, id)
            .await?
            .ok_or(CreditError::ReservationNotFound)
    }

    /// Releases every reservation past its expiry (the worker's `reservation-expiry` job),
    /// in batches; answers how many. Each is audited as `billing.credits_expire`, by the
    /// system.
    pub async fn expire_due(&self) -> Result<u64, StoreError> {
        let mut expired = 0_u64;
        loop {
            let now = self.clock.now();
            let due = self.repo.due_reservations(now, EXPIRY_BATCH).await?;
            let full = due.len() >= usize::try_from(EXPIRY_BATCH).unwrap_or(usize::MAX);
            for (account, id) in due {
                let close = |grants: &[CreditGrant], held: &Reservation| {
                    if held.status != ReservationStatus::Held || now < held.expires_at {
                        return Err(CloseRefusal::NotDue);
                    }
                    let back = plan_release(&held.burns, 0).unwrap_or_default();
                    let (reservation, release) = released(
                        grants,
                        held,
                        back,
                        ReservationStatus::Expired,
                        None,
                        SYSTEM_ACTOR,
                        now,
                    );
                    let audit = AuditEntry::system(account, AuditAction::BillingCreditsExpire, now)
                        .target("credit_entry", held.id)
                        .metadata(json!({
                            "reserved": held.amount,
                            "released": release.amount,
                            "balance_after": release.balance_after,
                        }));
                    Ok(Closing {
                        reservation,
                        release: Some(release),
                        audit: Some(audit),
                    })
                };
                if let Some(Ok(_)) = self.repo.close_reservation(account, id, &close).await? {
                    expired = expired.saturating_add(1);
                }
            }
            if !full {
                return Ok(expired);
            }
        }
    }

    /// The caller's account's credits (admin).
    pub async fn overview(&self, ctx: &AuthContext) -> Result<CreditsOverview, CreditError> {
        ctx.require(Scope::Admin)?;
        let grants = self.repo.credit_grants(ctx.account_id).await?;
        let entries = self
            .repo
            .ledger(
                ctx.account_id,
                &LedgerFilter::default(),
                &PageRequest::first(OVERVIEW_ENTRIES),
            )
            .await?
            .items;
        Ok(CreditsOverview {
            balance: crate::credits::balance(&grants, self.clock.now()),
            grants,
            entries,
        })
    }

    /// The caller's account's ledger entries (admin), newest first, a page at a time.
    pub async fn history(
        &self,
        ctx: &AuthContext,
        filter: &LedgerFilter,
        page: &PageRequest,
    ) -> Result<Page<LedgerEntry>, CreditError> {
        ctx.require(Scope::Admin)?;
        if let (Some(since), Some(until)) = (filter.since, filter.until)
            && since >= until
        {
            return Err(CreditError::Invalid("since must come before until"));
        }
        if let Some(cursor) = page.after() {
            cursor.id_as::<EntryId>()?;
        }
        Ok(self.repo.ledger(ctx.account_id, filter, page).await?)
    }
}

/// The latest entries the credits overview shows; the history pages through all of them.
const OVERVIEW_ENTRIES: u32 = 100;
/// Who the worker's changes are by, in ledger entries.
pub(crate) const SYSTEM_ACTOR: &str = "system";
/// Reservations the expiry job closes per query.
const EXPIRY_BATCH: u32 = 500;
/// The shortest and longest time a reservation may be held.
const MIN_RESERVATION: Duration = Duration::seconds(10);
const MAX_RESERVATION: Duration = Duration::days(7);

fn burns_json(burns: &[Burn]) -> Vec<serde_json::Value> {
    burns
        .iter()
        .map(|burn| json!({"grant_id": burn.grant, "amount": burn.amount}))
        .collect()
}

/// `held` closed as `status`, giving `back` to its grants: the reservation after, and its
/// release entry.
fn released(
    grants: &[CreditGrant],
    held: &Reservation,
    back: Vec<Burn>,
    status: ReservationStatus,
    settled_amount: Option<u64>,
    actor: &str,
    now: DateTime<Utc>,
) -> (Reservation, LedgerEntry) {
    let returned = back
        .iter()
        .fold(0_u64, |sum, burn| sum.saturating_add(burn.amount));
    let after: Vec<CreditGrant> = grants
        .iter()
        .map(|grant| {
            let mut grant = grant.clone();
            for burn in back.iter().filter(|burn| burn.grant == grant.id) {
                grant.remaining = grant
                    .remaining
                    .saturating_add(burn.amount)
                    .min(grant.amount);
            }
            grant
        })
        .collect();
    let release = LedgerEntry {
        id: EntryId::random(),
        kind: EntryKind::Release,
        amount: returned,
        balance_after: crate::credits::balance(&after, now),
        grant_id: None,
        burns: back,
        idempotency_key: None,
        reason: Some(format!("reservation {} {}", held.id, status.as_str())),
        actor: actor.to_owned(),
        created_at: now,
    };
    let reservation = Reservation {
        status,
        settled_amount,
        closed_at: Some(now),
        ..held.clone()
    };
    (reservation, release)
}
