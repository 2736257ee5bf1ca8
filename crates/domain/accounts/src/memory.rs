//! In-memory accounts and users, for tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_audit::memory::MemoryAuditLog;
use d2_kernel::{AccountId, StoreError};

use crate::account::{Account, AccountPatch, User};
use crate::ports::{AccountRepo, AuditOf, JobAuditOf};

#[derive(Debug, Default)]
struct State {
    accounts: HashMap<AccountId, Account>,
    users: Vec<User>,
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

    pub fn insert_user(&self, user: User) {
        self.lock().users.push(user);
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

    async fn count_users(&self, id: AccountId) -> Result<u64, StoreError> {
        let count = self
            .lock()
            .users
            .iter()
            .filter(|u| u.account_id == id)
            .count();
        Ok(u64::try_from(count).unwrap_or(u64::MAX))
    }

    async fn list_users(&self, id: AccountId) -> Result<Vec<User>, StoreError> {
        let mut users: Vec<User> = self
            .lock()
            .users
            .iter()
            .filter(|u| u.account_id == id)
            .cloned()
            .collect();
        users.sort_by_key(|u| (u.created_at, u.id));
        Ok(users)
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
