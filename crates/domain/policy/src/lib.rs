#![doc = include_str!("../README.md")]
#![deny(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

#[cfg(any(test, feature = "testing"))]
pub mod contract;
pub mod document;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
mod model;
mod poll;
mod ports;
mod publisher;
mod service;

pub use document::{PolicyDocument, Report, content_digest};
pub use model::{AppState, PolicyRecord, Stage};
pub use poll::PollCeiling;
pub use ports::{
    ApprovalOutcome, AuditOf, DraftOutcome, KeyRegistration, KeyRotation, MAX_VERSION,
    MAX_VERSION_STEP, PolicyRepo, Publication, PublishOutcome, PublisherKeyRepo, RotationOutcome,
    next_version,
};
pub use publisher::{
    KeyApproval, KeyState, PublisherKey, PublisherKeyError, PublisherKeys, SignatureError,
    derive_key_id,
};
pub use service::{
    APP_REQUIRED_HINT, BundleStage, PolicyError, PolicyService, PolicySettings, Poll,
    PublishRequest, Rotated, normalise_etag,
};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod memory_contract {
    use std::sync::Arc;

    use d2_audit::memory::MemoryAuditLog;
    use d2_jwks::memory::MemorySigningKeys;
    use d2_kernel::AccountId;

    use crate::memory::MemoryPolicies;

    fn store() -> MemoryPolicies {
        MemoryPolicies::new(Arc::new(MemorySigningKeys::new(Arc::new(
            MemoryAuditLog::default(),
        ))))
    }

    #[tokio::test]
    async fn policies() {
        crate::contract::policies(&store(), AccountId::random(), AccountId::random()).await;
    }

    #[tokio::test]
    async fn publisher_keys() {
        crate::contract::publisher_keys(&store(), AccountId::random(), AccountId::random()).await;
    }

    #[tokio::test]
    async fn earlier_content() {
        crate::contract::earlier_content(&store(), AccountId::random()).await;
    }

    #[tokio::test]
    async fn signing_keys() {
        crate::contract::signing_keys(&store(), AccountId::random(), AccountId::random()).await;
    }

    #[tokio::test]
    async fn publish_races() {
        crate::contract::publish_races(&store(), AccountId::random()).await;
    }
}
