//! The credits ledger: grants added, spends burned down from them, every movement an
//! immutable entry with its reason, and spends made idempotent by their caller's key.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::{AccessError, AccountId, AuthContext, Clock, Code, ErrorCode, Scope, StoreError};
use serde_json::json;

use crate::credits::{Burn, CreditGrant, GrantId, GrantSource, InsufficientCredits, plan_spend};

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

/// What a spend came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpendOutcome {
    Spent(LedgerEntry),
    /// The key was used before, for the same spend: its entry, nothing spent again.
    Replayed(LedgerEntry),
    Refused(InsufficientCredits),
}

/// Decides a spend from the account's grants: its entry and audit record, or the refusal.
pub type SpendOf<'a> = &'a (
        dyn Fn(&[CreditGrant]) -> Result<(LedgerEntry, AuditEntry), InsufficientCredits>
            + Send
            + Sync
    );

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
    /// the spend entry of `key`, if any, is answered `Replayed` and nothing else is done;
    /// else `decide(grants)` and, when it spends, each burn taken from its grant, the entry
    /// and the audit record written. Concurrent spends never overdraw a grant.
    async fn spend(
        &self,
        account: AccountId,
        key: &str,
        decide: SpendOf<'_>,
    ) -> Result<SpendOutcome, StoreError>;

    /// The account's latest `limit` ledger entries, newest first.
    async fn ledger(&self, account: AccountId, limit: u32) -> Result<Vec<LedgerEntry>, StoreError>;
}

#[derive(Debug, thiserror::Error)]
pub enum CreditError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("{0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Insufficient(#[from] InsufficientCredits),
    #[error("this idempotency key was used for another spend (amount or reason differ)")]
    KeyReused,
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
        if !(1..=MAX_CREDITS).contains(&request.amount) {
            return Err(CreditError::Invalid("amount: 1 to 10^12 credits"));
        }
        let key = &request.idempotency_key;
        if key.is_empty()
            || key.chars().count() > MAX_KEY_CHARS
            || key.chars().any(char::is_control)
        {
            return Err(CreditError::Invalid(
                "idempotency_key: 1 to 255 characters, no control characters",
            ));
        }
        checked_reason(request.reason.as_deref())?;
        let now = self.clock.now();
        let decide = |grants: &[CreditGrant]| {
            let burns = plan_spend(grants, request.amount, now)?;
            let balance_after = crate::credits::balance(grants, now).saturating_sub(request.amount);
            let entry = LedgerEntry {
                id: EntryId::random(),
                kind: EntryKind::Spend,
                amount: request.amount,
                balance_after,
                grant_id: None,
                burns,
                idempotency_key: Some(key.clone()),
                reason: request.reason.clone(),
                actor: ctx.actor(),
                created_at: now,
            };
            let audit = AuditEntry::by(ctx, AuditAction::BillingCreditsSpend, now)
                .target("credit_entry", entry.id)
                .metadata(json!({
                    "amount": entry.amount,
                    "balance_after": entry.balance_after,
                    "idempotency_key": key,
                    "reason": entry.reason,
                    "burns": entry.burns.iter()
                        .map(|burn| json!({"grant_id": burn.grant, "amount": burn.amount}))
                        .collect::<Vec<_>>(),
                }));
            Ok((entry, audit))
        };
        let outcome = self.repo.spend(ctx.account_id, key, &decide).await?;
        match outcome {
            SpendOutcome::Spent(entry) => Ok(Spent {
                entry,
                replayed: false,
            }),
            SpendOutcome::Replayed(entry)
                if entry.amount == request.amount && entry.reason == request.reason =>
            {
                Ok(Spent {
                    entry,
                    replayed: true,
                })
            }
            SpendOutcome::Replayed(_) => Err(CreditError::KeyReused),
            SpendOutcome::Refused(refusal) => Err(refusal.into()),
        }
    }

    /// The caller's account's credits (admin).
    pub async fn overview(&self, ctx: &AuthContext) -> Result<CreditsOverview, CreditError> {
        ctx.require(Scope::Admin)?;
        let grants = self.repo.credit_grants(ctx.account_id).await?;
        let entries = self.repo.ledger(ctx.account_id, 100).await?;
        Ok(CreditsOverview {
            balance: crate::credits::balance(&grants, self.clock.now()),
            grants,
            entries,
        })
    }
}
