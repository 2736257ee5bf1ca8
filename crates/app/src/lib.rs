#![doc = include_str!("../README.md")]

mod authenticator;
mod blocking;
pub mod dev_secrets;
mod settings;
mod store;
pub mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use d2_accounts::{AccountService, SamplingPolicy};
use d2_audit::AuditService;
use d2_clickhouse::{ClickHouse, ClickHouseSettings};
use d2_events::{
    AnalyticsStore, EventForwarder, EventService, ExportSettings, Exporter, NoForwarding,
};
use d2_jwks::{AesKey, Jwks, Keyring};
use d2_kernel::limit::{LocalQuotas, QuotaStore};
use d2_kernel::{ChangeSubscriber, Clock, StoreError};
use d2_logflare::{LogflareForwarder, LogflareSettings, LogflareWorker};
use d2_policy::{PolicyService, PolicySettings, PollCeiling, PublisherKeys};
use d2_redis::{RedisQuotas, RedisSettings};
use d2_tokens::{
    BootstrapError, BootstrapRequest, BootstrapService, Bootstrapped, ControlPlaneSecret, Pepper,
    RandomnessUnavailable, TokenService, TokenVerifier,
};
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::ExposeSecret;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use authenticator::{AuthenticationError, Authenticator, CredentialKind};
pub use blocking::BlockingPool;
pub use settings::{
    AnalyticsBackend, AuthSettings, CorsSettings, DatabaseSettings, ExportJobConfig, HttpSettings,
    JobConfig, LogFormat, LogSettings, Profile, RateLimitSettings, RedisSettings as RedisConfig,
    RetentionJobConfig, Settings, SettingsError, WorkerJobs, WorkerSettings, lenient_base64,
};
pub use store::{CopyError, JobLock, MigrateMode, Repositories, Store, StoreStartError};

/// Why the application could not start. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Store(#[from] StoreStartError),
    #[error(transparent)]
    Randomness(#[from] RandomnessUnavailable),
    #[error("cannot use ClickHouse: {0}")]
    ClickHouse(#[source] StoreError),
    #[error("cannot start the Logflare forwarder: {0}")]
    Logflare(#[from] d2_logflare::StartError),
    #[error("redis.url (D2__REDIS__URL) is invalid: {0}")]
    Redis(#[source] redis_error::RedisError),
}

/// Everything a driver needs: the services, built once from configuration.
#[derive(Clone)]
pub struct App {
    pub settings: Arc<Settings>,
    pub clock: Arc<dyn Clock>,
    pub store: Store,
    pub accounts: AccountService,
    pub tokens: TokenService,
    pub verifier: Arc<TokenVerifier>,
    /// Authenticates every kind of credential (API tokens through `verifier`).
    pub authenticator: Arc<Authenticator>,
    pub bootstrap: Arc<BootstrapService>,
    pub audit: AuditService,
    pub policies: PolicyService,
    pub events: EventService,
    /// ClickHouse, when `clickhouse.url` is set (the export target; the analytics store
    /// too when `analytics.store = "clickhouse"`).
    pub clickhouse: Option<ClickHouse>,
    /// The export of stored events to ClickHouse, when `clickhouse.url` is set (run by the
    /// worker's `analytics-export` job).
    pub exporter: Option<Exporter>,
    /// The Logflare forwarder, when configured (servers only).
    pub logflare: Option<LogflareForwarder>,
    /// Account quotas shared through Redis, when `redis.url` is set (servers only).
    pub redis: Option<Arc<RedisQuotas>>,
    logflare_worker: Arc<std::sync::Mutex<Option<LogflareWorker>>>,
    shutdown: CancellationToken,
    background: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// How much of the background machinery to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A long-running server: the change feed keeps the token cache coherent.
    Server,
    /// A one-shot command: no background tasks.
    Command,
}

impl App {
    /// Builds a server: migrations as configured, the store, the services and the change
    /// feed.
    pub async fn build(settings: Settings, clock: Arc<dyn Clock>) -> Result<Self, StartupError> {
        Self::build_with(settings, clock, Mode::Server).await
    }

    pub async fn build_with(
        settings: Settings,
        clock: Arc<dyn Clock>,
        mode: Mode,
    ) -> Result<Self, StartupError> {
        let url = settings.database_url().to_owned();
        let store = Store::open(&settings).await?;

        let pepper = match settings.token_pepper_bytes()? {
            Some(bytes) => bytes,
            None => {
                tracing::warn!(
                    "dev profile: no crypto.token_pepper set, using a throwaway one; tokens stop working when the server restarts"
                );
                random_bytes(32)?
            }
        };
        let pepper = Arc::new(Pepper::new(&pepper).map_err(|_| SettingsError::Invalid {
            key: "crypto.token_pepper",
            var: "D2__CRYPTO__TOKEN_PEPPER",
            reason: "too short".into(),
        })?);
        let control_plane = settings
            .auth
            .control_plane_token
            .as_ref()
            .map(|secret| ControlPlaneSecret::new(secret.expose_secret()))
            .transpose()?;
        if control_plane.is_none() && mode == Mode::Server {
            tracing::info!(
                "no auth.control_plane_token set: POST /v1/user-token/issue is disabled"
            );
        }

        let shared = store.repositories();
        let verifier = Arc::new(TokenVerifier::new(
            shared.clone(),
            pepper.clone(),
            clock.clone(),
            settings.auth.token_cache.settings(),
        ));
        let authenticator = Arc::new(Authenticator::new(verifier.clone()));
        let grace = chrono::Duration::seconds(
            i64::try_from(settings.auth.rotation_grace_seconds).unwrap_or(i64::MAX),
        );
        let tokens = TokenService::new(
            shared.clone(),
            verifier.clone(),
            pepper.clone(),
            clock.clone(),
            grace,
        );
        let plans = Arc::new(settings.plans.clone());
        let accounts = AccountService::new(
            shared.clone(),
            plans,
            Arc::new(SamplingPolicy::new(&settings.events.sample)),
            clock.clone(),
            settings.accounts.cache.settings(),
        );
        let bootstrap = Arc::new(BootstrapService::new(
            control_plane,
            shared.clone(),
            shared.clone(),
            shared.clone(),
            pepper,
            clock.clone(),
            settings.plans.trial_days,
        ));
        let policies = policy_service(&settings, &shared, accounts.clone(), &clock)?;
        let clickhouse = clickhouse(&settings)?;
        let exporter = clickhouse.clone().map(|clickhouse| {
            let export = &settings.worker.jobs.analytics_export;
            let (events, checkpoints) = store.events();
            Exporter::new(
                events,
                Arc::new(clickhouse),
                checkpoints,
                clock.clone(),
                ExportSettings {
                    batch_size: export.batch_size.max(1),
                    max_batches: export.max_batches.max(1),
                },
            )
        });
        let analytics: Arc<dyn AnalyticsStore> =
            match (settings.analytics.store, clickhouse.as_ref()) {
                (AnalyticsBackend::Clickhouse, Some(clickhouse)) => Arc::new(clickhouse.clone()),
                _ => shared.clone(),
            };
        let (logflare, logflare_worker) = match (mode, logflare_settings(&settings)) {
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
        let local_quotas = Arc::new(LocalQuotas::default());
        let redis = match (mode, &settings.redis.url) {
            (Mode::Server, Some(url)) => {
                let config = &settings.redis;
                let quotas = RedisQuotas::new(RedisSettings {
                    url: url.expose_secret().to_owned(),
                    timeout: Duration::from_millis(config.timeout_ms.max(1)),
                    retry_after: Duration::from_millis(config.retry_ms),
                    key_prefix: config.key_prefix.clone(),
                })
                .map_err(|e| StartupError::Redis(redis_error::RedisError(e.to_string())))?;
                tracing::info!("account quotas are shared through Redis");
                Some(Arc::new(quotas))
            }
            _ => None,
        };
        let quotas: Arc<dyn QuotaStore> = match &redis {
            Some(redis) => redis.clone(),
            None => local_quotas.clone(),
        };
        let events = EventService::new(
            shared.clone(),
            analytics,
            shared.clone(),
            forwarder,
            Arc::new(accounts.clone()),
            clock.clone(),
            settings.events.settings(),
        )
        .with_quotas(quotas);
        let audit = AuditService::new(shared);

        let shutdown = CancellationToken::new();
        let mut background = Vec::new();
        if mode == Mode::Server {
            background.push(every(Duration::from_secs(60), shutdown.clone(), {
                let policies = policies.clone();
                move || policies.forget_idle_pollers()
            }));
            background.push(every(Duration::from_secs(60), shutdown.clone(), {
                let redis = redis.clone();
                move || {
                    local_quotas.forget_idle();
                    if let Some(redis) = &redis {
                        redis.forget_idle();
                    }
                }
            }));
            background.push(flush_refusals_every_second(
                events.clone(),
                shutdown.clone(),
            ));
            // Every service that caches what a change can make stale.
            let subscribers: Vec<Arc<dyn ChangeSubscriber>> = vec![
                verifier.clone(),
                Arc::new(accounts.clone()),
                Arc::new(policies.clone()),
            ];
            background.push(store.listen(url, shutdown.clone(), move |change| {
                for subscriber in &subscribers {
                    subscriber.on_change(&change);
                }
            }));
        }
        Ok(Self {
            settings: Arc::new(settings),
            clock,
            store,
            accounts,
            tokens,
            verifier,
            authenticator,
            bootstrap,
            audit,
            policies,
            events,
            clickhouse,
            exporter,
            logflare,
            redis,
            logflare_worker: Arc::new(std::sync::Mutex::new(logflare_worker)),
            shutdown,
            background: Arc::new(std::sync::Mutex::new(background)),
        })
    }

    /// In the dev profile, on a store without any account: creates a first one and returns
    /// it with its admin token (shown once), so a new server can be tried at once.
    pub async fn first_dev_account(&self) -> Result<Option<Bootstrapped>, BootstrapError> {
        if !self.settings.profile.is_dev() || self.store.repositories().has_accounts().await? {
            return Ok(None);
        }
        let request = BootstrapRequest {
            account_id: None,
            account_name: Some("Dev".to_owned()),
            owner_email: None,
            owner_name: None,
            token_name: Some("first admin token".to_owned()),
        };
        self.bootstrap.issue_trusted(request).await.map(Some)
    }

    /// Cancelled when the application shuts down; background work watches it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops background tasks and waits for them; events queued for Logflare get a few
    /// seconds to go out.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        let logflare = self
            .logflare_worker
            .lock()
            .map(|mut worker| worker.take())
            .unwrap_or_default();
        if let Some(worker) = logflare {
            let stats = worker.shutdown(Duration::from_secs(5)).await;
            tracing::info!(
                sent = stats.sent,
                abandoned = stats.abandoned,
                "Logflare forwarder stopped"
            );
        }
        let tasks: Vec<JoinHandle<()>> = self
            .background
            .lock()
            .map(|mut tasks| tasks.drain(..).collect())
            .unwrap_or_default();
        for task in tasks {
            let _ = task.await;
        }
    }
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

/// The Redis client's errors, as text: its own type would carry the URL.
mod redis_error {
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    pub struct RedisError(pub String);
}

/// Runs `work` every `period` until `shutdown`.
fn every(
    period: Duration,
    shutdown: CancellationToken,
    work: impl Fn() + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => work(),
            }
        }
    })
}

/// The keyring of signing keys: the configured AES keys, or (dev only) a throwaway one.
pub fn keyring(settings: &Settings) -> Result<Keyring, StartupError> {
    let (current, previous) = match settings.jwk_aes_keys()? {
        Some(keys) => (keys.current, keys.previous),
        None => {
            tracing::warn!(
                "dev profile: no crypto.jwk_aes_key set, using a throwaway one; signing keys stop working when the server restarts"
            );
            (random_bytes(32)?, Vec::new())
        }
    };
    let invalid = |_| SettingsError::Invalid {
        key: "crypto.jwk_aes_key",
        var: "D2__CRYPTO__JWK_AES_KEY",
        reason: "must be 32 bytes".into(),
    };
    let previous = previous
        .iter()
        .map(|k| AesKey::new(k).map_err(invalid))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(
        Keyring::new(AesKey::new(&current).map_err(invalid)?, previous)
            .accepting_legacy(settings.crypto.accept_legacy_seals),
    )
}

fn policy_service(
    settings: &Settings,
    store: &Arc<dyn Repositories>,
    accounts: AccountService,
    clock: &Arc<dyn Clock>,
) -> Result<PolicyService, StartupError> {
    let seconds = |s: u64| chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX));
    let jwks = Arc::new(Jwks::new(
        store.clone(),
        Arc::new(keyring(settings)?),
        clock.clone(),
        Arc::new(BlockingPool),
        seconds(settings.jwks.grace_seconds),
        settings.jwks.cache.settings(),
    ));
    let policy = &settings.policy;
    let policy_settings = PolicySettings {
        bundle_ttl: chrono::Duration::days(i64::from(policy.bundle_ttl_days)),
        policy_expiry: chrono::Duration::days(i64::from(policy.expiry_days)),
        iat_backdate: seconds(u64::from(policy.iat_backdate_seconds)),
        poll_ceiling: PollCeiling {
            per_second: policy.poll_ceiling_per_second,
            burst: policy.poll_ceiling_burst,
        },
        max_rotations_per_hour: settings.jwks.max_rotations_per_hour,
        cache: policy.cache.settings(),
    };
    Ok(PolicyService::new(
        store.clone(),
        PublisherKeys::new(store.clone(), accounts.clone(), clock.clone()),
        jwks,
        Arc::new(accounts),
        clock.clone(),
        policy_settings,
    ))
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

/// `n` random bytes from the system generator.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, RandomnessUnavailable> {
    let mut bytes = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| RandomnessUnavailable)?;
    Ok(bytes)
}
