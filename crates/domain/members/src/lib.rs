#![doc = include_str!("../README.md")]
#![deny(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

mod invitation;
mod invitations;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
mod ports;
mod service;
mod sessions;
#[cfg(test)]
mod tests;
mod user;

pub use invitation::{
    AcceptOutcome, INVITATION_LIFETIME_DAYS, Invitation, InvitationDetails, InvitationFormat,
    InvitationId, InvitationToken, InviteOutcome,
};
pub use invitations::{INVITATION_EMAIL, InvitationMailer, Invitations, Invited};
pub use ports::{
    IdentityError, IdentityProvider, InvitationAuditOf, InvitationRepo, MemberAuditOf,
    MemberOutcome, MemberRepo, MemberUpdate, VerifiedIdentity,
};
pub use service::{Me, MemberError, MembersService};
pub use sessions::{SessionVerifier, SignedIn};
pub use user::{Identity, Member, Membership, User, person_label};
