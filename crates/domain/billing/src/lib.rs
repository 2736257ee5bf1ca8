#![doc = include_str!("../README.md")]
#![deny(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

mod credits;
#[cfg(test)]
#[expect(
    clippy::arithmetic_side_effects,
    reason = "test grants' times are small offsets"
)]
mod credits_tests;
mod forecast;
mod ledger;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
mod ports;
mod provider;
mod service;
mod signature;
mod subscription;
#[cfg(test)]
#[expect(
    clippy::arithmetic_side_effects,
    reason = "test events' times are small offsets"
)]
mod tests;

pub use credits::{
    Burn, CreditGrant, GrantId, GrantSource, InsufficientCredits, UnknownSource, balance, cost,
    plan_release, plan_spend,
};
pub use forecast::{Forecast, WINDOW_DAYS, forecast};
pub use ledger::{
    CreditError, CreditLedger, CreditRepo, CreditsOverview, EntryId, EntryKind, EntryOf,
    GrantRequest, LedgerEntry, MAX_CREDITS, SpendOf, SpendOutcome, SpendRequest, Spent,
    UnknownEntryKind,
};
pub use ports::{BillingRepo, DecideOf, Decision, EventOutcome};
pub use provider::{MalformedEvent, PriceTiers, ProviderEvent, Report, SubscriptionReport};
pub use service::{BillingError, BillingOverview, BillingService, Received};
pub use signature::{SignatureError, WebhookSecrets, sign};
pub use subscription::{Subscription, SubscriptionStatus, UnknownStatus};
