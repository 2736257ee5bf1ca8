//! Two server processes on one database: a revocation through one is honoured by the
//! other within a second (PostgreSQL LISTEN/NOTIFY invalidates its token cache).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::harness::{LOG_FILTER, TestApp, settings};

const REPLICA_DB: &str = "D2_E2E_REPLICA_DATABASE_URL";
const REPLICA_PEPPER: &str = "D2_E2E_REPLICA_PEPPER";
const REPLICA_CONTROL_PLANE: &str = "D2_E2E_REPLICA_CONTROL_PLANE";

/// The second process: this test binary, started by [`Replica::start`] to run only this
/// entry point. Run directly it does nothing.
#[test]
#[ignore = "entry point of the replica process started by the replica tests"]
fn replica_process() {
    let (Ok(db), Ok(pepper), Ok(control_plane)) = (
        std::env::var(REPLICA_DB),
        std::env::var(REPLICA_PEPPER),
        std::env::var(REPLICA_CONTROL_PLANE),
    ) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let settings = settings(
            &db,
            &pepper,
            &control_plane,
            // Each line at once: the parent reads them all, and stops this process with a kill.
            &[
                ("D2__LOG__FORMAT", "json"),
                ("D2__LOG__FILTER", LOG_FILTER),
                ("D2__LOG__FLUSH_INTERVAL_MS", "0"),
            ],
        );
        let _log = d2_app::telemetry::init(&settings.log);
        let app = d2_app::App::build(settings, Arc::new(d2_kernel::SystemClock))
            .await
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let running = d2_api::start(
            app,
            listener,
            d2_api::Options {
                handle_signals: false,
            },
        )
        .unwrap();
        println!("REPLICA_LISTENING {}", running.port);
        tokio::spawn(running.wait());
        // Serve until the parent closes our stdin (or dies).
        tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new()))
            .await
            .ok();
    });
}

struct Replica {
    child: Child,
    base: String,
    readers: Vec<std::thread::JoinHandle<String>>,
}

impl Replica {
    fn start(app: &TestApp) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "replicas::replica_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(REPLICA_DB, app.db().url())
            .env(REPLICA_PEPPER, &app.pepper)
            .env(REPLICA_CONTROL_PLANE, &app.control_plane)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        // Both streams are drained to the end, so the child never blocks on a full pipe.
        let out = std::thread::spawn(move || {
            let mut text = String::new();
            for line in stdout.lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("REPLICA_LISTENING ") {
                    let _ = port_tx.send(port.trim().to_owned());
                }
                text.push_str(&line);
                text.push('\n');
            }
            text
        });
        let err = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the replica process started");
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            readers: vec![out, err],
        }
    }

    /// Stops the process and returns everything it wrote.
    fn stop(mut self) -> String {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.readers
            .drain(..)
            .map(|reader| reader.join().unwrap_or_default())
            .collect()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_through_one_process_reach_another_within_a_second() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let (token, token_id) = app.issue(&tenant, json!({ "kind": "server" })).await;
    let replica = Replica::start(&app);
    let on_replica = || {
        app.http
            .request(Method::GET, format!("{}/v1/accounts/me", replica.base))
            .bearer_auth(&token)
    };

    // The replica caches the token as valid.
    for _ in 0..3 {
        assert_eq!(on_replica().send().await.unwrap().status(), 200);
    }
    app.delete(
        &format!("/v1/accounts/{}/tokens/{token_id}", tenant.account_id),
        &tenant.token,
    )
    .await
    .assert_status(202);
    let revoked_at = Instant::now();
    let mut status = 200;
    while revoked_at.elapsed() < Duration::from_secs(1) {
        status = on_replica().send().await.unwrap().status().as_u16();
        if status == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        status, 401,
        "the replica still accepted the revoked token a second later"
    );

    // A new expiry set through the first process holds on the second at once (the
    // replica runs on the real clock, which is past this server's manual one).
    let (expiring, expiring_id) = app.issue(&tenant, json!({ "kind": "server" })).await;
    let expiring_on_replica = || {
        app.http
            .request(Method::GET, format!("{}/v1/accounts/me", replica.base))
            .bearer_auth(&expiring)
    };
    for _ in 0..3 {
        assert_eq!(expiring_on_replica().send().await.unwrap().status(), 200);
    }
    let expires_at = {
        use d2_kernel::Clock as _;
        app.clock.now() + chrono::Duration::milliseconds(100)
    };
    app.patch(
        &format!("/v1/accounts/{}/tokens/{expiring_id}", tenant.account_id),
        &tenant.token,
        json!({ "expires_at": expires_at }),
    )
    .await
    .assert_status(200);
    let changed_at = Instant::now();
    let mut status = 200;
    while changed_at.elapsed() < Duration::from_secs(1) {
        status = expiring_on_replica()
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        status, 401,
        "the replica still accepted the token a second after its new expiry"
    );

    // An account change made through the first process reaches the second's cache too.
    let me_on_replica = || {
        app.http
            .request(Method::GET, format!("{}/v1/accounts/me", replica.base))
            .bearer_auth(&tenant.token)
    };
    let before: serde_json::Value = me_on_replica().send().await.unwrap().json().await.unwrap();
    assert_eq!(before["event_sample"]["authz_decision"], 1.0);
    app.patch(
        "/v1/accounts/me",
        &tenant.token,
        json!({ "event_sample": { "authz_decision": 0.5 } }),
    )
    .await
    .assert_status(200);
    let changed_at = Instant::now();
    let mut rate = before["event_sample"]["authz_decision"].clone();
    while changed_at.elapsed() < Duration::from_secs(1) {
        let body: serde_json::Value = me_on_replica().send().await.unwrap().json().await.unwrap();
        rate = body["event_sample"]["authz_decision"].clone();
        if rate == 0.5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        rate, 0.5,
        "the replica still served the old account settings a second later"
    );

    let logs = replica.stop();
    assert!(
        logs.contains("request completed"),
        "the replica's log was captured"
    );
    for secret in [
        &token,
        &expiring,
        &tenant.token,
        &app.pepper,
        &app.control_plane,
    ] {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret appeared in the replica's log"
        );
    }
}
