#![doc = include_str!("../README.md")]
#![deny(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::panic
)]

mod agent_keys;
mod browser;
mod claims;
mod client_documents;
mod dpop;
mod fetch;
mod keys;
mod provider;
mod public_address;
mod settings;
mod token;
mod webhooks;

pub use agent_keys::AgentKeys;
pub use client_documents::MetadataDocuments;
pub use dpop::DpopProofs;
pub use provider::{ConnectError, OidcProvider};
pub use public_address::{OutboundFetch, Reach};
pub use settings::{OidcSettings, SettingsError};
pub use webhooks::WebhookPosts;

#[cfg(test)]
mod tests;
