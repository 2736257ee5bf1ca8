//! In-memory accounts and their memberships, for tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_audit::memory::MemoryAuditLog;
use d2_kernel::{AccountId, Role, StoreError, UserId};

use crate::account::{Account, AccountPatch};
use crate::ports::{AccountRepo, AuditOf, JobAuditOf};

#[derive(Debug, Default)]
struct State {
    accounts: HashMap<AccountId, Account>,
    memberships: Vec<Membership>,
}

/// One person's membership of one account, as the members domain's fake keeps it here (so
/// that member counts and owners answer from the same state).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub account_id: AccountId,
    pub user_id: UserId,
    pub role: Role,
    pub joined_at: DateTime<Utc>,
}

#[derive(Debug)]
pub struct MemoryAccountRepo {
    state: Mutex<State>,
    audit: Arc<MemoryAuditLog>,
}

impl MemoryAccountRepo {
    pub fn new(audit: Arc<MemoryAuditLog>) -> Self {
        Self {
            state: Mutex::new(State::default()),
            audit,
        }
    }

    pub fn audit(&self) -> &Arc<MemoryAuditLog> {
        &self.audit
    }

    pub fn insert_account(&self, account: Account) {
        self.lock().accounts.insert(account.id, account);
    }

    /// Adds a membership, or changes the role of an existing one.
    pub fn put_member(&self, membership: Membership) {
        let mut state = self.lock();
        match state
            .memberships
            .iter_mut()
            .find(|m| m.account_id == membership.account_id && m.user_id == membership.user_id)
        {
            Some(existing) => existing.role = membership.role,
            None => state.memberships.push(membership),
        }
    }

    pub fn remove_member(&self, account_id: AccountId, user_id: UserId) -> bool {
        let mut state = self.lock();
        let before = state.memberships.len();
        state
            .memberships
            .retain(|m| !(m.account_id == account_id && m.user_id == user_id));
        state.memberships.len() != before
    }

    /// Every membership, oldest first.
    pub fn memberships(&self) -> Vec<Membership> {
        let mut all = self.lock().memberships.clone();
        all.sort_by_key(|m| (m.joined_at, m.account_id, m.user_id));
        all
    }

    pub fn account(&self, id: AccountId) -> Option<Account> {
        self.lock().accounts.get(&id).cloned()
    }

    pub fn contains(&self, id: AccountId) -> bool {
        self.lock().accounts.contains_key(&id)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl AccountRepo for MemoryAccountRepo {
    async fn find_account(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
        Ok(self.lock().accounts.get(&id).cloned())
    }

    async fn update(
        &self,
        id: AccountId,
        patch: &AccountPatch,
        audit_of: AuditOf<'_>,
    ) -> Result<Option<Account>, StoreError> {
        let mut state = self.lock();
        let Some(account) = state.accounts.get_mut(&id) else {
            return Ok(None);
        };
        let before = account.clone();
        patch.apply(account);
        self.audit.append(audit_of(&before, account));
        Ok(Some(account.clone()))
    }

    async fn has_accounts(&self) -> Result<bool, StoreError> {
        Ok(!self.lock().accounts.is_empty())
    }

    async fn count_members(&self, id: AccountId) -> Result<u64, StoreError> {
        let count = self
            .lock()
            .memberships
            .iter()
            .filter(|m| m.account_id == id)
            .count();
        Ok(u64::try_from(count).unwrap_or(u64::MAX))
    }

    async fn first_owner(&self, id: AccountId) -> Result<Option<UserId>, StoreError> {
        Ok(self
            .memberships()
            .into_iter()
            .find(|m| m.account_id == id && m.role == Role::Owner)
            .map(|m| m.user_id))
    }

    async fn lock_expired_trials(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        audit_of: JobAuditOf<'_>,
    ) -> Result<Vec<AccountId>, StoreError> {
        let mut state = self.lock();
        let mut expired: Vec<AccountId> = state
            .accounts
            .values()
            .filter(|a| a.locked.is_none() && a.trial_ended_lock(now).is_some())
            .map(|a| a.id)
            .collect();
        expired.sort_unstable();
        expired.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        for id in &expired {
            if let Some(account) = state.accounts.get_mut(id) {
                account.locked = account.trial_ended_lock(now);
                self.audit.append(audit_of(account));
            }
        }
        Ok(expired)
    }
}
