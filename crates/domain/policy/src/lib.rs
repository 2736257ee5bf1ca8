#![doc = include_str!("../README.md")]
#![deny(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::panic
)]

pub mod document;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
mod model;
mod poll;
mod ports;
mod publisher;
mod service;

pub use document::{PolicyDocument, Report};
pub use model::{AppState, PolicyRecord, Stage};
pub use ports::{
    AuditOf, KeyRegistration, KeyRotation, PolicyRepo, Publication, PublishOutcome,
    PublisherKeyRepo, RotationOutcome,
};
pub use publisher::{
    PublisherKey, PublisherKeyError, PublisherKeys, SignatureError, derive_key_id,
};
pub use service::{
    APP_REQUIRED_HINT, BundleStage, PolicyError, PolicyService, PolicySettings, Poll,
    PublishRequest, Rotated, normalise_etag,
};

#[cfg(test)]
mod tests;
