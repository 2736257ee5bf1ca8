//! The test harness: a real server per test, its own database, a manual clock, HTTP
//! helpers, and the captured log of the whole suite.

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use actix_web::dev::ServerHandle;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use d2_app::{App, Profile, Settings};
use d2_kernel::ManualClock;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tracing_subscriber::fmt::MakeWriter;

// ---------------------------------------------------------------------------------------
// Log capture

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        if std::env::var_os("D2_TEST_LOG").is_some() {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

static LOGS: OnceLock<Capture> = OnceLock::new();

/// The log filter of the suite: everything of ours at debug level.
pub const LOG_FILTER: &str = "info,d2_api=debug,d2_app=debug,d2_tokens=debug,d2_accounts=debug,d2_audit=debug,d2_postgres=debug,d2_sqlite=debug";

fn install_logging() {
    LOGS.get_or_init(|| {
        let capture = Capture::default();
        // The binaries' own JSON format, so the suite reads what operators would.
        let filter = tracing_subscriber::EnvFilter::new(LOG_FILTER);
        let _ = tracing_subscriber::util::SubscriberInitExt::try_init(
            d2_app::telemetry::json_subscriber(filter, capture.clone()),
        );
        capture
    });
}

/// Every log line written by this process so far.
pub fn captured_logs() -> String {
    LOGS.get()
        .map(|c| String::from_utf8_lossy(&c.0.lock().unwrap()).into_owned())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Servers

pub fn random_secret() -> String {
    URL_SAFE_NO_PAD.encode(d2_app::random_bytes(32).unwrap())
}

/// Settings of a test server: the dev profile, on `db_url`, with its own secrets.
pub fn settings(
    db_url: &str,
    pepper: &str,
    control_plane: &str,
    extra: &[(&str, &str)],
) -> Settings {
    // Derived from the pepper, so a replica process given the same pepper opens the same keys.
    let aes_key = URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        pepper.as_bytes(),
    ));
    let mut vars: HashMap<String, String> = [
        ("D2__DATABASE__URL", db_url),
        ("D2__DATABASE__AUTO_MIGRATE", "false"),
        ("D2__DATABASE__CREATE_IF_MISSING", "false"),
        ("D2__DATABASE__POOL__MAX_SIZE", "4"),
        ("D2__DATABASE__POOL__TIMEOUT_SECONDS", "2"),
        ("D2__CRYPTO__TOKEN_PEPPER", pepper),
        ("D2__CRYPTO__JWK_AES_KEY", &aes_key),
        ("D2__AUTH__CONTROL_PLANE_TOKEN", control_plane),
        ("D2__HTTP__WORKERS", "1"),
        ("D2__AUTH__ROTATION_GRACE_SECONDS", "600"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    vars.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    Settings::load_with(Profile::new("dev"), &dir, Some(vars)).expect("test settings are valid")
}

/// The database of a test server, on the store the suite runs against: PostgreSQL, or
/// SQLite when `D2_TEST_STORE=sqlite`.
pub enum TestDatabase {
    Postgres(d2_postgres::testing::TestDatabase),
    Sqlite(d2_sqlite::testing::TestDatabase),
}

/// Whether the suite runs against SQLite (`D2_TEST_STORE=sqlite`) rather than PostgreSQL.
pub fn on_sqlite() -> bool {
    std::env::var("D2_TEST_STORE").is_ok_and(|store| store == "sqlite")
}

impl TestDatabase {
    pub async fn new() -> Self {
        if on_sqlite() {
            TestDatabase::Sqlite(d2_sqlite::testing::TestDatabase::empty())
        } else {
            TestDatabase::Postgres(d2_postgres::testing::TestDatabase::new().await)
        }
    }

    pub fn url(&self) -> String {
        match self {
            TestDatabase::Postgres(db) => db.url().to_owned(),
            TestDatabase::Sqlite(db) => db.url(),
        }
    }

    /// The PostgreSQL database, for the tests of what only PostgreSQL does (its outages);
    /// `None` on SQLite.
    pub fn postgres(&self) -> Option<&d2_postgres::testing::TestDatabase> {
        match self {
            TestDatabase::Postgres(db) => Some(db),
            TestDatabase::Sqlite(_) => None,
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub app: App,
    db: Option<TestDatabase>,
    pub pepper: String,
    pub control_plane: String,
    handle: ServerHandle,
    secrets: Mutex<Vec<String>>,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem document with this status and code.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}",
            self.text
        );
        assert_eq!(self.body["code"], code, "{}", self.text);
        assert_eq!(self.body["status"], status);
        assert!(self.body["detail"].is_string());
    }

    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        &self.body
    }
}

/// An account made through the bootstrap route, with its admin token.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub account_id: String,
    pub user_id: String,
    pub token: String,
    pub token_id: String,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    pub async fn spawn_with(extra: &[(&str, &str)]) -> Self {
        Self::spawn_on_database(TestDatabase::new().await, extra).await
    }

    /// A server on `db` (whatever the suite's store), with fresh secrets.
    pub async fn spawn_on_database(db: TestDatabase, extra: &[(&str, &str)]) -> Self {
        install_logging();
        Self::start(db, random_secret(), random_secret(), extra).await
    }

    /// A new server on `previous`'s database and secrets (with other settings), as after a
    /// configuration change and restart. `previous` is stopped.
    pub async fn spawn_on(previous: TestApp, extra: &[(&str, &str)]) -> Self {
        let (previous, db) = previous.stopped();
        Self::start(
            db,
            previous.pepper.clone(),
            previous.control_plane.clone(),
            extra,
        )
        .await
    }

    /// Another replica beside this server: same database and secrets, other settings
    /// (each replica has its own caches and local limits).
    pub async fn replica(&self, extra: &[(&str, &str)]) -> Self {
        let settings = settings(&self.db().url(), &self.pepper, &self.control_plane, extra);
        Self::serve(
            settings,
            None,
            self.pepper.clone(),
            self.control_plane.clone(),
        )
        .await
    }

    /// A new server on `db` with `previous`'s secrets, as after moving its data there.
    /// `previous` is stopped; its database is returned.
    pub async fn move_to(previous: TestApp, db: TestDatabase) -> (Self, TestDatabase) {
        let (previous, old) = previous.stopped();
        let moved = Self::start(
            db,
            previous.pepper.clone(),
            previous.control_plane.clone(),
            &[],
        );
        (moved.await, old)
    }

    /// Stops the server and hands over its database.
    fn stopped(mut self) -> (Self, TestDatabase) {
        self.stop();
        let db = self.db.take().expect("a database");
        (self, db)
    }

    async fn start(
        db: TestDatabase,
        pepper: String,
        control_plane: String,
        extra: &[(&str, &str)],
    ) -> Self {
        let settings = settings(&db.url(), &pepper, &control_plane, extra);
        Self::serve(settings, Some(db), pepper, control_plane).await
    }

    async fn serve(
        settings: Settings,
        db: Option<TestDatabase>,
        pepper: String,
        control_plane: String,
    ) -> Self {
        let clock = Arc::new(ManualClock::starting_now());
        let app = App::build(settings, clock.clone())
            .await
            .expect("the app starts");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let running = d2_api::start(
            app.clone(),
            listener,
            d2_api::Options {
                handle_signals: false,
            },
        )
        .unwrap();
        let base = format!("http://127.0.0.1:{}", running.port);
        let handle = running.handle.clone();
        tokio::spawn(running.wait());
        // reqwest is built without a default crypto provider; the process installs ring's.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            base,
            // Idle connections are let go well before the server's keep-alive (5 s) ends
            // them: a request sent on a connection the server is closing fails (seen on a
            // loaded machine).
            http: reqwest::Client::builder()
                .pool_idle_timeout(std::time::Duration::from_secs(2))
                .build()
                .expect("an HTTP client"),
            clock,
            app,
            db,
            secrets: Mutex::new(vec![pepper.clone(), control_plane.clone()]),
            pepper,
            control_plane,
            handle,
        }
    }

    /// Records a secret that must never appear in a log line.
    pub fn remember(&self, secret: &str) {
        self.secrets.lock().unwrap().push(secret.to_owned());
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("the server answers");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        for field in [
            "token",
            "userToken",
            "access_token",
            "refresh_token",
            "client_secret",
            "registration_token",
        ] {
            if let Some(secret) = body.get(field).and_then(Value::as_str) {
                self.remember(secret);
            }
        }
        Reply {
            status,
            headers,
            text,
            body,
        }
    }

    pub fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let request = self.http.request(method, self.url(path));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.send(self.request(Method::GET, path, Some(token)))
            .await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.send(self.request(Method::POST, path, Some(token)).json(&body))
            .await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Reply {
        self.send(self.request(Method::PATCH, path, Some(token)).json(&body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        self.send(self.request(Method::DELETE, path, Some(token)))
            .await
    }

    /// A new account through `POST /v1/user-token/issue`.
    pub async fn bootstrap(&self) -> Tenant {
        let reply = self
            .send(
                self.request(Method::POST, "/v1/user-token/issue", None)
                    .header("X-Control-Plane-Token", &self.control_plane)
                    .json(&json!({ "owner_email": "owner@tenant.test", "account_name": "Tenant" })),
            )
            .await;
        let body = reply.assert_status(201);
        Tenant {
            account_id: body["account_id"].as_str().unwrap().to_owned(),
            user_id: body["user_id"].as_str().unwrap().to_owned(),
            token: body["userToken"].as_str().unwrap().to_owned(),
            token_id: body["token_id"].as_str().unwrap().to_owned(),
        }
    }

    /// Issues a token in the tenant's account; returns (secret, id).
    pub async fn issue(&self, tenant: &Tenant, body: Value) -> (String, String) {
        let reply = self
            .post(
                &format!("/v1/accounts/{}/tokens", tenant.account_id),
                &tenant.token,
                body,
            )
            .await;
        let body = reply.assert_status(201);
        (
            body["token"].as_str().unwrap().to_owned(),
            body["token_id"].as_str().unwrap().to_owned(),
        )
    }

    /// The tenant's audit trail, newest first.
    pub async fn audit(&self, tenant: &Tenant) -> Vec<Value> {
        let reply = self.get("/v1/audit?limit=1000", &tenant.token).await;
        reply.assert_status(200).as_array().unwrap().clone()
    }

    pub fn advance(&self, seconds: i64) {
        self.clock.advance(chrono::Duration::seconds(seconds));
    }

    /// Returns once every stored event is final, so the next export run takes it: at once
    /// on SQLite; on PostgreSQL once the transactions begun before it have ended (on any
    /// database of the server: the suite's tests share one).
    pub async fn events_final(&self) {
        if let d2_app::Store::Postgres(store) = &self.app.store {
            store.wait_until_events_final().await;
        }
    }
}

impl TestApp {
    pub fn db(&self) -> &TestDatabase {
        self.db.as_ref().expect("the test database")
    }

    /// Stops the server (and its background tasks); the database stays.
    fn stop(&mut self) {
        self.app.shutdown_token().cancel();
        drop(self.handle.stop(false));
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            return;
        }
        let logs = captured_logs();
        for secret in self.secrets.lock().unwrap().iter() {
            assert!(
                !logs.contains(secret.as_str()),
                "a secret appeared in the log"
            );
        }
    }
}

impl TestApp {
    pub fn clock_is_before(&self, at: chrono::DateTime<chrono::Utc>) -> bool {
        use d2_kernel::Clock as _;
        self.clock.now() < at
    }
}

/// The ClickHouse the suite shares (`scripts/clickhouse.sh start`): `D2_TEST_CLICKHOUSE_URL`,
/// else the URL the script wrote.
pub fn clickhouse_url() -> String {
    if let Ok(url) = std::env::var("D2_TEST_CLICKHOUSE_URL") {
        return url;
    }
    let written = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/clickhouse/url");
    std::fs::read_to_string(&written)
        .map(|url| url.trim().to_owned())
        .unwrap_or_else(|_| {
            panic!("no ClickHouse for the tests: run scripts/clickhouse.sh start (or set D2_TEST_CLICKHOUSE_URL)")
        })
}

/// A ClickHouse server of a test's own, for tests that stop and restart it.
pub struct OwnClickHouse {
    dir: std::path::PathBuf,
    pub url: String,
}

impl OwnClickHouse {
    fn script(&self, command: &str) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/clickhouse.sh");
        let output = std::process::Command::new(script)
            .arg(command)
            .env("CLICKHOUSE_DIR", &self.dir)
            .output()
            .expect("scripts/clickhouse.sh runs");
        assert!(
            output.status.success(),
            "clickhouse.sh {command}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    pub fn start() -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target")
            .join(format!("clickhouse-{}", uuid::Uuid::new_v4().simple()));
        let mut server = Self {
            dir,
            url: String::new(),
        };
        server.url = server.script("start");
        server
    }

    pub fn stop(&self) {
        self.script("stop");
    }

    /// The same server (data and port) again.
    pub fn restart(&self) {
        self.script("restart");
    }
}

impl Drop for OwnClickHouse {
    fn drop(&mut self) {
        let _ = std::process::Command::new(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/clickhouse.sh"),
        )
        .arg("stop")
        .env("CLICKHOUSE_DIR", &self.dir)
        .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs SQL on a ClickHouse server over HTTP and returns the text answer.
pub async fn clickhouse_sql(url: &str, sql: &str) -> String {
    let reply = reqwest::Client::new()
        .post(url)
        .body(sql.to_owned())
        .send()
        .await
        .expect("ClickHouse answers");
    let status = reply.status();
    let text = reply.text().await.unwrap_or_default();
    assert!(status.is_success(), "{sql}: {text}");
    text.trim().to_owned()
}

/// A Redis server of a test's own, on a free port, for tests that stop and restart it.
pub struct OwnRedis {
    pub port: u16,
    child: Mutex<Option<std::process::Child>>,
}

impl OwnRedis {
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let redis = Self {
            port,
            child: Mutex::new(None),
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts the server (again, on the same port) and waits until it answers.
    pub fn restart(&self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts (scripts/services.sh installs it)");
        *self.child.lock().unwrap() = Some(child);
        for _ in 0..100 {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::Read as _;
                let _ = stream.write_all(b"PING\r\n");
                let mut answer = [0u8; 5];
                if stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG" {
                    return;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("redis-server does not answer on port {}", self.port);
    }

    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An introspection answer for a token of the caller's account that was revoked: inactive,
/// with why (`reason`) and when, and nothing else.
pub fn assert_revoked(answer: &Value, reason: &str) {
    assert_eq!(answer["active"], false, "{answer}");
    assert_eq!(answer["revoked_by"], reason, "{answer}");
    assert!(answer["revoked_at"].is_string(), "{answer}");
    assert_eq!(answer.as_object().map(|o| o.len()), Some(3), "{answer}");
}
