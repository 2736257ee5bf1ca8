//! The in-memory agents, principals, delegation grants and access rules stores: the reference the contract suites hold the SQL stores to,
//! and the store of the domain's unit tests.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_audit::AuditEntry;
use d2_audit::memory::MemoryAuditLog;
use d2_kernel::{AccountId, Page, PageRequest, SecretDigest, StoreError};

use crate::agent::{Agent, AgentId, AgentSpec, AgentState, ClientSecrets, PendingRegistration};
use crate::authorization::{AuthorizationCode, Redemption};
use crate::client_documents::ClientPolicy;
use crate::delegation::{
    Delegation, DelegationFilter, DelegationId, DelegationRevocation, DelegationStatus,
};
use crate::ports::{
    AccessRuleRepo, AgentAuditOf, AgentRepo, AuthorizationCodeRepo, ClientPolicyRepo,
    DelegationAuditOf, DelegationRepo, DelegationRevoke, MetadataAuditOf, OAuthTokenRepo,
    PrincipalAuditOf, PrincipalRepo, PrincipalWrite, RefreshAuditOf, RevokeAuditOf, RuleAuditOf,
    RuleWrite,
};
use crate::principal::{Principal, PrincipalId, PrincipalSpec};
use crate::rules::rule::{AccessRule, RuleId, RuleSpec};
use crate::token::{
    Issuance, OAuthTokenId, RefreshIssuance, RefreshOutcome, RefreshRefusal, RevokeScope,
    TokenCounts, TokenFilter, TokenKind, TokenRecord,
};

#[derive(Clone, Debug)]
struct Row {
    agent: Agent,
    registration: Option<PendingRegistration>,
    secrets: Option<ClientSecrets>,
    /// A dynamically registered client's metadata digest, when it holds no secret.
    fingerprint: Option<SecretDigest>,
}

/// Agents in memory, with their account's catalog (tools, scopes, bindings: see
/// `catalog::memory`); each method is one critical section, its "transaction", which
/// writes its audit record too.
#[derive(Debug)]
pub struct MemoryAgents {
    rows: Mutex<Vec<Row>>,
    /// Issued tokens; always locked after `rows` when both are.
    tokens: Mutex<Vec<StoredToken>>,
    pub(crate) audit: Arc<MemoryAuditLog>,
    pub(crate) catalog: Mutex<crate::catalog::memory::CatalogRows>,
    /// Spent client assertions: agent, `jti`, until when.
    assertions: Mutex<Vec<(AgentId, String, DateTime<Utc>)>>,
    /// Authorization codes by digest; locked after `tokens` when both are.
    codes: Mutex<Vec<(SecretDigest, AuthorizationCode)>>,
    /// The accounts' client policies.
    policies: Mutex<Vec<(AccountId, ClientPolicy)>>,
}

#[derive(Clone, Debug)]
struct StoredToken {
    record: TokenRecord,
    /// A refresh token's spending: when, and the answer it got (sealed).
    spent: Option<(DateTime<Utc>, Vec<u8>)>,
}

impl MemoryAgents {
    pub fn new(audit: Arc<MemoryAuditLog>) -> Self {
        Self {
            rows: Mutex::new(Vec::new()),
            tokens: Mutex::new(Vec::new()),
            audit,
            catalog: Mutex::default(),
            assertions: Mutex::default(),
            codes: Mutex::default(),
            policies: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Row>> {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn tokens(&self) -> MutexGuard<'_, Vec<StoredToken>> {
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Revokes the tokens of `account` that `scope` reaches and still work at `now`, with
    /// every token derived from them; returns them, sorted.
    pub(crate) fn revoke_reached(
        &self,
        account: AccountId,
        scope: RevokeScope,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Vec<OAuthTokenId> {
        let mut tokens = self.tokens();
        let of_account = tokens.iter().filter(|t| t.record.account_id == account);
        let mut reached: Vec<OAuthTokenId> = of_account
            .filter(|t| match scope {
                RevokeScope::WithDescendants(root) => t.record.id == root,
                RevokeScope::Family(family) => t.record.family_id == family,
                RevokeScope::Delegation(grant) => t.record.delegation_id() == Some(grant),
                RevokeScope::Principal(principal) => t.record.principal_id == Some(principal),
            })
            .map(|t| t.record.id)
            .collect();
        let mut frontier = reached.clone();
        while !frontier.is_empty() {
            let children: Vec<OAuthTokenId> = tokens
                .iter()
                .filter(|t| {
                    t.record.account_id == account
                        && t.record.parent_id.is_some_and(|p| frontier.contains(&p))
                        && !reached.contains(&t.record.id)
                })
                .map(|t| t.record.id)
                .collect();
            reached.extend(&children);
            frontier = children;
        }
        let mut revoked = Vec::new();
        for token in tokens.iter_mut() {
            if reached.contains(&token.record.id)
                && token.record.revoked_at.is_none()
                && now < token.record.expires_at
            {
                token.record.revoked_at = Some(now);
                token.record.revoked_reason = Some(reason.to_owned());
                revoked.push(token.record.id);
            }
        }
        revoked.sort();
        revoked
    }

    /// The ids of the account's agents (what the catalog's bindings may name).
    pub(crate) fn agent_ids(&self, account: AccountId) -> Vec<AgentId> {
        self.lock()
            .iter()
            .filter(|r| r.agent.account_id == account)
            .map(|r| r.agent.id)
            .collect()
    }
}

#[async_trait]
impl AgentRepo for MemoryAgents {
    async fn register(
        &self,
        agent: &Agent,
        registration: &PendingRegistration,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut rows = self.lock();
        if rows.iter().any(|r| r.agent.id == agent.id) {
            return Err(StoreError::Conflict("agent id".into()));
        }
        rows.push(Row {
            agent: agent.clone(),
            registration: Some(registration.clone()),
            secrets: None,
            fingerprint: None,
        });
        self.audit.append(audit.clone());
        Ok(())
    }

    async fn activate(
        &self,
        registration: &SecretDigest,
        secret: &SecretDigest,
        now: DateTime<Utc>,
        audit_of: AgentAuditOf<'_>,
    ) -> Result<Option<Agent>, StoreError> {
        let mut rows = self.lock();
        let Some(row) = rows.iter_mut().find(|r| {
            r.registration
                .as_ref()
                .is_some_and(|p| p.digest == *registration && now < p.expires_at)
        }) else {
            return Ok(None);
        };
        row.registration = None;
        row.secrets = Some(ClientSecrets {
            current: *secret,
            previous: None,
        });
        row.agent.state = AgentState::Active;
        row.agent.activated_at = Some(now);
        row.agent.updated_at = now;
        self.audit.append(audit_of(&row.agent));
        Ok(Some(row.agent.clone()))
    }

    async fn agent(&self, account: AccountId, id: AgentId) -> Result<Option<Agent>, StoreError> {
        Ok(self
            .lock()
            .iter()
            .find(|r| r.agent.account_id == account && r.agent.id == id)
            .map(|r| r.agent.clone()))
    }

    async fn agents(
        &self,
        account: AccountId,
        page: &PageRequest,
    ) -> Result<Page<Agent>, StoreError> {
        let after = match page.after() {
            Some(cursor) => Some((
                cursor.at,
                cursor
                    .id_as::<AgentId>()
                    .map_err(|_| StoreError::corrupt("cursor id"))?,
            )),
            None => None,
        };
        let mut agents: Vec<Agent> = self
            .lock()
            .iter()
            .map(|r| &r.agent)
            .filter(|a| a.account_id == account)
            .filter(|a| after.is_none_or(|position| (a.created_at, a.id) < position))
            .cloned()
            .collect();
        agents.sort_by_key(|a| std::cmp::Reverse((a.created_at, a.id)));
        agents.truncate(
            usize::try_from(page.limit())
                .unwrap_or(usize::MAX)
                .saturating_add(1),
        );
        Ok(page.page_from(agents, |a| {
            d2_kernel::Cursor::new(a.created_at, a.id.to_string())
        }))
    }

    async fn update(
        &self,
        account: AccountId,
        id: AgentId,
        spec: &AgentSpec,
        state: Option<AgentState>,
        now: DateTime<Utc>,
        audit_of: AgentAuditOf<'_>,
    ) -> Result<Option<Agent>, StoreError> {
        let mut rows = self.lock();
        let Some(row) = rows
            .iter_mut()
            .find(|r| r.agent.account_id == account && r.agent.id == id)
        else {
            return Ok(None);
        };
        row.agent.spec = spec.clone();
        if let Some(state) = state
            && row.agent.state != AgentState::Pending
            && state != AgentState::Pending
        {
            row.agent.state = state;
        }
        row.agent.updated_at = now;
        self.audit.append(audit_of(&row.agent));
        Ok(Some(row.agent.clone()))
    }

    async fn delete(
        &self,
        account: AccountId,
        id: AgentId,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut rows = self.lock();
        let before = rows.len();
        rows.retain(|r| !(r.agent.account_id == account && r.agent.id == id));
        let deleted = rows.len() < before;
        if deleted {
            self.tokens().retain(|t| t.record.agent_id != id);
            self.audit.append(audit.clone());
        }
        Ok(deleted)
    }

    async fn rotate_secret(
        &self,
        account: AccountId,
        id: AgentId,
        secret: &SecretDigest,
        previous_until: DateTime<Utc>,
        audit_of: AgentAuditOf<'_>,
    ) -> Result<Option<Agent>, StoreError> {
        let mut rows = self.lock();
        let Some(row) = rows
            .iter_mut()
            .find(|r| r.agent.account_id == account && r.agent.id == id)
        else {
            return Ok(None);
        };
        if row.agent.state == AgentState::Active
            && let Some(secrets) = row.secrets.as_mut()
        {
            secrets.previous = Some((secrets.current, previous_until));
            secrets.current = *secret;
            self.audit.append(audit_of(&row.agent));
        }
        Ok(Some(row.agent.clone()))
    }

    async fn metadata_client_id(
        &self,
        account: AccountId,
        url: &str,
    ) -> Result<Option<AgentId>, StoreError> {
        Ok(self
            .lock()
            .iter()
            .find(|r| r.agent.account_id == account && r.agent.metadata_url.as_deref() == Some(url))
            .map(|r| r.agent.id))
    }

    async fn save_metadata_client(
        &self,
        candidate: &Agent,
        audit_of: MetadataAuditOf<'_>,
    ) -> Result<Agent, StoreError> {
        let mut rows = self.lock();
        let stored = rows.iter_mut().find(|r| {
            r.agent.account_id == candidate.account_id
                && r.agent.metadata_url.is_some()
                && r.agent.metadata_url == candidate.metadata_url
        });
        let Some(row) = stored else {
            rows.push(Row {
                agent: candidate.clone(),
                registration: None,
                secrets: None,
                fingerprint: None,
            });
            self.audit.append(audit_of(candidate, true));
            return Ok(candidate.clone());
        };
        if row.agent.spec.document_fields_match(&candidate.spec) {
            return Ok(row.agent.clone());
        }
        row.agent.spec.take_document_fields(&candidate.spec);
        row.agent.updated_at = candidate.updated_at;
        self.audit.append(audit_of(&row.agent, false));
        Ok(row.agent.clone())
    }

    async fn register_dynamic(
        &self,
        agent: &Agent,
        secret: Option<&SecretDigest>,
        fingerprint: Option<&SecretDigest>,
        audit: &AuditEntry,
    ) -> Result<Agent, StoreError> {
        let mut rows = self.lock();
        if let Some(fingerprint) = fingerprint
            && let Some(row) = rows.iter().find(|r| {
                r.agent.account_id == agent.account_id
                    && r.fingerprint.as_ref() == Some(fingerprint)
            })
        {
            return Ok(row.agent.clone());
        }
        rows.push(Row {
            agent: agent.clone(),
            registration: None,
            secrets: secret.map(|current| ClientSecrets {
                current: *current,
                previous: None,
            }),
            fingerprint: fingerprint.copied(),
        });
        self.audit.append(audit.clone());
        Ok(agent.clone())
    }

    /// Grants are not kept here (the delegation suites' store is another): an agent is
    /// unused when it has no token.
    async fn reap_dynamic(
        &self,
        before: DateTime<Utc>,
        _now: DateTime<Utc>,
        limit: u32,
        audit_of: AgentAuditOf<'_>,
    ) -> Result<Vec<AccountId>, StoreError> {
        let mut rows = self.lock();
        let tokens = self.tokens();
        let unused: Vec<AgentId> = rows
            .iter()
            .filter(|r| {
                r.agent.registered_dynamically
                    && r.agent.created_at < before
                    && !tokens.iter().any(|t| t.record.agent_id == r.agent.id)
            })
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|r| r.agent.id)
            .collect();
        let mut accounts = Vec::new();
        rows.retain(|r| {
            if unused.contains(&r.agent.id) {
                self.audit.append(audit_of(&r.agent));
                accounts.push(r.agent.account_id);
                false
            } else {
                true
            }
        });
        Ok(accounts)
    }

    async fn client(
        &self,
        id: AgentId,
    ) -> Result<Option<(Agent, Option<ClientSecrets>)>, StoreError> {
        Ok(self
            .lock()
            .iter()
            .find(|r| r.agent.id == id)
            .map(|r| (r.agent.clone(), r.secrets.clone())))
    }

    async fn spend_assertion(
        &self,
        agent: AgentId,
        jti: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut spent = self
            .assertions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        spent.retain(|(of, _, until)| *of != agent || *until >= now);
        if spent
            .iter()
            .any(|(of, seen, _)| *of == agent && seen == jti)
        {
            return Ok(false);
        }
        spent.push((agent, jti.to_owned(), expires_at));
        Ok(true)
    }
}

#[async_trait]
impl ClientPolicyRepo for MemoryAgents {
    async fn client_policy(&self, account: AccountId) -> Result<Option<ClientPolicy>, StoreError> {
        Ok(self
            .policies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(a, _)| *a == account)
            .map(|(_, policy)| policy.clone()))
    }

    async fn set_client_policy(
        &self,
        account: AccountId,
        policy: &ClientPolicy,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut policies = self.policies.lock().unwrap_or_else(PoisonError::into_inner);
        let initial_access = policies
            .iter()
            .find(|(a, _)| *a == account)
            .and_then(|(_, p)| p.initial_access);
        policies.retain(|(a, _)| *a != account);
        policies.push((
            account,
            ClientPolicy {
                initial_access,
                ..policy.clone()
            },
        ));
        self.audit.append(audit.clone());
        Ok(())
    }

    async fn set_initial_access(
        &self,
        account: AccountId,
        digest: &SecretDigest,
        now: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut policies = self.policies.lock().unwrap_or_else(PoisonError::into_inner);
        match policies.iter_mut().find(|(a, _)| *a == account) {
            Some((_, policy)) => policy.initial_access = Some(*digest),
            None => policies.push((
                account,
                ClientPolicy {
                    initial_access: Some(*digest),
                    updated_at: Some(now),
                    ..ClientPolicy::default()
                },
            )),
        }
        self.audit.append(audit.clone());
        Ok(())
    }
}

#[async_trait]
/// Codes keep no foreign keys here: the delegation suites' parties are not stored in memory.
impl AuthorizationCodeRepo for MemoryAgents {
    async fn create_code(
        &self,
        code: &AuthorizationCode,
        digest: &SecretDigest,
    ) -> Result<bool, StoreError> {
        let mut codes = self.codes.lock().unwrap_or_else(PoisonError::into_inner);
        codes.push((*digest, code.clone()));
        Ok(true)
    }

    async fn code(
        &self,
        account: AccountId,
        digest: &SecretDigest,
    ) -> Result<Option<AuthorizationCode>, StoreError> {
        let codes = self.codes.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(codes
            .iter()
            .find(|(d, code)| d == digest && code.account_id == account)
            .map(|(_, code)| code.clone()))
    }

    async fn redeem_code(
        &self,
        account: AccountId,
        digest: &SecretDigest,
        issuance: &Issuance,
        audit: &AuditEntry,
        now: DateTime<Utc>,
    ) -> Result<Redemption, StoreError> {
        let mut tokens = self.tokens();
        let mut codes = self.codes.lock().unwrap_or_else(PoisonError::into_inner);
        let Some((_, code)) = codes
            .iter_mut()
            .find(|(d, code)| d == digest && code.account_id == account)
        else {
            return Ok(Redemption::Unknown);
        };
        if code.spent_at.is_some() {
            return Ok(Redemption::Spent {
                family_id: code.family_id,
            });
        }
        code.spent_at = Some(now);
        code.family_id = Some(issuance.access.family_id);
        tokens.extend(issuance.records().map(|record| StoredToken {
            record: record.clone(),
            spent: None,
        }));
        self.audit.append(audit.clone());
        Ok(Redemption::Redeemed)
    }

    async fn prune_codes(&self, expired_before: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut codes = self.codes.lock().unwrap_or_else(PoisonError::into_inner);
        let before = codes.len();
        codes.retain(|(_, code)| code.expires_at >= expired_before);
        Ok(u64::try_from(before.saturating_sub(codes.len())).unwrap_or(u64::MAX))
    }
}

#[async_trait]
impl OAuthTokenRepo for MemoryAgents {
    async fn issue(&self, issuance: &Issuance, audit: &AuditEntry) -> Result<bool, StoreError> {
        let rows = self.lock();
        if !rows.iter().any(|r| r.agent.id == issuance.access.agent_id) {
            return Ok(false);
        }
        let mut tokens = self.tokens();
        tokens.extend(issuance.records().map(|record| StoredToken {
            record: record.clone(),
            spent: None,
        }));
        self.audit.append(audit.clone());
        Ok(true)
    }

    async fn refresh(
        &self,
        presented: &SecretDigest,
        client: AgentId,
        now: DateTime<Utc>,
        replay_since: DateTime<Utc>,
        next: &RefreshIssuance,
        audit_of: RefreshAuditOf<'_>,
    ) -> Result<RefreshOutcome, StoreError> {
        let rows = self.lock();
        let mut tokens = self.tokens();
        let Some(stored) = tokens
            .iter_mut()
            .find(|t| t.record.kind == TokenKind::Refresh && t.record.digest == *presented)
        else {
            return Ok(RefreshOutcome::Refused(RefreshRefusal::Unknown));
        };
        let spent = stored.record.clone();
        if spent.agent_id != client {
            return Ok(RefreshOutcome::Refused(RefreshRefusal::OtherClient));
        }
        if spent.revoked_at.is_some() {
            return Ok(RefreshOutcome::Refused(RefreshRefusal::Revoked));
        }
        if now >= spent.expires_at {
            return Ok(RefreshOutcome::Refused(RefreshRefusal::Expired));
        }
        if stored.spent.is_none() && !rows.iter().any(|r| r.agent.id == client) {
            return Ok(RefreshOutcome::Refused(RefreshRefusal::Unknown));
        }
        match &stored.spent {
            Some((at, sealed)) if *at >= replay_since => {
                return Ok(RefreshOutcome::Replayed(sealed.clone()));
            }
            Some(_) => {
                let mut revoked = Vec::new();
                for token in tokens.iter_mut() {
                    if token.record.family_id == spent.family_id
                        && token.record.revoked_at.is_none()
                    {
                        token.record.revoked_at = Some(now);
                        token.record.revoked_reason =
                            Some(crate::token::revocation_reasons::REUSE.to_owned());
                        revoked.push(token.record.id);
                    }
                }
                revoked.sort();
                let outcome = RefreshOutcome::Reused(revoked);
                self.audit.append(audit_of(&outcome, &spent));
                return Ok(outcome);
            }
            None => stored.spent = Some((now, next.sealed_answer.clone())),
        }
        tokens.extend(next.issuance.records().map(|record| StoredToken {
            record: record.clone(),
            spent: None,
        }));
        self.audit
            .append(audit_of(&RefreshOutcome::Rotated, &spent));
        Ok(RefreshOutcome::Rotated)
    }

    async fn token(
        &self,
        account: AccountId,
        id: OAuthTokenId,
    ) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self
            .tokens()
            .iter()
            .find(|t| t.record.account_id == account && t.record.id == id)
            .map(|t| t.record.clone()))
    }

    async fn refresh_token(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self
            .tokens()
            .iter()
            .find(|t| t.record.kind == TokenKind::Refresh && t.record.digest == *digest)
            .map(|t| t.record.clone()))
    }

    async fn revoke(
        &self,
        account: AccountId,
        scope: RevokeScope,
        reason: &str,
        now: DateTime<Utc>,
        audit_of: RevokeAuditOf<'_>,
    ) -> Result<Vec<OAuthTokenId>, StoreError> {
        let revoked = self.revoke_reached(account, scope, reason, now);
        if !revoked.is_empty() {
            self.audit.append(audit_of(&revoked));
        }
        Ok(revoked)
    }

    async fn tokens(
        &self,
        account: AccountId,
        filter: &TokenFilter,
        page: &PageRequest,
    ) -> Result<Page<TokenRecord>, StoreError> {
        let after = match page.after() {
            Some(cursor) => Some((
                cursor.at,
                cursor
                    .id_as::<OAuthTokenId>()
                    .map_err(|_| StoreError::corrupt("cursor id"))?,
            )),
            None => None,
        };
        let mut found: Vec<TokenRecord> = self
            .tokens()
            .iter()
            .map(|t| &t.record)
            .filter(|t| t.account_id == account)
            .filter(|t| filter.agent_id.is_none_or(|a| t.agent_id == a))
            .filter(|t| filter.kind.is_none_or(|k| t.kind == k))
            .filter(|t| {
                filter
                    .task_id
                    .as_ref()
                    .is_none_or(|task| &t.task_id == task)
            })
            .filter(|t| filter.active_at.is_none_or(|now| t.is_active(now)))
            .filter(|t| after.is_none_or(|position| (t.issued_at, t.id) < position))
            .cloned()
            .collect();
        found.sort_by_key(|t| std::cmp::Reverse((t.issued_at, t.id)));
        found.truncate(
            usize::try_from(page.limit())
                .unwrap_or(usize::MAX)
                .saturating_add(1),
        );
        Ok(page.page_from(found, |t| {
            d2_kernel::Cursor::new(t.issued_at, t.id.to_string())
        }))
    }

    async fn revoked_access_tokens(
        &self,
        account: AccountId,
        now: DateTime<Utc>,
    ) -> Result<Vec<(OAuthTokenId, DateTime<Utc>)>, StoreError> {
        let mut revoked: Vec<_> = self
            .tokens()
            .iter()
            .map(|t| &t.record)
            .filter(|r| r.account_id == account && r.kind == TokenKind::Access)
            .filter(|r| r.revoked_at.is_some() && now < r.expires_at)
            .map(|r| (r.id, r.expires_at))
            .collect();
        revoked.sort_by_key(|(id, at)| (*at, *id));
        Ok(revoked)
    }

    async fn audit_refusal(&self, audit: &AuditEntry) -> Result<(), StoreError> {
        self.audit.append(audit.clone());
        Ok(())
    }

    async fn prune(&self, expired_before: DateTime<Utc>, families: u32) -> Result<u64, StoreError> {
        let mut tokens = self.tokens();
        let mut last_expiry: std::collections::BTreeMap<OAuthTokenId, DateTime<Utc>> =
            std::collections::BTreeMap::new();
        for token in tokens.iter() {
            let latest = last_expiry
                .entry(token.record.family_id)
                .or_insert(token.record.expires_at);
            *latest = (*latest).max(token.record.expires_at);
        }
        let gone: Vec<OAuthTokenId> = last_expiry
            .into_iter()
            .filter(|(_, latest)| *latest < expired_before)
            .map(|(family, _)| family)
            .take(usize::try_from(families).unwrap_or(usize::MAX))
            .collect();
        let before = tokens.len();
        tokens.retain(|t| !gone.contains(&t.record.family_id));
        Ok(u64::try_from(before.saturating_sub(tokens.len())).unwrap_or(u64::MAX))
    }

    async fn counts(
        &self,
        account: AccountId,
        now: DateTime<Utc>,
        since: &[DateTime<Utc>],
    ) -> Result<TokenCounts, StoreError> {
        let tokens = self.tokens();
        let mine = || {
            tokens
                .iter()
                .map(|t| &t.record)
                .filter(|t| t.account_id == account)
        };
        let count = |kind| {
            u64::try_from(
                mine()
                    .filter(|t| t.kind == kind && t.is_active(now))
                    .count(),
            )
            .unwrap_or(u64::MAX)
        };
        Ok(TokenCounts {
            active_access: count(TokenKind::Access),
            active_refresh: count(TokenKind::Refresh),
            issued_since: since
                .iter()
                .map(|start| {
                    u64::try_from(
                        mine()
                            .filter(|t| t.kind == TokenKind::Access && t.issued_at >= *start)
                            .count(),
                    )
                    .unwrap_or(u64::MAX)
                })
                .collect(),
            denied_since: since
                .iter()
                .map(|start| {
                    let denied = self.audit.all().into_iter().filter(|r| {
                        r.entry.account_id == account
                            && r.entry.action == d2_audit::AuditAction::OAuthTokenDeny
                            && r.entry.occurred_at >= *start
                    });
                    u64::try_from(denied.count()).unwrap_or(u64::MAX)
                })
                .collect(),
            agents: self
                .lock()
                .iter()
                .filter(|r| r.agent.account_id == account)
                .fold(crate::AgentCounts::default(), |mut counts, r| {
                    counts.add(r.agent.state, 1);
                    counts
                }),
        })
    }
}

#[async_trait]
impl d2_audit::AuditLog for MemoryAgents {
    async fn search(
        &self,
        account_id: AccountId,
        filter: &d2_audit::AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<d2_audit::AuditRecord>, StoreError> {
        d2_audit::AuditLog::search(self.audit.as_ref(), account_id, filter, page).await
    }
}

/// Principals in memory, each method one critical section that writes its audit record.
/// Deactivating one revokes its tokens in `tokens`.
#[derive(Debug)]
pub struct MemoryPrincipals {
    rows: Mutex<Vec<Principal>>,
    tokens: Arc<MemoryAgents>,
    audit: Arc<MemoryAuditLog>,
}

impl MemoryPrincipals {
    pub fn new(tokens: Arc<MemoryAgents>) -> Self {
        Self {
            rows: Mutex::new(Vec::new()),
            audit: tokens.audit.clone(),
            tokens,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Principal>> {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The page of `items` (of one account) after `page`'s cursor, newest first.
fn newest_first<T: Clone>(
    mut items: Vec<T>,
    page: &PageRequest,
    position: impl Fn(&T) -> (DateTime<Utc>, uuid::Uuid),
) -> Result<Page<T>, StoreError> {
    let after = match page.after() {
        Some(cursor) => Some((
            cursor.at,
            cursor
                .id_as::<uuid::Uuid>()
                .map_err(|_| StoreError::corrupt("cursor id"))?,
        )),
        None => None,
    };
    items.retain(|item| after.is_none_or(|after| position(item) < after));
    items.sort_by_key(|item| std::cmp::Reverse(position(item)));
    items.truncate(
        usize::try_from(page.limit())
            .unwrap_or(usize::MAX)
            .saturating_add(1),
    );
    Ok(page.page_from(items, |item| {
        let (at, id) = position(item);
        d2_kernel::Cursor::new(at, id.to_string())
    }))
}

#[async_trait]
impl PrincipalRepo for MemoryPrincipals {
    async fn create_principal(
        &self,
        principal: &Principal,
        audit: &AuditEntry,
    ) -> Result<PrincipalWrite, StoreError> {
        let mut rows = self.lock();
        if rows.iter().any(|p| {
            p.account_id == principal.account_id && p.spec.username == principal.spec.username
        }) {
            return Ok(PrincipalWrite::UsernameTaken);
        }
        rows.push(principal.clone());
        self.audit.append(audit.clone());
        Ok(PrincipalWrite::Written(Box::new(principal.clone())))
    }

    async fn principal(
        &self,
        account: AccountId,
        id: PrincipalId,
    ) -> Result<Option<Principal>, StoreError> {
        Ok(self
            .lock()
            .iter()
            .find(|p| p.account_id == account && p.id == id)
            .cloned())
    }

    async fn active_principals_by_email(
        &self,
        account: AccountId,
        email: &str,
        limit: u32,
    ) -> Result<Vec<Principal>, StoreError> {
        let mut found: Vec<Principal> = self
            .lock()
            .iter()
            .filter(|p| {
                p.account_id == account
                    && p.spec.active
                    && p.spec
                        .email
                        .as_deref()
                        .is_some_and(|e| e.eq_ignore_ascii_case(email))
            })
            .cloned()
            .collect();
        found.sort_by_key(|p| p.created_at);
        found.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(found)
    }

    async fn principals(
        &self,
        account: AccountId,
        active: Option<bool>,
        page: &PageRequest,
    ) -> Result<Page<Principal>, StoreError> {
        let items: Vec<Principal> = self
            .lock()
            .iter()
            .filter(|p| p.account_id == account && active.is_none_or(|a| p.spec.active == a))
            .cloned()
            .collect();
        newest_first(items, page, |p| (p.created_at, *p.id.as_uuid()))
    }

    async fn update_principal(
        &self,
        account: AccountId,
        id: PrincipalId,
        spec: &PrincipalSpec,
        now: DateTime<Utc>,
        audit_of: PrincipalAuditOf<'_>,
    ) -> Result<PrincipalWrite, StoreError> {
        let mut rows = self.lock();
        if rows
            .iter()
            .any(|p| p.account_id == account && p.id != id && p.spec.username == spec.username)
        {
            let exists = rows.iter().any(|p| p.account_id == account && p.id == id);
            return Ok(if exists {
                PrincipalWrite::UsernameTaken
            } else {
                PrincipalWrite::NotFound
            });
        }
        let Some(row) = rows
            .iter_mut()
            .find(|p| p.account_id == account && p.id == id)
        else {
            return Ok(PrincipalWrite::NotFound);
        };
        row.spec = spec.clone();
        row.updated_at = now;
        let revoked = if spec.active {
            Vec::new()
        } else {
            self.tokens.revoke_reached(
                account,
                RevokeScope::Principal(id),
                crate::token::revocation_reasons::PRINCIPAL,
                now,
            )
        };
        self.audit.append(audit_of(row, &revoked));
        Ok(PrincipalWrite::Written(Box::new(row.clone())))
    }

    async fn delete_principal(
        &self,
        account: AccountId,
        id: PrincipalId,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut rows = self.lock();
        let before = rows.len();
        rows.retain(|p| !(p.account_id == account && p.id == id));
        let deleted = rows.len() < before;
        if deleted {
            self.audit.append(audit.clone());
        }
        Ok(deleted)
    }
}

/// Access rules in memory, each method one critical section that writes its audit record.
#[derive(Debug)]
pub struct MemoryAccessRules {
    rows: Mutex<Vec<AccessRule>>,
    audit: Arc<MemoryAuditLog>,
}

impl MemoryAccessRules {
    pub fn new(audit: Arc<MemoryAuditLog>) -> Self {
        Self {
            rows: Mutex::new(Vec::new()),
            audit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<AccessRule>> {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl AccessRuleRepo for MemoryAccessRules {
    async fn create_rule(
        &self,
        rule: &AccessRule,
        max_rules: usize,
        audit: &AuditEntry,
    ) -> Result<RuleWrite, StoreError> {
        let mut rows = self.lock();
        let of_account = || rows.iter().filter(|r| r.account_id == rule.account_id);
        if of_account().any(|r| r.spec.name == rule.spec.name) {
            return Ok(RuleWrite::NameTaken);
        }
        if of_account().count() >= max_rules {
            return Ok(RuleWrite::TooMany(max_rules));
        }
        rows.push(rule.clone());
        self.audit.append(audit.clone());
        Ok(RuleWrite::Written(Box::new(rule.clone())))
    }

    async fn rule(&self, account: AccountId, id: RuleId) -> Result<Option<AccessRule>, StoreError> {
        Ok(self
            .lock()
            .iter()
            .find(|r| r.account_id == account && r.id == id)
            .cloned())
    }

    async fn rules(
        &self,
        account: AccountId,
        page: &PageRequest,
    ) -> Result<Page<AccessRule>, StoreError> {
        let items: Vec<AccessRule> = self
            .lock()
            .iter()
            .filter(|r| r.account_id == account)
            .cloned()
            .collect();
        newest_first(items, page, |r| (r.created_at, *r.id.as_uuid()))
    }

    async fn enabled_rules(&self, account: AccountId) -> Result<Vec<AccessRule>, StoreError> {
        Ok(self
            .lock()
            .iter()
            .filter(|r| r.account_id == account && r.spec.enabled)
            .cloned()
            .collect())
    }

    async fn update_rule(
        &self,
        account: AccountId,
        id: RuleId,
        spec: &RuleSpec,
        now: DateTime<Utc>,
        audit_of: RuleAuditOf<'_>,
    ) -> Result<RuleWrite, StoreError> {
        let mut rows = self.lock();
        if !rows.iter().any(|r| r.account_id == account && r.id == id) {
            return Ok(RuleWrite::NotFound);
        }
        if rows
            .iter()
            .any(|r| r.account_id == account && r.id != id && r.spec.name == spec.name)
        {
            return Ok(RuleWrite::NameTaken);
        }
        let Some(row) = rows
            .iter_mut()
            .find(|r| r.account_id == account && r.id == id)
        else {
            return Ok(RuleWrite::NotFound);
        };
        row.spec = spec.clone();
        row.updated_at = now;
        self.audit.append(audit_of(row));
        Ok(RuleWrite::Written(Box::new(row.clone())))
    }

    async fn delete_rule(
        &self,
        account: AccountId,
        id: RuleId,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut rows = self.lock();
        let before = rows.len();
        rows.retain(|r| !(r.account_id == account && r.id == id));
        let deleted = rows.len() < before;
        if deleted {
            self.audit.append(audit.clone());
        }
        Ok(deleted)
    }
}

macro_rules! audit_log_of {
    ($store:ty) => {
        #[async_trait]
        impl d2_audit::AuditLog for $store {
            async fn search(
                &self,
                account_id: AccountId,
                filter: &d2_audit::AuditFilter,
                page: &PageRequest,
            ) -> Result<Page<d2_audit::AuditRecord>, StoreError> {
                d2_audit::AuditLog::search(self.audit.as_ref(), account_id, filter, page).await
            }
        }
    };
}

audit_log_of!(MemoryPrincipals);
audit_log_of!(MemoryAccessRules);
audit_log_of!(MemoryDelegations);

/// A stand-in for the adapter that checks assertion signatures: an assertion whose
/// signature segment is `signed-by-<client id>` counts as signed by that agent's key, any
/// other is refused. For the domain's own tests of what follows the signature.
#[derive(Debug, Default)]
pub struct NamedSignatures;

#[async_trait]
impl crate::assertion::AssertionVerifier for NamedSignatures {
    async fn verified_claims(
        &self,
        agent: &Agent,
        assertion: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, &'static str> {
        use base64::Engine as _;
        let mut segments = assertion.split('.');
        let (Some(_), Some(payload), Some(signature), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err("malformed assertion");
        };
        if signature != format!("signed-by-{}", agent.client_id()) {
            return Err("bad signature");
        }
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or("malformed assertion")
    }
}

/// Delegation grants in memory, each method one critical section that writes its audit
/// record. It does not check the agents or principals a grant names: one naming ones that
/// do not exist is stored (the SQL stores refuse it through their foreign keys). Revoking
/// a grant revokes its tokens in `tokens`.
#[derive(Debug)]
pub struct MemoryDelegations {
    rows: Mutex<Vec<Delegation>>,
    tokens: Arc<MemoryAgents>,
    audit: Arc<MemoryAuditLog>,
}

impl MemoryDelegations {
    pub fn new(tokens: Arc<MemoryAgents>) -> Self {
        Self {
            rows: Mutex::new(Vec::new()),
            audit: tokens.audit.clone(),
            tokens,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Delegation>> {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl DelegationRepo for MemoryDelegations {
    async fn create_delegation(
        &self,
        delegation: &Delegation,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        self.lock().push(delegation.clone());
        self.audit.append(audit.clone());
        Ok(true)
    }

    async fn delegation(
        &self,
        account: AccountId,
        id: DelegationId,
    ) -> Result<Option<Delegation>, StoreError> {
        Ok(self
            .lock()
            .iter()
            .find(|d| d.account_id == account && d.id == id)
            .cloned())
    }

    async fn delegations(
        &self,
        account: AccountId,
        filter: &DelegationFilter,
        page: &PageRequest,
    ) -> Result<Page<Delegation>, StoreError> {
        let items: Vec<Delegation> = self
            .lock()
            .iter()
            .filter(|d| {
                d.account_id == account
                    && filter.grantor.is_none_or(|g| d.grantor == g)
                    && filter.agent_id.is_none_or(|a| d.agent_id == a)
                    && filter
                        .active_at
                        .is_none_or(|at| d.status(at) == DelegationStatus::Active)
            })
            .cloned()
            .collect();
        newest_first(items, page, |d| (d.created_at, *d.id.as_uuid()))
    }

    async fn revoked_delegations(
        &self,
        account: AccountId,
        now: DateTime<Utc>,
    ) -> Result<Vec<(DelegationId, DateTime<Utc>)>, StoreError> {
        let mut revoked: Vec<_> = self
            .lock()
            .iter()
            .filter(|d| d.account_id == account && d.revocation.is_some() && now < d.expires_at)
            .map(|d| (d.id, d.expires_at))
            .collect();
        revoked.sort_by_key(|(id, at)| (*at, *id));
        Ok(revoked)
    }

    async fn revoke_delegation(
        &self,
        account: AccountId,
        id: DelegationId,
        revocation: &DelegationRevocation,
        audit_of: DelegationAuditOf<'_>,
    ) -> Result<DelegationRevoke, StoreError> {
        let mut rows = self.lock();
        let Some(row) = rows
            .iter_mut()
            .find(|d| d.account_id == account && d.id == id)
        else {
            return Ok(DelegationRevoke::NotFound);
        };
        if row.revocation.is_some() {
            return Ok(DelegationRevoke::AlreadyRevoked(Box::new(row.clone())));
        }
        row.revocation = Some(revocation.clone());
        let revoked = self.tokens.revoke_reached(
            account,
            RevokeScope::Delegation(id),
            crate::token::revocation_reasons::DELEGATION,
            revocation.at,
        );
        self.audit.append(audit_of(row, &revoked));
        Ok(DelegationRevoke::Revoked(Box::new(row.clone())))
    }
}

#[async_trait]
impl AuthorizationCodeRepo for MemoryDelegations {
    async fn create_code(
        &self,
        code: &AuthorizationCode,
        digest: &SecretDigest,
    ) -> Result<bool, StoreError> {
        self.tokens.create_code(code, digest).await
    }

    async fn code(
        &self,
        account: AccountId,
        digest: &SecretDigest,
    ) -> Result<Option<AuthorizationCode>, StoreError> {
        self.tokens.code(account, digest).await
    }

    async fn redeem_code(
        &self,
        account: AccountId,
        digest: &SecretDigest,
        issuance: &Issuance,
        audit: &AuditEntry,
        now: DateTime<Utc>,
    ) -> Result<Redemption, StoreError> {
        // The audit log is the agents' store's: the record lands where the suites read it.
        self.tokens
            .redeem_code(account, digest, issuance, audit, now)
            .await
    }

    async fn prune_codes(&self, expired_before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.tokens.prune_codes(expired_before).await
    }
}
