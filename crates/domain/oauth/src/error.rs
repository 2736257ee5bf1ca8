//! What the agents domain refuses, each with its stable code.

use d2_kernel::secret::{MalformedSecret, RandomnessUnavailable};
use d2_kernel::{Code, ErrorCode, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The credential may not manage agents, or not this one.
    #[error(transparent)]
    Forbidden(#[from] d2_kernel::AccessError),
    #[error("{0}")]
    Invalid(String),
    #[error("no agent has this client id in this account")]
    NotFound,
    /// Unknown, already used or expired: one answer, so a guess learns nothing.
    #[error("no pending registration has this token (it may have been used or have expired)")]
    RegistrationNotFound,
    #[error("the agent is {0}: only an active agent's secret rotates")]
    NotActive(crate::AgentState),
    #[error("no secret can be made now")]
    Randomness(#[from] RandomnessUnavailable),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AgentError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
}

impl From<MalformedSecret> for AgentError {
    fn from(_: MalformedSecret) -> Self {
        Self::RegistrationNotFound
    }
}

impl ErrorCode for AgentError {
    fn code(&self) -> Code {
        match self {
            AgentError::Forbidden(error) => error.code(),
            AgentError::Invalid(_) => Code::InvalidAgent,
            AgentError::NotFound => Code::AgentNotFound,
            AgentError::RegistrationNotFound => Code::RegistrationNotFound,
            AgentError::NotActive(_) => Code::AgentNotActive,
            AgentError::Randomness(_) => Code::Internal,
            AgentError::Store(error) => error.code(),
        }
    }
}

/// Why a client was not authenticated. One code for every reason (RFC 6749 §5.2
/// `invalid_client`): the reason is logged, never answered.
#[derive(Debug, thiserror::Error)]
pub enum ClientAuthError {
    #[error("client authentication failed")]
    InvalidClient(ClientRefusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the log says of a refused client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientRefusal {
    UnknownClient,
    NotActive,
    WrongSecret,
    /// The agent authenticates another way (its registered `auth_method`).
    WrongMethod,
    /// Its client assertion was refused, for this reason (`private_key_jwt`).
    Assertion(&'static str),
    /// Its client assertion's `jti` was spent already.
    AssertionReplayed,
}

impl ErrorCode for ClientAuthError {
    fn code(&self) -> Code {
        match self {
            ClientAuthError::InvalidClient(_) => Code::InvalidClient,
            ClientAuthError::Store(error) => error.code(),
        }
    }
}

/// Why the token endpoint refused a request of an authenticated agent: each an RFC 6749
/// §5.2 `error` (the code's text).
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("{0}")]
    Request(String),
    #[error("{0}")]
    Grant(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Scope(String),
    #[error("{0}")]
    Target(String),
    /// RFC 9449 `invalid_dpop_proof`.
    #[error("{0}")]
    Dpop(String),
    /// The account's access rules refuse the request (`invalid_scope`), naming the rule
    /// that decided when one did.
    #[error("{message}")]
    Denied {
        message: String,
        rule: Option<crate::rules::decision::RuleRef>,
    },
    /// The agent was deleted while its tokens were being issued.
    #[error("client authentication failed")]
    ClientGone,
    #[error("the token could not be signed: {0}")]
    Signing(String),
    #[error(transparent)]
    Jwks(#[from] d2_jwks::JwksError),
    #[error("no secret can be made now")]
    Randomness(#[from] RandomnessUnavailable),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the principals domain refuses.
#[derive(Debug, thiserror::Error)]
pub enum PrincipalError {
    #[error(transparent)]
    Forbidden(#[from] d2_kernel::AccessError),
    #[error("{0}")]
    Invalid(String),
    #[error("no principal has this id in this account")]
    NotFound,
    #[error("another principal of this account has this username")]
    UsernameTaken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl GrantError {
    /// Whether the agent asked for something it may not have (audited `oauth.token_deny`),
    /// rather than sent a request that could not be read or met a failure of ours.
    pub fn is_refusal_of_an_agent(&self) -> bool {
        matches!(
            self,
            GrantError::Grant(_)
                | GrantError::Unauthorized(_)
                | GrantError::Scope(_)
                | GrantError::Target(_)
                | GrantError::Dpop(_)
                | GrantError::Denied { .. }
        )
    }
}

impl ErrorCode for GrantError {
    fn code(&self) -> Code {
        match self {
            GrantError::Request(_) => Code::InvalidOAuthRequest,
            GrantError::Grant(_) => Code::InvalidGrant,
            GrantError::Unauthorized(_) => Code::UnauthorizedClient,
            GrantError::Scope(_) | GrantError::Denied { .. } => Code::InvalidScope,
            GrantError::Target(_) => Code::InvalidTarget,
            GrantError::Dpop(_) => Code::InvalidDpopProof,
            GrantError::ClientGone => Code::InvalidClient,
            GrantError::Signing(_) | GrantError::Randomness(_) => Code::Internal,
            GrantError::Jwks(error) => error.code(),
            GrantError::Store(error) => error.code(),
        }
    }
}

impl PrincipalError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
}

impl ErrorCode for PrincipalError {
    fn code(&self) -> Code {
        match self {
            PrincipalError::Forbidden(error) => error.code(),
            PrincipalError::Invalid(_) => Code::InvalidPrincipal,
            PrincipalError::NotFound => Code::PrincipalNotFound,
            PrincipalError::UsernameTaken => Code::UsernameTaken,
            PrincipalError::Store(error) => error.code(),
        }
    }
}

/// What the delegation grants refuse.
#[derive(Debug, thiserror::Error)]
pub enum DelegationError {
    #[error(transparent)]
    Forbidden(#[from] d2_kernel::AccessError),
    #[error("{0}")]
    Invalid(String),
    #[error("no delegation grant has this id in this account")]
    NotFound,
    /// The grant names an agent the account does not have.
    #[error("no agent has this id in this account")]
    AgentNotFound,
    /// The grant names a principal the account does not have.
    #[error("no principal has this id in this account")]
    PrincipalNotFound,
    /// The grant asks for more than its grantor holds, or than its grantee may have.
    #[error("{0}")]
    Exceeds(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DelegationError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
}

impl ErrorCode for DelegationError {
    fn code(&self) -> Code {
        match self {
            DelegationError::Forbidden(error) => error.code(),
            DelegationError::Invalid(_) => Code::InvalidDelegation,
            DelegationError::NotFound => Code::DelegationNotFound,
            DelegationError::AgentNotFound => Code::AgentNotFound,
            DelegationError::PrincipalNotFound => Code::PrincipalNotFound,
            DelegationError::Exceeds(_) => Code::DelegationExceedsGrantor,
            DelegationError::Store(error) => error.code(),
        }
    }
}

/// What the access rules domain refuses.
#[derive(Debug, thiserror::Error)]
pub enum AccessRuleError {
    #[error(transparent)]
    Forbidden(#[from] d2_kernel::AccessError),
    /// The document does not parse or breaks a rule of the language (where, and why).
    #[error(transparent)]
    Invalid(#[from] crate::rules::RuleError),
    #[error("no access rule has this id in this account")]
    NotFound,
    #[error("another access rule of this account has this name")]
    NameTaken,
    #[error("an account holds at most {0} access rules: delete one first")]
    TooMany(usize),
    /// An access request to explain that cannot be read.
    #[error("{0}")]
    InvalidRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for AccessRuleError {
    fn code(&self) -> Code {
        match self {
            AccessRuleError::Forbidden(error) => error.code(),
            AccessRuleError::Invalid(_) => Code::InvalidAccessRule,
            AccessRuleError::NotFound => Code::AccessRuleNotFound,
            AccessRuleError::NameTaken => Code::AccessRuleNameTaken,
            AccessRuleError::TooMany(_) => Code::AccessRuleLimit,
            AccessRuleError::InvalidRequest(_) => Code::InvalidAccessRequest,
            AccessRuleError::Store(error) => error.code(),
        }
    }
}
