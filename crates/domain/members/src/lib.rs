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
#[cfg(any(test, feature = "testing"))]
pub mod memory;
mod ports;
mod service;
mod sessions;
mod user;

pub use ports::{
    IdentityError, IdentityProvider, MemberAuditOf, MemberOutcome, MemberRepo, MemberUpdate,
    VerifiedIdentity,
};
pub use service::{Me, MemberError, MembersService};
pub use sessions::{SessionVerifier, SignedIn};
pub use user::{Identity, Member, Membership, User, person_label};
