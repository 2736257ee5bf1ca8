//! The storage the services run on, chosen from `database.url`: PostgreSQL
//! (`postgres://...`) or SQLite (`sqlite://PATH`, `sqlite::memory:`).

use std::sync::Arc;
use std::time::Duration;

use d2_accounts::AccountRepo;
use d2_audit::AuditLog;
use d2_billing::{BillingRepo, CreditRepo, NoticeRepo, UsageRepo};
use d2_events::{AnalyticsStore, AppResolver, EventStore, ExportCheckpoints};
use d2_jwks::SigningKeyRepo;
use d2_kernel::{Change, StoreError, TaskQueue};
use d2_members::{InvitationRepo, MemberRepo};
use d2_oauth::{
    AccessRuleRepo, AgentRepo, AuthorizationCodeRepo, ClientPolicyRepo, DelegationRepo,
    OAuthTokenRepo, PrincipalRepo, ScopeRepo, ToolRepo,
};
use d2_policy::{PolicyRepo, PublisherKeyRepo};
use d2_postgres::PgStore;
use d2_sqlite::{SqliteSettings, SqliteStore, Target};
use d2_tokens::{BootstrapRepo, TokenRepo};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Settings;

/// Every repository port, as each store implements them all.
pub trait Repositories:
    AccountRepo
    + MemberRepo
    + AgentRepo
    + OAuthTokenRepo
    + AuthorizationCodeRepo
    + ClientPolicyRepo
    + BillingRepo
    + CreditRepo
    + UsageRepo
    + NoticeRepo
    + PrincipalRepo
    + DelegationRepo
    + AccessRuleRepo
    + ToolRepo
    + ScopeRepo
    + InvitationRepo
    + TokenRepo
    + BootstrapRepo
    + AuditLog
    + PolicyRepo
    + PublisherKeyRepo
    + SigningKeyRepo
    + EventStore
    + AnalyticsStore
    + AppResolver
    + ExportCheckpoints
    + TaskQueue
{
}

impl Repositories for PgStore {}
impl Repositories for SqliteStore {}

/// Why the store could not be opened or migrated. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreStartError {
    #[error(transparent)]
    PostgresMigrate(#[from] d2_postgres::MigrateError),
    #[error(transparent)]
    PostgresConnect(#[from] d2_postgres::ConnectError),
    #[error(transparent)]
    SqliteMigrate(#[from] d2_sqlite::MigrateError),
    #[error(transparent)]
    SqliteConnect(#[from] d2_sqlite::ConnectError),
    #[error(
        "the database has {0} pending migration(s); run `d2ctl migrate` (or set database.auto_migrate)"
    )]
    PendingMigrations(usize),
}

/// The storage the services run on.
#[derive(Clone, Debug)]
pub enum Store {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

/// A scheduled job's lock, held until dropped.
#[derive(Debug)]
pub enum JobLock {
    /// Boxed: it holds a whole PostgreSQL connection.
    Postgres(Box<d2_postgres::JobLock>),
    Sqlite(d2_sqlite::JobLock),
}

impl JobLock {
    /// Lets the job go now (dropping it lets go too, a moment later).
    pub async fn release(self) {
        match self {
            JobLock::Postgres(lock) => lock.release().await,
            JobLock::Sqlite(lock) => lock.release().await,
        }
    }
}

/// What `migrate` did, or would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrateMode {
    Apply,
    /// Only list what is pending.
    Status,
}

impl Store {
    /// Opens the configured store and migrates it as configured: PostgreSQL when
    /// `database.auto_migrate` is set (otherwise it must be up to date), SQLite always (its
    /// schema travels with the binary).
    pub async fn open(settings: &Settings) -> Result<Self, StoreStartError> {
        if let Some(target) = Target::from_url(settings.database_url())? {
            let store = SqliteStore::connect(&sqlite_settings(settings, target)).await?;
            let applied = d2_sqlite::run_migrations(&store).await?;
            if !applied.is_empty() {
                tracing::info!(migrations = ?applied, "applied migrations");
            }
            tracing::info!(db.target = %store.target(), "opened SQLite");
            return Ok(Store::Sqlite(store));
        }
        if settings.database.auto_migrate {
            let applied = Store::migrate(settings, MigrateMode::Apply).await?;
            if !applied.is_empty() {
                tracing::info!(migrations = ?applied, "applied migrations");
            }
        } else {
            let pending = Store::migrate(settings, MigrateMode::Status).await?;
            if !pending.is_empty() {
                return Err(StoreStartError::PendingMigrations(pending.len()));
            }
        }
        let store = PgStore::connect(&settings.pool_settings("d2")).await?;
        tracing::info!(db.target = store.target(), "connected to PostgreSQL");
        Ok(Store::Postgres(store))
    }

    /// Applies the pending migrations of the configured database (or lists them); returns
    /// their names.
    pub async fn migrate(
        settings: &Settings,
        mode: MigrateMode,
    ) -> Result<Vec<String>, StoreStartError> {
        let url = settings.database_url();
        if let Some(target) = Target::from_url(url)? {
            let store = SqliteStore::connect(&sqlite_settings(settings, target)).await?;
            return Ok(match mode {
                MigrateMode::Apply => d2_sqlite::run_migrations(&store).await?,
                MigrateMode::Status => d2_sqlite::pending_migrations(&store).await?,
            });
        }
        if settings.database.create_if_missing && d2_postgres::ensure_database(url).await? {
            tracing::info!("created the database");
        }
        Ok(match mode {
            MigrateMode::Apply => d2_postgres::run_migrations(url).await?,
            MigrateMode::Status => d2_postgres::pending_migrations(url).await?,
        })
    }

    /// Every port, on this store.
    pub fn repositories(&self) -> Arc<dyn Repositories> {
        match self {
            Store::Postgres(store) => Arc::new(store.clone()),
            Store::Sqlite(store) => Arc::new(store.clone()),
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Postgres(store) => store.ping().await,
            Store::Sqlite(store) => store.ping().await,
        }
    }

    /// The signing-key storage (for the operator's key maintenance).
    pub fn signing_keys(&self) -> Arc<dyn SigningKeyRepo> {
        self.repositories()
    }

    /// The lock of a scheduled job, if no other process holds it.
    pub async fn try_lock_job(&self, job: &str) -> Result<Option<JobLock>, StoreError> {
        Ok(match self {
            Store::Postgres(store) => store
                .try_lock_job(job)
                .await?
                .map(|lock| JobLock::Postgres(Box::new(lock))),
            Store::Sqlite(store) => store.try_lock_job(job).await?.map(JobLock::Sqlite),
        })
    }

    /// The stored events and the export checkpoints.
    pub fn events(&self) -> (Arc<dyn EventStore>, Arc<dyn ExportCheckpoints>) {
        let repositories = self.repositories();
        (repositories.clone(), repositories)
    }

    /// Connections open and idle.
    pub fn pool_state(&self) -> (u32, u32) {
        match self {
            Store::Postgres(store) => store.pool_state(),
            Store::Sqlite(store) => store.pool_state(),
        }
    }

    /// Delivers every change committed by any process sharing the store, until `shutdown`.
    pub(crate) fn listen(
        &self,
        url: String,
        shutdown: CancellationToken,
        on_change: impl Fn(Change) + Send + Sync + 'static,
    ) -> JoinHandle<()> {
        match self {
            Store::Postgres(_) => d2_postgres::ChangeListener::spawn(url, shutdown, on_change),
            Store::Sqlite(store) => {
                d2_sqlite::ChangeListener::spawn(store.clone(), shutdown, on_change)
            }
        }
    }
}

/// Why a store could not be copied to another.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Open(#[from] StoreStartError),
    #[error("the target database already holds accounts; copy only into an empty database")]
    TargetNotEmpty,
    #[error("copying {table}: {source}")]
    Table {
        table: &'static str,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Opens the store at `url` with the other settings of `settings`, creating and
    /// migrating it as needed (the two ends of `copy_to`).
    pub async fn open_url(settings: &Settings, url: &str) -> Result<Self, StoreStartError> {
        let mut settings = settings.clone();
        settings.database.url = Some(url.to_owned().into());
        settings.database.auto_migrate = true;
        settings.database.create_if_missing = true;
        Store::open(&settings).await
    }

    /// Copies every table of this store into `target`, which must hold no account yet;
    /// returns the rows copied per table. Tokens, signing keys, bundles and event ids are
    /// copied as they are, so they stay valid with the same secrets.
    pub async fn copy_to(&self, target: &Store) -> Result<Vec<(&'static str, u64)>, CopyError> {
        if target.repositories().has_accounts().await? {
            return Err(CopyError::TargetNotEmpty);
        }
        let mut copied = Vec::new();
        for table in d2_sqlite::TRANSFER_TABLES {
            let failed = |source| CopyError::Table { table, source };
            let mut rows = 0u64;
            let mut after = None;
            loop {
                let (page, next) = self
                    .export_rows(table, after.as_deref())
                    .await
                    .map_err(failed)?;
                rows += u64::try_from(page.len()).unwrap_or(u64::MAX);
                target.import_rows(table, page).await.map_err(failed)?;
                match next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            copied.push((table, rows));
        }
        target.finish_import().await?;
        Ok(copied)
    }

    async fn export_rows(
        &self,
        table: &str,
        after: Option<&str>,
    ) -> Result<d2_sqlite::RowPage, StoreError> {
        match self {
            Store::Postgres(store) => store.export_rows(table, after).await,
            Store::Sqlite(store) => store.export_rows(table, after).await,
        }
    }

    async fn import_rows(
        &self,
        table: &str,
        rows: Vec<serde_json::Value>,
    ) -> Result<(), StoreError> {
        match self {
            Store::Postgres(store) => store.import_rows(table, rows).await,
            Store::Sqlite(store) => store.import_rows(table, rows).await,
        }
    }

    async fn finish_import(&self) -> Result<(), StoreError> {
        match self {
            Store::Postgres(store) => store.finish_import().await,
            Store::Sqlite(store) => store.finish_import().await,
        }
    }
}

/// SQLite's settings from `database.*`: `pool.max_size` reader connections, waiting up to
/// `pool.timeout_seconds` for one.
fn sqlite_settings(settings: &Settings, target: Target) -> SqliteSettings {
    let pool = &settings.database.pool;
    let mut sqlite = SqliteSettings::new(target);
    sqlite.readers = pool.max_size;
    sqlite.acquire_timeout = Duration::from_secs(pool.timeout_seconds);
    sqlite
}
