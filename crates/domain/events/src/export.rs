//! Copying stored events to the analytics sink, exactly once in effect.
//!
//! The exporter walks the event stream from a durable checkpoint. A batch is written first
//! and the checkpoint moved after, so a crash between the two writes the batch again on
//! the next run; the sink's writes are idempotent, so queries never count an event twice.
//!
//! The stream is ordered by a position the store assigns as it writes an event, and the
//! store hands out only *final* positions: ones no transaction still open can write at or
//! before (`EventStore::events_after`). That is what lets a cursor move on without ever
//! passing an event that commits later. Ordering by ingest time cannot promise it: the time
//! comes from the clock of the API host (which may lag) and is taken before the commit
//! (which may come any time later), so an event could commit behind a cursor that had
//! already passed its time, and never be exported. Waiting a fixed while before exporting
//! only narrows that window.
//!
//! - PostgreSQL stores with each event the id of the transaction that inserted it (a column
//!   default, `pg_current_xact_id()`, so every insert path sets it), and reads only events
//!   whose transaction is older than the oldest one still running
//!   (`pg_snapshot_xmin(pg_current_snapshot())`): every transaction below that bound has
//!   ended, so its events are either visible or never will be, and any transaction still to
//!   come gets a larger id. A long transaction anywhere on the server delays the export
//!   until it ends; it never loses an event. Rows written before positions existed carry
//!   position 0 and come first.
//! - SQLite has one writer at a time, and the row id (`AUTOINCREMENT`, never reused) is
//!   assigned inside the write transaction, so row ids are in commit order and every
//!   committed row is final.
//! - The in-memory store numbers its inserts.
//!
//! Retention deletes only events at or before the checkpoint, so an event not exported yet
//! is never deleted, whatever its age.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use d2_kernel::{Clock, StoreError};
use futures_util::future::join;

use crate::ports::{AnalyticsSink, EventStore, ExportCheckpoint, ExportCheckpoints};

/// The checkpoint name of the export (and the worker's job name).
pub const EXPORT_JOB: &str = "analytics-export";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportSettings {
    /// Events per sink write.
    pub batch_size: u32,
    /// Batches per run at most.
    pub max_batches: u32,
}

impl Default for ExportSettings {
    fn default() -> Self {
        Self {
            batch_size: 10_000,
            max_batches: 100,
        }
    }
}

/// What one run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportReport {
    pub batches: u32,
    pub events: u64,
    /// Where the checkpoint stands after the run.
    pub checkpoint: Option<ExportCheckpoint>,
    /// Whether every event final at the last read has been exported.
    pub caught_up: bool,
}

#[derive(Clone)]
pub struct Exporter {
    store: Arc<dyn EventStore>,
    sink: Arc<dyn AnalyticsSink>,
    checkpoints: Arc<dyn ExportCheckpoints>,
    clock: Arc<dyn Clock>,
    settings: ExportSettings,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Exporter {
    pub fn new(
        store: Arc<dyn EventStore>,
        sink: Arc<dyn AnalyticsSink>,
        checkpoints: Arc<dyn ExportCheckpoints>,
        clock: Arc<dyn Clock>,
        settings: ExportSettings,
    ) -> Self {
        Self {
            store,
            sink,
            checkpoints,
            clock,
            settings,
        }
    }

    /// Creates the sink's tables when missing.
    pub async fn prepare(&self) -> Result<(), StoreError> {
        self.sink.prepare().await
    }

    /// Exports batches until caught up, `max_batches` are done, or `keep_going` says stop
    /// (checked between batches, so a stop never leaves a batch half done). A failed write
    /// leaves the checkpoint where it was. The next batch is read while the current one
    /// is written, so the store and the sink work at the same time.
    pub async fn run(
        &self,
        keep_going: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<ExportReport, StoreError> {
        let size = self.settings.batch_size;
        let read = |after| self.store.events_after(after, size);
        let mut report = ExportReport {
            checkpoint: self.checkpoints.load(EXPORT_JOB).await?,
            ..ExportReport::default()
        };
        if self.settings.max_batches == 0 || !keep_going() {
            return Ok(report);
        }
        let mut batch = read(report.checkpoint.map(|c| c.cursor)).await?;
        loop {
            let (Some(cursor), Some(newest)) = (
                batch.end,
                batch.events.iter().map(|e| e.event.ingested_at).max(),
            ) else {
                report.caught_up = true;
                break;
            };
            let checkpoint = ExportCheckpoint {
                cursor,
                // Ingest times are not in stream order: the gauge keeps the latest.
                ingested_at: report
                    .checkpoint
                    .map_or(newest, |c| c.ingested_at.max(newest)),
            };
            let full = batch.events.len() >= usize::try_from(size).unwrap_or(usize::MAX);
            let more = full
                && report.batches.saturating_add(1) < self.settings.max_batches
                && keep_going();
            let next = if more {
                let (written, next) =
                    join(self.sink.write(&batch.events), read(Some(cursor))).await;
                written?;
                Some(next)
            } else {
                self.sink.write(&batch.events).await?;
                None
            };
            self.checkpoints.save(EXPORT_JOB, checkpoint).await?;
            report.checkpoint = Some(checkpoint);
            report.batches = report.batches.saturating_add(1);
            report.events = report
                .events
                .saturating_add(u64::try_from(batch.events.len()).unwrap_or(u64::MAX));
            match next {
                Some(next) => batch = next?,
                None => {
                    report.caught_up = !full;
                    break;
                }
            }
        }
        Ok(report)
    }

    /// Deletes from the event store the events already exported and ingested before
    /// `now - keep` (retention). Only events at or before the checkpoint go, so an event
    /// not exported yet is kept however old it is, and nothing is deleted before the first
    /// export.
    pub async fn prune_exported(&self, keep: Duration) -> Result<u64, StoreError> {
        let Some(checkpoint) = self.checkpoints.load(EXPORT_JOB).await? else {
            return Ok(0);
        };
        let older_than: DateTime<Utc> = d2_kernel::earlier(self.clock.now(), keep);
        self.store.prune_events(checkpoint.cursor, older_than).await
    }
}

#[cfg(test)]
#[expect(
    clippy::arithmetic_side_effects,
    reason = "test times are small offsets"
)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;
    use d2_kernel::{AccountId, ManualClock};
    use serde_json::json;

    use super::*;
    use crate::event::StoredEvent;
    use crate::memory::MemoryEvents;
    use crate::sample::{event, t0};

    /// Records what it is given; fails while `down` is set.
    #[derive(Default)]
    struct RecordingSink {
        written: Mutex<Vec<i64>>,
        down: AtomicBool,
    }

    #[async_trait]
    impl AnalyticsSink for RecordingSink {
        async fn prepare(&self) -> Result<(), StoreError> {
            Ok(())
        }

        async fn write(&self, events: &[StoredEvent]) -> Result<(), StoreError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable("sink down".into()));
            }
            self.written
                .lock()
                .unwrap()
                .extend(events.iter().map(|e| e.id));
            Ok(())
        }
    }

    /// `n` events ingested one second apart from t0, one insert each.
    async fn fixture(
        n: i64,
    ) -> (
        Exporter,
        Arc<MemoryEvents>,
        Arc<RecordingSink>,
        Arc<ManualClock>,
    ) {
        let store = Arc::new(MemoryEvents::default());
        let account = AccountId::random();
        for i in 0..n {
            let at = t0() + Duration::seconds(i);
            let one = event(account, "policy_poll", json!({ "i": i }), at, 10);
            store.insert_events(&[one]).await.unwrap();
        }
        let sink = Arc::new(RecordingSink::default());
        let clock = Arc::new(ManualClock::new(t0() + Duration::hours(1)));
        let exporter = Exporter::new(
            store.clone(),
            sink.clone(),
            store.clone(),
            clock.clone(),
            ExportSettings {
                batch_size: 4,
                max_batches: 100,
            },
        );
        (exporter, store, sink, clock)
    }

    /// An event ingested `ago` before t0 (by a host whose clock lags, or in a transaction
    /// that took that long to commit), stored now.
    async fn late(store: &MemoryEvents, ago: Duration) -> i64 {
        let account = store.all()[0].event.account_id;
        let event = event(account, "late", json!({}), t0() - ago, 20);
        store.insert_events(&[event]).await.unwrap();
        store.all().last().unwrap().id
    }

    #[tokio::test]
    async fn exports_in_order_in_batches_and_resumes_from_the_checkpoint() {
        let (exporter, store, sink, _) = fixture(10).await;
        let report = exporter.run(&|| true).await.unwrap();
        assert_eq!(
            (report.batches, report.events, report.caught_up),
            (3, 10, true)
        );
        assert_eq!(*sink.written.lock().unwrap(), (1..=10).collect::<Vec<_>>());
        let saved = store.load(EXPORT_JOB).await.unwrap();
        assert_eq!(saved, report.checkpoint);
        assert_eq!(
            saved.unwrap().ingested_at,
            t0() + Duration::seconds(9) + Duration::milliseconds(10),
            "the latest ingest time exported"
        );
        let account = store.all()[0].event.account_id;
        store
            .insert_events(&[event(
                account,
                "next",
                json!({}),
                t0() + Duration::seconds(100),
                20,
            )])
            .await
            .unwrap();
        let next = exporter.run(&|| true).await.unwrap();
        assert_eq!(next.events, 1);
        assert_eq!(sink.written.lock().unwrap().len(), 11, "nothing twice");
    }

    #[tokio::test]
    async fn an_event_stored_after_the_checkpoint_is_exported_however_old_its_ingest_time() {
        let (exporter, store, sink, _) = fixture(6).await;
        exporter.run(&|| true).await.unwrap();
        let before = store.load(EXPORT_JOB).await.unwrap().unwrap();
        let id = late(&store, Duration::hours(2)).await;

        let report = exporter.run(&|| true).await.unwrap();
        assert_eq!(report.events, 1);
        assert_eq!(sink.written.lock().unwrap().last(), Some(&id));
        let after = report.checkpoint.unwrap();
        assert!(after.cursor > before.cursor);
        assert_eq!(
            after.ingested_at, before.ingested_at,
            "the gauge does not go back"
        );
        assert_eq!(exporter.run(&|| true).await.unwrap().events, 0);
        assert_eq!(sink.written.lock().unwrap().len(), 7, "once");
    }

    #[tokio::test]
    async fn a_failed_write_keeps_the_checkpoint_and_the_next_run_catches_up() {
        let (exporter, _, sink, _) = fixture(6).await;
        sink.down.store(true, Ordering::SeqCst);
        assert!(exporter.run(&|| true).await.is_err());
        assert!(sink.written.lock().unwrap().is_empty());
        sink.down.store(false, Ordering::SeqCst);
        let report = exporter.run(&|| true).await.unwrap();
        assert_eq!(report.events, 6);
        assert_eq!(*sink.written.lock().unwrap(), (1..=6).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_stop_ends_the_run_between_batches() {
        let (exporter, _, sink, _) = fixture(8).await;
        let stop = AtomicBool::new(false);
        let report = exporter
            .run(&|| !stop.swap(true, Ordering::SeqCst))
            .await
            .unwrap();
        assert_eq!((report.batches, report.events), (1, 4));
        assert!(!report.caught_up);
        assert_eq!(sink.written.lock().unwrap().len(), 4);
        let rest = exporter.run(&|| true).await.unwrap();
        assert_eq!((rest.events, rest.caught_up), (4, true));
    }

    #[tokio::test]
    async fn retention_prunes_only_exported_events() {
        let (exporter, store, _, _) = fixture(6).await;
        assert_eq!(
            exporter.prune_exported(Duration::zero()).await.unwrap(),
            0,
            "nothing before the first export"
        );
        exporter.run(&|| true).await.unwrap();
        // Stored after the export, though ingested before every exported event.
        let unexported = late(&store, Duration::days(400)).await;
        assert_eq!(exporter.prune_exported(Duration::days(1)).await.unwrap(), 0);
        assert_eq!(exporter.prune_exported(Duration::zero()).await.unwrap(), 6);
        let left: Vec<i64> = store.all().iter().map(|e| e.id).collect();
        assert_eq!(left, vec![unexported], "the unexported event stays");
    }
}
