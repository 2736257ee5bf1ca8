#![doc = include_str!("../README.md")]

mod authenticator;
mod blocking;
pub mod dev_secrets;
pub mod domains;
mod settings;
mod store;
pub mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use d2_accounts::AccountService;
use d2_audit::AuditService;
use d2_clickhouse::ClickHouse;
use d2_events::{EventService, Exporter};
use d2_kernel::job::config_key;
use d2_kernel::limit::{LocalQuotas, QuotaStore};
use d2_kernel::{Clock, ScheduledJob, StoreError, TaskHandler, TaskQueue, TaskRunner};
use d2_logflare::{LogflareForwarder, LogflareWorker};
use d2_members::{Invitations, MembersService};
use d2_policy::PolicyService;
use d2_redis::{RedisQuotas, RedisSettings};
use d2_tokens::{
    BootstrapError, BootstrapRequest, BootstrapService, Bootstrapped, Pepper,
    RandomnessUnavailable, TokenService, TokenVerifier,
};
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::ExposeSecret;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use authenticator::{AuthenticationError, Authenticator, CredentialKind};
pub use blocking::BlockingPool;
pub use domains::events::AnalyticsBackend;
pub use domains::policy::keyring;
pub use settings::{
    CorsSettings, DatabaseSettings, HttpSettings, JobSettings, LogFormat, LogSettings, Profile,
    RateLimitSettings, RedisSettings as RedisConfig, Settings, SettingsError, TaskSettings,
    WorkerSettings, env_var, lenient_base64,
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
    #[error("cannot use the mail server of [smtp]: {0}")]
    Smtp(#[source] d2_smtp::StartError),
    #[error("cannot use the identity provider of auth.idp: {0}")]
    IdentityProvider(#[source] d2_oidc::ConnectError),
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
    pub members: Arc<MembersService>,
    /// Subscriptions the payment provider reports, and the credits ledger.
    pub billing: domains::billing::Billing,
    pub invitations: Arc<Invitations>,
    /// The key the consent pages seal their cookies and forms with: derived from the
    /// token pepper, so every replica opens what another sealed.
    pub page_seal_key: d2_kernel::SecretDigest,
    /// Browser sign-in at the identity provider, for the consent pages (when
    /// `auth.idp.client_id` is set).
    pub browser_sign_in: Option<Arc<dyn d2_oauth::BrowserSignIn>>,
    /// OAuth for agents: agents, client authentication, the token endpoint's services.
    pub oauth: domains::oauth::OAuth,
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
    /// The scheduled jobs the domains registered, for the worker.
    pub jobs: Vec<Arc<dyn ScheduledJob>>,
    /// The task queue, and the handlers of the tasks the domains enqueue, for the worker.
    pub tasks: Arc<dyn TaskQueue>,
    pub task_handlers: Vec<Arc<dyn TaskHandler>>,
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
    /// A long-running server: the change feed keeps the caches coherent.
    Server,
    /// A one-shot command, or the worker: no background tasks.
    Command,
}

impl App {
    /// Builds a server: migrations as configured, the store, the services and the change
    /// feed.
    pub async fn build(settings: Settings, clock: Arc<dyn Clock>) -> Result<Self, StartupError> {
        Self::build_with(settings, clock, Mode::Server).await
    }

    /// Builds the store, then each domain from the shared dependencies (see
    /// [`domains`]), then starts what they registered.
    pub async fn build_with(
        settings: Settings,
        clock: Arc<dyn Clock>,
        mode: Mode,
    ) -> Result<Self, StartupError> {
        let store = Store::open(&settings).await?;
        let mut registry = domains::Registry::new(mode);
        let AccountQuotas {
            store: quotas,
            redis,
        } = quotas(&settings, mode, &mut registry)?;
        let shared = domains::Shared {
            settings: &settings,
            store: &store,
            repositories: store.repositories(),
            clock: clock.clone(),
            pepper: pepper(&settings)?,
            quotas,
            mode,
        };
        let accounts = domains::accounts::build(&shared, &mut registry);
        let tokens = domains::tokens::build(&shared, &mut registry, &accounts)?;
        let members = domains::members::build(&shared, &mut registry, &accounts).await?;
        let policies = domains::policy::build(&shared, &mut registry, &accounts)?;
        let events = domains::events::build(&shared, &mut registry, &accounts)?;
        let oauth = domains::oauth::build(
            &shared,
            &mut registry,
            policies.jwks().clone(),
            members.person_tokens.clone(),
        )?;
        let audit = domains::audit::build(&shared);
        let billing =
            domains::billing::build(&shared, &mut registry, &accounts, policies.jwks().clone())?;
        check_job_settings(&settings, &registry.jobs)?;

        let page_seal_key = shared.pepper.digest_text("d2 consent pages seal v1");
        let shared_tasks: Arc<dyn TaskQueue> = store.repositories();
        let subscribers = std::mem::take(&mut registry.subscribers);
        let url = settings.database_url().to_owned();
        registry.spawn(|shutdown| {
            store.listen(url, shutdown, move |change| {
                for subscriber in &subscribers {
                    subscriber.on_change(&change);
                }
            })
        });
        Ok(Self {
            settings: Arc::new(settings),
            clock,
            store,
            accounts,
            tokens: tokens.tokens,
            authenticator: Arc::new(Authenticator::new(
                tokens.verifier.clone(),
                members.sessions,
            )),
            members: members.members,
            billing,
            invitations: members.invitations,
            browser_sign_in: members.browser_sign_in,
            page_seal_key,
            oauth,
            verifier: tokens.verifier,
            bootstrap: tokens.bootstrap,
            audit,
            policies,
            events: events.events,
            clickhouse: events.clickhouse,
            exporter: events.exporter,
            logflare: events.logflare,
            redis,
            jobs: registry.jobs,
            tasks: shared_tasks,
            task_handlers: registry.task_handlers,
            logflare_worker: Arc::new(std::sync::Mutex::new(events.logflare_worker)),
            shutdown: registry.shutdown,
            background: Arc::new(std::sync::Mutex::new(registry.background)),
        })
    }

    /// A runner of the task queue with the domains' handlers and `extra` ones (an
    /// embedder's), as `worker.tasks` configures it.
    pub fn task_runner(&self, extra: &[Arc<dyn TaskHandler>]) -> TaskRunner {
        let settings = &self.settings.worker.tasks;
        TaskRunner::new(
            self.tasks.clone(),
            self.task_handlers.iter().chain(extra).cloned().collect(),
            self.clock.clone(),
            settings.retry_policy(),
            Duration::from_secs(settings.lease_seconds),
            settings.batch,
        )
    }

    /// The registered job called `name`.
    pub fn job(&self, name: &str) -> Option<&Arc<dyn ScheduledJob>> {
        self.jobs.iter().find(|job| job.name() == name)
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

/// The Redis client's errors, as text: its own type would carry the URL.
mod redis_error {
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    pub struct RedisError(pub String);
}

/// `n` random bytes from the system generator.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, RandomnessUnavailable> {
    let mut bytes = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| RandomnessUnavailable)?;
    Ok(bytes)
}

/// The key of secret digests: the configured pepper, or (dev only) a throwaway one.
fn pepper(settings: &Settings) -> Result<Arc<Pepper>, StartupError> {
    let pepper = match settings.token_pepper_bytes()? {
        Some(bytes) => bytes,
        None => {
            tracing::warn!(
                "dev profile: no crypto.token_pepper set, using a throwaway one; tokens stop working when the server restarts"
            );
            random_bytes(32)?
        }
    };
    let pepper = Pepper::new(&pepper)
        .map_err(|_| SettingsError::invalid("crypto.token_pepper", "too short"))?;
    Ok(Arc::new(pepper))
}

/// Where account quotas are counted: through Redis when `redis.url` is set (servers only),
/// in this process otherwise.
fn quotas(
    settings: &Settings,
    mode: Mode,
    registry: &mut domains::Registry,
) -> Result<AccountQuotas, StartupError> {
    let local = Arc::new(LocalQuotas::default());
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
    registry.every(Duration::from_secs(60), {
        let (local, redis) = (local.clone(), redis.clone());
        move || {
            local.forget_idle();
            if let Some(redis) = &redis {
                redis.forget_idle();
            }
        }
    });
    let store: Arc<dyn QuotaStore> = match &redis {
        Some(redis) => redis.clone(),
        None => local,
    };
    Ok(AccountQuotas { store, redis })
}

struct AccountQuotas {
    store: Arc<dyn QuotaStore>,
    redis: Option<Arc<RedisQuotas>>,
}

/// Every job has its schedule in `worker.jobs`, and every entry there is a job.
fn check_job_settings(
    settings: &Settings,
    jobs: &[Arc<dyn ScheduledJob>],
) -> Result<(), SettingsError> {
    for job in jobs {
        settings.worker.job(job.name())?;
    }
    for key in settings.worker.jobs.keys() {
        if !jobs.iter().any(|job| config_key(job.name()) == *key) {
            let known: Vec<String> = jobs.iter().map(|job| config_key(job.name())).collect();
            return Err(SettingsError::invalid(
                format!("worker.jobs.{key}"),
                format!("no such job; the jobs are {}", known.join(", ")),
            ));
        }
    }
    Ok(())
}
