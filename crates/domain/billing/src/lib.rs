#![doc = include_str!("../README.md")]
#![deny(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

mod budgets;
mod credits;
#[cfg(test)]
#[expect(
    clippy::arithmetic_side_effects,
    reason = "test grants' times are small offsets"
)]
mod credits_tests;
mod eligibility;
mod forecast;
pub mod jobs;
mod ledger;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
mod notices;
mod ports;
mod prices;
mod provider;
mod reservations;
mod service;
mod signature;
mod subscription;
#[cfg(test)]
#[expect(
    clippy::arithmetic_side_effects,
    reason = "test events' times are small offsets"
)]
mod tests;
mod usage;
#[cfg(test)]
#[expect(clippy::panic, reason = "tests fail loudly")]
mod usage_tests;

pub use budgets::Budget;
pub use credits::{
    Burn, CreditGrant, GrantId, GrantSource, InsufficientCredits, UnknownSource, balance, cost,
    plan_release, plan_spend,
};
pub use eligibility::{
    Allowed, Ask, CreditForecast, Eligibility, EligibilityError, Ineligible, Limit, Standing,
};
pub use forecast::{Forecast, WINDOW_DAYS, forecast};
pub use ledger::{
    CreditError, CreditLedger, CreditRepo, CreditsOverview, EntryId, EntryKind, EntryOf,
    GrantRequest, LedgerEntry, LedgerFilter, MAX_CREDITS, SpendOf, SpendOutcome, SpendRequest,
    Spending, Spent, UnknownEntryKind,
};
pub use notices::{
    INCLUDED_CREDITS, MAX_ENDPOINT_BYTES, Measure, NOTICE_TASK, Notice, NoticeDelivery,
    NoticeEndpoint, NoticeError, NoticeId, NoticeRepo, NoticeSigner, Notices, PostError,
    RaisedNotice, THRESHOLDS, ThresholdScan, WebhookPoster, measures,
};
pub use ports::{
    BillingRepo, CheckoutSessions, DecideOf, Decision, EventGrant, EventOutcome,
    ProviderUnavailable,
};
pub use prices::{InvalidPriceTable, MAX_METER_CHARS, PriceTable, PriceVersion};
pub use provider::{
    CheckoutReport, InvoiceReport, MalformedEvent, PriceTiers, ProviderEvent, Report,
    SubscriptionReport,
};
pub use reservations::{
    CloseOf, CloseRefusal, Closing, Reservation, ReservationStatus, UnknownReservationStatus,
};
pub use service::{
    BillingConfig, BillingError, BillingOverview, BillingService, CreditPrice, ProcessedCheckout,
    Received,
};
pub use signature::{SignatureError, WebhookSecrets, sign};
pub use subscription::{Subscription, SubscriptionStatus, UnknownStatus};
pub use usage::{
    Bucket, Dimension, Earlier, HourTotal, MAX_BATCH, MAX_QUANTITY, Meter, MeterKind, RecordFilter,
    RecordOf, Recorded, Recording, Refusal, Totals, UnknownMeterKind, UsageError, UsageMeter,
    UsageQuery, UsageRecord, UsageRecordId, UsageRepo, UsageReport, UsageWindows, Window, hour_of,
    hour_totals, windows_of,
};
