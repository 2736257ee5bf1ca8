//! Events: the `[events]`, `[analytics]`, `[clickhouse]` and `[logflare]` sections, the
//! event service, its analytics store, the export to ClickHouse and the Logflare forward.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use d2_accounts::AccountService;
use d2_clickhouse::{ClickHouse, ClickHouseSettings};
use d2_events::{
    AnalyticsExport, AnalyticsStore, EventForwarder, EventService, ExportSettings, Exporter,
    NoForwarding, Retention,
};
use d2_logflare::{LogflareForwarder, LogflareSettings, LogflareWorker};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Registry, Shared};
use crate::settings::{CacheConfig, SettingsError, blank_is_none};
use crate::{Mode, Settings, StartupError};

/// `[events]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    /// Per-event-type sampling rates sent to SDKs, over the built-in defaults.
    #[serde(default)]
    pub sample: BTreeMap<String, f64>,
    pub max_age_days: u32,
    pub max_future_seconds: u32,
    pub min_body_bytes: usize,
    /// Which app a bundle ETag belongs to.
    pub etag_cache: CacheConfig,
}

impl EventSettings {
    pub fn settings(&self) -> d2_events::EventSettings {
        d2_events::EventSettings {
            max_age: chrono::Duration::days(i64::from(self.max_age_days)),
            max_future: chrono::Duration::seconds(i64::from(self.max_future_seconds)),
            min_body_bytes: self.min_body_bytes,
            cache: self.etag_cache.settings(),
        }
    }
}

/// Where analytics queries are answered.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AnalyticsBackend {
    Postgres,
    Clickhouse,
}

/// `[analytics]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsSettings {
    pub store: AnalyticsBackend,
}

/// `[clickhouse]`: the export target, and the analytics store with
/// `analytics.store = "clickhouse"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConfig {
    #[serde(default, deserialize_with = "blank_is_none")]
    pub url: Option<String>,
    pub database: String,
    #[serde(default, deserialize_with = "blank_is_none")]
    pub user: Option<String>,
    #[serde(default, deserialize_with = "blank_is_none")]
    pub password: Option<SecretString>,
    pub timeout_seconds: u64,
}

/// `[logflare]`: the forward of accepted events, with all three of url, key and source.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogflareConfig {
    #[serde(default, deserialize_with = "blank_is_none")]
    pub url: Option<String>,
    #[serde(default, deserialize_with = "blank_is_none")]
    pub api_key: Option<SecretString>,
    #[serde(default, deserialize_with = "blank_is_none")]
    pub source: Option<String>,
    pub queue_capacity: usize,
    pub batch_size: usize,
    pub flush_interval_ms: u64,
    pub timeout_seconds: u64,
    pub max_attempts: u32,
}

/// The options of `worker.jobs.analytics_export`.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportOptions {
    /// Events per ClickHouse insert.
    batch_size: u32,
    /// Batches per run at most, so one run cannot hold the lock for ever.
    max_batches: u32,
}

/// The options of `worker.jobs.retention`.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionOptions {
    /// Exported events older than this are deleted from the store.
    keep_days: u32,
}

pub(crate) fn validate(settings: &Settings) -> Result<(), SettingsError> {
    if settings.analytics.store == AnalyticsBackend::Clickhouse && settings.clickhouse.url.is_none()
    {
        return Err(SettingsError::missing(
            "clickhouse.url",
            format!("{} (analytics.store = clickhouse)", settings.profile),
        ));
    }
    let logflare = &settings.logflare;
    let set = [
        logflare.url.is_some(),
        logflare.api_key.is_some(),
        logflare.source.is_some(),
    ];
    if set.contains(&true) && set.contains(&false) {
        return Err(SettingsError::invalid(
            "logflare.url",
            "set logflare.url, logflare.api_key and logflare.source together, or none",
        ));
    }
    Ok(())
}

pub(crate) struct Events {
    pub events: EventService,
    pub clickhouse: Option<ClickHouse>,
    pub exporter: Option<Exporter>,
    pub logflare: Option<LogflareForwarder>,
    pub logflare_worker: Option<LogflareWorker>,
}

pub(crate) fn build(
    shared: &Shared<'_>,
    registry: &mut Registry,
    accounts: &AccountService,
) -> Result<Events, StartupError> {
    let settings = shared.settings;
    let export: ExportOptions = settings.worker.options("analytics-export")?;
    let retention: RetentionOptions = settings.worker.options("retention")?;
    let clickhouse = clickhouse(settings)?;
    let exporter = clickhouse.clone().map(|clickhouse| {
        let (events, checkpoints) = shared.store.events();
        Exporter::new(
            events,
            Arc::new(clickhouse),
            checkpoints,
            shared.clock.clone(),
            ExportSettings {
                batch_size: export.batch_size.max(1),
                max_batches: export.max_batches.max(1),
            },
        )
    });
    let analytics: Arc<dyn AnalyticsStore> = match (settings.analytics.store, &clickhouse) {
        (AnalyticsBackend::Clickhouse, Some(clickhouse)) => Arc::new(clickhouse.clone()),
        _ => shared.repositories.clone(),
    };
    let (logflare, logflare_worker) = match (shared.mode, logflare_settings(settings)) {
        (Mode::Server, Some(config)) => {
            let (forwarder, worker) = LogflareForwarder::start(config)?;
            tracing::info!("forwarding accepted events to Logflare");
            (Some(forwarder), Some(worker))
        }
        _ => (None, None),
    };
    let forwarder: Arc<dyn EventForwarder> = match &logflare {
        Some(forwarder) => Arc::new(forwarder.clone()),
        None => Arc::new(NoForwarding),
    };
    let events = EventService::new(
        shared.repositories.clone(),
        analytics,
        shared.repositories.clone(),
        forwarder,
        Arc::new(accounts.clone()),
        shared.clock.clone(),
        settings.events.settings(),
    )
    .with_quotas(shared.quotas.clone());
    registry.schedule(AnalyticsExport(exporter.clone()));
    registry.schedule(Retention {
        exporter: exporter.clone(),
        keep: chrono::Duration::days(i64::from(retention.keep_days)),
    });
    registry.spawn({
        let events = events.clone();
        move |shutdown| flush_refusals_every_second(events, shutdown)
    });
    Ok(Events {
        events,
        clickhouse,
        exporter,
        logflare,
        logflare_worker,
    })
}

/// Writes the refused-event counts every second, and once more at shutdown.
fn flush_refusals_every_second(
    events: EventService,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        loop {
            let stopping = tokio::select! {
                () = shutdown.cancelled() => true,
                _ = ticks.tick() => false,
            };
            if let Err(error) = events.flush_refusals().await {
                tracing::warn!(error.cause = %error, "refused-event counts not written yet; retrying");
            }
            if stopping {
                return;
            }
        }
    })
}

/// The ClickHouse adapter, when `clickhouse.url` is set.
fn clickhouse(settings: &Settings) -> Result<Option<ClickHouse>, StartupError> {
    let config = &settings.clickhouse;
    let Some(url) = &config.url else {
        return Ok(None);
    };
    let mut adapter = ClickHouseSettings::new(url.clone(), config.database.clone());
    adapter.user.clone_from(&config.user);
    adapter.password = config
        .password
        .as_ref()
        .map(|p| p.expose_secret().to_owned());
    adapter.timeout = Duration::from_secs(config.timeout_seconds.max(1));
    ClickHouse::new(adapter)
        .map(Some)
        .map_err(StartupError::ClickHouse)
}

/// The Logflare forwarder's settings, when all three of url, key and source are set.
fn logflare_settings(settings: &Settings) -> Option<LogflareSettings> {
    let config = &settings.logflare;
    let (Some(url), Some(api_key), Some(source)) = (&config.url, &config.api_key, &config.source)
    else {
        return None;
    };
    let mut forward = LogflareSettings::new(url.clone(), api_key.expose_secret(), source.clone());
    forward.queue_capacity = config.queue_capacity;
    forward.batch_size = config.batch_size;
    forward.flush_interval = Duration::from_millis(config.flush_interval_ms);
    forward.timeout = Duration::from_secs(config.timeout_seconds);
    forward.max_attempts = config.max_attempts;
    Some(forward)
}
