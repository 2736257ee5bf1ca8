#![doc = include_str!("../README.md")]
#![deny(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

mod entry;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
mod service;

pub use entry::{AuditAction, AuditEntry, AuditFilter, AuditRecord, AuditStatus};
pub use service::{AuditError, AuditLog, AuditService};
