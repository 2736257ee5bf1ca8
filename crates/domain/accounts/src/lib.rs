#![doc = include_str!("../README.md")]
#![deny(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

mod account;
mod jobs;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
mod ports;
mod sampling;
mod service;

pub use account::{Account, AccountName, AccountPatch, InvalidAccountName};
pub use jobs::TrialLocker;
pub use ports::{AccountRepo, AuditOf, JobAuditOf};
pub use sampling::{InvalidSampleRate, SampleRate, SamplingPolicy};
pub use service::{AccountError, AccountOverview, AccountService};
