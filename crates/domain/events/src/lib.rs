#![doc = include_str!("../README.md")]
#![deny(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

mod analytics;
mod event;
mod export;
mod jobs;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
mod ports;
mod refusals;
#[cfg(any(test, feature = "testing"))]
pub mod sample;
mod service;

pub use analytics::{Bucket, Dimension, Summary, TimePoint, Top, TopItem};
pub use event::{
    Decision, EventFacts, EventFilter, IncomingEvent, NewEvent, StoredEvent, parse_batch,
};
pub use export::{EXPORT_JOB, ExportReport, ExportSettings, Exporter};
pub use jobs::{AnalyticsExport, Retention};
pub use ports::{
    AnalyticsSink, AnalyticsStore, AppResolver, EventForwarder, EventStore, ExportBatch,
    ExportCheckpoint, ExportCheckpoints, ExportCursor, NoForwarding,
};
pub use refusals::{RefusedEvents, hour_of};
pub use service::{EventError, EventService, EventSettings, IngestOutcome, IngestRequest};
