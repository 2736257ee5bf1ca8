//! The token endpoint's grants (client credentials, refresh with rotation), RFC 7662
//! introspection and RFC 7009 revocation, for agents already authenticated as clients.
//!
//! Access tokens are RS256 JWTs (RFC 9068, `typ: at+jwt`) signed with the account's key
//! set (the `jwks` domain's, published at the account's `jwks_uri`). Each issued token is
//! a row with its lineage and a keyed digest of its exact text: introspection finds the
//! row by the JWT's `jti` and accepts the token only if the digests match, so a token is
//! never judged by claims alone.

use std::sync::Arc;

use chrono::Duration;
use d2_audit::{AuditAction, AuditEntry};
use d2_jwks::{Jwks, JwsHeaderExtras};
use d2_kernel::{AccountId, CacheSettings, Change, ChangeSubscriber, Clock, CoherentCache, Pepper};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::agent::Agent;
use crate::entitlement::{Ask, Entitlements, ToolAccess};
use crate::error::GrantError;
use crate::ports::OAuthTokenRepo;
use crate::rules::decision::RuleRef;
use crate::service::AgentCache;
use crate::token::{
    GrantType, Issuance, OAuthTokenId, RefreshIssuance, RefreshOutcome, RefreshToken, RevokeScope,
    TokenKind, TokenRecord, is_task_id, revocation_reasons, token_limits,
};

/// How long a spent refresh token, presented again, gets the answer it got instead of
/// revoking its family, unless configured: a client retrying a refresh whose answer it
/// lost.
pub const DEFAULT_REFRESH_REPLAY_SECONDS: i64 = 10;

/// A request at the token endpoint, read from its form, by an authenticated agent.
#[derive(Clone, Debug, Default)]
pub struct TokenRequest {
    pub grant_type: Option<GrantType>,
    /// RFC 6749 §3.3: space-delimited; absent, every scope the agent may have.
    pub scope: Option<String>,
    /// RFC 8707 `resource`s: absent, the agent's registered ones (or the issuer).
    pub resources: Vec<String>,
    pub refresh_token: Option<String>,
    pub task_id: Option<String>,
    pub parent_task_id: Option<String>,
}

/// RFC 6749 §5.1, with the lineage beside it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u32,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The access token's `jti`.
    pub token_id: OAuthTokenId,
    pub task_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_task_id: Option<String>,
}

/// What introspection answers about a token (RFC 7662 §2.2); `None` for an inactive one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Introspected {
    pub record: Arc<TokenRecord>,
    pub issuer: String,
}

/// A token with the tokens it was derived from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verification {
    pub record: Arc<TokenRecord>,
    /// The tokens it was derived from, nearest first.
    pub lineage: Vec<Arc<TokenRecord>>,
    /// Whether the lineage goes on beyond what was read.
    pub truncated: bool,
    /// Empty when the token and its lineage hold.
    pub problems: Vec<LineageProblem>,
}

impl Verification {
    pub fn valid(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What is wrong with a token or its lineage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineageProblem {
    /// The token, or one it was derived from, is revoked.
    Revoked(OAuthTokenId),
    Expired(OAuthTokenId),
    /// The token's agent is disabled or deleted.
    AgentInactive,
    /// A token it names as its parent is not recorded.
    Missing(OAuthTokenId),
    /// A parent of another family or task: the lineage does not hang together.
    Broken(OAuthTokenId),
}

impl LineageProblem {
    pub const fn as_str(self) -> &'static str {
        match self {
            LineageProblem::Revoked(_) => "revoked",
            LineageProblem::Expired(_) => "expired",
            LineageProblem::AgentInactive => "agent_inactive",
            LineageProblem::Missing(_) => "missing_parent",
            LineageProblem::Broken(_) => "broken_lineage",
        }
    }

    /// The token the problem is with, when it is one token's.
    pub const fn token(self) -> Option<OAuthTokenId> {
        match self {
            LineageProblem::Revoked(id)
            | LineageProblem::Expired(id)
            | LineageProblem::Missing(id)
            | LineageProblem::Broken(id) => Some(id),
            LineageProblem::AgentInactive => None,
        }
    }
}

/// The account's issuer URL: `{base}/oauth/{account_id}`.
pub fn issuer_url(base: &str, account: AccountId) -> String {
    format!("{}/oauth/{account}", base.trim_end_matches('/'))
}

/// The token endpoint's grants, introspection and revocation.
pub struct TokenIssuer {
    tokens: Arc<dyn OAuthTokenRepo>,
    jwks: Arc<Jwks>,
    pepper: Arc<Pepper>,
    clock: Arc<dyn Clock>,
    replay_grace: Duration,
    /// Issued tokens by account and id, for introspection; a revocation in the account
    /// drops its entries on every replica.
    records: CoherentCache<(AccountId, OAuthTokenId), Option<Arc<TokenRecord>>>,
    /// Agents by id, for introspection and `agentinfo`.
    agents: Arc<AgentCache>,
    /// The scope catalog, the tools and the access rules every grant is decided by.
    entitlements: Arc<Entitlements>,
    random: SystemRandom,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("replay_grace", &self.replay_grace)
            .finish_non_exhaustive()
    }
}

/// The claims of an access token (RFC 9068 §2.2).
#[derive(Serialize)]
struct AccessClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: Value,
    exp: i64,
    iat: i64,
    jti: OAuthTokenId,
    client_id: &'a str,
    scope: String,
    task_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_task_id: Option<&'a str>,
}

/// The lineage and grant of tokens about to be issued.
struct Plan {
    scopes: Vec<String>,
    audience: Vec<String>,
    task_id: String,
    parent_task_id: Option<String>,
    grant_type: GrantType,
    family_id: Option<OAuthTokenId>,
    parent_id: Option<OAuthTokenId>,
}

impl TokenIssuer {
    #[expect(
        clippy::too_many_arguments,
        reason = "the issuer's collaborators, each named"
    )]
    pub fn new(
        tokens: Arc<dyn OAuthTokenRepo>,
        agents: Arc<AgentCache>,
        entitlements: Arc<Entitlements>,
        jwks: Arc<Jwks>,
        pepper: Arc<Pepper>,
        clock: Arc<dyn Clock>,
        replay_grace: Duration,
        cache: CacheSettings,
    ) -> Self {
        Self {
            tokens,
            agents,
            entitlements,
            jwks,
            pepper,
            clock,
            replay_grace,
            records: CoherentCache::new(cache),
            random: SystemRandom::new(),
        }
    }

    /// Answers a token request of `agent`, authenticated by the caller, for the issuer
    /// `issuer`.
    pub async fn token(
        &self,
        agent: &Agent,
        issuer: &str,
        request: TokenRequest,
    ) -> Result<TokenResponse, GrantError> {
        let result = match request.grant_type {
            Some(GrantType::ClientCredentials) => {
                self.client_credentials(agent, issuer, request).await
            }
            Some(GrantType::RefreshToken) => self.refresh(agent, issuer, request).await,
            None => Err(GrantError::Request("`grant_type` is required".into())),
        };
        if let Err(error) = &result
            && error.is_refusal_of_an_agent()
        {
            self.audit_denial(agent, error).await;
        }
        result
    }

    async fn audit_denial(&self, agent: &Agent, error: &GrantError) {
        let entry = AuditEntry::system(
            agent.account_id,
            AuditAction::OAuthTokenDeny,
            self.clock.now(),
        )
        .target("agent", agent.id)
        .metadata(json!({
            "client_id": agent.client_id(),
            "error": d2_kernel::ErrorCode::code(error).as_str(),
            "reason": error.to_string(),
            "access_rule": match error {
                GrantError::Denied { rule: Some(rule), .. } => rule_json(rule),
                _ => Value::Null,
            },
        }));
        if let Err(failure) = self.tokens.audit_refusal(&entry).await {
            tracing::warn!(error = %failure, "the denial could not be audited");
        }
    }

    async fn client_credentials(
        &self,
        agent: &Agent,
        issuer: &str,
        request: TokenRequest,
    ) -> Result<TokenResponse, GrantError> {
        if request.refresh_token.is_some() {
            return Err(GrantError::Request(
                "`refresh_token` belongs to the refresh_token grant".into(),
            ));
        }
        let audience = audience(agent, issuer, &request.resources)?;
        let task_id = task_id(request.task_id)?;
        let parent_task_id = request
            .parent_task_id
            .map(|id| checked_task_id(id, "parent_task_id"))
            .transpose()?;
        let granted = self
            .entitlements
            .grant(
                agent,
                Ask {
                    scope: request.scope.as_deref(),
                    ceiling: None,
                    audience: &audience,
                    grant_type: GrantType::ClientCredentials,
                    task_id: &task_id,
                    parent_task_id: parent_task_id.as_deref(),
                    now: self.clock.now(),
                },
            )
            .await?;
        let plan = Plan {
            scopes: granted.scopes.clone(),
            audience,
            task_id,
            parent_task_id,
            grant_type: GrantType::ClientCredentials,
            family_id: None,
            parent_id: None,
        };
        let (issuance, response) = self.prepare(agent, issuer, plan).await?;
        let entry = self.issue_audit(
            AuditAction::OAuthTokenIssue,
            &issuance,
            granted.decided_by.as_ref(),
        );
        if !self.tokens.issue(&issuance, &entry).await? {
            return Err(GrantError::ClientGone);
        }
        Ok(response)
    }

    async fn refresh(
        &self,
        agent: &Agent,
        issuer: &str,
        request: TokenRequest,
    ) -> Result<TokenResponse, GrantError> {
        let Some(presented) = request.refresh_token else {
            return Err(GrantError::Request("`refresh_token` is required".into()));
        };
        if agent.spec.refresh_token_seconds.is_none() {
            return Err(GrantError::Unauthorized(
                "this agent is not issued refresh tokens".into(),
            ));
        }
        if request.task_id.is_some() || request.parent_task_id.is_some() {
            return Err(GrantError::Request(
                "a refresh keeps its task: `task_id` and `parent_task_id` are not accepted".into(),
            ));
        }
        let invalid = |why: &str| GrantError::Grant(why.to_owned());
        if RefreshToken::check_format(&presented).is_err() {
            return Err(invalid("the refresh token is malformed"));
        }
        let digest = self.pepper.digest_text(&presented);
        let Some(spent) = self.tokens.refresh_token(&digest).await? else {
            return Err(invalid(
                "the refresh token is unknown or was not issued to this client",
            ));
        };
        if spent.agent_id != agent.id {
            return Err(invalid(
                "the refresh token is unknown or was not issued to this client",
            ));
        }
        if !request.resources.is_empty() && request.resources != spent.audience {
            return Err(GrantError::Target(
                "a refresh keeps the resources of its first grant".into(),
            ));
        }
        let granted = self
            .entitlements
            .grant(
                agent,
                Ask {
                    scope: request.scope.as_deref(),
                    ceiling: Some(&spent.scopes),
                    audience: &spent.audience,
                    grant_type: GrantType::RefreshToken,
                    task_id: &spent.task_id,
                    parent_task_id: spent.parent_task_id.as_deref(),
                    now: self.clock.now(),
                },
            )
            .await?;
        let plan = Plan {
            scopes: granted.scopes.clone(),
            audience: spent.audience.clone(),
            task_id: spent.task_id.clone(),
            parent_task_id: spent.parent_task_id.clone(),
            grant_type: GrantType::RefreshToken,
            family_id: Some(spent.family_id),
            parent_id: Some(spent.id),
        };
        let (issuance, response) = self.prepare(agent, issuer, plan).await?;
        let sealed_answer = self.seal(&presented, &response)?;
        let now = self.clock.now();
        let replay_since = d2_kernel::earlier(now, self.replay_grace);
        let audit_of = |outcome: &RefreshOutcome, spent: &TokenRecord| match outcome {
            RefreshOutcome::Reused(revoked) => {
                AuditEntry::system(spent.account_id, AuditAction::OAuthRefreshReuse, now)
                    .target("oauth_token", spent.id)
                    .metadata(json!({
                        "client_id": spent.subject,
                        "family_id": spent.family_id,
                        "revoked": revoked,
                        "task_id": spent.task_id,
                    }))
            }
            _ => self.issue_audit(
                AuditAction::OAuthTokenRefresh,
                &issuance,
                granted.decided_by.as_ref(),
            ),
        };
        let next = RefreshIssuance {
            issuance: issuance.clone(),
            sealed_answer,
        };
        match self
            .tokens
            .refresh(&digest, agent.id, now, replay_since, &next, &audit_of)
            .await?
        {
            RefreshOutcome::Rotated => Ok(response),
            RefreshOutcome::Replayed(sealed) => self
                .open(&presented, &sealed)
                .ok_or_else(|| invalid("the refresh token was already used")),
            RefreshOutcome::Reused(revoked) => {
                self.forget_account(agent.account_id);
                tracing::warn!(
                    client_id = %agent.id,
                    family.id = %spent.family_id,
                    revoked = revoked.len(),
                    "a spent refresh token was presented again: its family is revoked"
                );
                Err(invalid(
                    "the refresh token was already used: every token of its grant is now revoked",
                ))
            }
            RefreshOutcome::Refused(refusal) => Err(invalid(refusal.describe())),
        }
    }

    /// Signs the access token and makes the refresh token of `plan`, not stored yet.
    async fn prepare(
        &self,
        agent: &Agent,
        issuer: &str,
        plan: Plan,
    ) -> Result<(Issuance, TokenResponse), GrantError> {
        let now = self.clock.now();
        let access_id = OAuthTokenId::random();
        let access_seconds = agent.spec.access_token_seconds;
        let expires_at = d2_kernel::later(now, Duration::seconds(i64::from(access_seconds)));
        let client_id = agent.client_id();
        let claims = AccessClaims {
            iss: issuer,
            sub: &client_id,
            aud: match plan.audience.as_slice() {
                [one] => Value::String(one.clone()),
                many => Value::from(many.to_vec()),
            },
            exp: expires_at.timestamp(),
            iat: now.timestamp(),
            jti: access_id,
            client_id: &client_id,
            scope: plan.scopes.join(" "),
            task_id: &plan.task_id,
            parent_task_id: plan.parent_task_id.as_deref(),
        };
        let payload =
            serde_json::to_vec(&claims).map_err(|e| GrantError::Signing(e.to_string()))?;
        let key = self
            .jwks
            .active_key(agent.account_id, |key| {
                AuditEntry::system(agent.account_id, AuditAction::KeyCreate, now)
                    .target("signing_key", &key.kid)
                    .metadata(json!({ "algorithm": "RS256", "reason": "first access token" }))
            })
            .await?;
        let extras = JwsHeaderExtras {
            token_type: Some("at+jwt"),
            ..JwsHeaderExtras::default()
        };
        let access_token = self.jwks.sign(&key, &extras, &payload)?;
        let refresh = match agent.spec.refresh_token_seconds {
            Some(seconds) => Some((RefreshToken::generate()?, OAuthTokenId::random(), seconds)),
            None => None,
        };
        let family_id = plan
            .family_id
            .or(refresh.as_ref().map(|(_, id, _)| *id))
            .unwrap_or(access_id);
        let record = |id, kind, digest, expires_at| TokenRecord {
            id,
            account_id: agent.account_id,
            agent_id: agent.id,
            kind,
            family_id,
            parent_id: plan.parent_id,
            subject: client_id.clone(),
            scopes: plan.scopes.clone(),
            audience: plan.audience.clone(),
            task_id: plan.task_id.clone(),
            parent_task_id: plan.parent_task_id.clone(),
            grant_type: plan.grant_type,
            digest,
            issued_at: now,
            expires_at,
            revoked_at: None,
            revoked_reason: None,
        };
        let issuance = Issuance {
            access: record(
                access_id,
                TokenKind::Access,
                self.pepper.digest_text(&access_token),
                expires_at,
            ),
            refresh: refresh.as_ref().map(|(secret, id, seconds)| {
                record(
                    *id,
                    TokenKind::Refresh,
                    self.pepper.digest(secret),
                    d2_kernel::later(now, Duration::seconds(i64::from(*seconds))),
                )
            }),
        };
        let response = TokenResponse {
            access_token,
            token_type: "Bearer".to_owned(),
            expires_in: access_seconds,
            scope: plan.scopes.join(" "),
            refresh_token: refresh.map(|(secret, _, _)| secret.expose().to_owned()),
            token_id: access_id,
            task_id: plan.task_id,
            parent_task_id: plan.parent_task_id,
        };
        Ok((issuance, response))
    }

    fn issue_audit(
        &self,
        action: AuditAction,
        issuance: &Issuance,
        decided_by: Option<&RuleRef>,
    ) -> AuditEntry {
        let access = &issuance.access;
        AuditEntry::system(access.account_id, action, access.issued_at)
            .target("oauth_token", access.id)
            .metadata(json!({
                "client_id": access.subject,
                "scope": access.scope(),
                "aud": access.audience,
                "task_id": access.task_id,
                "parent_task_id": access.parent_task_id,
                "jti": access.id,
                "parent_id": access.parent_id,
                "family_id": access.family_id,
                "refresh_token_id": issuance.refresh.as_ref().map(|r| r.id),
                "grant_type": access.grant_type.as_str(),
                "access_rule": decided_by.map_or(Value::Null, rule_json),
            }))
    }

    /// The key sealing a refresh's answer: derived from the spent refresh token itself, so
    /// only whoever holds that token can open the answer a retry gets back.
    fn replay_key(presented: &str) -> Option<LessSafeKey> {
        let derive = hmac::Key::new(hmac::HMAC_SHA256, presented.as_bytes());
        let bytes = hmac::sign(&derive, b"d2 refresh replay v1");
        UnboundKey::new(&AES_256_GCM, bytes.as_ref())
            .ok()
            .map(LessSafeKey::new)
    }

    fn seal(&self, presented: &str, response: &TokenResponse) -> Result<Vec<u8>, GrantError> {
        let failed = || GrantError::Signing("the answer could not be sealed".into());
        let key = Self::replay_key(presented).ok_or_else(failed)?;
        let mut nonce = [0_u8; NONCE_LEN];
        self.random.fill(&mut nonce).map_err(|_| failed())?;
        let mut sealed = serde_json::to_vec(response).map_err(|_| failed())?;
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut sealed,
        )
        .map_err(|_| failed())?;
        let mut out = nonce.to_vec();
        out.append(&mut sealed);
        Ok(out)
    }

    fn open(&self, presented: &str, sealed: &[u8]) -> Option<TokenResponse> {
        let key = Self::replay_key(presented)?;
        let (nonce, body) = sealed.split_at_checked(NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let plain = key.open_in_place(nonce, Aad::empty(), &mut body).ok()?;
        serde_json::from_slice(plain).ok()
    }

    /// The token `text` is, if it is a token of `account` that works now (RFC 7662: any
    /// other answer is `{"active": false}`): an access token recognised by its `jti` and
    /// the digest of its text, or a refresh token by its digest; its agent still active.
    pub async fn introspect(
        &self,
        account: AccountId,
        issuer: &str,
        text: &str,
    ) -> Result<Option<Introspected>, GrantError> {
        let Some(record) = self.recognise(account, text).await? else {
            return Ok(None);
        };
        let now = self.clock.now();
        if !record.is_active(now) || !self.agent_is_active(&record).await? {
            return Ok(None);
        }
        Ok(Some(Introspected {
            record,
            issuer: issuer.to_owned(),
        }))
    }

    /// As [`Self::introspect`], for the agent `caller` at the introspection endpoint: a token
    /// of the account that no longer works (expired, revoked, its agent disabled) is
    /// audited as `oauth.introspect_deny`, since someone still presents it. Text that is no
    /// token of the account is not: nothing names whose it would be.
    pub async fn introspect_as(
        &self,
        caller: &Agent,
        issuer: &str,
        text: &str,
    ) -> Result<Option<Introspected>, GrantError> {
        let account = caller.account_id;
        let Some(record) = self.recognise(account, text).await? else {
            return Ok(None);
        };
        let now = self.clock.now();
        let why = if record.revoked_at.is_some() {
            "revoked"
        } else if now >= record.expires_at {
            "expired"
        } else if !self.agent_is_active(&record).await? {
            "agent_inactive"
        } else {
            return Ok(Some(Introspected {
                record,
                issuer: issuer.to_owned(),
            }));
        };
        let entry = AuditEntry::system(account, AuditAction::OAuthIntrospectDeny, now)
            .target("oauth_token", record.id)
            .metadata(json!({
                "client_id": caller.client_id(),
                "token_client_id": record.subject,
                "reason": why,
                "task_id": record.task_id,
                "parent_task_id": record.parent_task_id,
                "jti": record.id,
            }));
        if let Err(failure) = self.tokens.audit_refusal(&entry).await {
            tracing::warn!(error = %failure, "the introspection denial could not be audited");
        }
        Ok(None)
    }

    /// Whether the access token `text` of `account` may call the tool `name` now, with the
    /// token's record; `None` when the token does not work (seed 003's
    /// `verify-tool-access`).
    pub async fn tool_access(
        &self,
        account: AccountId,
        text: &str,
        name: &str,
    ) -> Result<Option<(Arc<TokenRecord>, ToolAccess)>, GrantError> {
        let Some((agent, record)) = self.bearer(account, text).await? else {
            return Ok(None);
        };
        let access = self
            .entitlements
            .tool_access(&agent, &record, name, self.clock.now())
            .await?;
        Ok(Some((record, access)))
    }

    /// The token `text` of `account` with its lineage (seed 003's `verify`): the tokens it
    /// was derived from, nearest first, up to its first grant (at most
    /// [`token_limits::LINEAGE`]), and what is wrong with it or them.
    pub async fn verify(
        &self,
        account: AccountId,
        text: &str,
    ) -> Result<Option<Verification>, GrantError> {
        let Some(record) = self.recognise(account, text).await? else {
            return Ok(None);
        };
        self.lineage_of(record).await.map(Some)
    }

    /// The token `id` of `account` with its lineage, as [`Self::verify`] answers for a
    /// token's text (the account's admins look tokens up by id).
    pub async fn verify_id(
        &self,
        account: AccountId,
        id: OAuthTokenId,
    ) -> Result<Option<Verification>, GrantError> {
        let Some(record) = self.record(account, id).await? else {
            return Ok(None);
        };
        self.lineage_of(record).await.map(Some)
    }

    async fn lineage_of(&self, record: Arc<TokenRecord>) -> Result<Verification, GrantError> {
        let account = record.account_id;
        let now = self.clock.now();
        let mut problems = Vec::new();
        if record.revoked_at.is_some() {
            problems.push(LineageProblem::Revoked(record.id));
        } else if now >= record.expires_at {
            problems.push(LineageProblem::Expired(record.id));
        }
        if !self.agent_is_active(&record).await? {
            problems.push(LineageProblem::AgentInactive);
        }
        let mut lineage = Vec::new();
        let mut truncated = false;
        let mut next = record.parent_id;
        while let Some(id) = next {
            if lineage.len() >= token_limits::LINEAGE {
                truncated = true;
                break;
            }
            let Some(parent) = self.record(account, id).await? else {
                problems.push(LineageProblem::Missing(id));
                break;
            };
            if parent.revoked_at.is_some() {
                problems.push(LineageProblem::Revoked(parent.id));
            }
            if parent.family_id != record.family_id || parent.task_id != record.task_id {
                problems.push(LineageProblem::Broken(parent.id));
            }
            next = parent.parent_id;
            lineage.push(parent);
        }
        Ok(Verification {
            record,
            lineage,
            truncated,
            problems,
        })
    }

    /// The record of the token `id` of `account`, access or refresh, from the cache.
    async fn record(
        &self,
        account: AccountId,
        id: OAuthTokenId,
    ) -> Result<Option<Arc<TokenRecord>>, GrantError> {
        self.records
            .get_or_load(&(account, id), || async {
                self.tokens
                    .token(account, id)
                    .await
                    .map(|found| found.map(Arc::new))
            })
            .await
            .map_err(GrantError::from)
    }

    /// The record of the token `text`, if it is one of `account`'s (active or not).
    async fn recognise(
        &self,
        account: AccountId,
        text: &str,
    ) -> Result<Option<Arc<TokenRecord>>, GrantError> {
        let digest = self.pepper.digest_text(text);
        if RefreshToken::check_format(text).is_ok() {
            let record = self
                .tokens
                .refresh_token(&digest)
                .await?
                .filter(|r| r.account_id == account);
            return Ok(record.map(Arc::new));
        }
        let Some(jti) = jwt_id(text) else {
            return Ok(None);
        };
        // Ids are never reused: an unknown one stays unknown, and is cached as such.
        let Some(record) = self.record(account, jti).await? else {
            return Ok(None);
        };
        Ok(record
            .digest
            .matches(&digest)
            .then_some(record)
            .filter(|r| r.kind == TokenKind::Access))
    }

    async fn agent_is_active(&self, record: &TokenRecord) -> Result<bool, GrantError> {
        let agent = self
            .agents
            .agent(record.account_id, record.agent_id)
            .await?;
        Ok(agent.is_some_and(|a| a.state == crate::AgentState::Active))
    }

    /// The active agent an access token of `account` was issued to, with the token's
    /// record (`GET /v1/agents/me`, `agentinfo`). `None` when the token does not work.
    pub async fn bearer(
        &self,
        account: AccountId,
        text: &str,
    ) -> Result<Option<(Arc<Agent>, Arc<TokenRecord>)>, GrantError> {
        let Some(record) = self.recognise(account, text).await? else {
            return Ok(None);
        };
        if record.kind != TokenKind::Access || !record.is_active(self.clock.now()) {
            return Ok(None);
        }
        let agent = self
            .agents
            .agent(record.account_id, record.agent_id)
            .await?;
        Ok(agent
            .filter(|a| a.state == crate::AgentState::Active)
            .map(|agent| (agent, record)))
    }

    /// RFC 7009: revokes the token `text` if `agent` holds it (a refresh token with its
    /// whole family, an access token with every token derived from it); anything else is
    /// ignored, as the RFC answers every such request the same.
    pub async fn revoke(&self, agent: &Agent, text: &str) -> Result<(), GrantError> {
        let Some(record) = self.recognise(agent.account_id, text).await? else {
            return Ok(());
        };
        if record.agent_id != agent.id {
            return Ok(());
        }
        let scope = match record.kind {
            TokenKind::Refresh => RevokeScope::Family(record.family_id),
            TokenKind::Access => RevokeScope::WithDescendants(record.id),
        };
        self.revoke_scope(
            agent.account_id,
            scope,
            revocation_reasons::CLIENT,
            &agent.client_id(),
        )
        .await?;
        Ok(())
    }

    /// Revokes what `scope` reaches in `account` for `reason`, audited as done by `by`.
    pub async fn revoke_scope(
        &self,
        account: AccountId,
        scope: RevokeScope,
        reason: &str,
        by: &str,
    ) -> Result<Vec<OAuthTokenId>, GrantError> {
        let now = self.clock.now();
        let audit_of = |revoked: &[OAuthTokenId]| {
            AuditEntry::system(account, AuditAction::OAuthTokenRevoke, now).metadata(json!({
                "reason": reason,
                "by": by,
                "revoked": revoked,
            }))
        };
        let revoked = self
            .tokens
            .revoke(account, scope, reason, now, &audit_of)
            .await?;
        if !revoked.is_empty() {
            self.forget_account(account);
        }
        Ok(revoked)
    }

    /// Deletes the families of tokens that have all been expired for longer than `keep`,
    /// in every account, a batch at a time while `keep_going`; returns how many tokens
    /// went. Their audit records stay.
    pub async fn prune_expired(
        &self,
        keep: Duration,
        keep_going: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<u64, GrantError> {
        const FAMILIES_PER_BATCH: u32 = 1_000;
        let before = d2_kernel::earlier(self.clock.now(), keep);
        let mut pruned = 0_u64;
        loop {
            let deleted = self.tokens.prune(before, FAMILIES_PER_BATCH).await?;
            pruned = pruned.saturating_add(deleted);
            if deleted == 0 || !keep_going() {
                return Ok(pruned);
            }
        }
    }

    fn forget_account(&self, account: AccountId) {
        self.records
            .invalidate_if(move |(owner, _), _| *owner == account);
    }
}

impl ChangeSubscriber for TokenIssuer {
    fn on_change(&self, change: &Change) {
        match change {
            Change::OAuth(account) => self.forget_account(*account),
            Change::Resync => self.records.invalidate_all(),
            _ => {}
        }
    }
}

/// The `jti` of a compact JWT, read without checking anything (the row and the digest of
/// the whole text decide).
fn jwt_id(text: &str) -> Option<OAuthTokenId> {
    use base64::Engine as _;
    let mut parts = text.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > 8_192 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    #[derive(Deserialize)]
    struct Jti {
        jti: String,
    }
    serde_json::from_slice::<Jti>(&bytes).ok()?.jti.parse().ok()
}

/// An access rule as audit records name it.
fn rule_json(rule: &RuleRef) -> Value {
    json!({ "id": rule.id, "name": &*rule.name })
}

/// The `aud`: the resources asked, each one the agent may target; else its registered
/// ones; else the issuer.
fn audience(agent: &Agent, issuer: &str, asked: &[String]) -> Result<Vec<String>, GrantError> {
    if asked.len() > token_limits::RESOURCES {
        return Err(GrantError::Target(format!(
            "at most {} resources per request",
            token_limits::RESOURCES
        )));
    }
    if let Some(bad) = asked.iter().find(|r| !crate::agent::is_resource(r)) {
        return Err(GrantError::Request(format!(
            "`{}` is not a resource: an absolute URI without a fragment (RFC 8707)",
            bad.escape_debug()
        )));
    }
    if let Some(refused) = asked.iter().find(|r| !agent.spec.resources.contains(r)) {
        return Err(GrantError::Target(format!(
            "`{}` is not a resource this client may target",
            refused.escape_debug()
        )));
    }
    let mut audience = if !asked.is_empty() {
        asked.to_vec()
    } else if !agent.spec.resources.is_empty() {
        agent.spec.resources.clone()
    } else {
        vec![issuer.to_owned()]
    };
    audience.sort();
    audience.dedup();
    Ok(audience)
}

fn checked_task_id(id: String, name: &str) -> Result<String, GrantError> {
    if is_task_id(&id) {
        Ok(id)
    } else {
        Err(GrantError::Request(format!(
            "`{name}` must be 1 to {} of A-Z a-z 0-9 - _ . : /",
            token_limits::TASK_ID_CHARS
        )))
    }
}

/// The task the request names, or a new one.
fn task_id(asked: Option<String>) -> Result<String, GrantError> {
    match asked {
        Some(id) => checked_task_id(id, "task_id"),
        None => Ok(format!("task_{}", uuid_text())),
    }
}

fn uuid_text() -> String {
    OAuthTokenId::random().as_uuid().simple().to_string()
}
