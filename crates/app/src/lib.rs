#![doc = include_str!("../README.md")]

pub mod dev_secrets;
mod settings;
pub mod telemetry;

use std::sync::Arc;

use d2_accounts::{AccountService, SamplingPolicy};
use d2_audit::AuditService;
use d2_kernel::{Clock, StoreError};
use d2_postgres::{Change, ChangeListener, PgStore};
use d2_tokens::{
    BootstrapService, ControlPlaneSecret, Pepper, RandomnessUnavailable, TokenService,
    TokenVerifier,
};
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::ExposeSecret;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use settings::{
    AuthSettings, CorsSettings, DatabaseSettings, HttpSettings, LogFormat, LogSettings, Profile,
    RateLimitSettings, Settings, SettingsError, lenient_base64,
};

/// Why the application could not start. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Migrate(#[from] d2_postgres::MigrateError),
    #[error(transparent)]
    Connect(#[from] d2_postgres::ConnectError),
    #[error(
        "the database has {0} pending migration(s); run `d2ctl migrate` (or set database.auto_migrate)"
    )]
    PendingMigrations(usize),
    #[error(transparent)]
    Randomness(#[from] RandomnessUnavailable),
}

/// The storage the services run on, chosen from configuration.
#[derive(Clone, Debug)]
pub enum Store {
    Postgres(PgStore),
}

impl Store {
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Postgres(store) => store.ping().await,
        }
    }

    /// Connections open and idle.
    pub fn pool_state(&self) -> (u32, u32) {
        match self {
            Store::Postgres(store) => store.pool_state(),
        }
    }
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
    pub bootstrap: Arc<BootstrapService>,
    pub audit: AuditService,
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
        if settings.database.create_if_missing && d2_postgres::ensure_database(&url).await? {
            tracing::info!("created the database");
        }
        if settings.database.auto_migrate {
            let applied = d2_postgres::run_migrations(&url).await?;
            if !applied.is_empty() {
                tracing::info!(migrations = ?applied, "applied migrations");
            }
        } else {
            let pending = d2_postgres::pending_migrations(&url).await?;
            if !pending.is_empty() {
                return Err(StartupError::PendingMigrations(pending.len()));
            }
        }
        let store = PgStore::connect(&settings.pool_settings("d2")).await?;
        tracing::info!(db.target = store.target(), "connected to PostgreSQL");

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

        let shared = Arc::new(store.clone());
        let verifier = Arc::new(TokenVerifier::new(
            shared.clone(),
            pepper.clone(),
            clock.clone(),
            settings.auth.token_cache.settings(),
        ));
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
        let audit = AuditService::new(shared);

        let shutdown = CancellationToken::new();
        let mut background = Vec::new();
        if mode == Mode::Server {
            let verifier = verifier.clone();
            let accounts = accounts.clone();
            background.push(ChangeListener::spawn(
                url,
                shutdown.clone(),
                move |change| match change {
                    Change::Token(id) => verifier.invalidate(id),
                    Change::Account(id) => accounts.invalidate(id),
                    Change::Resync => {
                        verifier.invalidate_all();
                        accounts.invalidate_all();
                    }
                },
            ));
        }
        Ok(Self {
            settings: Arc::new(settings),
            clock,
            store: Store::Postgres(store),
            accounts,
            tokens,
            verifier,
            bootstrap,
            audit,
            shutdown,
            background: Arc::new(std::sync::Mutex::new(background)),
        })
    }

    /// Cancelled when the application shuts down; background work watches it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops background tasks and waits for them.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
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

/// `n` random bytes from the system generator.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, RandomnessUnavailable> {
    let mut bytes = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| RandomnessUnavailable)?;
    Ok(bytes)
}
