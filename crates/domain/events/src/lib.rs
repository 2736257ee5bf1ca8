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
#[cfg(any(test, feature = "testing"))]
pub mod contract;
mod event;
mod export;
mod jobs;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
mod ports;
mod refusals;
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

#[cfg(test)]
mod memory_contract {
    use d2_kernel::AccountId;

    use crate::memory::MemoryEvents;
    use crate::ports::EventStore as _;

    #[tokio::test]
    async fn analytics() {
        let store = MemoryEvents::default();
        let feeder = &store;
        crate::contract::analytics(&store, |events| async move {
            feeder.insert_events(&events).await.unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn checkpoints() {
        crate::contract::checkpoints(&MemoryEvents::default()).await;
    }

    #[tokio::test]
    async fn event_store() {
        let store = MemoryEvents::default();
        let (a, b) = (AccountId::random(), AccountId::random());
        // Every insert is final when it returns.
        crate::contract::event_store(&store, a, b, || async {}).await;
    }
}
