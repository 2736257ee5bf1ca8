//! The token endpoint's grants (client credentials, authorization code with PKCE, refresh
//! with rotation, token exchange), RFC 7662
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
use d2_kernel::{
    AccountId, CacheSettings, Change, ChangeSubscriber, Clock, CoherentCache, Pepper, StoreError,
};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use chrono::{DateTime, Utc};

use crate::agent::{Agent, AgentId, AuthMethod};
use crate::authorization::{
    AuthorizationCode, AuthorizationCodeSecret, Redemption, verifier_matches,
};
use crate::authorizations::principal_of;
use crate::delegation::{Delegation, DelegationId, Grantor};
use crate::delegations::DelegationService;
use crate::dpop::{DpopVerifier, check_claims, dpop_limits};
use crate::entitlement::{Ask, Delegated, Entitlements, ToolAccess};
use crate::error::{DelegationError, GrantError};
use crate::ports::{
    AuthorizationCodeRepo, OAuthTokenRepo, PersonTokens, PrincipalRepo, SignInError,
};
use crate::principal::PrincipalId;
use crate::rules::decision::RuleRef;
use crate::service::AgentCache;
use crate::token::{
    GrantType, Hop, Issuance, OAuthTokenId, RefreshIssuance, RefreshOutcome, RefreshToken,
    RevokeScope, TokenKind, TokenRecord, is_task_id, revocation_reasons, token_limits,
};

/// RFC 8693 §3: the only token type D2 exchanges and issues.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// RFC 8693 §3: a JWT; as a subject token, one the identity provider issued a person for
/// this server (`auth.idp`).
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

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
    /// The grant to act under: `client_credentials` for its grantor, or the token exchange
    /// (absent there, the newest grant in force from the subject token's agent).
    pub delegation_id: Option<String>,
    /// The one agent (a client id) that may exchange the issued token to act next.
    pub may_act: Option<String>,
    /// RFC 8693 §2.1.
    pub subject_token: Option<String>,
    pub subject_token_type: Option<String>,
    pub actor_token: Option<String>,
    pub actor_token_type: Option<String>,
    pub requested_token_type: Option<String>,
    /// RFC 9449: the `DPoP` header's proof; the tokens are bound to its key.
    pub dpop: Option<String>,
    /// RFC 6749 §4.1.3, with RFC 7636's verifier.
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
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
    /// RFC 8693 §2.2.1, on a token exchange's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<String>,
    /// OpenID Connect Core §3.1.3.3: when a code asked for `openid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

/// What introspection answers about a token (RFC 7662 §2.2); `None` for an inactive one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Introspected {
    pub record: Arc<TokenRecord>,
    pub issuer: String,
    /// The OAuth `client_id` of its agent.
    pub client_id: String,
}

/// What introspection at the endpoint finds of a token.
#[derive(Clone, Debug)]
pub enum Introspection {
    /// It works.
    Active(Introspected),
    /// A token of the caller's account that was revoked: when, and why (a
    /// [`crate::revocation_reasons`] value).
    Revoked { at: DateTime<Utc>, reason: String },
    /// Unknown, another account's, expired, or an agent of its chain inactive.
    Inactive,
}

/// Whether a token may call a tool: the decision, with the token and its client.
#[derive(Clone, Debug)]
pub struct ToolCheck {
    pub record: Arc<TokenRecord>,
    /// The OAuth `client_id` of its agent.
    pub client_id: String,
    pub access: ToolAccess,
}

/// A token with the tokens it was derived from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verification {
    pub record: Arc<TokenRecord>,
    /// The OAuth `client_id` of its agent, while the agents of its chain are active.
    pub client_id: Option<String>,
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

/// What a revocation in an account makes stale: its issued tokens by id, as introspection
/// reads them, and its signed revocation list. A revocation (by a client, a family's
/// reuse, a grant's revocation, a principal's deactivation) drops the account's entries at
/// once in the process that made it and, through the change feed, on every other replica.
pub struct TokenRecords {
    records: CoherentCache<(AccountId, OAuthTokenId), Option<Arc<TokenRecord>>>,
    pub(crate) lists: CoherentCache<AccountId, Arc<crate::revocations::SignedRevocations>>,
}

impl std::fmt::Debug for TokenRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRecords").finish_non_exhaustive()
    }
}

impl TokenRecords {
    pub fn new(cache: CacheSettings) -> Self {
        Self {
            records: CoherentCache::new(cache),
            lists: CoherentCache::new(cache),
        }
    }

    pub fn forget_account(&self, account: AccountId) {
        self.records
            .invalidate_if(move |(owner, _), _| *owner == account);
        self.lists.invalidate_if(move |owner, _| *owner == account);
    }
}

impl ChangeSubscriber for TokenRecords {
    fn on_change(&self, change: &Change) {
        match change {
            Change::OAuth(account) => self.forget_account(*account),
            Change::Resync => {
                self.records.invalidate_all();
                self.lists.invalidate_all();
            }
            _ => {}
        }
    }
}

/// The token endpoint's grants, introspection and revocation.
pub struct TokenIssuer {
    tokens: Arc<dyn OAuthTokenRepo>,
    codes: Arc<dyn AuthorizationCodeRepo>,
    /// The principals people's tokens are matched to.
    principals: Arc<dyn PrincipalRepo>,
    /// People's tokens from the identity provider, when one is configured.
    people: Option<Arc<dyn PersonTokens>>,
    /// Checks DPoP proofs' signatures.
    dpop: Option<Arc<dyn DpopVerifier>>,
    jwks: Arc<Jwks>,
    pepper: Arc<Pepper>,
    clock: Arc<dyn Clock>,
    replay_grace: Duration,
    records: Arc<TokenRecords>,
    /// The grants delegated tokens act under.
    delegations: Arc<DelegationService>,
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
    /// RFC 8693 §4.1: the acting agent, each earlier one nested inside.
    #[serde(skip_serializing_if = "Option::is_none")]
    act: Option<Value>,
    /// RFC 8693 §4.4: the one agent that may act next.
    #[serde(skip_serializing_if = "Option::is_none")]
    may_act: Option<Value>,
    /// The grant the agent acts under.
    #[serde(skip_serializing_if = "Option::is_none")]
    delegation_id: Option<DelegationId>,
    /// RFC 9449 §6: the key a DPoP-bound token is bound to.
    #[serde(skip_serializing_if = "Option::is_none")]
    cnf: Option<Value>,
}

/// RFC 8693 §4.1's `act` of a chain: the last agent outermost, each earlier one inside;
/// `None` for an agent acting for itself.
pub fn actor_claim(chain: &[Hop]) -> Option<Value> {
    chain.iter().fold(None, |inner, hop| {
        let mut act = serde_json::Map::new();
        act.insert("sub".to_owned(), Value::String(hop.agent_id.to_string()));
        if let Some(inner) = inner {
            act.insert("act".to_owned(), inner);
        }
        Some(Value::Object(act))
    })
}

/// The lineage and grant of tokens about to be issued.
struct Plan {
    /// DPoP: the thumbprint of the key the tokens are bound to.
    dpop_jkt: Option<String>,
    scopes: Vec<String>,
    audience: Vec<String>,
    task_id: String,
    parent_task_id: Option<String>,
    grant_type: GrantType,
    family_id: Option<OAuthTokenId>,
    parent_id: Option<OAuthTokenId>,
    acting: Acting,
}

/// Whom the tokens of a plan act for, when not their agent itself.
#[derive(Default)]
struct Acting {
    /// The `sub`: the principal's id or the first granting agent's client id.
    subject: Option<String>,
    principal_id: Option<PrincipalId>,
    chain: Vec<Hop>,
    may_act: Option<AgentId>,
    /// The earliest expiry of the chain's grants: no token outlives them.
    not_after: Option<DateTime<Utc>>,
}

/// What a first hop asks beside its grant.
struct FirstHop<'a> {
    scope: Option<&'a str>,
    resources: &'a [String],
    task_id: Option<String>,
    grant_type: GrantType,
    may_act: Option<AgentId>,
    bound: Option<String>,
}

/// An agent acting first under one grant: the grant, the scopes it allows (expanded),
/// whom the tokens act for, and what the chain allows.
struct UnderGrant {
    grant: Delegation,
    ceiling: Vec<String>,
    acting: Acting,
    mandate: Mandate,
}

/// What the grants of a chain allow now.
struct Mandate {
    delegated: Delegated,
    grants: Vec<Delegation>,
    not_after: Option<DateTime<Utc>>,
}

impl TokenIssuer {
    #[expect(
        clippy::too_many_arguments,
        reason = "the issuer's collaborators, each named"
    )]
    pub fn new(
        tokens: Arc<dyn OAuthTokenRepo>,
        codes: Arc<dyn AuthorizationCodeRepo>,
        principals: Arc<dyn PrincipalRepo>,
        agents: Arc<AgentCache>,
        entitlements: Arc<Entitlements>,
        delegations: Arc<DelegationService>,
        jwks: Arc<Jwks>,
        pepper: Arc<Pepper>,
        clock: Arc<dyn Clock>,
        replay_grace: Duration,
        records: Arc<TokenRecords>,
    ) -> Self {
        Self {
            tokens,
            codes,
            principals,
            people: None,
            dpop: None,
            agents,
            entitlements,
            delegations,
            jwks,
            pepper,
            clock,
            replay_grace,
            records,
            random: SystemRandom::new(),
        }
    }

    /// Accepts DPoP proofs (RFC 9449), checked by `verifier`.
    pub fn with_dpop(mut self, verifier: Arc<dyn DpopVerifier>) -> Self {
        self.dpop = Some(verifier);
        self
    }

    /// Accepts people's tokens from the identity provider as token exchange subjects.
    pub fn with_person_tokens(mut self, people: Arc<dyn PersonTokens>) -> Self {
        self.people = Some(people);
        self
    }

    /// Answers a token request of `agent`, authenticated by the caller, for the issuer
    /// `issuer`.
    pub async fn token(
        &self,
        agent: &Agent,
        issuer: &str,
        request: TokenRequest,
    ) -> Result<TokenResponse, GrantError> {
        let result = self.grant(agent, issuer, request).await;
        if let Err(error) = &result
            && error.is_refusal_of_an_agent()
        {
            self.audit_denial(agent, error).await;
        }
        result
    }

    async fn grant(
        &self,
        agent: &Agent,
        issuer: &str,
        mut request: TokenRequest,
    ) -> Result<TokenResponse, GrantError> {
        // A public client proves no identity of its own: it gets tokens a person approved
        // (authorization code) and keeps them fresh, nothing it could ask for itself.
        if agent.spec.auth_method == AuthMethod::None
            && matches!(
                request.grant_type,
                Some(GrantType::ClientCredentials | GrantType::TokenExchange)
            )
        {
            return Err(GrantError::Unauthorized(
                "a public client gets tokens by the authorization code grant only".into(),
            ));
        }
        let bound = match request.dpop.take() {
            Some(proof) => Some(self.dpop_key(agent, issuer, &proof).await?),
            None => None,
        };
        match request.grant_type {
            Some(GrantType::ClientCredentials) => {
                self.client_credentials(agent, issuer, request, bound).await
            }
            Some(GrantType::AuthorizationCode) => {
                self.authorization_code(agent, issuer, request, bound).await
            }
            Some(GrantType::RefreshToken) => self.refresh(agent, issuer, request, bound).await,
            Some(GrantType::TokenExchange) => self.exchange(agent, issuer, request, bound).await,
            None => Err(GrantError::Request("`grant_type` is required".into())),
        }
    }

    /// RFC 9449 §4.3: the thumbprint of the key a DPoP proof for this token request proves,
    /// its `jti` spent once.
    async fn dpop_key(
        &self,
        agent: &Agent,
        issuer: &str,
        proof: &str,
    ) -> Result<String, GrantError> {
        let Some(verifier) = &self.dpop else {
            return Err(GrantError::Request(
                "DPoP proofs are not accepted here".into(),
            ));
        };
        if proof.len() > dpop_limits::BYTES {
            return Err(GrantError::Dpop("the DPoP proof is too long".into()));
        }
        let verified = verifier
            .verify(proof)
            .map_err(|reason| GrantError::Dpop(format!("the DPoP proof is not valid: {reason}")))?;
        let now = self.clock.now();
        let used = check_claims(&verified.claims, "POST", &format!("{issuer}/token"), now)
            .map_err(GrantError::Dpop)?;
        if !self
            .agents
            .spend_proof(
                agent.id,
                &format!("dpop:{}", used.jti),
                used.remember_until,
                now,
            )
            .await?
        {
            return Err(GrantError::Dpop("the DPoP proof was used before".into()));
        }
        Ok(verified.jkt)
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
        bound: Option<String>,
    ) -> Result<TokenResponse, GrantError> {
        if request.refresh_token.is_some() {
            return Err(GrantError::Request(
                "`refresh_token` belongs to the refresh_token grant".into(),
            ));
        }
        refuse_exchange_parameters(&request)?;
        let now = self.clock.now();
        let mut audience = audience(agent, issuer, &request.resources)?;
        let parent_task_id = request
            .parent_task_id
            .map(|id| checked_task_id(id, "parent_task_id"))
            .transpose()?;
        let may_act = may_act(request.may_act.as_deref())?;
        let (task_id, ceiling, acting, mandate) = match request.delegation_id.as_deref() {
            None => {
                if may_act.is_some() {
                    return Err(GrantError::Request(
                        "`may_act` is for tokens acting for someone: name a `delegation_id`".into(),
                    ));
                }
                (task_id(request.task_id)?, None, Acting::default(), None)
            }
            Some(text) => {
                let under = self.under_grant(agent, delegation_id(text)?, now).await?;
                audience = within_grant(audience, &request.resources, &under.grant)?;
                (
                    grant_task(&under.grant, request.task_id)?,
                    Some(under.ceiling),
                    Acting {
                        may_act,
                        ..under.acting
                    },
                    Some(under.mandate),
                )
            }
        };
        let delegated = mandate.map(|m| m.delegated).unwrap_or_default();
        let granted = self
            .entitlements
            .grant(
                agent,
                Ask {
                    scope: request.scope.as_deref(),
                    ceiling: ceiling.as_deref(),
                    audience: &audience,
                    grant_type: GrantType::ClientCredentials,
                    task_id: &task_id,
                    parent_task_id: parent_task_id.as_deref(),
                    now,
                    delegated: &delegated,
                },
            )
            .await?;
        let plan = Plan {
            dpop_jkt: bound,
            scopes: granted.scopes.clone(),
            audience,
            task_id,
            parent_task_id,
            grant_type: GrantType::ClientCredentials,
            family_id: None,
            parent_id: None,
            acting,
        };
        self.issue_new(agent, issuer, plan, granted.decided_by.as_ref())
            .await
    }

    /// RFC 6749 §4.1.3: the tokens a person's approval sent `agent` a code for, acting for
    /// the person's principal under the grant the approval made. The code is spent with
    /// the tokens it brings, in one transaction; presented again, it revokes them.
    async fn authorization_code(
        &self,
        agent: &Agent,
        issuer: &str,
        request: TokenRequest,
        bound: Option<String>,
    ) -> Result<TokenResponse, GrantError> {
        refuse_exchange_parameters(&request)?;
        if request.refresh_token.is_some() {
            return Err(GrantError::Request(
                "`refresh_token` belongs to the refresh_token grant".into(),
            ));
        }
        let Some(text) = request.code.as_deref() else {
            return Err(GrantError::Request("`code` is required".into()));
        };
        let unknown = || {
            GrantError::Grant(
                "the authorization code is unknown or was not issued to this client".into(),
            )
        };
        let account = agent.account_id;
        if AuthorizationCodeSecret::check_format(text).is_err() {
            return Err(unknown());
        }
        let digest = self.pepper.digest_text(text);
        let now = self.clock.now();
        let code = self
            .codes
            .code(account, &digest)
            .await?
            .filter(|code| code.agent_id == agent.id)
            .ok_or_else(unknown)?;
        if code.spent_at.is_some() {
            return Err(self.code_replayed(account, code.family_id).await);
        }
        if now >= code.expires_at {
            return Err(GrantError::Grant("the authorization code expired".into()));
        }
        if request.redirect_uri.as_deref() != Some(code.redirect_uri.as_str()) {
            return Err(GrantError::Grant(
                "`redirect_uri` is not the authorization request's".into(),
            ));
        }
        let Some(verifier) = request.code_verifier.as_deref() else {
            return Err(GrantError::Request(
                "`code_verifier` is required (PKCE)".into(),
            ));
        };
        if !verifier_matches(verifier, &code.code_challenge) {
            return Err(GrantError::Grant(
                "the `code_verifier` does not match the code's challenge".into(),
            ));
        }
        let asked = code.scopes.join(" ");
        let (plan, decided_by) = self
            .first_hop(
                agent,
                issuer,
                code.delegation_id,
                FirstHop {
                    scope: Some(asked.as_str()).filter(|s| !s.is_empty()),
                    resources: &code.resources,
                    task_id: None,
                    grant_type: GrantType::AuthorizationCode,
                    may_act: None,
                    bound,
                },
                now,
            )
            .await?;
        let (issuance, mut response) = self.prepare(agent, issuer, plan).await?;
        if code.openid {
            response.id_token = Some(self.id_token(agent, issuer, &code, &issuance).await?);
        }
        let entry = self.issue_audit(AuditAction::OAuthTokenIssue, &issuance, decided_by.as_ref());
        match self
            .codes
            .redeem_code(account, &digest, &issuance, &entry, now)
            .await?
        {
            Redemption::Redeemed => Ok(response),
            Redemption::Spent { family_id } => Err(self.code_replayed(account, family_id).await),
            Redemption::Unknown => Err(unknown()),
        }
    }

    /// A code presented again: the tokens its first use brought are revoked, with every
    /// token derived from them (RFC 6749 §4.1.2), and the request refused.
    async fn code_replayed(&self, account: AccountId, family: Option<OAuthTokenId>) -> GrantError {
        if let Some(family) = family
            && let Err(error) = self
                .revoke_scope(
                    account,
                    RevokeScope::Family(family),
                    revocation_reasons::CODE_REUSE,
                    "system",
                )
                .await
        {
            return error;
        }
        GrantError::Grant(
            "the authorization code was used before: the tokens it brought are revoked".into(),
        )
    }

    /// The ID token of a code that asked for `openid` (OpenID Connect Core §2): the
    /// principal as `sub`, the agent as `aud` and `azp`, the request's `nonce`, living as
    /// long as the access token.
    async fn id_token(
        &self,
        agent: &Agent,
        issuer: &str,
        code: &AuthorizationCode,
        issuance: &Issuance,
    ) -> Result<String, GrantError> {
        let client_id = agent.client_id();
        let claims = json!({
            "iss": issuer,
            "sub": code.principal_id,
            "aud": client_id,
            "azp": client_id,
            "exp": issuance.access.expires_at.timestamp(),
            "iat": issuance.access.issued_at.timestamp(),
            "auth_time": code.auth_time.timestamp(),
            "nonce": code.nonce,
        });
        let payload =
            serde_json::to_vec(&claims).map_err(|e| GrantError::Signing(e.to_string()))?;
        let key = self
            .jwks
            .active_key(agent.account_id, |key| {
                AuditEntry::system(
                    agent.account_id,
                    AuditAction::KeyCreate,
                    issuance.access.issued_at,
                )
                .target("signing_key", &key.kid)
                .metadata(json!({ "algorithm": "RS256", "reason": "first access token" }))
            })
            .await?;
        let extras = JwsHeaderExtras {
            token_type: Some("JWT"),
            ..JwsHeaderExtras::default()
        };
        Ok(self.jwks.sign(&key, &extras, &payload)?)
    }

    /// What `agent` acting first under the grant `id` may have at `now`: the grant in
    /// force for it (`mandate`), the grant's scopes expanded as the ceiling, and whom the
    /// tokens act for (the grant's grantor), capped by the grant's expiry.
    async fn under_grant(
        &self,
        agent: &Agent,
        id: DelegationId,
        now: DateTime<Utc>,
    ) -> Result<UnderGrant, GrantError> {
        let chain = vec![Hop {
            agent_id: agent.id,
            delegation_id: id,
        }];
        let mandate = self.mandate(agent.account_id, &chain, now).await?;
        let grant = mandate
            .grants
            .last()
            .cloned()
            .ok_or_else(|| GrantError::Grant("the delegation grant is unknown".into()))?;
        let ceiling: Vec<String> = self
            .entitlements
            .expanded(agent.account_id, &grant.scopes)
            .await?
            .into_iter()
            .collect();
        let acting = Acting {
            subject: Some(grant.grantor.id().to_string()),
            principal_id: match grant.grantor {
                Grantor::Principal(id) => Some(id),
                Grantor::Agent(_) => None,
            },
            chain,
            may_act: None,
            not_after: mandate.not_after,
        };
        Ok(UnderGrant {
            grant,
            ceiling,
            acting,
            mandate,
        })
    }

    /// Signs and stores the new tokens of `plan`, audited `oauth.token_issue`.
    async fn issue_new(
        &self,
        agent: &Agent,
        issuer: &str,
        plan: Plan,
        decided_by: Option<&RuleRef>,
    ) -> Result<TokenResponse, GrantError> {
        let (issuance, response) = self.prepare(agent, issuer, plan).await?;
        let entry = self.issue_audit(AuditAction::OAuthTokenIssue, &issuance, decided_by);
        if !self.tokens.issue(&issuance, &entry).await? {
            return Err(GrantError::ClientGone);
        }
        Ok(response)
    }

    /// RFC 8693: `agent` (the actor) gets a token acting for the subject of
    /// `subject_token`, one agent deeper, under a grant from the subject token's agent.
    async fn exchange(
        &self,
        agent: &Agent,
        issuer: &str,
        request: TokenRequest,
        bound: Option<String>,
    ) -> Result<TokenResponse, GrantError> {
        let account = agent.account_id;
        if request.refresh_token.is_some() {
            return Err(GrantError::Request(
                "`refresh_token` belongs to the refresh_token grant".into(),
            ));
        }
        if request.parent_task_id.is_some() {
            return Err(GrantError::Request(
                "an exchange's parent task is the subject token's task: `parent_task_id` is not accepted".into(),
            ));
        }
        let Some(subject_text) = request.subject_token.as_deref() else {
            return Err(GrantError::Request("`subject_token` is required".into()));
        };
        let of_a_person = request.subject_token_type.as_deref() == Some(JWT_TOKEN_TYPE);
        if !of_a_person {
            token_type(request.subject_token_type.as_deref(), "subject_token_type")?;
        }
        if request.requested_token_type.is_some() {
            token_type(
                request.requested_token_type.as_deref(),
                "requested_token_type",
            )?;
        }
        let now = self.clock.now();
        match (
            request.actor_token.as_deref(),
            request.actor_token_type.as_deref(),
        ) {
            (None, None) => {}
            (Some(actor_text), Some(_)) => {
                token_type(request.actor_token_type.as_deref(), "actor_token_type")?;
                let actor = self.working_access_token(account, actor_text, now).await?;
                if actor.is_none_or(|a| a.agent_id != agent.id || !a.chain.is_empty()) {
                    return Err(GrantError::Grant(
                        "the actor token is not a working token of this client acting for itself"
                            .into(),
                    ));
                }
            }
            (Some(_), None) => {
                return Err(GrantError::Request(
                    "`actor_token_type` is required with `actor_token`".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(GrantError::Request(
                    "`actor_token_type` without an `actor_token`".into(),
                ));
            }
        }
        if of_a_person {
            return self
                .exchange_for_person(agent, issuer, &request, subject_text, now, bound)
                .await;
        }
        let Some(subject) = self
            .working_access_token(account, subject_text, now)
            .await?
        else {
            return Err(GrantError::Grant(
                "the subject token is not a working access token of this account".into(),
            ));
        };
        if subject.agent_id == agent.id {
            return Err(GrantError::Grant(
                "the subject token is this client's own: there is nothing to exchange".into(),
            ));
        }
        if subject.may_act.is_some_and(|next| next != agent.id) {
            return Err(GrantError::Grant(
                "the subject token's `may_act` does not name this client".into(),
            ));
        }
        let grantor = Grantor::Agent(subject.agent_id);
        let grant = self
            .exchange_grant(agent, grantor, request.delegation_id.as_deref(), now)
            .await?;
        let mut chain = subject.chain.clone();
        chain.push(Hop {
            agent_id: agent.id,
            delegation_id: grant.id,
        });
        let mandate = self.mandate(account, &chain, now).await?;
        let granted_scopes = self.entitlements.expanded(account, &grant.scopes).await?;
        let ceiling: Vec<String> = subject
            .scopes
            .iter()
            .filter(|scope| granted_scopes.contains(*scope))
            .cloned()
            .collect();
        if ceiling.is_empty() {
            return Err(GrantError::Scope(
                "the subject token and the delegation grant share no scope".into(),
            ));
        }
        let audience = exchange_audience(agent, issuer, &request.resources, &subject, &grant)?;
        let task_id = grant_task(&grant, request.task_id)?;
        let granted = self
            .entitlements
            .grant(
                agent,
                Ask {
                    scope: request.scope.as_deref(),
                    ceiling: Some(&ceiling),
                    audience: &audience,
                    grant_type: GrantType::TokenExchange,
                    task_id: &task_id,
                    parent_task_id: Some(&subject.task_id),
                    now,
                    delegated: &mandate.delegated,
                },
            )
            .await?;
        let plan = Plan {
            dpop_jkt: bound,
            scopes: granted.scopes.clone(),
            audience,
            task_id,
            parent_task_id: Some(subject.task_id.clone()),
            grant_type: GrantType::TokenExchange,
            family_id: None,
            parent_id: Some(subject.id),
            acting: Acting {
                subject: Some(subject.subject.clone()),
                principal_id: subject.principal_id,
                chain,
                may_act: may_act(request.may_act.as_deref())?,
                not_after: mandate.not_after,
            },
        };
        let mut response = self
            .issue_new(agent, issuer, plan, granted.decided_by.as_ref())
            .await?;
        response.issued_token_type = Some(ACCESS_TOKEN_TYPE.to_owned());
        Ok(response)
    }

    /// RFC 8693 with a person's token from the identity provider as the subject: `agent`
    /// acts for the person's principal (the one whose email the provider vouches for) under
    /// a grant that principal made it (the one named, else the newest in force), as the
    /// first agent of the chain.
    async fn exchange_for_person(
        &self,
        agent: &Agent,
        issuer: &str,
        request: &TokenRequest,
        subject_text: &str,
        now: DateTime<Utc>,
        bound: Option<String>,
    ) -> Result<TokenResponse, GrantError> {
        let account = agent.account_id;
        let Some(people) = &self.people else {
            return Err(GrantError::Request(format!(
                "`subject_token_type` {JWT_TOKEN_TYPE} needs an identity provider (`auth.idp`)"
            )));
        };
        let person = people
            .person(subject_text)
            .await
            .map_err(|error| match error {
                SignInError::Refused(reason) => GrantError::Grant(format!(
                    "the subject token is not a working token of the identity provider: {reason}"
                )),
                SignInError::Unavailable(reason) => {
                    GrantError::Store(StoreError::Unavailable(reason.into()))
                }
            })?;
        let principal = principal_of(&*self.principals, account, &person)
            .await?
            .map_err(|refusal| {
                GrantError::Grant(format!("the subject token's person: {refusal}"))
            })?;
        let grantor = Grantor::Principal(principal.id);
        let grant = self
            .exchange_grant(agent, grantor, request.delegation_id.as_deref(), now)
            .await?;
        let (plan, decided_by) = self
            .first_hop(
                agent,
                issuer,
                grant.id,
                FirstHop {
                    scope: request.scope.as_deref(),
                    resources: &request.resources,
                    task_id: request.task_id.clone(),
                    grant_type: GrantType::TokenExchange,
                    may_act: may_act(request.may_act.as_deref())?,
                    bound,
                },
                now,
            )
            .await?;
        let mut response = self
            .issue_new(agent, issuer, plan, decided_by.as_ref())
            .await?;
        response.issued_token_type = Some(ACCESS_TOKEN_TYPE.to_owned());
        Ok(response)
    }

    /// The plan of tokens for `agent` acting first under the grant `id` (an authorization
    /// code's, or a person's in an exchange): the audience within the grant, its task, the
    /// scopes decided within it, and whom they act for; with the rule that decided.
    async fn first_hop(
        &self,
        agent: &Agent,
        issuer: &str,
        id: DelegationId,
        hop: FirstHop<'_>,
        now: DateTime<Utc>,
    ) -> Result<(Plan, Option<RuleRef>), GrantError> {
        let under = self.under_grant(agent, id, now).await?;
        let audience = within_grant(
            audience(agent, issuer, hop.resources)?,
            hop.resources,
            &under.grant,
        )?;
        let task_id = grant_task(&under.grant, hop.task_id)?;
        let granted = self
            .entitlements
            .grant(
                agent,
                Ask {
                    scope: hop.scope,
                    ceiling: Some(&under.ceiling),
                    audience: &audience,
                    grant_type: hop.grant_type,
                    task_id: &task_id,
                    parent_task_id: None,
                    now,
                    delegated: &under.mandate.delegated,
                },
            )
            .await?;
        let plan = Plan {
            dpop_jkt: hop.bound,
            scopes: granted.scopes,
            audience,
            task_id,
            parent_task_id: None,
            grant_type: hop.grant_type,
            family_id: None,
            parent_id: None,
            acting: Acting {
                may_act: hop.may_act,
                ..under.acting
            },
        };
        Ok((plan, granted.decided_by))
    }

    /// The grant an exchange acts under: from `grantor` (the subject's current actor or
    /// person) to `agent`, the one named or else the newest in force.
    async fn exchange_grant(
        &self,
        agent: &Agent,
        grantor: Grantor,
        named: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Delegation, GrantError> {
        let account = agent.account_id;
        let grant = match named {
            Some(text) => self
                .delegations
                .grant(account, delegation_id(text)?)
                .await
                .map_err(grant_refusal)?
                .filter(|g| g.grantor == grantor && g.agent_id == agent.id),
            None => self
                .delegations
                .newest_between(account, grantor, agent.id, now)
                .await
                .map_err(grant_refusal)?,
        };
        grant.ok_or_else(|| {
            GrantError::Grant(format!(
                "no delegation grant from the subject token's {} to this client is in force",
                match grantor {
                    Grantor::Principal(_) => "person",
                    Grantor::Agent(_) => "agent",
                }
            ))
        })
    }

    /// The record of the access token `text` of `account` if it works at `now`, its agents
    /// (the chain's too) active.
    async fn working_access_token(
        &self,
        account: AccountId,
        text: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Arc<TokenRecord>>, GrantError> {
        let Some(record) = self.recognise(account, text).await? else {
            return Ok(None);
        };
        if record.kind != TokenKind::Access
            || !record.is_active(now)
            || !self.agent_is_active(&record).await?
        {
            return Ok(None);
        }
        Ok(Some(record))
    }

    /// What the grants of `chain` allow at `now`: each one the account's, made for its
    /// hop's agent, in force (`DelegationService::check_in_force`) and deep enough for
    /// the agents after it; else `invalid_grant`.
    async fn mandate(
        &self,
        account: AccountId,
        chain: &[Hop],
        now: DateTime<Utc>,
    ) -> Result<Mandate, GrantError> {
        let mut grants = Vec::with_capacity(chain.len());
        let mut tools: Option<std::collections::BTreeSet<String>> = None;
        let mut not_after: Option<DateTime<Utc>> = None;
        for (index, hop) in chain.iter().enumerate() {
            let grant = self
                .delegations
                .grant(account, hop.delegation_id)
                .await
                .map_err(grant_refusal)?
                .filter(|grant| grant.agent_id == hop.agent_id)
                .ok_or_else(|| {
                    GrantError::Grant(
                        "the delegation grant is unknown or was not made for this client".into(),
                    )
                })?;
            self.delegations
                .check_in_force(&grant, now)
                .await
                .map_err(grant_refusal)?;
            // The agents from this hop to the chain's end, this hop's included.
            let reach = chain.len().saturating_sub(index);
            if reach > usize::from(grant.max_depth) {
                return Err(GrantError::Grant(format!(
                    "the delegation grant {} reaches {} agent(s) deep at most",
                    grant.id, grant.max_depth
                )));
            }
            if let Some(allowed) = &grant.tools {
                tools = Some(match tools {
                    None => allowed.clone(),
                    Some(so_far) => so_far.intersection(allowed).cloned().collect(),
                });
            }
            not_after = Some(not_after.map_or(grant.expires_at, |t| t.min(grant.expires_at)));
            grants.push(grant);
        }
        let principal = match grants.first().map(|grant| grant.grantor) {
            Some(Grantor::Principal(id)) => self
                .delegations
                .principal_facts(account, id)
                .await
                .map_err(grant_refusal)?,
            _ => None,
        };
        Ok(Mandate {
            delegated: Delegated { principal, tools },
            grants,
            not_after,
        })
    }

    async fn refresh(
        &self,
        agent: &Agent,
        issuer: &str,
        request: TokenRequest,
        bound: Option<String>,
    ) -> Result<TokenResponse, GrantError> {
        refuse_exchange_parameters(&request)?;
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
        if request.delegation_id.is_some() || request.may_act.is_some() {
            return Err(GrantError::Request(
                "a refresh keeps its delegation: `delegation_id` and `may_act` are not accepted"
                    .into(),
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
        if spent.dpop_jkt.is_some() && spent.dpop_jkt != bound {
            return Err(GrantError::Dpop(
                "the refresh token is bound to a DPoP key: present a proof of that key".into(),
            ));
        }
        if !request.resources.is_empty() && request.resources != spent.audience {
            return Err(GrantError::Target(
                "a refresh keeps the resources of its first grant".into(),
            ));
        }
        // Under delegation, every grant of the chain is checked again.
        let (delegated, acting) = if spent.chain.is_empty() {
            (Delegated::default(), Acting::default())
        } else {
            let mandate = self
                .mandate(agent.account_id, &spent.chain, self.clock.now())
                .await?;
            let acting = Acting {
                subject: Some(spent.subject.clone()),
                principal_id: spent.principal_id,
                chain: spent.chain.clone(),
                may_act: spent.may_act,
                not_after: mandate.not_after,
            };
            (mandate.delegated, acting)
        };
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
                    delegated: &delegated,
                },
            )
            .await?;
        let plan = Plan {
            dpop_jkt: bound,
            scopes: granted.scopes.clone(),
            audience: spent.audience.clone(),
            task_id: spent.task_id.clone(),
            parent_task_id: spent.parent_task_id.clone(),
            grant_type: GrantType::RefreshToken,
            family_id: Some(spent.family_id),
            parent_id: Some(spent.id),
            acting,
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
                        "client_id": spent.agent_id,
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
        let access_id = OAuthTokenId::time_ordered();
        // No token outlives the grants it acts under.
        let capped = |seconds: u32| {
            let at = d2_kernel::later(now, Duration::seconds(i64::from(seconds)));
            plan.acting.not_after.map_or(at, |limit| at.min(limit))
        };
        let expires_at = capped(agent.spec.access_token_seconds);
        let access_seconds =
            u32::try_from(expires_at.signed_duration_since(now).num_seconds().max(0))
                .unwrap_or(agent.spec.access_token_seconds);
        let client_id = agent.client_id();
        let subject = plan
            .acting
            .subject
            .clone()
            .unwrap_or_else(|| client_id.clone());
        let claims = AccessClaims {
            iss: issuer,
            sub: &subject,
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
            act: actor_claim(&plan.acting.chain),
            may_act: plan.acting.may_act.map(|next| json!({ "sub": next })),
            delegation_id: plan.acting.chain.last().map(|hop| hop.delegation_id),
            cnf: plan.dpop_jkt.as_ref().map(|jkt| json!({ "jkt": jkt })),
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
            Some(seconds) => Some((
                RefreshToken::generate()?,
                OAuthTokenId::time_ordered(),
                seconds,
            )),
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
            subject: subject.clone(),
            principal_id: plan.acting.principal_id,
            chain: plan.acting.chain.clone(),
            may_act: plan.acting.may_act,
            dpop_jkt: plan.dpop_jkt.clone(),
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
                    capped(*seconds),
                )
            }),
        };
        let response = TokenResponse {
            access_token,
            token_type: if plan.dpop_jkt.is_some() {
                "DPoP"
            } else {
                "Bearer"
            }
            .to_owned(),
            expires_in: access_seconds,
            scope: plan.scopes.join(" "),
            refresh_token: refresh.map(|(secret, _, _)| secret.expose().to_owned()),
            token_id: access_id,
            task_id: plan.task_id,
            parent_task_id: plan.parent_task_id,
            issued_token_type: None,
            id_token: None,
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
                "client_id": access.agent_id,
                "sub": access.subject,
                "scope": access.scope(),
                "aud": access.audience,
                "task_id": access.task_id,
                "parent_task_id": access.parent_task_id,
                "jti": access.id,
                "parent_id": access.parent_id,
                "family_id": access.family_id,
                "refresh_token_id": issuance.refresh.as_ref().map(|r| r.id),
                "grant_type": access.grant_type.as_str(),
                "delegation_id": access.delegation_id(),
                "depth": access.depth(),
                "act": actor_claim(&access.chain),
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
        if !record.is_active(self.clock.now()) {
            return Ok(None);
        }
        let Some(agent) = self.active_agent(&record).await? else {
            return Ok(None);
        };
        Ok(Some(Introspected {
            record,
            issuer: issuer.to_owned(),
            client_id: agent.client_id(),
        }))
    }

    /// As [`Self::introspect`], for the agent `caller` at the introspection endpoint, which
    /// also learns why a revoked token of its account was revoked: a token of the account
    /// that no longer works (expired, revoked, its agent disabled) is audited as
    /// `oauth.introspect_deny`, since someone still presents it. Text that is no token of
    /// the account is not: nothing names whose it would be.
    pub async fn introspect_as(
        &self,
        caller: &Agent,
        issuer: &str,
        text: &str,
    ) -> Result<Introspection, GrantError> {
        let account = caller.account_id;
        let Some(record) = self.recognise(account, text).await? else {
            return Ok(Introspection::Inactive);
        };
        let now = self.clock.now();
        let why = if record.revoked_at.is_some() {
            "revoked"
        } else if now >= record.expires_at {
            "expired"
        } else {
            match self.active_agent(&record).await? {
                None => "agent_inactive",
                Some(agent) => {
                    return Ok(Introspection::Active(Introspected {
                        record,
                        issuer: issuer.to_owned(),
                        client_id: agent.client_id(),
                    }));
                }
            }
        };
        let entry = AuditEntry::system(account, AuditAction::OAuthIntrospectDeny, now)
            .target("oauth_token", record.id)
            .metadata(json!({
                "client_id": caller.client_id(),
                "token_client_id": record.agent_id,
                "reason": why,
                "task_id": record.task_id,
                "parent_task_id": record.parent_task_id,
                "jti": record.id,
            }));
        if let Err(failure) = self.tokens.audit_refusal(&entry).await {
            tracing::warn!(error = %failure, "the introspection denial could not be audited");
        }
        Ok(match record.revoked_at {
            Some(at) => Introspection::Revoked {
                at,
                reason: record
                    .revoked_reason
                    .clone()
                    .unwrap_or_else(|| "revoked".to_owned()),
            },
            None => Introspection::Inactive,
        })
    }

    /// Whether the access token `text` of `account` may call the tool `name` now, with the
    /// token's record; `None` when the token does not work (seed 003's
    /// `verify-tool-access`).
    pub async fn tool_access(
        &self,
        account: AccountId,
        text: &str,
        name: &str,
    ) -> Result<Option<ToolCheck>, GrantError> {
        let Some((agent, record)) = self.bearer(account, text).await? else {
            return Ok(None);
        };
        let now = self.clock.now();
        let delegated = if record.chain.is_empty() {
            Some(Delegated::default())
        } else {
            match self.mandate(account, &record.chain, now).await {
                Ok(mandate) => Some(mandate.delegated),
                Err(GrantError::Grant(_)) => None,
                Err(failure) => return Err(failure),
            }
        };
        let access = match delegated {
            Some(delegated) => {
                self.entitlements
                    .tool_access(&agent, &record, &delegated, name, now)
                    .await?
            }
            None => ToolAccess::not_delegated(),
        };
        Ok(Some(ToolCheck {
            client_id: agent.client_id(),
            record,
            access,
        }))
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
        let client_id = self.active_agent(&record).await?.map(|a| a.client_id());
        if client_id.is_none() {
            problems.push(LineageProblem::AgentInactive);
        }
        let mut lineage: Vec<Arc<TokenRecord>> = Vec::new();
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
            let child = lineage.last().unwrap_or(&record);
            if !derives_from(child, &parent) {
                problems.push(LineageProblem::Broken(parent.id));
            }
            next = parent.parent_id;
            lineage.push(parent);
        }
        Ok(Verification {
            record,
            client_id,
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
            .records
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

    /// Whether the token's agent, and every agent of its chain, is active: a disabled or
    /// deleted agent's tokens stop working, and so do those acting after it.
    async fn agent_is_active(&self, record: &TokenRecord) -> Result<bool, GrantError> {
        Ok(self.active_agent(record).await?.is_some())
    }

    /// The token's agent, if it and every agent of its chain is active.
    async fn active_agent(&self, record: &TokenRecord) -> Result<Option<Arc<Agent>>, GrantError> {
        for id in record.chain.iter().map(|h| h.agent_id) {
            let agent = self.agents.agent(record.account_id, id).await?;
            if agent.is_none_or(|a| a.state != crate::AgentState::Active) {
                return Ok(None);
            }
        }
        let agent = self
            .agents
            .agent(record.account_id, record.agent_id)
            .await?;
        Ok(agent.filter(|a| a.state == crate::AgentState::Active))
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
        Ok(self
            .active_agent(&record)
            .await?
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
        // Authorization codes live a minute: those expired as long ago go with the tokens.
        let mut pruned = self.codes.prune_codes(before).await?;
        loop {
            let deleted = self.tokens.prune(before, FAMILIES_PER_BATCH).await?;
            pruned = pruned.saturating_add(deleted);
            if deleted == 0 || !keep_going() {
                return Ok(pruned);
            }
        }
    }

    fn forget_account(&self, account: AccountId) {
        self.records.forget_account(account);
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

/// Refuses more `resource`s than a request may name, or one that is not an RFC 8707
/// resource.
fn checked_resources(asked: &[String]) -> Result<(), GrantError> {
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
    Ok(())
}

/// The `aud`: the resources asked, each one the agent may target; else its registered
/// ones; else the issuer.
pub(crate) fn audience(
    agent: &Agent,
    issuer: &str,
    asked: &[String],
) -> Result<Vec<String>, GrantError> {
    checked_resources(asked)?;
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
    OAuthTokenId::time_ordered().as_uuid().simple().to_string()
}

/// Whether `child` hangs together with `parent`, the token it names as its parent: a
/// refresh stays in its parent's family and task; an exchange starts a family of its own,
/// its parent task the subject token's task, one agent deeper in the same chain.
fn derives_from(child: &TokenRecord, parent: &TokenRecord) -> bool {
    match child.grant_type {
        GrantType::TokenExchange => {
            child.parent_task_id.as_deref() == Some(parent.task_id.as_str())
                && child.chain.starts_with(&parent.chain)
                && child.depth() == parent.depth().saturating_add(1)
        }
        GrantType::ClientCredentials | GrantType::AuthorizationCode | GrantType::RefreshToken => {
            parent.family_id == child.family_id && parent.task_id == child.task_id
        }
    }
}

/// Refuses the token exchange's parameters on another grant.
fn refuse_exchange_parameters(request: &TokenRequest) -> Result<(), GrantError> {
    let exchange_only = [
        ("subject_token", &request.subject_token),
        ("subject_token_type", &request.subject_token_type),
        ("actor_token", &request.actor_token),
        ("actor_token_type", &request.actor_token_type),
        ("requested_token_type", &request.requested_token_type),
    ];
    match exchange_only.iter().find(|(_, value)| value.is_some()) {
        Some((name, _)) => Err(GrantError::Request(format!(
            "`{name}` belongs to the token exchange grant"
        ))),
        None => Ok(()),
    }
}

/// A token type parameter: access tokens are exchanged (and people's JWTs, as subjects) and
/// issued.
fn token_type(given: Option<&str>, name: &str) -> Result<(), GrantError> {
    match given {
        Some(ACCESS_TOKEN_TYPE) => Ok(()),
        None => Err(GrantError::Request(format!("`{name}` is required"))),
        Some(_) => Err(GrantError::Request(format!(
            "`{name}` must be {ACCESS_TOKEN_TYPE}: only access tokens are exchanged"
        ))),
    }
}

fn delegation_id(text: &str) -> Result<DelegationId, GrantError> {
    text.parse()
        .map_err(|_| GrantError::Request("`delegation_id` must be a grant's id (a uuid)".into()))
}

/// The `may_act` parameter: the client id of the one agent that may act next.
fn may_act(text: Option<&str>) -> Result<Option<AgentId>, GrantError> {
    text.map(|text| {
        text.parse().map_err(|_| {
            GrantError::Request("`may_act` must be an agent's client id (a uuid)".into())
        })
    })
    .transpose()
}

/// A refusal to act under a grant: `invalid_grant`, unless the store failed.
fn grant_refusal(error: DelegationError) -> GrantError {
    match error {
        DelegationError::Store(error) => GrantError::Store(error),
        other => GrantError::Grant(format!("the delegation grant is not in force: {other}")),
    }
}

/// The task of a token issued under `grant`: its task, when it names one (a request
/// naming another is refused), else the one asked, else a new one.
fn grant_task(grant: &Delegation, asked: Option<String>) -> Result<String, GrantError> {
    match (&grant.task_id, asked) {
        (None, asked) => task_id(asked),
        (Some(task), None) => Ok(task.clone()),
        (Some(task), Some(asked)) if *task == asked => Ok(asked),
        (Some(_), Some(_)) => Err(GrantError::Grant(
            "the delegation grant is for another task".into(),
        )),
    }
}

/// The audience of a token issued under `grant`: the resources asked (else the grant's,
/// else the agent's default), each one the grant names when it names any.
fn within_grant(
    audience: Vec<String>,
    asked: &[String],
    grant: &Delegation,
) -> Result<Vec<String>, GrantError> {
    if grant.resources.is_empty() {
        return Ok(audience);
    }
    if asked.is_empty() {
        return Ok(grant.resources.iter().cloned().collect());
    }
    match audience.iter().find(|r| !grant.resources.contains(*r)) {
        Some(refused) => Err(GrantError::Target(format!(
            "`{}` is not a resource the delegation grant names",
            refused.escape_debug()
        ))),
        None => Ok(audience),
    }
}

/// The audience of an exchanged token: the resources asked, else the subject token's;
/// each one the subject token is for, the grant names (when it names any) and the actor
/// may target (its registered resources, or the issuer when it has none). A delegation
/// never reaches further than the token it comes from.
fn exchange_audience(
    actor: &Agent,
    issuer: &str,
    asked: &[String],
    subject: &TokenRecord,
    grant: &Delegation,
) -> Result<Vec<String>, GrantError> {
    checked_resources(asked)?;
    let mut audience = if asked.is_empty() {
        subject.audience.clone()
    } else {
        asked.to_vec()
    };
    audience.sort();
    audience.dedup();
    let targetable = |resource: &String| {
        actor.spec.resources.contains(resource)
            || (actor.spec.resources.is_empty() && resource == issuer)
    };
    for resource in &audience {
        let why = if !subject.audience.contains(resource) {
            "the subject token is not for"
        } else if !grant.resources.is_empty() && !grant.resources.contains(resource) {
            "the delegation grant does not name"
        } else if !targetable(resource) {
            "this client may not target"
        } else {
            continue;
        };
        return Err(GrantError::Target(format!(
            "{why} `{}`",
            resource.escape_debug()
        )));
    }
    Ok(audience)
}
