#![doc = include_str!("../README.md")]
#![deny(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

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
    KeyApproval, KeyState, ListedKey, PublisherKey, PublisherKeyError, PublisherKeys,
    SignatureError, derive_key_id,
};
pub use service::{
    APP_REQUIRED_HINT, BundleStage, PolicyError, PolicyService, PolicySettings, Poll,
    PublishRequest, Rotated, normalise_etag,
};

#[cfg(test)]
mod tests;
