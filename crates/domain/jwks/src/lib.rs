#![doc = include_str!("../README.md")]
#![deny(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

mod jobs;
mod key;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
mod p256;
mod ports;
mod seal;
mod service;

pub use jobs::KeyPruning;
pub use key::{KeyAlgorithm, KeyError, PublishedKey, SigningKey, UnknownKeyAlgorithm};
pub use ports::{FirstKey, SigningKeyRepo};
pub use seal::{AesKey, Binding, InvalidAesKey, Keyring, SealError, SealOwner, Sealed};
pub use service::{
    Jwks, JwksDocument, JwksError, JwsHeaderExtras, KeyReplaced, KeySet, RotationHint,
};
