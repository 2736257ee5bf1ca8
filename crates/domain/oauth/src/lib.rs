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
pub mod catalog;
mod error;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
mod ports;
mod service;
#[cfg(test)]
mod tests;

pub use agent::{
    Agent, AgentId, AgentSpec, AgentState, AuthMethod, ClientSecret, ClientSecretFormat,
    ClientSecrets, PendingRegistration, REGISTRATION_LIFETIME_HOURS, RegistrationFormat,
    RegistrationToken, UnknownAgentState, UnknownAuthMethod, limits,
};
pub use catalog::defaults::{DefaultScopes, InvalidDefaultScopes};
pub use catalog::error::CatalogError;
pub use catalog::ports::{
    BindOutcome, ScopePlan, ScopeRepo, ToolAuditOf, ToolRepo, ToolWrite, UnbindOutcome,
};
pub use catalog::scope::{KnownScope, KnownScopes, OAuthScope, ScopeChange, ScopePatch, ScopeSpec};
pub use catalog::scopes::ScopeCatalog;
pub use catalog::tool::{Tool, ToolFilter, ToolId, ToolSpec};
pub use catalog::tools::ToolService;
pub use error::{AgentError, ClientAuthError, ClientRefusal};
pub use ports::{AgentAuditOf, AgentRepo};
pub use service::{AgentService, ClientAuthenticator, DEFAULT_SECRET_GRACE_SECONDS, RotatedSecret};
