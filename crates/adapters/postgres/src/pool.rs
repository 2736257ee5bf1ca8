use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use d2_kernel::StoreError;
use diesel_async::pooled_connection::bb8::{Pool, PooledConnection};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolableConnection, RecyclingMethod,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use crate::error::{ConnectError, from_diesel, from_pool};
use crate::issuances::IssuanceQueue;

/// Every setting of the connection pool. Defaults suit one API replica on a small database.
#[derive(Clone, PartialEq, Eq)]
pub struct PoolSettings {
    pub url: String,
    /// Connections kept open even when idle.
    pub min_idle: u32,
    pub max_size: u32,
    /// How long a request waits for a free connection before it is answered 503.
    pub acquire_timeout: Duration,
    /// Idle connections above `min_idle` are closed after this long.
    pub idle_timeout: Duration,
    /// Connections are replaced after this long, so server-side settings changes and
    /// failovers are picked up.
    pub max_lifetime: Duration,
    /// Any statement running longer is cancelled by the server.
    pub statement_timeout: Duration,
    /// Reported in `pg_stat_activity`.
    pub application_name: String,
}

impl fmt::Debug for PoolSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolSettings")
            .field("target", &describe_target(&self.url))
            .field("min_idle", &self.min_idle)
            .field("max_size", &self.max_size)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

impl PoolSettings {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            min_idle: 1,
            max_size: 16,
            acquire_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            max_lifetime: Duration::from_secs(1800),
            statement_timeout: Duration::from_secs(10),
            application_name: "d2".to_owned(),
        }
    }
}

/// `host:port/database` of a URL, without user or password, for messages and logs.
pub(crate) fn describe_target(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(config) => {
            let host = config
                .get_hosts()
                .first()
                .map(|host| match host {
                    tokio_postgres::config::Host::Tcp(name) => name.clone(),
                    tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                })
                .unwrap_or_else(|| "localhost".to_owned());
            let port = config.get_ports().first().copied().unwrap_or(5432);
            format!(
                "{host}:{port}/{}",
                config.get_dbname().unwrap_or("postgres")
            )
        }
        Err(_) => "<invalid database URL>".to_owned(),
    }
}

/// Opens one connection with the session settings every D2 connection uses.
pub(crate) fn connect(
    url: &str,
    statement_timeout: Duration,
    application_name: &str,
) -> BoxFuture<'static, diesel::ConnectionResult<AsyncPgConnection>> {
    let config = url.parse::<tokio_postgres::Config>();
    let application_name = application_name.to_owned();
    async move {
        let mut config =
            config.map_err(|e| diesel::ConnectionError::InvalidConnectionUrl(e.to_string()))?;
        config.application_name(&application_name).options(format!(
            "-c statement_timeout={}",
            statement_timeout.as_millis()
        ));
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
        AsyncPgConnection::try_from_client_and_connection(client, connection).await
    }
    .boxed()
}

/// The PostgreSQL store: implements every repository port of the domain crates.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool<AsyncPgConnection>,
    target: String,
    pub(crate) issuances: Arc<IssuanceQueue>,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.target)
            .finish()
    }
}

impl PgStore {
    /// Builds the pool and checks that the database answers.
    pub async fn connect(settings: &PoolSettings) -> Result<Self, ConnectError> {
        settings
            .url
            .parse::<tokio_postgres::Config>()
            .map_err(|e| ConnectError::InvalidUrl(e.to_string()))?;
        let url = settings.url.clone();
        let statement_timeout = settings.statement_timeout;
        let application_name = settings.application_name.clone();
        let mut config = ManagerConfig::default();
        // No query per checkout, but a connection the server has closed (a restart, a
        // failover, a terminated backend) is discarded instead of failing the request.
        config.recycling_method = RecyclingMethod::CustomFunction(Box::new(|conn| {
            let broken = PoolableConnection::is_broken(conn);
            async move {
                if broken {
                    Err(diesel::result::Error::BrokenTransactionManager)
                } else {
                    Ok(())
                }
            }
            .boxed()
        }));
        config.custom_setup =
            Box::new(move |url| connect(url, statement_timeout, &application_name));
        let manager =
            AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
        let pool = Pool::builder()
            .min_idle(Some(settings.min_idle.min(settings.max_size)))
            .max_size(settings.max_size.max(1))
            .connection_timeout(settings.acquire_timeout)
            .idle_timeout(Some(settings.idle_timeout))
            .max_lifetime(Some(settings.max_lifetime))
            .build_unchecked(manager);
        let store = Self {
            pool,
            target: describe_target(&settings.url),
            issuances: Arc::default(),
        };
        store
            .ping()
            .await
            .map_err(|source| ConnectError::Unreachable {
                target: store.target.clone(),
                source,
            })?;
        Ok(store)
    }

    pub(crate) async fn conn(&self) -> Result<PooledConnection<'_, AsyncPgConnection>, StoreError> {
        self.pool.get().await.map_err(from_pool)
    }

    /// A connection for a write (any pooled connection: PostgreSQL orders the writers).
    pub(crate) async fn writer(
        &self,
    ) -> Result<PooledConnection<'_, AsyncPgConnection>, StoreError> {
        self.conn().await
    }

    /// A connection of its own, outside the pool (closed when dropped).
    pub(crate) async fn dedicated_connection(
        &self,
    ) -> Result<AsyncPgConnection, bb8::RunError<diesel_async::pooled_connection::PoolError>> {
        self.pool
            .dedicated_connection()
            .await
            .map_err(bb8::RunError::User)
    }

    /// One round trip to the database (for readiness checks).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        diesel::sql_query("SELECT 1")
            .execute(&mut conn)
            .await
            .map_err(from_diesel)?;
        Ok(())
    }

    /// `host:port/database`, without credentials.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Connections open and idle, for metrics.
    pub fn pool_state(&self) -> (u32, u32) {
        let state = self.pool.state();
        (state.connections, state.idle_connections)
    }
}
