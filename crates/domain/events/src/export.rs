//! Copying stored events to the analytics sink, exactly once in effect.
//!
//! The exporter walks the event stream in `(ingested_at, id)` order from a durable
//! checkpoint. A batch is written first and the checkpoint moved after, so a crash between
//! the two writes the batch again on the next run; the sink's writes are idempotent, so
//! queries never count an event twice. Only events ingested `settle` ago or earlier are
//! read: an ingest transaction still in flight cannot commit behind the cursor.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use d2_kernel::{Clock, StoreError};
use futures_util::future::join;

use crate::ports::{AnalyticsSink, EventStore, ExportCheckpoints, ExportCursor};

/// The checkpoint name of the export (and the worker's job name).
pub const EXPORT_JOB: &str = "analytics-export";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportSettings {
    /// Events per sink write.
    pub batch_size: u32,
    /// Batches per run at most.
    pub max_batches: u32,
    /// How long after ingest an event is exported at the earliest.
    pub settle: Duration,
}

impl Default for ExportSettings {
    fn default() -> Self {
        Self {
            batch_size: 10_000,
            max_batches: 100,
            settle: Duration::seconds(15),
        }
    }
}

/// What one run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportReport {
    pub batches: u32,
    pub events: u64,
    /// Where the checkpoint stands after the run.
    pub cursor: Option<ExportCursor>,
    /// Whether every settled event has been exported.
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
        let settled_before = self.clock.now() - self.settings.settle;
        let size = self.settings.batch_size;
        let read = |after| self.store.events_after(after, settled_before, size);
        let mut report = ExportReport {
            cursor: self.checkpoints.load(EXPORT_JOB).await?,
            ..ExportReport::default()
        };
        if self.settings.max_batches == 0 || !keep_going() {
            return Ok(report);
        }
        let mut batch = read(report.cursor).await?;
        loop {
            let Some(last) = batch.last() else {
                report.caught_up = true;
                break;
            };
            let cursor = ExportCursor {
                ingested_at: last.event.ingested_at,
                id: last.id,
            };
            let full = batch.len() >= usize::try_from(size).unwrap_or(usize::MAX);
            let more = full && report.batches + 1 < self.settings.max_batches && keep_going();
            let next = if more {
                let (written, next) = join(self.sink.write(&batch), read(Some(cursor))).await;
                written?;
                Some(next)
            } else {
                self.sink.write(&batch).await?;
                None
            };
            self.checkpoints.save(EXPORT_JOB, cursor).await?;
            report.cursor = Some(cursor);
            report.batches += 1;
            report.events += u64::try_from(batch.len()).unwrap_or(u64::MAX);
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
    /// `now - keep` (retention); events not yet exported are always kept.
    pub async fn prune_exported(&self, keep: Duration) -> Result<u64, StoreError> {
        let Some(cursor) = self.checkpoints.load(EXPORT_JOB).await? else {
            return Ok(0);
        };
        let older_than: DateTime<Utc> = self.clock.now() - keep;
        self.store.prune_events(cursor, older_than).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;
    use d2_kernel::{AccountId, ManualClock};
    use serde_json::json;

    use super::*;
    use crate::contract::{event, t0};
    use crate::event::StoredEvent;
    use crate::memory::MemoryEvents;

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
        let events: Vec<_> = (0..n)
            .map(|i| {
                event(
                    account,
                    "policy_poll",
                    json!({ "i": i }),
                    t0() + Duration::seconds(i),
                    10,
                )
            })
            .collect();
        store.insert_events(&events).await.unwrap();
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
                settle: Duration::seconds(15),
            },
        );
        (exporter, store, sink, clock)
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
        let account = store.all()[0].event.account_id;
        store
            .insert_events(&[event(
                account,
                "late",
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
    async fn unsettled_events_wait_and_a_stop_ends_between_batches() {
        let (exporter, _, sink, clock) = fixture(8).await;
        // Ingested at t0+i s (+10 ms): only those settled 15 s ago go.
        clock.set(t0() + Duration::seconds(15 + 3));
        let report = exporter.run(&|| true).await.unwrap();
        assert_eq!(report.events, 3);
        clock.set(t0() + Duration::hours(1));
        let stop = AtomicBool::new(false);
        let report = exporter
            .run(&|| !stop.swap(true, Ordering::SeqCst))
            .await
            .unwrap();
        assert_eq!((report.batches, report.events), (1, 4));
        assert_eq!(sink.written.lock().unwrap().len(), 7);
    }

    #[tokio::test]
    async fn retention_prunes_only_exported_events() {
        let (exporter, store, _, _) = fixture(6).await;
        assert_eq!(exporter.prune_exported(Duration::zero()).await.unwrap(), 0);
        exporter.run(&|| true).await.unwrap();
        let account = store.all()[0].event.account_id;
        store
            .insert_events(&[event(
                account,
                "unexported",
                json!({}),
                t0() + Duration::seconds(100),
                20,
            )])
            .await
            .unwrap();
        assert_eq!(exporter.prune_exported(Duration::zero()).await.unwrap(), 6);
        assert_eq!(store.all().len(), 1);
    }
}
