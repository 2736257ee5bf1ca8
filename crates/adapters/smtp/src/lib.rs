#![doc = include_str!("../README.md")]
#![deny(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::panic
)]

mod mailer;
mod settings;
#[cfg(test)]
mod tests;

pub use mailer::{SmtpMailer, StartError};
pub use settings::SmtpSettings;
