use std::collections::BTreeMap;
use std::sync::Arc;

use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::{
    AccessError, AccountId, AccountLock, AuthContext, CacheSettings, Change, ChangeSubscriber,
    Clock, Code, CoherentCache, Entitlement, EntitlementError, Entitlements, ErrorCode,
    PlanCatalog, Quotas, Scope, StoreError,
};
use serde_json::json;

use crate::account::{Account, AccountPatch, InvalidAccountName};
use crate::ports::AccountRepo;
use crate::sampling::{InvalidSampleRate, SamplingPolicy};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("the account does not exist")]
    NotFound,
    #[error(transparent)]
    InvalidName(#[from] InvalidAccountName),
    #[error(transparent)]
    InvalidSampleRate(#[from] InvalidSampleRate),
    #[error("the request changes nothing: give at least one setting")]
    EmptyPatch,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for AccountError {
    fn code(&self) -> Code {
        match self {
            AccountError::Access(error) => error.code(),
            AccountError::NotFound => Code::AccountNotFound,
            AccountError::InvalidName(_) => Code::InvalidAccountName,
            AccountError::InvalidSampleRate(_) => Code::InvalidSampleRate,
            AccountError::EmptyPatch => Code::InvalidBody,
            AccountError::Store(error) => error.code(),
        }
    }
}

/// An account as its callers see it: the lock in force, the quotas in force and merged
/// sampling rates.
#[derive(Clone, Debug, PartialEq)]
pub struct AccountOverview {
    pub account: Account,
    /// The lock in force now (an expired trial's, recorded or not).
    pub lock: Option<AccountLock>,
    /// The plan's quotas, or those of `plans.locked` while locked.
    pub quotas: Quotas,
    pub current_members: u64,
    pub event_sample: BTreeMap<String, f64>,
}

impl AccountOverview {
    /// The plan as the SDKs read it: `locked` while the account is locked, else its plan.
    pub fn plan_name(&self) -> &'static str {
        match self.lock {
            Some(_) => AccountLock::NAME,
            None => self.account.plan.as_str(),
        }
    }
}

/// At most this many accounts change in one transaction of a scheduled job.
const JOB_BATCH: u32 = 500;

/// An account and its member count, as cached between reads.
#[derive(Debug)]
struct Snapshot {
    account: Account,
    members: u64,
}

#[derive(Clone)]
pub struct AccountService {
    repo: Arc<dyn AccountRepo>,
    plans: Arc<PlanCatalog>,
    sampling: Arc<SamplingPolicy>,
    clock: Arc<dyn Clock>,
    /// `GET /v1/accounts/me` runs on every SDK start; it is served from here. Updates
    /// invalidate it in this process at once, and in others through the change feed.
    cache: Arc<CoherentCache<AccountId, Arc<Snapshot>>>,
}

impl std::fmt::Debug for AccountService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountService").finish_non_exhaustive()
    }
}

impl ChangeSubscriber for AccountService {
    fn on_change(&self, change: &Change) {
        match change {
            // A membership changes the member count.
            Change::Account(id) | Change::Member(id, _) => self.invalidate(*id),
            Change::Resync => self.invalidate_all(),
            _ => {}
        }
    }
}

#[async_trait::async_trait]
impl Entitlements for AccountService {
    async fn entitlement(&self, account: AccountId) -> Result<Entitlement, EntitlementError> {
        self.entitlement_of(account)
            .await
            .map_err(|error| match error {
                AccountError::NotFound => EntitlementError::UnknownAccount,
                AccountError::Store(error) => EntitlementError::Store(error),
                // A read raises nothing else.
                other => EntitlementError::Store(StoreError::internal(other)),
            })
    }
}

impl AccountService {
    pub fn new(
        repo: Arc<dyn AccountRepo>,
        plans: Arc<PlanCatalog>,
        sampling: Arc<SamplingPolicy>,
        clock: Arc<dyn Clock>,
        cache: CacheSettings,
    ) -> Self {
        Self {
            repo,
            plans,
            sampling,
            clock,
            cache: Arc::new(CoherentCache::new(cache)),
        }
    }

    /// Forgets what is cached about one account (after a change elsewhere).
    pub fn invalidate(&self, id: AccountId) {
        self.cache.invalidate_if(move |key, _| *key == id);
    }

    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }

    pub fn plans(&self) -> &PlanCatalog {
        &self.plans
    }

    /// The caller's own account. Any valid credential of the account may read it: the SDK
    /// needs it for its quotas and sampling whatever its scopes.
    pub async fn overview(&self, ctx: &AuthContext) -> Result<AccountOverview, AccountError> {
        let snapshot = self.snapshot(ctx.account_id).await?;
        Ok(self.describe(snapshot.account.clone(), snapshot.members))
    }

    /// The account's plan, the lock in force and the quotas in force, from the cache.
    pub async fn entitlement_of(&self, account: AccountId) -> Result<Entitlement, AccountError> {
        let snapshot = self.snapshot(account).await?;
        let account = &snapshot.account;
        let lock = account.lock_at(self.clock.now());
        Ok(Entitlement {
            plan: account.plan,
            quotas: self
                .plans
                .quotas_in_force(account.plan, lock.as_ref())
                .clone(),
            lock,
            metrics_enabled: account.metrics_enabled,
        })
    }

    /// Whether the account exists (for public lookups by id, such as the JWKS).
    pub async fn exists(&self, id: AccountId) -> Result<bool, AccountError> {
        match self.snapshot(id).await {
            Ok(_) => Ok(true),
            Err(AccountError::NotFound) => Ok(false),
            Err(error) => Err(error),
        }
    }

    async fn snapshot(&self, id: AccountId) -> Result<Arc<Snapshot>, AccountError> {
        self.cache
            .get_or_load(&id, || async {
                let account = self
                    .repo
                    .find_account(id)
                    .await?
                    .ok_or(AccountError::NotFound)?;
                let members = self.repo.count_members(id).await?;
                Ok::<_, AccountError>(Arc::new(Snapshot { account, members }))
            })
            .await
    }

    /// Changes the caller's account settings (admin only).
    pub async fn update(
        &self,
        ctx: &AuthContext,
        patch: &AccountPatch,
    ) -> Result<AccountOverview, AccountError> {
        ctx.require(Scope::Admin)?;
        if patch.is_empty() {
            return Err(AccountError::EmptyPatch);
        }
        for event_type in patch.event_sample.keys() {
            crate::sampling::validate_event_type(event_type)?;
        }
        let now = self.clock.now();
        let audit_of = |before: &Account, after: &Account| {
            AuditEntry::by(ctx, AuditAction::AccountUpdate, now)
                .target("account", before.id)
                .metadata(AccountPatch::describe(before, after))
        };
        let account = self
            .repo
            .update(ctx.account_id, patch, &audit_of)
            .await?
            .ok_or(AccountError::NotFound)?;
        self.cache.invalidate(&ctx.account_id).await;
        let members = self.repo.count_members(ctx.account_id).await?;
        Ok(self.describe(account, members))
    }

    /// A scheduled job: records the lock of every trial that has expired by now and is not
    /// locked yet (`trial_ended`, since the trial's end; the plan stays `trial`), each with
    /// an `account.lock` audit record by `system`, in transactions of bounded size. Returns
    /// how many accounts it locked.
    ///
    /// Reads already serve an expired trial as locked ([`Account::lock_at`]); this makes
    /// the stored row say so, for reports and other systems. An account already locked is
    /// skipped, so running it again, or on several workers at once, locks and audits
    /// nothing twice.
    pub async fn lock_expired_trials(&self) -> Result<u64, AccountError> {
        self.lock_expired_trials_in_batches(JOB_BATCH).await
    }

    async fn lock_expired_trials_in_batches(&self, batch: u32) -> Result<u64, AccountError> {
        let batch = batch.max(1);
        let full = usize::try_from(batch).unwrap_or(usize::MAX);
        // One instant for the whole run, so it ends even while trials keep expiring.
        let now = self.clock.now();
        let audit_of = |account: &Account| {
            AuditEntry::system(account.id, AuditAction::AccountLock, now)
                .target("account", account.id)
                .metadata(json!({
                    "from": account.plan.as_str(),
                    "to": AccountLock::NAME,
                    "reason": account.locked.map(|lock| lock.reason.as_str()),
                    "trial_expired_at": account.trial_expires_at,
                }))
        };
        let mut locked: u64 = 0;
        loop {
            let ids = self.repo.lock_expired_trials(now, batch, &audit_of).await?;
            for id in &ids {
                self.cache.invalidate(id).await;
            }
            locked = locked.saturating_add(u64::try_from(ids.len()).unwrap_or(u64::MAX));
            if ids.len() < full {
                return Ok(locked);
            }
        }
    }

    fn describe(&self, account: Account, current_members: u64) -> AccountOverview {
        // The lock is resolved at every read, so a trial locks the moment it expires.
        let lock = account.lock_at(self.clock.now());
        AccountOverview {
            quotas: self
                .plans
                .quotas_in_force(account.plan, lock.as_ref())
                .clone(),
            lock,
            current_members,
            event_sample: self.sampling.merged(&account.event_sample),
            account,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::AccountName;
    use crate::memory::{Membership, MemoryAccountRepo};
    use crate::sampling::SampleRate;
    use chrono::Duration;
    use d2_audit::memory::MemoryAuditLog;
    use d2_kernel::{Credential, Grant, LockReason, ManualClock, Plan, ScopeSet, TokenId, UserId};

    struct Fixture {
        service: AccountService,
        repo: Arc<MemoryAccountRepo>,
        audit: Arc<MemoryAuditLog>,
        clock: Arc<ManualClock>,
        account: Account,
    }

    fn fixture() -> Fixture {
        let audit = Arc::new(MemoryAuditLog::default());
        let repo = Arc::new(MemoryAccountRepo::new(audit.clone()));
        let clock = Arc::new(ManualClock::starting_now());
        let account = Account::new_trial(
            AccountId::random(),
            AccountName::parse("Acme").unwrap(),
            clock.now(),
            14,
        );
        repo.insert_account(account.clone());
        repo.put_member(Membership {
            account_id: account.id,
            user_id: UserId::random(),
            role: d2_kernel::Role::Owner,
            joined_at: clock.now(),
        });
        let service = AccountService::new(
            repo.clone(),
            Arc::new(PlanCatalog::default()),
            Arc::new(SamplingPolicy::default()),
            clock.clone(),
            CacheSettings::default(),
        );
        Fixture {
            service,
            repo,
            audit,
            clock,
            account,
        }
    }

    fn caller(account_id: AccountId, scopes: ScopeSet) -> AuthContext {
        AuthContext {
            account_id,
            credential: Credential::ApiToken(TokenId::random()),
            user_id: None,
            acting_for: None,
            role: None,
            scopes,
            app_name: None,
        }
    }

    #[tokio::test]
    async fn overview_reports_trial_quotas_then_locked_after_expiry() {
        let f = fixture();
        let server = caller(f.account.id, ScopeSet::new([Grant::Server]));
        let overview = f.service.overview(&server).await.unwrap();
        assert_eq!(overview.plan_name(), "trial");
        assert_eq!(overview.lock, None);
        assert_eq!(overview.quotas.poll_seconds, 300);
        assert_eq!(overview.current_members, 1);
        assert_eq!(overview.event_sample["policy_poll_interval"], 0.1);

        f.clock.advance(Duration::days(15));
        let overview = f.service.overview(&server).await.unwrap();
        assert_eq!(overview.plan_name(), "locked");
        assert_eq!(overview.account.plan, Plan::Trial, "the plan is kept");
        assert_eq!(overview.lock, Some(trial_ended(&f.account)));
        assert_eq!(overview.account.locked, None, "not recorded yet");
        assert_eq!(overview.quotas, PlanCatalog::default().locked);
    }

    #[tokio::test]
    async fn entitlements_follow_the_plan_and_lock_when_the_trial_ends() {
        let f = fixture();
        let entitlements: &dyn Entitlements = &f.service;
        let now = entitlements.entitlement(f.account.id).await.unwrap();
        assert_eq!(now.plan, Plan::Trial);
        assert!(!now.is_locked());
        assert_eq!(now.quotas, PlanCatalog::default().trial);
        assert!(now.metrics_enabled);

        f.clock.advance(Duration::days(15));
        let later = entitlements.entitlement(f.account.id).await.unwrap();
        assert!(later.is_locked());
        assert_eq!(later.lock, Some(trial_ended(&f.account)));
        assert_eq!(later.plan, Plan::Trial);
        assert_eq!(later.quotas, PlanCatalog::default().locked);
        assert!(matches!(
            entitlements.entitlement(AccountId::random()).await,
            Err(EntitlementError::UnknownAccount)
        ));
    }

    #[tokio::test]
    async fn update_needs_admin_validates_and_audits_old_and_new() {
        let f = fixture();
        let patch = AccountPatch {
            event_sample: BTreeMap::from([(
                "authz_decision".to_owned(),
                Some(SampleRate::new(0.25).unwrap()),
            )]),
            ..AccountPatch::default()
        };
        let dev = caller(f.account.id, ScopeSet::new([Grant::Dev]));
        assert!(matches!(
            f.service.update(&dev, &patch).await,
            Err(AccountError::Access(_))
        ));
        assert!(f.audit.all().is_empty());

        let admin = caller(f.account.id, ScopeSet::all());
        let bad = AccountPatch {
            event_sample: BTreeMap::from([("Not A Type".to_owned(), None)]),
            ..AccountPatch::default()
        };
        assert_eq!(
            f.service.update(&admin, &bad).await.unwrap_err().code(),
            Code::InvalidSampleRate
        );
        assert_eq!(
            f.service
                .update(&admin, &AccountPatch::default())
                .await
                .unwrap_err()
                .code(),
            Code::InvalidBody
        );
        assert!(f.audit.all().is_empty());

        let overview = f.service.update(&admin, &patch).await.unwrap();
        assert_eq!(overview.event_sample["authz_decision"], 0.25);
        let records = f.audit.all();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].entry.action, AuditAction::AccountUpdate);
        assert_eq!(
            records[0].entry.metadata["changes"]["event_sample"]["new"]["authz_decision"],
            0.25
        );
        assert_eq!(
            f.repo
                .find_account(f.account.id)
                .await
                .unwrap()
                .unwrap()
                .event_sample
                .len(),
            1
        );
    }

    /// The lock the end of `account`'s trial brings.
    fn trial_ended(account: &Account) -> AccountLock {
        AccountLock {
            since: account.trial_expires_at.unwrap(),
            reason: LockReason::TrialEnded,
        }
    }

    fn insert_trial(f: &Fixture, days: u32, plan: Plan) -> Account {
        let mut account = Account::new_trial(
            AccountId::random(),
            AccountName::parse("Trial").unwrap(),
            f.clock.now(),
            days,
        );
        account.plan = plan;
        f.repo.insert_account(account.clone());
        account
    }

    async fn stored(f: &Fixture, id: AccountId) -> Account {
        f.repo.find_account(id).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn the_trial_locker_records_locks_in_batches_and_audits_each_account_once() {
        let f = fixture();
        let server = caller(f.account.id, ScopeSet::new([Grant::Server]));
        // Cached while still a trial: the job must drop it.
        let cached = f.service.overview(&server).await.unwrap();
        assert_eq!(cached.account.plan, Plan::Trial);
        let mut expiring = vec![f.account.id];
        for _ in 0..4 {
            expiring.push(insert_trial(&f, 3, Plan::Trial).id);
        }
        let later = insert_trial(&f, 30, Plan::Trial);
        let paid = insert_trial(&f, 1, Plan::Pro);
        // Locked before (since it was created): never locked or audited again.
        let mut locked = insert_trial(&f, 1, Plan::Trial);
        locked.locked = Some(AccountLock {
            since: f.clock.now(),
            reason: LockReason::TrialEnded,
        });
        f.repo.insert_account(locked.clone());
        let mut open_ended = insert_trial(&f, 1, Plan::Trial);
        open_ended.trial_expires_at = None;
        f.repo.insert_account(open_ended.clone());

        assert_eq!(f.service.lock_expired_trials().await.unwrap(), 0);
        assert!(f.audit.all().is_empty(), "nothing expired yet");

        f.clock.advance(Duration::days(15));
        // Five expired trials in batches of two: the service loops until a short batch.
        assert_eq!(
            f.service.lock_expired_trials_in_batches(2).await.unwrap(),
            5
        );
        for id in &expiring {
            let account = stored(&f, *id).await;
            assert_eq!(account.plan, Plan::Trial, "the plan is kept");
            assert_eq!(account.locked, Some(trial_ended(&account)));
        }
        assert_eq!(stored(&f, later.id).await, later);
        assert_eq!(stored(&f, paid.id).await, paid);
        assert_eq!(stored(&f, locked.id).await, locked);
        assert_eq!(stored(&f, open_ended.id).await, open_ended);

        let locks: Vec<_> = f
            .audit
            .all()
            .into_iter()
            .filter(|r| r.entry.action == AuditAction::AccountLock)
            .collect();
        assert_eq!(locks.len(), 5);
        let mut audited: Vec<AccountId> = locks.iter().map(|r| r.entry.account_id).collect();
        audited.sort_unstable();
        expiring.sort_unstable();
        assert_eq!(
            audited, expiring,
            "one record per locked account, in its account"
        );
        let first = &locks[0].entry;
        assert_eq!(first.actor, "system");
        assert_eq!(first.occurred_at, f.clock.now());
        assert_eq!(first.resource_type.as_deref(), Some("account"));
        assert_eq!(
            first.resource_id.as_deref(),
            Some(first.account_id.to_string().as_str())
        );
        assert_eq!(first.metadata["from"], "trial");
        assert_eq!(first.metadata["to"], "locked");
        assert_eq!(first.metadata["reason"], "trial_ended");
        assert!(first.metadata["trial_expired_at"].is_string());

        // The overview was cached as a trial; it now shows the stored lock.
        let overview = f.service.overview(&server).await.unwrap();
        assert_eq!(overview.account.plan, Plan::Trial);
        assert_eq!(overview.account.locked, Some(trial_ended(&f.account)));
        assert_eq!(overview.lock, overview.account.locked);
        assert_eq!(overview.plan_name(), "locked");
        assert_eq!(overview.quotas, PlanCatalog::default().locked);
        assert_eq!(
            overview.account.trial_expires_at, f.account.trial_expires_at,
            "the trial's end is kept"
        );

        // A second run finds nothing more.
        assert_eq!(f.service.lock_expired_trials().await.unwrap(), 0);
        assert_eq!(f.audit.all().len(), 5);
    }
}
