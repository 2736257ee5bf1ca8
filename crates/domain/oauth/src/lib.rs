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
pub use error::{AgentError, ClientAuthError, ClientRefusal};
pub use ports::{AgentAuditOf, AgentRepo};
pub use service::{AgentService, ClientAuthenticator, DEFAULT_SECRET_GRACE_SECONDS, RotatedSecret};
