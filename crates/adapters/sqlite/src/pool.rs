use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use d2_kernel::StoreError;
use diesel::ConnectionError;
use diesel_async::pooled_connection::bb8::{Pool, PooledConnection};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use crate::Conn;
use crate::error::{ConnectError, from_diesel, from_pool};
use crate::issuances::IssuanceQueue;

/// Where the database lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A database file, created (with its directory) when missing.
    File(PathBuf),
    /// A throwaway database in memory, gone when the store is dropped.
    Memory,
}

impl Target {
    /// `sqlite://PATH` (`sqlite://./data/d2.sqlite`, `sqlite:///var/lib/d2/d2.sqlite`) or
    /// `sqlite::memory:`; `None` for a URL of another scheme, an error for a `sqlite:` URL
    /// without a path.
    pub fn from_url(url: &str) -> Result<Option<Self>, ConnectError> {
        let Some(rest) = url.strip_prefix("sqlite:") else {
            return Ok(None);
        };
        if rest == ":memory:" {
            return Ok(Some(Target::Memory));
        }
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if path.is_empty() {
            return Err(ConnectError::InvalidUrl(url.to_owned()));
        }
        Ok(Some(Target::File(PathBuf::from(path))))
    }

    /// What SQLite opens: the path, or `:memory:`.
    fn open_name(&self) -> String {
        match self {
            Target::File(path) => path.to_string_lossy().into_owned(),
            Target::Memory => ":memory:".to_owned(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::File(path) => write!(f, "{}", path.display()),
            Target::Memory => f.write_str(":memory:"),
        }
    }
}

/// Every setting of the store. Defaults suit one API process and a worker on one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteSettings {
    pub target: Target,
    /// Connections that read (WAL lets them read while the writer writes).
    pub readers: u32,
    /// How long a read waits for a free connection before it is answered 503.
    pub acquire_timeout: Duration,
    /// How long a write waits for its turn: writes queue for the one writer connection.
    pub write_timeout: Duration,
    /// How long a connection waits for another process's write lock.
    pub busy_timeout: Duration,
}

impl SqliteSettings {
    pub fn new(target: Target) -> Self {
        Self {
            target,
            readers: 4,
            acquire_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(30),
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// Opens one connection with the settings every D2 connection uses.
fn connect(
    name: String,
    busy_timeout: Duration,
) -> BoxFuture<'static, diesel::ConnectionResult<Conn>> {
    async move {
        let mut conn = Conn::establish(&name).await?;
        // WAL: readers never wait for the writer. FULL: the WAL is synced at every commit,
        // so what a response says is stored (an accepted batch, a new token) survives a
        // power loss, as with PostgreSQL's defaults; NORMAL would only survive a crash of
        // the process.
        conn.batch_execute(&format!(
            "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; \
             PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
            busy_timeout.as_millis()
        ))
        .await
        .map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
        Ok(conn)
    }
    .boxed()
}

/// Opens a connection of its own, reads the schema and writes (and rolls back) a change:
/// a file that is not a database, or that cannot be written, fails here with SQLite's own
/// words, rather than as a pool timing out on the first request.
async fn check(name: &str, busy_timeout: Duration) -> Result<(), String> {
    let mut conn = connect(name.to_owned(), busy_timeout)
        .await
        .map_err(|e| e.to_string())?;
    // A write rolled back: a connection SQLite had to open read-only fails here.
    conn.batch_execute(
        "SELECT count(*) FROM sqlite_schema; BEGIN IMMEDIATE; \
         CREATE TABLE main.d2_write_check (x); ROLLBACK;",
    )
    .await
    .map_err(|e| e.to_string())
}

fn pool(name: &str, size: u32, timeout: Duration, busy_timeout: Duration) -> Pool<Conn> {
    let mut config = ManagerConfig::default();
    config.custom_setup = Box::new(move |name| connect(name.to_owned(), busy_timeout));
    let manager = AsyncDieselConnectionManager::<Conn>::new_with_config(name, config);
    Pool::builder()
        .max_size(size.max(1))
        .min_idle(Some(1))
        .connection_timeout(timeout)
        .build_unchecked(manager)
}

/// The SQLite store: implements every repository port of the domain crates.
///
/// Writes queue for one writer connection, so they never meet a locked database within the
/// process; other processes on the same file (a worker, `d2ctl`) wait for each other's
/// write lock under the busy timeout. Reads have their own connections. In memory, one
/// connection does both.
#[derive(Clone)]
pub struct SqliteStore {
    readers: Pool<Conn>,
    writer: Pool<Conn>,
    target: Target,
    pub(crate) issuances: Arc<IssuanceQueue>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("target", &self.target)
            .finish()
    }
}

impl SqliteStore {
    /// Opens the database (creating the file and its directory if missing) and checks that
    /// it is a usable, writable SQLite database. Does not migrate.
    pub async fn connect(settings: &SqliteSettings) -> Result<Self, ConnectError> {
        let target = settings.target.clone();
        if let Target::File(path) = &target {
            prepare_file(path)?;
        }
        let name = target.open_name();
        check(&name, settings.busy_timeout)
            .await
            .map_err(|reason| ConnectError::Unusable {
                target: target.to_string(),
                reason,
            })?;
        let writer = pool(&name, 1, settings.write_timeout, settings.busy_timeout);
        let readers = match target {
            Target::Memory => writer.clone(),
            Target::File(_) => pool(
                &name,
                settings.readers,
                settings.acquire_timeout,
                settings.busy_timeout,
            ),
        };
        Ok(Self {
            readers,
            writer,
            target,
            issuances: Arc::default(),
        })
    }

    pub(crate) async fn conn(&self) -> Result<PooledConnection<'_, Conn>, StoreError> {
        self.readers.get().await.map_err(from_pool)
    }

    /// The writer connection, once every write queued before has finished.
    pub(crate) async fn writer(&self) -> Result<PooledConnection<'_, Conn>, StoreError> {
        self.writer.get().await.map_err(from_pool)
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

    /// The database file, or `:memory:`.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Connections open and idle (readers and the writer), for metrics.
    pub fn pool_state(&self) -> (u32, u32) {
        let readers = self.readers.state();
        if matches!(self.target, Target::Memory) {
            return (readers.connections, readers.idle_connections);
        }
        let writer = self.writer.state();
        (
            readers.connections + writer.connections,
            readers.idle_connections + writer.idle_connections,
        )
    }
}

/// Creates the file's directory when missing, and the file itself readable by its owner
/// only (it holds token digests and sealed keys; SQLite gives its `-wal` and `-shm` files
/// the same permissions). Refuses a path that is a directory.
fn prepare_file(path: &Path) -> Result<(), ConnectError> {
    let unusable = |reason: String| ConnectError::Unusable {
        target: path.display().to_string(),
        reason,
    };
    if path.is_dir() {
        return Err(unusable("it is a directory".to_owned()));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| unusable(format!("cannot create {}: {e}", parent.display())))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(unusable(format!("cannot create it: {error}"))),
    }
}
