//! What the agents, principals and access rules need from storage. Every method is scoped
//! by account except [`AgentRepo::client`] and [`AgentRepo::activate`], whose secret names
//! the agent.
//! Errors: [`StoreError`] only; not found and refusals are values.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_audit::AuditEntry;
use d2_kernel::{AccountId, Page, PageRequest, SecretDigest, StoreError};

use crate::agent::{Agent, AgentId, AgentSpec, AgentState, ClientSecrets, PendingRegistration};
use crate::authorization::{AuthorizationCode, Redemption};
use crate::authorizations::SignedInPerson;
use crate::client_documents::ClientPolicy;
use crate::delegation::{Delegation, DelegationFilter, DelegationId, DelegationRevocation};
use crate::principal::{Principal, PrincipalId, PrincipalSpec};
use crate::rules::rule::{AccessRule, RuleId, RuleSpec};
use crate::token::{
    Issuance, OAuthTokenId, RefreshIssuance, RefreshOutcome, RevokeScope, TokenCounts, TokenFilter,
    TokenRecord,
};

/// Builds the audit record of a change from the agent it changed.
pub type AgentAuditOf<'a> = &'a (dyn Fn(&Agent) -> AuditEntry + Sync);

/// Builds the audit record of a metadata document's agent from the agent and whether it
/// was created (else updated).
pub type MetadataAuditOf<'a> = &'a (dyn Fn(&Agent, bool) -> AuditEntry + Sync);

#[async_trait]
pub trait AgentRepo: Send + Sync + 'static {
    /// Stores a new pending agent with its registration, and `audit`, at once.
    async fn register(
        &self,
        agent: &Agent,
        registration: &PendingRegistration,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;

    /// Activates the pending agent whose registration digest is `registration`, if it has
    /// not expired at `now`: the agent becomes active with its first secret `secret`, and
    /// the registration is spent (single use, also under concurrent calls). `None` when no
    /// pending registration has this digest.
    async fn activate(
        &self,
        registration: &SecretDigest,
        secret: &SecretDigest,
        now: DateTime<Utc>,
        audit_of: AgentAuditOf<'_>,
    ) -> Result<Option<Agent>, StoreError>;

    async fn agent(&self, account: AccountId, id: AgentId) -> Result<Option<Agent>, StoreError>;

    /// The account's agents, newest first.
    async fn agents(
        &self,
        account: AccountId,
        page: &PageRequest,
    ) -> Result<Page<Agent>, StoreError>;

    /// Replaces the agent's spec (and its state, when `state` is given: active and disabled
    /// only, never back to pending). `None` when the account has no such agent.
    async fn update(
        &self,
        account: AccountId,
        id: AgentId,
        spec: &AgentSpec,
        state: Option<AgentState>,
        now: DateTime<Utc>,
        audit_of: AgentAuditOf<'_>,
    ) -> Result<Option<Agent>, StoreError>;

    /// Deletes the agent with its secrets and registration. `false` when the account has no
    /// such agent.
    async fn delete(
        &self,
        account: AccountId,
        id: AgentId,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError>;

    /// Makes `secret` the active agent's current secret, keeping the one it replaces until
    /// `previous_until`. `None` when the account has no such agent; the agent unchanged
    /// when it is not active.
    async fn rotate_secret(
        &self,
        account: AccountId,
        id: AgentId,
        secret: &SecretDigest,
        previous_until: DateTime<Utc>,
        audit_of: AgentAuditOf<'_>,
    ) -> Result<Option<Agent>, StoreError>;

    /// The account's agent named by the metadata document at `url`, if it has one.
    async fn metadata_client_id(
        &self,
        account: AccountId,
        url: &str,
    ) -> Result<Option<AgentId>, StoreError>;

    /// Stores `candidate` (an active agent with a `metadata_url`) when its account has no
    /// agent of that URL; when it has, sets what the document rules (name, description,
    /// redirect URIs, authentication) to the candidate's and keeps the rest. Answers the
    /// stored agent; `audit_of(agent, created)` is written with the change, none when
    /// nothing changed. Concurrent calls for one URL store one agent.
    async fn save_metadata_client(
        &self,
        candidate: &Agent,
        audit_of: MetadataAuditOf<'_>,
    ) -> Result<Agent, StoreError>;

    /// Stores `agent`, which registered itself (active, `registered_dynamically`), with its
    /// client `secret` if it has one, and `audit`. With a `fingerprint` (a client holding no
    /// shared secret), when the account has an agent of that fingerprint already, answers
    /// it instead and writes nothing (also under concurrent registrations).
    async fn register_dynamic(
        &self,
        agent: &Agent,
        secret: Option<&SecretDigest>,
        fingerprint: Option<&SecretDigest>,
        audit: &AuditEntry,
    ) -> Result<Agent, StoreError>;

    /// Deletes up to `limit` dynamically registered agents created before `before` of
    /// which no token is stored and to which no delegation grant is in force at `now`,
    /// each with its audit (`audit_of`); answers their accounts, one per agent.
    async fn reap_dynamic(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
        audit_of: AgentAuditOf<'_>,
    ) -> Result<Vec<AccountId>, StoreError>;

    /// The agent a client id names, in any account, with its secrets (none before
    /// activation): what the token endpoint authenticates.
    async fn client(
        &self,
        id: AgentId,
    ) -> Result<Option<(Agent, Option<ClientSecrets>)>, StoreError>;

    /// Spends the client assertion `jti` of `agent`, remembered until `expires_at`: `false`,
    /// with nothing written, when it was spent already (a replay), also under concurrent
    /// calls. The agent's assertions that expired before `now` are forgotten.
    async fn spend_assertion(
        &self,
        agent: AgentId,
        jti: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
}

/// The accounts' policies for clients named by a metadata document.
#[async_trait]
pub trait ClientPolicyRepo: Send + Sync + 'static {
    /// The account's policy; `None` until one is set.
    async fn client_policy(&self, account: AccountId) -> Result<Option<ClientPolicy>, StoreError>;

    /// Replaces the account's policy (its initial access token aside), with `audit`, and
    /// announces the change.
    async fn set_client_policy(
        &self,
        account: AccountId,
        policy: &ClientPolicy,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;

    /// Makes `digest` the account's initial access token (the policy, when it has none
    /// yet, the default otherwise), with `audit`, and announces the change.
    async fn set_initial_access(
        &self,
        account: AccountId,
        digest: &SecretDigest,
        now: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;
}

/// Builds the audit record of a refresh that rotated or found a reuse, from the outcome
/// and the refresh token presented.
pub type RefreshAuditOf<'a> = &'a (dyn Fn(&RefreshOutcome, &TokenRecord) -> AuditEntry + Sync);

/// Builds the audit record of a revocation from the ids it revoked.
pub type RevokeAuditOf<'a> = &'a (dyn Fn(&[OAuthTokenId]) -> AuditEntry + Sync);

/// The tokens the authorization server issued. Every read is scoped by account except by
/// a refresh token's digest (the secret names its token).
#[async_trait]
pub trait OAuthTokenRepo: Send + Sync + 'static {
    /// Stores the tokens issued at once, and `audit`. `false`, with nothing written, when
    /// their agent is gone (deleted meanwhile).
    async fn issue(&self, issuance: &Issuance, audit: &AuditEntry) -> Result<bool, StoreError>;

    /// Spends the refresh token whose digest is `presented` for `next`, if `client` holds
    /// it and it works at `now`, at most once also under concurrent calls. A token spent at
    /// or after `replay_since` answers the sealed answer of that spending; one spent before
    /// it revokes its whole family. Rotations and reuses are audited by `audit_of`; a
    /// refusal or a replay writes nothing.
    async fn refresh(
        &self,
        presented: &SecretDigest,
        client: AgentId,
        now: DateTime<Utc>,
        replay_since: DateTime<Utc>,
        next: &RefreshIssuance,
        audit_of: RefreshAuditOf<'_>,
    ) -> Result<RefreshOutcome, StoreError>;

    async fn token(
        &self,
        account: AccountId,
        id: OAuthTokenId,
    ) -> Result<Option<TokenRecord>, StoreError>;

    /// The refresh token with this digest, in any account.
    async fn refresh_token(&self, digest: &SecretDigest)
    -> Result<Option<TokenRecord>, StoreError>;

    /// Revokes the tokens `scope` reaches that still work at `now`, with `reason`, and
    /// returns their ids; none (nothing written, no audit) when none did.
    async fn revoke(
        &self,
        account: AccountId,
        scope: RevokeScope,
        reason: &str,
        now: DateTime<Utc>,
        audit_of: RevokeAuditOf<'_>,
    ) -> Result<Vec<OAuthTokenId>, StoreError>;

    /// The account's tokens that `filter` selects, newest first.
    async fn tokens(
        &self,
        account: AccountId,
        filter: &TokenFilter,
        page: &PageRequest,
    ) -> Result<Page<TokenRecord>, StoreError>;

    /// The account's access tokens revoked before their expiry that have not expired at
    /// `now`, with their expiry, oldest expiry first (the signed revocation list).
    async fn revoked_access_tokens(
        &self,
        account: AccountId,
        now: DateTime<Utc>,
    ) -> Result<Vec<(OAuthTokenId, DateTime<Utc>)>, StoreError>;

    /// Records `audit`, a refusal that changed nothing else (a denied token request).
    async fn audit_refusal(&self, audit: &AuditEntry) -> Result<(), StoreError>;

    /// The account's working tokens at `now`, and the access tokens issued since each of
    /// `since`.
    async fn counts(
        &self,
        account: AccountId,
        now: DateTime<Utc>,
        since: &[DateTime<Utc>],
    ) -> Result<TokenCounts, StoreError>;

    /// Deletes, in every account, up to `families` families of tokens each of whose tokens
    /// expired before `expired_before`, and returns how many tokens went. A family goes
    /// whole, so no token is left whose lineage is gone.
    async fn prune(&self, expired_before: DateTime<Utc>, families: u32) -> Result<u64, StoreError>;
}

/// Builds the audit record of a change from the principal it changed and the tokens its
/// deactivation revoked.
pub type PrincipalAuditOf<'a> = &'a (dyn Fn(&Principal, &[OAuthTokenId]) -> AuditEntry + Sync);

/// The outcome of writing a principal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrincipalWrite {
    Written(Box<Principal>),
    /// Another principal of the account has the username: nothing was written.
    UsernameTaken,
    /// (Updates) the account has no such principal.
    NotFound,
}

/// The account's principals. Every method is scoped by account.
#[async_trait]
pub trait PrincipalRepo: Send + Sync + 'static {
    /// Stores a new principal and `audit` at once. MUST answer `UsernameTaken` (and write
    /// nothing) when a principal of the account has its username, also under concurrent
    /// creations.
    async fn create_principal(
        &self,
        principal: &Principal,
        audit: &AuditEntry,
    ) -> Result<PrincipalWrite, StoreError>;

    async fn principal(
        &self,
        account: AccountId,
        id: PrincipalId,
    ) -> Result<Option<Principal>, StoreError>;

    /// The account's active principals whose email is `email` (compared without case),
    /// oldest first, at most `limit`.
    async fn active_principals_by_email(
        &self,
        account: AccountId,
        email: &str,
        limit: u32,
    ) -> Result<Vec<Principal>, StoreError>;

    /// The account's principals, newest first, the active (or inactive) ones only when
    /// `active` says so.
    async fn principals(
        &self,
        account: AccountId,
        active: Option<bool>,
        page: &PageRequest,
    ) -> Result<Page<Principal>, StoreError>;

    /// Replaces the principal's spec, with the record `audit_of` makes of the result. An
    /// inactive spec revokes, in the same transaction, every token acting for the
    /// principal (`RevokeScope::Principal`). `NotFound` when the account has no such
    /// principal; `UsernameTaken` as for creation.
    async fn update_principal(
        &self,
        account: AccountId,
        id: PrincipalId,
        spec: &PrincipalSpec,
        now: DateTime<Utc>,
        audit_of: PrincipalAuditOf<'_>,
    ) -> Result<PrincipalWrite, StoreError>;

    /// `false` when the account has no such principal (nothing written).
    async fn delete_principal(
        &self,
        account: AccountId,
        id: PrincipalId,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError>;
}

/// Builds the audit record of a revocation from the grant as revoked and the tokens it
/// revoked with it.
pub type DelegationAuditOf<'a> = &'a (dyn Fn(&Delegation, &[OAuthTokenId]) -> AuditEntry + Sync);

/// The outcome of revoking a grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DelegationRevoke {
    /// Revoked now (the grant as revoked).
    Revoked(Box<Delegation>),
    /// It was revoked before: nothing written.
    AlreadyRevoked(Box<Delegation>),
    NotFound,
}

/// The account's delegation grants. Every method is scoped by account.
#[async_trait]
pub trait DelegationRepo: Send + Sync + 'static {
    /// Stores a new grant and `audit` at once. `false` (nothing written) when its grantee,
    /// or its grantor, is no longer the account's (deleted meanwhile).
    async fn create_delegation(
        &self,
        delegation: &Delegation,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError>;

    async fn delegation(
        &self,
        account: AccountId,
        id: DelegationId,
    ) -> Result<Option<Delegation>, StoreError>;

    /// The account's grants matching `filter`, newest first.
    async fn delegations(
        &self,
        account: AccountId,
        filter: &DelegationFilter,
        page: &PageRequest,
    ) -> Result<Page<Delegation>, StoreError>;

    /// The account's grants revoked before their expiry that have not expired at `now`,
    /// with their expiry, oldest expiry first (the signed revocation list).
    async fn revoked_delegations(
        &self,
        account: AccountId,
        now: DateTime<Utc>,
    ) -> Result<Vec<(DelegationId, DateTime<Utc>)>, StoreError>;

    /// Revokes the grant, and in the same transaction every token issued under it or
    /// derived from one (`RevokeScope::Delegation`), with the record `audit_of` makes of
    /// them, unless it was revoked before. Of concurrent revocations exactly one answers
    /// `Revoked`.
    async fn revoke_delegation(
        &self,
        account: AccountId,
        id: DelegationId,
        revocation: &DelegationRevocation,
        audit_of: DelegationAuditOf<'_>,
    ) -> Result<DelegationRevoke, StoreError>;
}

/// Builds the audit record of a change from the rule it changed.
pub type RuleAuditOf<'a> = &'a (dyn Fn(&AccessRule) -> AuditEntry + Sync);

/// The outcome of writing an access rule.
#[derive(Clone, Debug, PartialEq)]
pub enum RuleWrite {
    Written(Box<AccessRule>),
    /// Another rule of the account has the name: nothing was written.
    NameTaken,
    /// (Creations) the account already holds this many rules: nothing was written.
    TooMany(usize),
    /// (Updates) the account has no such rule.
    NotFound,
}

/// The account's access rules. Every method is scoped by account, and every change
/// announces `Change::AccessRules(account)` in its transaction, so that each replica's
/// compiled rules are dropped when it commits.
#[async_trait]
pub trait AccessRuleRepo: Send + Sync + 'static {
    /// Stores a new rule and `audit` at once, unless the account holds `max_rules` rules
    /// already (`TooMany`) or one with its name (`NameTaken`); both checks hold under
    /// concurrent creations.
    async fn create_rule(
        &self,
        rule: &AccessRule,
        max_rules: usize,
        audit: &AuditEntry,
    ) -> Result<RuleWrite, StoreError>;

    async fn rule(&self, account: AccountId, id: RuleId) -> Result<Option<AccessRule>, StoreError>;

    /// The account's rules, newest first.
    async fn rules(
        &self,
        account: AccountId,
        page: &PageRequest,
    ) -> Result<Page<AccessRule>, StoreError>;

    /// Every enabled rule of the account, in any order: what decisions evaluate.
    async fn enabled_rules(&self, account: AccountId) -> Result<Vec<AccessRule>, StoreError>;

    /// Replaces the rule's spec. `NotFound` when the account has no such rule,
    /// `NameTaken` when another rule of the account has the new name.
    async fn update_rule(
        &self,
        account: AccountId,
        id: RuleId,
        spec: &RuleSpec,
        now: DateTime<Utc>,
        audit_of: RuleAuditOf<'_>,
    ) -> Result<RuleWrite, StoreError>;

    /// `false` when the account has no such rule (nothing written).
    async fn delete_rule(
        &self,
        account: AccountId,
        id: RuleId,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError>;
}

/// The authorization codes of the authorization code flow, by the keyed digest of their
/// text. Every read is scoped by account.
#[async_trait]
pub trait AuthorizationCodeRepo: Send + Sync + 'static {
    /// Stores a new code. `false` (nothing written) when its agent, principal or grant is
    /// gone (deleted meanwhile).
    async fn create_code(
        &self,
        code: &AuthorizationCode,
        digest: &SecretDigest,
    ) -> Result<bool, StoreError>;

    /// The code of `account` with this digest, spent or not.
    async fn code(
        &self,
        account: AccountId,
        digest: &SecretDigest,
    ) -> Result<Option<AuthorizationCode>, StoreError>;

    /// Spends the code of `account` with this digest at `now` for the tokens of
    /// `issuance`, storing them and `audit` in the same transaction, at most once also under
    /// concurrent calls: a code spent before answers [`Redemption::Spent`] with the family
    /// its first use brought, and nothing is written.
    async fn redeem_code(
        &self,
        account: AccountId,
        digest: &SecretDigest,
        issuance: &Issuance,
        audit: &AuditEntry,
        now: DateTime<Utc>,
    ) -> Result<Redemption, StoreError>;

    /// Deletes, in every account, the codes that expired before `expired_before`; returns
    /// how many went.
    async fn prune_codes(&self, expired_before: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// What the browser sign-in is asked: where the provider sends the person back, and the
/// values that bind its answer to this sign-in (the PKCE verifier's challenge is sent).
#[derive(Clone, Copy, Debug)]
pub struct SignInRequest<'a> {
    pub redirect_uri: &'a str,
    pub state: &'a str,
    pub nonce: &'a str,
    pub code_verifier: &'a str,
}

/// Why a browser sign-in failed.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// The provider's answer is not a sign-in this server accepts (its reason; never a
    /// token).
    #[error("the sign-in was refused: {0}")]
    Refused(String),
    /// The provider could not be reached or answered an error.
    #[error("the identity provider is unavailable: {0}")]
    Unavailable(String),
}

/// Signing people in through the identity provider in their browser: OpenID Connect's
/// authorization code flow with PKCE, this server the relying party.
#[async_trait]
pub trait BrowserSignIn: Send + Sync + 'static {
    /// Where to send the browser: the provider's authorization endpoint asking for
    /// `openid email profile` with `request`'s values.
    async fn authorization_url(&self, request: &SignInRequest<'_>) -> Result<String, SignInError>;

    /// Redeems the provider's `code` and verifies the ID token it answers (signature,
    /// issuer, this client as audience, expiry, `request`'s nonce): the person it names.
    async fn redeem(
        &self,
        code: &str,
        request: &SignInRequest<'_>,
    ) -> Result<SignedInPerson, SignInError>;
}

/// The identity provider's tokens of people, as the subject of a token exchange: an agent
/// holding a person's token (a JWT the provider issued for this server) acts for their
/// principal.
#[async_trait]
pub trait PersonTokens: Send + Sync + 'static {
    /// The person `token` proves.
    async fn person(&self, token: &str) -> Result<SignedInPerson, SignInError>;
}
