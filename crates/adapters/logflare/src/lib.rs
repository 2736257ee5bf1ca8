#![doc = include_str!("../README.md")]
#![deny(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::panic
)]

mod entry;
mod forwarder;
mod settings;
mod stats;
mod worker;

pub use forwarder::{LogflareForwarder, LogflareWorker, StartError};
pub use settings::LogflareSettings;
pub use stats::ForwardStats;

#[cfg(test)]
mod tests;
