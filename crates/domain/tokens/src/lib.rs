#![doc = include_str!("../README.md")]
#![deny(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

mod bootstrap;
mod jobs;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
mod ports;
mod secret;
mod service;
mod token;
mod verifier;

pub use bootstrap::{
    BootstrapError, BootstrapRequest, BootstrapService, Bootstrapped, ControlPlaneSecret,
};
pub use d2_kernel::{CacheSettings, CacheStats};
pub use jobs::TokenExpiry;
pub use ports::{
    BootstrapRepo, IssueOutcome, RevokeOutcome, RotateOutcome, TokenAuditOf, TokenChangeAuditOf,
    TokenRepo, UpdateOutcome,
};
pub use secret::{
    ApiTokenFormat, MalformedToken, Pepper, RandomnessUnavailable, TokenDigest, TokenSecret,
    WeakPepper,
};
pub use service::{Revocation, Rotation, TokenError, TokenService, mint};
pub use token::{
    ApiToken, IssuedToken, ListedToken, NewToken, TokenGrant, TokenKind, TokenPatch, TokenRequest,
    TokenState,
};
pub use verifier::{AuthError, TokenVerifier};

#[cfg(test)]
mod tests;
