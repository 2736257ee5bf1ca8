#![doc = include_str!("../README.md")]
#![deny(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

mod agent;
mod error;
mod issuer;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
mod ports;
mod service;
#[cfg(test)]
mod tests;
mod token;

pub use agent::{
    Agent, AgentId, AgentSpec, AgentState, AuthMethod, ClientSecret, ClientSecretFormat,
    ClientSecrets, PendingRegistration, REGISTRATION_LIFETIME_HOURS, RegistrationFormat,
    RegistrationToken, UnknownAgentState, UnknownAuthMethod, limits,
};
pub use error::{AgentError, ClientAuthError, ClientRefusal, GrantError};
pub use issuer::{
    DEFAULT_REFRESH_REPLAY_SECONDS, Introspected, TokenIssuer, TokenRequest, TokenResponse,
    issuer_url,
};
pub use ports::{AgentAuditOf, AgentRepo, OAuthTokenRepo, RefreshAuditOf, RevokeAuditOf};
pub use service::{
    AgentCache, AgentService, ClientAuthenticator, DEFAULT_SECRET_GRACE_SECONDS, RotatedSecret,
};
pub use token::{
    GrantType, Issuance, OAuthTokenId, RefreshIssuance, RefreshOutcome, RefreshRefusal,
    RefreshToken, RefreshTokenFormat, RevokeScope, TokenCounts, TokenFilter, TokenKind,
    TokenRecord, UnknownGrantType, UnknownTokenKind, is_task_id, revocation_reasons, token_limits,
};
