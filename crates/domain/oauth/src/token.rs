//! Tokens the authorization server issues to agents, and their lineage. An access token
//! is a JWT (RFC 9068); its row keeps a keyed digest of the exact text issued, so a token
//! is recognised by its row and its digest alone, never by claims a forger could copy.
//! A refresh token is a secret of the server's one format (`d2rt_`), kept as a digest.

use chrono::{DateTime, Utc};
use d2_kernel::{AccountId, Secret, SecretDigest, SecretFormat};

use crate::agent::AgentId;
use crate::delegation::DelegationId;
use crate::principal::PrincipalId;

d2_kernel::typed_id!(
    /// An issued token: an access token's `jti`, or a refresh token's id.
    OAuthTokenId
);

/// The format of refresh tokens.
#[derive(Debug)]
pub enum RefreshTokenFormat {}

impl SecretFormat for RefreshTokenFormat {
    const NAME: &'static str = "RefreshToken";
    const PREFIX: &'static str = "d2rt_";
}

pub type RefreshToken = Secret<RefreshTokenFormat>;

d2_kernel::named_values! {
    /// What an issued token is.
    pub enum TokenKind (unknown: UnknownTokenKind) {
        Access = "access",
        Refresh = "refresh",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown token kind `{0}`: use access or refresh")]
pub struct UnknownTokenKind(pub String);

d2_kernel::named_values! {
    /// The grant a token was issued by.
    pub enum GrantType (unknown: UnknownGrantType) {
        ClientCredentials = "client_credentials",
        /// RFC 6749 §4.1 with PKCE: a code a person's approval sent the agent.
        AuthorizationCode = "authorization_code",
        RefreshToken = "refresh_token",
        /// RFC 8693: an agent acting for the subject of another token.
        TokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unsupported grant_type `{0}`: use client_credentials, authorization_code, refresh_token \
     or urn:ietf:params:oauth:grant-type:token-exchange"
)]
pub struct UnknownGrantType(pub String);

/// The bounds of what a token request may carry.
pub mod token_limits {
    /// Characters of a `task_id` or `parent_task_id`.
    pub const TASK_ID_CHARS: usize = 128;
    /// Scopes one request may ask for.
    pub const SCOPES: usize = 100;
    /// Resources one request may name.
    pub const RESOURCES: usize = 10;
    /// Tokens of a lineage read by a verification (a refresh adds one each time).
    pub const LINEAGE: usize = 100;
}

/// What a task id may be: 1 to 128 of `A-Z a-z 0-9 - _ . : /`.
pub fn is_task_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= token_limits::TASK_ID_CHARS
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b))
}

/// Why a token stopped working before its expiry.
pub mod revocation_reasons {
    /// Its client revoked it (RFC 7009).
    pub const CLIENT: &str = "client";
    /// An admin revoked it.
    pub const ADMIN: &str = "admin";
    /// A spent refresh token of its family was presented again.
    pub const REUSE: &str = "reuse";
    /// The delegation grant it was issued under was revoked.
    pub const DELEGATION: &str = "delegation_revoked";
    /// The principal it acts for was deactivated.
    pub const PRINCIPAL: &str = "principal_inactive";
    /// The authorization code it was issued for was presented again.
    pub const CODE_REUSE: &str = "code_reuse";
}

/// One agent in a delegated token's chain, and the grant that lets it act.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hop {
    pub agent_id: AgentId,
    pub delegation_id: DelegationId,
}

/// An issued token's row: what it grants and where it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: OAuthTokenId,
    pub account_id: AccountId,
    pub agent_id: AgentId,
    pub kind: TokenKind,
    /// The tokens issued together and refreshed from each other: the first refresh token's
    /// id, or the access token's own when it came alone.
    pub family_id: OAuthTokenId,
    /// The token this one was derived from (the refresh token spent for it).
    pub parent_id: Option<OAuthTokenId>,
    /// The `sub`: the agent's client id when it acts for itself; under delegation, whom
    /// the chain acts for (the principal's id, or the first granting agent's client id).
    pub subject: String,
    /// The principal the token acts for, when its delegation starts with one.
    pub principal_id: Option<PrincipalId>,
    /// The agents acting for the subject, the first one first, each with the grant that
    /// lets it (the last is the token's agent); empty when the agent acts for itself.
    /// Its length is the token's depth.
    pub chain: Vec<Hop>,
    /// The one agent that may exchange this token to act next (RFC 8693 `may_act`).
    pub may_act: Option<AgentId>,
    /// DPoP (RFC 9449): the JWK SHA-256 thumbprint of the key the token is bound to.
    pub dpop_jkt: Option<String>,
    pub scopes: Vec<String>,
    /// The `aud`: the resources it was issued for (or the issuer).
    pub audience: Vec<String>,
    pub task_id: String,
    pub parent_task_id: Option<String>,
    pub grant_type: GrantType,
    /// The digest of the token's text: the JWT's for an access token, the secret's for a
    /// refresh token.
    pub digest: SecretDigest,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_reason: Option<String>,
}

impl TokenRecord {
    /// Whether the token works at `now`: not revoked, not expired.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }

    pub fn scope(&self) -> String {
        self.scopes.join(" ")
    }

    /// How many agents deep the token acts for its subject: 0 for an agent's own token.
    pub fn depth(&self) -> usize {
        self.chain.len()
    }

    /// The grant the token's agent acts under, when it is delegated.
    pub fn delegation_id(&self) -> Option<DelegationId> {
        self.chain.last().map(|hop| hop.delegation_id)
    }
}

/// Tokens issued at once: the access token, and the refresh token when the agent gets
/// them.
#[derive(Clone, Debug)]
pub struct Issuance {
    pub access: TokenRecord,
    pub refresh: Option<TokenRecord>,
}

impl Issuance {
    pub fn records(&self) -> impl Iterator<Item = &TokenRecord> {
        std::iter::once(&self.access).chain(self.refresh.as_ref())
    }
}

/// A refresh's new tokens, and the sealed answer a retry within the grace gets back.
#[derive(Clone, Debug)]
pub struct RefreshIssuance {
    pub issuance: Issuance,
    /// The answer, sealed with a key only the spent refresh token's holder can derive.
    pub sealed_answer: Vec<u8>,
}

/// What spending a refresh token came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The token was spent for the new tokens, now stored.
    Rotated,
    /// The token was spent moments ago (within the grace): the answer it got, sealed.
    Replayed(Vec<u8>),
    /// Spent before the grace: the whole family is now revoked (these ids).
    Reused(Vec<OAuthTokenId>),
    /// Not usable: unknown, another client's, revoked or expired. Nothing written.
    Refused(RefreshRefusal),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshRefusal {
    Unknown,
    OtherClient,
    Revoked,
    Expired,
}

impl RefreshRefusal {
    pub fn describe(self) -> &'static str {
        match self {
            RefreshRefusal::Unknown | RefreshRefusal::OtherClient => {
                "the refresh token is unknown or was not issued to this client"
            }
            RefreshRefusal::Revoked => "the refresh token was revoked",
            RefreshRefusal::Expired => "the refresh token expired",
        }
    }
}

/// Which tokens a revocation reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeScope {
    /// The token and every token derived from it, to any depth.
    WithDescendants(OAuthTokenId),
    /// Every token of a family (a refresh token's, as RFC 7009 §2.1 asks), with every
    /// token derived from them.
    Family(OAuthTokenId),
    /// Every token issued under the grant, with every token derived from them.
    Delegation(DelegationId),
    /// Every token acting for the principal.
    Principal(PrincipalId),
}

/// Which tokens a list shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenFilter {
    pub agent_id: Option<AgentId>,
    pub kind: Option<TokenKind>,
    pub task_id: Option<String>,
    /// Only those working at this instant.
    pub active_at: Option<DateTime<Utc>>,
}

/// The counts of an account's tokens at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenCounts {
    pub active_access: u64,
    pub active_refresh: u64,
    /// Access tokens issued since each of the windows asked for.
    pub issued_since: Vec<u64>,
    /// Token requests denied (audited `oauth.token_deny`) since each of the windows.
    pub denied_since: Vec<u64>,
    pub agents: AgentCounts,
}

/// An account's agents, by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentCounts {
    pub pending: u64,
    pub active: u64,
    pub disabled: u64,
}

impl AgentCounts {
    /// Counts `n` more agents in `state`.
    pub fn add(&mut self, state: crate::AgentState, n: u64) {
        let slot = match state {
            crate::AgentState::Pending => &mut self.pending,
            crate::AgentState::Active => &mut self.active,
            crate::AgentState::Disabled => &mut self.disabled,
        };
        *slot = slot.saturating_add(n);
    }
}
