//! In-memory tokens, for tests and benchmarks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_accounts::Account;
use d2_accounts::memory::{Membership, MemoryAccountRepo};
use d2_audit::AuditEntry;
use d2_kernel::{AccountId, Cursor, Page, PageRequest, Role, StoreError, TokenId, UserId};
use d2_members::User;
use d2_members::memory::MemoryMembers;

use crate::ports::{
    BootstrapRepo, IssueOutcome, RevokeOutcome, RotateOutcome, TokenAuditOf, TokenChangeAuditOf,
    TokenRepo, UpdateOutcome,
};
use crate::secret::TokenDigest;
use crate::token::{ApiToken, ListedToken, NewToken, TokenPatch, TokenState};

#[derive(Debug)]
pub struct MemoryStore {
    tokens: Mutex<Vec<(ApiToken, TokenDigest)>>,
    accounts: Arc<MemoryAccountRepo>,
    members: Arc<MemoryMembers>,
    lookups: AtomicU64,
}

impl MemoryStore {
    pub fn new(accounts: Arc<MemoryAccountRepo>) -> Self {
        Self {
            tokens: Mutex::new(Vec::new()),
            members: Arc::new(MemoryMembers::new(Arc::clone(&accounts))),
            accounts,
            lookups: AtomicU64::new(0),
        }
    }

    /// The people and memberships beside these tokens (the same accounts).
    pub fn members(&self) -> &Arc<MemoryMembers> {
        &self.members
    }

    /// How many times `find_by_digest` reached the store.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(ApiToken, TokenDigest)>> {
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn append(
        &self,
        tokens: &mut Vec<(ApiToken, TokenDigest)>,
        new: &NewToken,
    ) -> Result<(), StoreError> {
        if tokens
            .iter()
            .any(|(t, d)| t.id == new.token.id || *d == new.digest)
        {
            return Err(StoreError::Conflict("duplicate token".into()));
        }
        if !self.accounts.contains(new.token.account_id) {
            return Err(StoreError::internal("token for an unknown account"));
        }
        tokens.push((new.token.clone(), new.digest));
        Ok(())
    }

    /// The token with the names of the people it names, as the stores join them.
    fn listed(&self, token: ApiToken) -> ListedToken {
        ListedToken {
            created_by_name: token.created_by.and_then(|id| self.members.label_of(id)),
            assigned_to_name: token.assigned_to.and_then(|id| self.members.label_of(id)),
            token,
        }
    }
}

fn cursor_of(listed: &ListedToken) -> Cursor {
    Cursor::new(listed.token.created_at, listed.token.id.to_string())
}

#[async_trait]
impl TokenRepo for MemoryStore {
    async fn find_by_digest(&self, digest: &TokenDigest) -> Result<Option<ApiToken>, StoreError> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        Ok(self
            .lock()
            .iter()
            .find(|(_, d)| d == digest)
            .map(|(t, _)| t.clone()))
    }

    async fn find_token(
        &self,
        account_id: AccountId,
        id: TokenId,
    ) -> Result<Option<ApiToken>, StoreError> {
        Ok(self
            .lock()
            .iter()
            .find(|(t, _)| t.account_id == account_id && t.id == id)
            .map(|(t, _)| t.clone()))
    }

    async fn listed_token(
        &self,
        account_id: AccountId,
        id: TokenId,
    ) -> Result<Option<ListedToken>, StoreError> {
        let token = TokenRepo::find_token(self, account_id, id).await?;
        Ok(token.map(|token| self.listed(token)))
    }

    async fn list_tokens(
        &self,
        account_id: AccountId,
        page: &PageRequest,
    ) -> Result<Page<ListedToken>, StoreError> {
        let after = match page.after() {
            Some(cursor) => Some((
                cursor.at,
                cursor
                    .id_as::<TokenId>()
                    .map_err(|_| StoreError::corrupt("cursor id"))?,
            )),
            None => None,
        };
        let mut tokens: Vec<ApiToken> = self
            .lock()
            .iter()
            .map(|(t, _)| t)
            .filter(|t| t.account_id == account_id)
            .filter(|t| after.is_none_or(|position| (t.created_at, t.id) < position))
            .cloned()
            .collect();
        tokens.sort_by_key(|t| std::cmp::Reverse((t.created_at, t.id)));
        tokens.truncate(
            usize::try_from(page.limit())
                .unwrap_or(usize::MAX)
                .saturating_add(1),
        );
        let listed = tokens.into_iter().map(|t| self.listed(t)).collect();
        Ok(page.page_from(listed, cursor_of))
    }

    async fn insert(&self, token: &NewToken, audit: &AuditEntry) -> Result<(), StoreError> {
        let mut tokens = self.lock();
        self.append(&mut tokens, token)?;
        self.accounts.audit().append(audit.clone());
        Ok(())
    }

    async fn issue(
        &self,
        token: &NewToken,
        max_active: u32,
        audit: &AuditEntry,
    ) -> Result<IssueOutcome, StoreError> {
        let new = &token.token;
        let mut tokens = self.lock();
        let active = tokens
            .iter()
            .filter(|(t, _)| {
                t.account_id == new.account_id && t.state(new.created_at) == TokenState::Active
            })
            .count();
        if active >= usize::try_from(max_active).unwrap_or(usize::MAX) {
            return Ok(IssueOutcome::LimitReached);
        }
        if let Some(assignee) = new.assigned_to
            && !self
                .accounts
                .memberships()
                .iter()
                .any(|m| m.account_id == new.account_id && m.user_id == assignee)
        {
            return Ok(IssueOutcome::NotAMember);
        }
        self.append(&mut tokens, token)?;
        self.accounts.audit().append(audit.clone());
        Ok(IssueOutcome::Issued)
    }

    async fn update_token(
        &self,
        account_id: AccountId,
        id: TokenId,
        patch: &TokenPatch,
        at: DateTime<Utc>,
        audit_of: TokenChangeAuditOf<'_>,
    ) -> Result<UpdateOutcome, StoreError> {
        let mut tokens = self.lock();
        let Some((token, _)) = tokens
            .iter_mut()
            .find(|(t, _)| t.account_id == account_id && t.id == id)
        else {
            return Ok(UpdateOutcome::NotFound);
        };
        match token.state(at) {
            TokenState::Revoked => return Ok(UpdateOutcome::AlreadyRevoked),
            TokenState::Expired => return Ok(UpdateOutcome::Expired),
            TokenState::Active if patch.expires_at.is_some() && token.replaced_by.is_some() => {
                return Ok(UpdateOutcome::AlreadyRotated);
            }
            TokenState::Active => {}
        }
        let changed = patch.apply(token);
        self.accounts.audit().append(audit_of(token, &changed));
        *token = changed.clone();
        Ok(UpdateOutcome::Updated(Box::new(changed)))
    }

    async fn record_usage(&self, used: &[(TokenId, DateTime<Utc>)]) -> Result<(), StoreError> {
        let mut tokens = self.lock();
        for (id, at) in used {
            if let Some((token, _)) = tokens.iter_mut().find(|(t, _)| t.id == *id) {
                token.last_used_at = token.last_used_at.max(Some(*at));
            }
        }
        Ok(())
    }

    async fn revoke(
        &self,
        account_id: AccountId,
        id: TokenId,
        at: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<RevokeOutcome, StoreError> {
        let mut tokens = self.lock();
        let Some((token, _)) = tokens
            .iter_mut()
            .find(|(t, _)| t.account_id == account_id && t.id == id)
        else {
            return Ok(RevokeOutcome::NotFound);
        };
        if token.revoked_at.is_some() {
            return Ok(RevokeOutcome::AlreadyRevoked);
        }
        token.revoked_at = Some(at);
        self.accounts.audit().append(audit.clone());
        Ok(RevokeOutcome::Revoked)
    }

    async fn rotate(
        &self,
        account_id: AccountId,
        id: TokenId,
        replacement: &NewToken,
        at: DateTime<Utc>,
        grace_until: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<RotateOutcome, StoreError> {
        let mut tokens = self.lock();
        let Some(position) = tokens
            .iter()
            .position(|(t, _)| t.account_id == account_id && t.id == id)
        else {
            return Ok(RotateOutcome::NotFound);
        };
        let Some((old, _)) = tokens.get(position) else {
            return Ok(RotateOutcome::NotFound);
        };
        match old.state(at) {
            TokenState::Revoked => return Ok(RotateOutcome::AlreadyRevoked),
            TokenState::Expired => return Ok(RotateOutcome::Expired),
            TokenState::Active if old.replaced_by.is_some() => {
                return Ok(RotateOutcome::AlreadyRotated);
            }
            TokenState::Active => {}
        }
        self.append(&mut tokens, replacement)?;
        let Some((old, _)) = tokens.get_mut(position) else {
            return Ok(RotateOutcome::NotFound);
        };
        old.replaced_by = Some(replacement.token.id);
        old.expires_at = Some(old.expires_at.map_or(grace_until, |e| e.min(grace_until)));
        let previous = old.clone();
        self.accounts.audit().append(audit.clone());
        Ok(RotateOutcome::Rotated {
            previous: Box::new(previous),
        })
    }

    async fn revoke_expired(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        audit_of: TokenAuditOf<'_>,
    ) -> Result<Vec<TokenId>, StoreError> {
        let mut tokens = self.lock();
        let mut expired: Vec<TokenId> = tokens
            .iter()
            .map(|(t, _)| t)
            .filter(|t| t.revoked_at.is_none() && t.expires_at.is_some_and(|e| e <= now))
            .map(|t| t.id)
            .collect();
        expired.sort_unstable();
        expired.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        for (token, _) in tokens.iter_mut() {
            if expired.binary_search(&token.id).is_ok() {
                token.revoked_at = token.expires_at;
                self.accounts.audit().append(audit_of(token));
            }
        }
        Ok(expired)
    }
}

#[async_trait]
impl BootstrapRepo for MemoryStore {
    async fn create_account(
        &self,
        account: &Account,
        owner: &User,
        token: &NewToken,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut tokens = self.lock();
        self.accounts.insert_account(account.clone());
        self.members.insert_user(owner.clone());
        self.accounts.put_member(Membership {
            account_id: account.id,
            user_id: owner.id,
            role: Role::Owner,
            joined_at: account.created_at,
        });
        self.append(&mut tokens, token)?;
        self.accounts.audit().append(audit.clone());
        Ok(())
    }
}

/// The store answers for accounts and audit too, so it can stand wherever one store
/// implements every port (as the database adapters do).
#[async_trait]
impl d2_accounts::AccountRepo for MemoryStore {
    async fn find_account(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
        d2_accounts::AccountRepo::find_account(self.accounts.as_ref(), id).await
    }

    async fn update(
        &self,
        id: AccountId,
        patch: &d2_accounts::AccountPatch,
        audit_of: d2_accounts::AuditOf<'_>,
    ) -> Result<Option<Account>, StoreError> {
        self.accounts.update(id, patch, audit_of).await
    }

    async fn count_members(&self, id: AccountId) -> Result<u64, StoreError> {
        self.accounts.count_members(id).await
    }

    async fn has_accounts(&self) -> Result<bool, StoreError> {
        self.accounts.has_accounts().await
    }

    async fn first_owner(&self, id: AccountId) -> Result<Option<UserId>, StoreError> {
        self.accounts.first_owner(id).await
    }

    async fn lock_expired_trials(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        audit_of: d2_accounts::JobAuditOf<'_>,
    ) -> Result<Vec<AccountId>, StoreError> {
        self.accounts
            .lock_expired_trials(now, limit, audit_of)
            .await
    }
}

#[async_trait]
impl d2_audit::AuditLog for MemoryStore {
    async fn search(
        &self,
        account_id: AccountId,
        filter: &d2_audit::AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<d2_audit::AuditRecord>, StoreError> {
        let mut page =
            d2_audit::AuditLog::search(self.accounts.audit().as_ref(), account_id, filter, page)
                .await?;
        for record in &mut page.items {
            record.user_name = record
                .entry
                .user_id
                .and_then(|id| self.members.label_of(id));
        }
        Ok(page)
    }
}

// People too, from the same accounts, so bootstrap's owners can sign in.
d2_members::delegate_member_repo!(MemoryStore, members);
