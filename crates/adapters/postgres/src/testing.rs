//! A fresh database per test, cloned from a migrated template and dropped afterwards.
//!
//! The server is `D2_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`,
//! the local trust-auth server). The template's name carries a hash of the migrations, so
//! changing a migration builds a new template; creating it is serialised across processes
//! with an advisory lock.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::time::Duration;

use d2_events::NewEvent;
use diesel::sql_types::Bool;
use diesel_async::{AnsiTransactionManager, AsyncPgConnection, TransactionManager};
use uuid::Uuid;

use crate::PgStore;
use crate::migrate::run_migrations;

const DEFAULT_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn server_url() -> String {
    std::env::var("D2_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_SERVER.to_owned())
}

fn with_database(url: &str, name: &str) -> String {
    let mut config: tokio_postgres::Config = url
        .parse()
        .expect("D2_TEST_DATABASE_URL is not a PostgreSQL URL");
    config.dbname(name);
    // tokio-postgres cannot print a Config back as a URL; build one from its parts.
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    let password = config
        .get_password()
        .map(|p| format!(":{}", String::from_utf8_lossy(p)))
        .unwrap_or_default();
    format!("postgres://{user}{password}@{host}:{port}/{name}")
}

fn migrations_fingerprint() -> u64 {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../migrations");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("the migrations folder is readable")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    entries.sort();
    let mut hasher = DefaultHasher::new();
    for path in entries {
        path.file_name().hash(&mut hasher);
        std::fs::read(path.join("up.sql"))
            .unwrap_or_default()
            .hash(&mut hasher);
    }
    hasher.finish()
}

async fn admin_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot reach the test PostgreSQL server ({e}); is it running?")
        });
    tokio::spawn(connection);
    client
}

async fn ensure_template(server: &str) -> String {
    let fingerprint = migrations_fingerprint();
    let template = format!("d2_template_{fingerprint:016x}");
    let client = admin_client(server).await;
    // Advisory lock keys are bigint; the fingerprint's bits are as good a key as any.
    let key = i64::from_ne_bytes(fingerprint.to_ne_bytes());
    client
        .execute("SELECT pg_advisory_lock($1)", &[&key])
        .await
        .expect("advisory lock");
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&template])
        .await
        .expect("template lookup")
        .is_some();
    if !exists {
        let building = format!("{template}_building");
        client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{building}\" WITH (FORCE)"
            ))
            .await
            .expect("drop a half-built template");
        client
            .batch_execute(&format!("CREATE DATABASE \"{building}\""))
            .await
            .expect("create template");
        run_migrations(&with_database(server, &building))
            .await
            .expect("migrate template");
        client
            .batch_execute(&format!(
                "ALTER DATABASE \"{building}\" RENAME TO \"{template}\""
            ))
            .await
            .expect("publish template");
    }
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&key])
        .await
        .expect("advisory unlock");
    template
}

/// A migrated database of its own, dropped when this value is.
#[derive(Debug)]
pub struct TestDatabase {
    server: String,
    name: String,
    url: String,
}

impl TestDatabase {
    pub async fn new() -> Self {
        let server = server_url();
        let template = ensure_template(&server).await;
        let name = format!("d2_test_{}", Uuid::new_v4().simple());
        admin_client(&server)
            .await
            .batch_execute(&format!(
                "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
            ))
            .await
            .expect("clone the template");
        let url = with_database(&server, &name);
        Self { server, name, url }
    }

    /// A database of its own with no migration applied.
    pub async fn unmigrated() -> Self {
        let server = server_url();
        let name = format!("d2_test_{}", Uuid::new_v4().simple());
        let url = with_database(&server, &name);
        crate::ensure_database(&url)
            .await
            .expect("create an empty database");
        Self { server, name, url }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs administrative SQL on the server from a thread of its own (callable from
    /// `Drop` and from any runtime).
    fn admin(&self, sql: String) -> bool {
        let server = self.server.clone();
        let done = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the test database");
            runtime.block_on(async { admin_client(&server).await.batch_execute(&sql).await })
        })
        .join();
        matches!(done, Ok(Ok(())))
    }

    /// Drops the database now, cutting every connection to it: the store becomes
    /// unreachable for whoever still uses it.
    pub fn drop_now(&self) {
        let name = &self.name;
        if !self.admin(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")) {
            eprintln!("could not drop test database {name}");
        }
    }

    /// An outage: cuts every connection and refuses new ones until [`Self::reconnect`].
    pub fn disconnect(&self) {
        let name = &self.name;
        assert!(
            self.admin(format!(
                "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false; \
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            )),
            "could not cut off {name}"
        );
    }

    pub fn reconnect(&self) {
        let name = &self.name;
        assert!(
            self.admin(format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true")),
            "could not reopen {name}"
        );
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        self.drop_now();
    }
}

#[derive(diesel::QueryableByName)]
struct Final {
    #[diesel(sql_type = Bool)]
    settled: bool,
}

/// An ingest whose transaction is still open: its events are written, not committed.
pub struct OpenIngest {
    connection: AsyncPgConnection,
}

impl std::fmt::Debug for OpenIngest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpenIngest")
    }
}

impl OpenIngest {
    pub async fn commit(mut self) {
        AnsiTransactionManager::commit_transaction(&mut self.connection)
            .await
            .expect("commit the held ingest");
    }
}

impl PgStore {
    /// Inserts `events` as ingest does, in a transaction of its own connection that stays
    /// open until [`OpenIngest::commit`] (an ingest that commits late).
    pub async fn insert_events_uncommitted(&self, events: &[NewEvent]) -> OpenIngest {
        let mut connection = self
            .dedicated_connection()
            .await
            .expect("a connection for the held ingest");
        AnsiTransactionManager::begin_transaction(&mut connection)
            .await
            .expect("begin the held ingest");
        crate::event_writes::insert(&mut connection, events)
            .await
            .expect("insert the held events");
        OpenIngest { connection }
    }

    /// Waits until every event committed so far is final for the export, that is until
    /// every transaction begun before the newest of them has ended. Transactions in every
    /// database of the server count (the tests' databases share one), so this may wait for
    /// another test's; it panics after a minute.
    pub async fn wait_until_events_final(&self) {
        use diesel_async::RunQueryDsl as _;

        for _ in 0..1200 {
            let mut conn = self.conn().await.expect("a connection");
            let row: Final = diesel::sql_query(
                "SELECT coalesce(max(stream_position), 0) \
                     < pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS settled \
                 FROM events",
            )
            .get_result(&mut conn)
            .await
            .expect("the oldest running transaction");
            if row.settled {
                return;
            }
            drop(conn);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("stored events are still not final after a minute: a transaction stays open");
    }
}
