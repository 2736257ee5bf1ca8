#![doc = include_str!("../README.md")]
#![deny(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::panic
)]

mod client;
mod settings;
mod sink;
mod store;
#[cfg(test)]
mod tests;

pub use client::ClickHouse;
pub use settings::ClickHouseSettings;
