use chrono::{DateTime, Duration, Utc};
use d2_kernel::limit::{LocalQuotas, QuotaStore, Rate, RateLimit};
use d2_kernel::{
    AccessError, AccountId, AppName, AuthContext, CacheSettings, Clock, Code, CoherentCache,
    Entitlement, EntitlementError, Entitlements, ErrorCode, Page, PageError, PageRequest, Scope,
    StoreError,
};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;

use crate::analytics::{Bucket, Dimension, Summary, TimePoint, Top};
use crate::event::{EventFacts, EventFilter, IncomingEvent, NewEvent, StoredEvent, parse_batch};
use crate::ports::{AnalyticsStore, AppResolver, EventForwarder, EventStore};
use crate::refusals::RefusalTally;

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Entitlement(#[from] EntitlementError),
    #[error("the account is locked (its trial has ended)")]
    Locked,
    #[error("the batch is {size} bytes; at most {max} are accepted (split it)")]
    TooLarge { size: usize, max: usize },
    #[error("the batch has {count} events; at most {max} are accepted (split it)")]
    TooManyEvents { count: usize, max: u32 },
    #[error("{0}")]
    Invalid(String),
    #[error(
        "the account's telemetry quota of {} events per minute is spent ({} left, {} in this batch); retry after {} s",
        .limit.limit, .limit.remaining, .events, .limit.retry_after_seconds
    )]
    QuotaExceeded { limit: RateLimit, events: u32 },
    #[error("metrics are disabled for this account")]
    MetricsDisabled,
    #[error("{0}")]
    InvalidQuery(String),
    #[error("{0}")]
    InvalidTimeRange(&'static str),
    #[error(transparent)]
    Page(#[from] PageError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for EventError {
    fn code(&self) -> Code {
        match self {
            EventError::Access(e) => e.code(),
            EventError::Entitlement(e) => e.code(),
            EventError::Locked => Code::Locked,
            EventError::TooLarge { .. } => Code::EventBatchTooLarge,
            EventError::TooManyEvents { .. } => Code::TooManyEvents,
            EventError::Invalid(_) => Code::InvalidEvent,
            EventError::QuotaExceeded { .. } => Code::RateLimited,
            EventError::MetricsDisabled => Code::MetricsDisabled,
            EventError::InvalidQuery(_) => Code::InvalidQuery,
            EventError::InvalidTimeRange(_) => Code::InvalidTimeRange,
            EventError::Page(e) => e.code(),
            EventError::Store(e) => e.code(),
        }
    }

    fn rate_limit(&self) -> Option<RateLimit> {
        match self {
            EventError::QuotaExceeded { limit, .. } => Some(*limit),
            _ => None,
        }
    }
}

/// Ingest limits that are not per plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventSettings {
    /// Events older than this are refused.
    pub max_age: Duration,
    /// Events further in the future than this are refused (client clocks drift).
    pub max_future: Duration,
    /// The body cap never goes below this, whatever the plan: the SDK sends up to 32 KiB
    /// per chunk and slightly more when its size estimate is off.
    pub min_body_bytes: usize,
    pub cache: CacheSettings,
}

impl Default for EventSettings {
    fn default() -> Self {
        Self {
            max_age: Duration::days(30),
            max_future: Duration::minutes(10),
            min_body_bytes: 40 * 1024,
            cache: CacheSettings::default(),
        }
    }
}

/// An ingest request as received.
#[derive(Clone, Debug, Default)]
pub struct IngestRequest<'a> {
    pub body: &'a [u8],
    pub request_id: Option<&'a str>,
    pub source_ip: Option<String>,
}

/// How many events were stored, and how many were already stored (a retried batch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IngestOutcome {
    pub accepted: usize,
    pub duplicates: usize,
    /// The account's telemetry quota after this batch.
    pub limit: RateLimit,
}

type EtagKey = (AccountId, String);

#[derive(Clone)]
pub struct EventService {
    store: Arc<dyn EventStore>,
    analytics: Arc<dyn AnalyticsStore>,
    resolver: Arc<dyn AppResolver>,
    forwarder: Arc<dyn EventForwarder>,
    entitlements: Arc<dyn Entitlements>,
    clock: Arc<dyn Clock>,
    settings: EventSettings,
    quotas: Arc<dyn QuotaStore>,
    refusals: Arc<RefusalTally>,
    /// Which app a `policy_etag` belongs to (an ETag never changes apps).
    apps_by_etag: Arc<CoherentCache<EtagKey, Option<AppName>>>,
}

impl std::fmt::Debug for EventService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

const MAX_HOST_CHARS: usize = 255;

fn text_member(payload: &serde_json::Map<String, Value>, name: &str) -> Option<String> {
    payload
        .get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|text| !text.is_empty() && *text != "unknown")
        .map(|text| text.chars().take(MAX_HOST_CHARS).collect())
}

impl EventService {
    pub fn new(
        store: Arc<dyn EventStore>,
        analytics: Arc<dyn AnalyticsStore>,
        resolver: Arc<dyn AppResolver>,
        forwarder: Arc<dyn EventForwarder>,
        entitlements: Arc<dyn Entitlements>,
        clock: Arc<dyn Clock>,
        settings: EventSettings,
    ) -> Self {
        Self {
            store,
            analytics,
            resolver,
            forwarder,
            entitlements,
            clock,
            apps_by_etag: Arc::new(CoherentCache::new(settings.cache)),
            quotas: Arc::new(LocalQuotas::default()),
            refusals: Arc::default(),
            settings,
        }
    }

    /// Counts account quotas in `quotas` (shared by every replica) instead of this
    /// process alone.
    #[must_use]
    pub fn with_quotas(self, quotas: Arc<dyn QuotaStore>) -> Self {
        Self { quotas, ..self }
    }

    /// Writes the refusals counted since the last flush; on failure they are kept for the
    /// next one.
    pub async fn flush_refusals(&self) -> Result<(), StoreError> {
        let refusals = self.refusals.take();
        if refusals.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.store.add_refusals(&refusals).await {
            self.refusals.merge(&refusals);
            return Err(error);
        }
        Ok(())
    }

    /// Events of the account refused by its quota in the hours that start in
    /// `[start, end)` (strict scope `metrics.read`).
    pub async fn refused_events(
        &self,
        ctx: &AuthContext,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<u64, EventError> {
        self.reading(ctx).await?;
        Ok(self
            .store
            .refused_events(ctx.account_id, crate::refusals::hour_of(start), end)
            .await?)
    }

    /// Spends the batch's events from the account's per-minute quota (an empty batch
    /// costs one), or counts them as refused.
    async fn spend_quota(
        &self,
        ctx: &AuthContext,
        entitlement: &Entitlement,
        events: usize,
    ) -> Result<RateLimit, EventError> {
        let events = u32::try_from(events).unwrap_or(u32::MAX);
        let rate = Rate::per_minute(entitlement.quotas.ingest_events_per_minute);
        let key = format!("ingest:{}", ctx.account_id);
        self.quotas
            .take(&key, events.max(1), rate)
            .await
            .into_result()
            .map_err(|limit| {
                self.refusals
                    .add(ctx.account_id, self.clock.now(), u64::from(events));
                EventError::QuotaExceeded { limit, events }
            })
    }

    /// The largest body the caller may send to ingest, once the caller may ingest at all
    /// (read before the body, so an oversized body is refused unread).
    pub async fn ingest_body_cap(&self, ctx: &AuthContext) -> Result<usize, EventError> {
        ctx.require(Scope::EventIngest)?;
        let entitlement = self.entitled(ctx).await?;
        if entitlement.is_locked() {
            return Err(EventError::Locked);
        }
        Ok(self.body_cap(&entitlement))
    }

    fn body_cap(&self, entitlement: &Entitlement) -> usize {
        usize::try_from(entitlement.quotas.max_batch_bytes)
            .unwrap_or(usize::MAX)
            .max(self.settings.min_body_bytes)
    }

    /// Stores a batch durably and answers only then. Nothing is stored unless every event
    /// is valid.
    pub async fn ingest(
        &self,
        ctx: &AuthContext,
        request: IngestRequest<'_>,
    ) -> Result<IngestOutcome, EventError> {
        ctx.require(Scope::EventIngest)?;
        let entitlement = self.entitled(ctx).await?;
        if entitlement.is_locked() {
            return Err(EventError::Locked);
        }
        let cap = self.body_cap(&entitlement);
        if request.body.len() > cap {
            return Err(EventError::TooLarge {
                size: request.body.len(),
                max: cap,
            });
        }
        let body: Value = serde_json::from_slice(request.body)
            .map_err(|e| EventError::Invalid(format!("the body is not JSON: {e}")))?;
        let now = self.clock.now();
        let incoming = parse_batch(body, now, self.settings.max_age, self.settings.max_future)
            .map_err(EventError::Invalid)?;
        let max = entitlement.quotas.event_batch;
        if incoming.len() > usize::try_from(max).unwrap_or(usize::MAX) {
            return Err(EventError::TooManyEvents {
                count: incoming.len(),
                max,
            });
        }
        let limit = self.spend_quota(ctx, &entitlement, incoming.len()).await?;
        if incoming.is_empty() {
            return Ok(IngestOutcome {
                accepted: 0,
                duplicates: 0,
                limit,
            });
        }
        let mut events = Vec::with_capacity(incoming.len());
        for event in incoming {
            events.push(self.stamp(ctx, &request, event, now).await?);
        }
        let inserted: HashSet<[u8; 32]> = self
            .store
            .insert_events(&events)
            .await?
            .into_iter()
            .collect();
        let outcome = IngestOutcome {
            accepted: inserted.len(),
            duplicates: events.len().saturating_sub(inserted.len()),
            limit,
        };
        if outcome.accepted > 0 {
            let fresh: Vec<NewEvent> = events
                .into_iter()
                .filter(|e| inserted.contains(&e.key))
                .collect();
            self.forwarder.forward(&fresh);
        }
        Ok(outcome)
    }

    /// Attaches where an event came from: the app (the server token's, else the app whose
    /// bundle ETag the SDK reports), the service, the host.
    async fn stamp(
        &self,
        ctx: &AuthContext,
        request: &IngestRequest<'_>,
        event: IncomingEvent,
        now: DateTime<Utc>,
    ) -> Result<NewEvent, EventError> {
        let app_name = match &ctx.app_name {
            Some(app) => Some(app.clone()),
            None => match text_member(&event.payload, "policy_etag") {
                Some(etag) => self.app_for_etag(ctx.account_id, etag).await?,
                None => None,
            },
        };
        let service = text_member(&event.payload, "service")
            .or_else(|| app_name.as_ref().map(ToString::to_string));
        Ok(NewEvent {
            account_id: ctx.account_id,
            key: NewEvent::key_of(ctx.account_id, &event),
            token_id: ctx.token_id(),
            facts: EventFacts::of(&event.event_type, &event.payload),
            host: text_member(&event.payload, "host"),
            event_type: event.event_type,
            occurred_at: event.occurred_at,
            ingested_at: now,
            app_name,
            service,
            source_ip: request.source_ip.clone(),
            request_id: request.request_id.map(|id| id.chars().take(128).collect()),
            payload: Value::Object(event.payload),
        })
    }

    async fn app_for_etag(
        &self,
        account_id: AccountId,
        etag: String,
    ) -> Result<Option<AppName>, EventError> {
        let etag: String = etag.trim_matches('"').chars().take(64).collect();
        let key = (account_id, etag.clone());
        Ok(self
            .apps_by_etag
            .get_or_load(&key, || async {
                self.resolver.app_for_etag(account_id, &etag).await
            })
            .await?)
    }

    async fn entitled(&self, ctx: &AuthContext) -> Result<Entitlement, EventError> {
        Ok(self.entitlements.entitlement(ctx.account_id).await?)
    }

    async fn reading(&self, ctx: &AuthContext) -> Result<(), EventError> {
        ctx.require(Scope::MetricsRead)?;
        if !self.entitled(ctx).await?.metrics_enabled {
            return Err(EventError::MetricsDisabled);
        }
        Ok(())
    }

    /// The account's events, newest first (strict scope `metrics.read`).
    pub async fn list(
        &self,
        ctx: &AuthContext,
        filter: &EventFilter,
        page: &PageRequest,
    ) -> Result<Page<StoredEvent>, EventError> {
        self.reading(ctx).await?;
        if let Some(cursor) = page.after() {
            cursor.id_as::<i64>()?;
        }
        check_range(filter.since, filter.until)?;
        Ok(self.store.list_events(ctx.account_id, filter, page).await?)
    }

    pub async fn summary(
        &self,
        ctx: &AuthContext,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> Result<(Summary, DateTime<Utc>, DateTime<Utc>), EventError> {
        self.reading(ctx).await?;
        let end = end.unwrap_or_else(|| self.clock.now());
        let start = match start {
            Some(start) => start,
            None => end
                .checked_sub_signed(Duration::days(30))
                .ok_or(EventError::InvalidTimeRange("`end` is too early"))?,
        };
        if start >= end {
            return Err(EventError::InvalidTimeRange(
                "`start` must be earlier than `end`",
            ));
        }
        Ok((
            self.analytics.summary(ctx.account_id, start, end).await?,
            start,
            end,
        ))
    }

    /// The window of the last `days` days, checked against `range`.
    fn window(
        &self,
        days: Option<u32>,
        default: u32,
        range: std::ops::RangeInclusive<u32>,
    ) -> Result<(DateTime<Utc>, DateTime<Utc>), EventError> {
        let days = days.unwrap_or(default);
        if !range.contains(&days) {
            return Err(EventError::InvalidQuery(format!(
                "`days` must be between {} and {}",
                range.start(),
                range.end()
            )));
        }
        let end = self.clock.now();
        Ok((
            d2_kernel::earlier(end, Duration::days(i64::from(days))),
            end,
        ))
    }

    pub async fn timeseries(
        &self,
        ctx: &AuthContext,
        bucket: Bucket,
        days: Option<u32>,
    ) -> Result<(Vec<TimePoint>, DateTime<Utc>, DateTime<Utc>), EventError> {
        self.reading(ctx).await?;
        let (start, end) = self.window(days, 7, 1..=90)?;
        Ok((
            self.analytics
                .timeseries(ctx.account_id, bucket, start, end)
                .await?,
            start,
            end,
        ))
    }

    pub async fn top(
        &self,
        ctx: &AuthContext,
        dimension: Dimension,
        days: Option<u32>,
        n: Option<u32>,
    ) -> Result<(Top, DateTime<Utc>, DateTime<Utc>), EventError> {
        self.reading(ctx).await?;
        let (start, end) = self.window(days, 30, 1..=180)?;
        let n = n.unwrap_or(10);
        if !(1..=100).contains(&n) {
            return Err(EventError::InvalidQuery(
                "`n` must be between 1 and 100".into(),
            ));
        }
        Ok((
            self.analytics
                .top(ctx.account_id, dimension, start, end, n)
                .await?,
            start,
            end,
        ))
    }
}

fn check_range(
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<(), EventError> {
    if let (Some(since), Some(until)) = (since, until)
        && since >= until
    {
        return Err(EventError::InvalidTimeRange(
            "`since` must be earlier than `until`",
        ));
    }
    Ok(())
}
