#![doc = include_str!("../README.md")]
#![deny(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::panic
)]

mod bootstrap;
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
pub use ports::{BootstrapRepo, RevokeOutcome, RotateOutcome, TokenRepo};
pub use secret::{MalformedToken, Pepper, RandomnessUnavailable, TokenDigest, TokenSecret, WeakPepper};
pub use service::{Revocation, Rotation, TokenError, TokenService};
pub use token::{ApiToken, IssuedToken, NewToken, TokenGrant, TokenKind, TokenRequest, TokenState};
pub use verifier::{AuthError, CacheSettings, CacheStats, TokenVerifier};

#[cfg(test)]
mod tests;
