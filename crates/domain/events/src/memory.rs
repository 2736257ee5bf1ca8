//! In-memory events: the reference implementation of the event and analytics ports.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use d2_kernel::{AccountId, AppName, Cursor, Page, PageRequest, StoreError};

use crate::analytics::{Bucket, Dimension, Summary, TimePoint, Top, TopItem};
use crate::event::{Decision, EventFilter, NewEvent, StoredEvent};
use crate::ports::{
    AnalyticsStore, AppResolver, EventStore, ExportBatch, ExportCheckpoint, ExportCheckpoints,
    ExportCursor,
};
use crate::refusals::{RefusalCounts, RefusedEvents};

#[derive(Debug, Default)]
pub struct MemoryEvents {
    events: Mutex<Events>,
    etags: Mutex<HashMap<(AccountId, String), AppName>>,
    checkpoints: Mutex<HashMap<String, ExportCheckpoint>>,
    refusals: Mutex<RefusalCounts>,
}

/// The stored events with their places in the export stream: each insert is one position
/// (as a transaction is on PostgreSQL), in the order of the inserts, which is the order
/// they become visible. Ids and positions are never reused, pruned or not.
#[derive(Debug, Default)]
struct Events {
    rows: Vec<(ExportCursor, StoredEvent)>,
    last_id: i64,
    last_position: i64,
}

impl Events {
    fn stored(&self) -> impl Iterator<Item = &StoredEvent> {
        self.rows.iter().map(|(_, stored)| stored)
    }
}

impl MemoryEvents {
    fn lock(&self) -> MutexGuard<'_, Events> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every stored event, in insertion order.
    pub fn all(&self) -> Vec<StoredEvent> {
        self.lock().stored().cloned().collect()
    }

    pub fn know_etag(&self, account_id: AccountId, etag: &str, app: AppName) {
        self.etags
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((account_id, etag.to_owned()), app);
    }

    fn in_window(
        &self,
        account_id: AccountId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Vec<NewEvent> {
        self.lock()
            .stored()
            .map(|e| &e.event)
            .filter(|e| e.account_id == account_id && e.occurred_at >= start && e.occurred_at < end)
            .cloned()
            .collect()
    }
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn mean(values: &[f64]) -> Option<f64> {
    #[expect(clippy::as_conversions, reason = "a count of test events")]
    let n = values.len() as f64;
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / n)
}

#[async_trait]
impl EventStore for MemoryEvents {
    async fn insert_events(&self, events: &[NewEvent]) -> Result<Vec<[u8; 32]>, StoreError> {
        let mut stored = self.lock();
        stored.last_position = stored.last_position.saturating_add(1);
        let position = stored.last_position;
        let mut inserted = Vec::new();
        for event in events {
            if stored.stored().any(|s| {
                s.event.account_id == event.account_id
                    && s.event.occurred_at == event.occurred_at
                    && s.event.key == event.key
            }) {
                continue;
            }
            stored.last_id = stored.last_id.saturating_add(1);
            let id = stored.last_id;
            stored.rows.push((
                ExportCursor { position, id },
                StoredEvent {
                    id,
                    event: event.clone(),
                },
            ));
            inserted.push(event.key);
        }
        Ok(inserted)
    }

    async fn list_events(
        &self,
        account_id: AccountId,
        filter: &EventFilter,
        page: &PageRequest,
    ) -> Result<Page<StoredEvent>, StoreError> {
        let after = match page.after() {
            Some(cursor) => Some((
                cursor.at,
                cursor
                    .id_as::<i64>()
                    .map_err(|_| StoreError::corrupt("cursor"))?,
            )),
            None => None,
        };
        let mut events: Vec<StoredEvent> = self
            .lock()
            .stored()
            .filter(|s| {
                let e = &s.event;
                e.account_id == account_id
                    && filter
                        .event_type
                        .as_ref()
                        .is_none_or(|t| *t == e.event_type)
                    && filter
                        .app_name
                        .as_ref()
                        .is_none_or(|a| Some(a) == e.app_name.as_ref())
                    && filter
                        .service
                        .as_ref()
                        .is_none_or(|s| Some(s) == e.service.as_ref())
                    && filter.since.is_none_or(|t| e.occurred_at >= t)
                    && filter.until.is_none_or(|t| e.occurred_at < t)
                    && after.is_none_or(|position| (e.ingested_at, s.id) < position)
            })
            .cloned()
            .collect();
        events.sort_by_key(|s| std::cmp::Reverse((s.event.ingested_at, s.id)));
        events.truncate(
            usize::try_from(page.limit())
                .unwrap_or(usize::MAX)
                .saturating_add(1),
        );
        Ok(page.page_from(events, |s| {
            Cursor::new(s.event.ingested_at, s.id.to_string())
        }))
    }

    async fn events_after(
        &self,
        after: Option<ExportCursor>,
        limit: u32,
    ) -> Result<ExportBatch, StoreError> {
        // Every insert is visible whole once it returns: every position is final.
        let mut rows: Vec<(ExportCursor, StoredEvent)> = self
            .lock()
            .rows
            .iter()
            .filter(|(cursor, _)| after.is_none_or(|after| *cursor > after))
            .cloned()
            .collect();
        rows.sort_by_key(|(cursor, _)| *cursor);
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(ExportBatch {
            end: rows.last().map(|(cursor, _)| *cursor),
            events: rows.into_iter().map(|(_, stored)| stored).collect(),
        })
    }

    async fn prune_events(
        &self,
        up_to: ExportCursor,
        older_than: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut events = self.lock();
        let before = events.rows.len();
        events
            .rows
            .retain(|(cursor, s)| !(*cursor <= up_to && s.event.ingested_at < older_than));
        Ok(count(before.saturating_sub(events.rows.len())))
    }

    async fn add_refusals(&self, refusals: &[RefusedEvents]) -> Result<(), StoreError> {
        let mut stored = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        for refusal in refusals {
            let counts = stored
                .entry((refusal.account_id, refusal.hour))
                .or_default();
            counts.0 = counts.0.saturating_add(refusal.events);
            counts.1 = counts.1.saturating_add(refusal.batches);
        }
        Ok(())
    }

    async fn refused_events(
        &self,
        account_id: AccountId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let stored = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(stored
            .iter()
            .filter(|((account, hour), _)| *account == account_id && start <= *hour && *hour < end)
            .map(|(_, (events, _))| events)
            .sum())
    }
}

#[async_trait]
impl AnalyticsStore for MemoryEvents {
    async fn summary(
        &self,
        account_id: AccountId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Summary, StoreError> {
        let events = self.in_window(account_id, start, end);
        let decided: Vec<&NewEvent> = events
            .iter()
            .filter(|e| e.facts.decision.is_some())
            .collect();
        let latencies: Vec<f64> = decided.iter().filter_map(|e| e.facts.latency_ms).collect();
        #[expect(clippy::as_conversions, reason = "milliseconds of test events")]
        let lags: Vec<f64> = events
            .iter()
            .map(|e| {
                e.ingested_at
                    .signed_duration_since(e.occurred_at)
                    .num_microseconds()
                    .unwrap_or(0) as f64
                    / 1000.0
            })
            .collect();
        Ok(Summary {
            allowed: count(
                decided
                    .iter()
                    .filter(|e| e.facts.decision == Some(Decision::Allowed))
                    .count(),
            ),
            denied: count(
                decided
                    .iter()
                    .filter(|e| e.facts.decision == Some(Decision::Denied))
                    .count(),
            ),
            unique_tools: count(
                decided
                    .iter()
                    .filter_map(|e| e.facts.tool.as_ref())
                    .collect::<BTreeSet<_>>()
                    .len(),
            ),
            avg_decision_ms: mean(&latencies),
            avg_ingest_lag_ms: mean(&lags),
        })
    }

    async fn timeseries(
        &self,
        account_id: AccountId,
        bucket: Bucket,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<TimePoint>, StoreError> {
        let width = match bucket {
            Bucket::Hour => TimeDelta::hours(1),
            Bucket::Day => TimeDelta::days(1),
        };
        let mut points: BTreeMap<DateTime<Utc>, (u64, u64)> = BTreeMap::new();
        for event in self.in_window(account_id, start, end) {
            let Some(decision) = event.facts.decision else {
                continue;
            };
            let ts = event
                .occurred_at
                .duration_trunc(width)
                .map_err(StoreError::internal)?;
            let point = points.entry(ts).or_default();
            match decision {
                Decision::Allowed => point.0 = point.0.saturating_add(1),
                Decision::Denied => point.1 = point.1.saturating_add(1),
            }
        }
        Ok(points
            .into_iter()
            .map(|(ts, (allowed, denied))| TimePoint {
                ts,
                allowed,
                denied,
            })
            .collect())
    }

    async fn top(
        &self,
        account_id: AccountId,
        dimension: Dimension,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        n: u32,
    ) -> Result<Top, StoreError> {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for event in self.in_window(account_id, start, end) {
            let key = match dimension {
                Dimension::Tools | Dimension::Resources => {
                    event.facts.decision.and(event.facts.tool.clone())
                }
                Dimension::EventType => Some(event.event_type.clone()),
            };
            if let Some(key) = key {
                let n = counts.entry(key).or_default();
                *n = n.saturating_add(1);
            }
        }
        let total = counts.values().sum();
        let mut items: Vec<TopItem> = counts
            .into_iter()
            .map(|(key, count)| TopItem { key, count })
            .collect();
        items.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        items.truncate(usize::try_from(n).unwrap_or(usize::MAX));
        Ok(Top { total, items })
    }
}

#[async_trait]
impl AppResolver for MemoryEvents {
    async fn app_for_etag(
        &self,
        account_id: AccountId,
        etag: &str,
    ) -> Result<Option<AppName>, StoreError> {
        Ok(self
            .etags
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(account_id, etag.to_owned()))
            .cloned())
    }
}

#[async_trait]
impl ExportCheckpoints for MemoryEvents {
    async fn load(&self, job: &str) -> Result<Option<ExportCheckpoint>, StoreError> {
        Ok(self
            .checkpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(job)
            .copied())
    }

    async fn save(&self, job: &str, checkpoint: ExportCheckpoint) -> Result<(), StoreError> {
        self.checkpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(job.to_owned(), checkpoint);
        Ok(())
    }
}
