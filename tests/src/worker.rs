//! The worker's jobs against the real PostgreSQL and ClickHouse, including their faults.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use chrono::{Duration, SecondsFormat, Utc};
use d2_events::{AnalyticsSink, EXPORT_JOB, ExportSettings, Exporter, StoredEvent};
use d2_kernel::StoreError;
use d2_worker::{JobError, JobOutcome, Worker};
use reqwest::Method;
use serde_json::{Value, json};

use crate::events::events_of;
use crate::harness::{OwnClickHouse, Tenant, TestApp, clickhouse_sql, clickhouse_url};

fn decision(tool: &str, result: &str, seconds_ago: i64) -> Value {
    json!({
        "event_type": "authz_decision",
        "payload": { "tool_id": tool, "result": result, "decision_ms": 1.5 },
        "occurred_at": (Utc::now() - Duration::seconds(seconds_ago)).to_rfc3339_opts(SecondsFormat::Micros, false),
    })
}

/// Seven authorizations (five allowed, two denied) over three tools.
fn seven() -> Value {
    json!([
        decision("read", "allowed", 70),
        decision("read", "allowed", 60),
        decision("read", "allowed", 50),
        decision("write", "denied", 40),
        decision("write", "allowed", 30),
        decision("delete", "denied", 20),
        decision("read", "allowed", 10),
    ])
}

fn database_name() -> String {
    format!("d2_e2e_{}", uuid::Uuid::new_v4().simple())
}

/// A server whose metrics are answered by ClickHouse at `url`, exporting in batches of 2.
async fn spawn(url: &str, database: &str, extra: &[(&str, &str)]) -> TestApp {
    let mut settings = vec![
        ("D2__CLICKHOUSE__URL", url),
        ("D2__CLICKHOUSE__DATABASE", database),
        ("D2__ANALYTICS__STORE", "clickhouse"),
        ("D2__WORKER__JOBS__ANALYTICS_EXPORT__BATCH_SIZE", "2"),
    ];
    settings.extend_from_slice(extra);
    TestApp::spawn_with(&settings).await
}

async fn ingest(app: &TestApp, tenant: &Tenant, events: Value) {
    app.post(
        "/v1/events/ingest",
        &tenant.token,
        json!({ "events": events }),
    )
    .await
    .assert_status(202);
    app.events_final().await;
}

async fn summary(app: &TestApp, tenant: &Tenant) -> (u64, u64) {
    let body = app.get("/v1/metrics/summary", &tenant.token).await;
    let body = body.assert_status(200);
    (
        body["total_authorizations"].as_u64().unwrap(),
        body["total_denied"].as_u64().unwrap(),
    )
}

async fn distinct_and_stored(url: &str, database: &str) -> (String, String) {
    (
        clickhouse_sql(
            url,
            &format!("SELECT count() FROM {database}.event_rows FINAL"),
        )
        .await,
        clickhouse_sql(url, &format!("SELECT count() FROM {database}.event_rows")).await,
    )
}

async fn export(worker: &Worker) -> Result<JobOutcome, JobError> {
    worker.run_once("analytics-export", &|| true).await
}

#[tokio::test(flavor = "multi_thread")]
async fn exported_events_answer_the_metrics_from_clickhouse_exactly_once() {
    let url = clickhouse_url();
    let database = database_name();
    let app = spawn(&url, &database, &[]).await;
    let tenant = app.bootstrap().await;
    let other = app.bootstrap().await;
    ingest(&app, &tenant, seven()).await;
    ingest(&app, &other, json!([decision("theirs", "denied", 5)])).await;
    let worker = Worker::new(app.app.clone()).unwrap();

    assert_eq!(
        export(&worker).await.unwrap(),
        JobOutcome::Done { items: 8 }
    );
    assert_eq!(summary(&app, &tenant).await, (7, 2));
    assert_eq!(summary(&app, &other).await, (1, 1));
    let top = app.get("/v1/metrics/top?n=1", &tenant.token).await;
    assert_eq!(
        top.assert_status(200)["items"],
        json!([{ "key": "read", "count": 4 }])
    );
    // Nothing new: nothing exported, nothing doubled.
    assert_eq!(
        export(&worker).await.unwrap(),
        JobOutcome::Done { items: 0 }
    );
    ingest(&app, &tenant, json!([decision("read", "denied", 1)])).await;
    // The server's clock stood still since it started: it catches up with real time, past
    // the event, which the summary's window (up to the clock's now) would otherwise leave
    // out once the test has run longer than a second.
    let behind = (Utc::now() - app.app.clock.now()).num_seconds();
    app.advance(behind.max(0) + 1);
    assert_eq!(
        export(&worker).await.unwrap(),
        JobOutcome::Done { items: 1 }
    );
    assert_eq!(summary(&app, &tenant).await, (8, 3));
    assert_eq!(worker.metrics().runs("analytics-export", "success"), 3);
    clickhouse_sql(&url, &format!("DROP DATABASE {database}")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_stopped_mid_export_keeps_the_checkpoint_and_a_restart_delivers_every_event_once()
 {
    let clickhouse = OwnClickHouse::start();
    let database = database_name();
    let app = spawn(&clickhouse.url, &database, &[]).await;
    let tenant = app.bootstrap().await;
    ingest(&app, &tenant, seven()).await;
    let worker = Worker::new(app.app.clone()).unwrap();
    let (_, checkpoints) = app.app.store.events();

    // ClickHouse goes down after the first batch of two: the exporter asks before it
    // starts, then before each write that has another batch after it.
    let asked = AtomicU32::new(0);
    let failed = worker
        .run_once("analytics-export", &|| {
            if asked.fetch_add(1, Ordering::SeqCst) == 2 {
                clickhouse.stop();
            }
            true
        })
        .await;
    assert!(matches!(failed, Err(JobError::Failed { .. })), "{failed:?}");
    let kept = checkpoints.load(EXPORT_JOB).await.unwrap().unwrap();
    let first_two = app.get("/v1/events?limit=1000", &tenant.token).await;
    let ids: Vec<i64> = first_two
        .assert_status(200)
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    let mut ascending = ids.clone();
    ascending.sort_unstable();
    assert_eq!(
        kept.cursor.id, ascending[1],
        "the checkpoint is the end of batch one"
    );
    assert_eq!(worker.metrics().runs("analytics-export", "failure"), 1);

    // While it is down, every run fails and the checkpoint stays.
    assert!(export(&worker).await.is_err());
    assert_eq!(checkpoints.load(EXPORT_JOB).await.unwrap().unwrap(), kept);

    clickhouse.restart();
    assert_eq!(
        export(&worker).await.unwrap(),
        JobOutcome::Done { items: 5 }
    );
    assert_eq!(summary(&app, &tenant).await, (7, 2));
    let (distinct, _) = distinct_and_stored(&clickhouse.url, &database).await;
    assert_eq!(distinct, "7");
}

/// Writes to ClickHouse, then fails as if the process died before the checkpoint.
struct DiesAfterWrite(d2_clickhouse::ClickHouse);

#[async_trait]
impl AnalyticsSink for DiesAfterWrite {
    async fn prepare(&self) -> Result<(), StoreError> {
        self.0.prepare().await
    }

    async fn write(&self, events: &[StoredEvent]) -> Result<(), StoreError> {
        self.0.write(events).await?;
        Err(StoreError::Unavailable(
            "killed before the checkpoint".into(),
        ))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_between_insert_and_checkpoint_leaves_no_duplicate_in_the_metrics() {
    let url = clickhouse_url();
    let database = database_name();
    let app = spawn(&url, &database, &[]).await;
    let tenant = app.bootstrap().await;
    ingest(&app, &tenant, seven()).await;
    let clickhouse = app.app.clickhouse.clone().unwrap();
    let (store, checkpoints) = app.app.store.events();
    let dying = Exporter::new(
        store,
        Arc::new(DiesAfterWrite(clickhouse)),
        checkpoints.clone(),
        app.app.clock.clone(),
        ExportSettings {
            batch_size: 100,
            max_batches: 10,
        },
    );
    dying.prepare().await.unwrap();
    assert!(dying.run(&|| true).await.is_err());
    assert_eq!(checkpoints.load(EXPORT_JOB).await.unwrap(), None);
    assert_eq!(
        summary(&app, &tenant).await,
        (7, 2),
        "written, not checkpointed"
    );

    // The next worker exports the same events again.
    let worker = Worker::new(app.app.clone()).unwrap();
    assert_eq!(
        export(&worker).await.unwrap(),
        JobOutcome::Done { items: 7 }
    );
    let (distinct, stored) = distinct_and_stored(&url, &database).await;
    assert_eq!(distinct, "7");
    assert!(
        stored.parse::<u64>().unwrap() >= 7,
        "copies may wait for a merge: {stored}"
    );
    assert_eq!(
        summary(&app, &tenant).await,
        (7, 2),
        "no event counted twice"
    );
    let types = app
        .get("/v1/metrics/top?dimension=event_type", &tenant.token)
        .await;
    assert_eq!(types.assert_status(200)["total"], 7);
    clickhouse_sql(&url, &format!("DROP DATABASE {database}")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_deletes_only_exported_events_from_postgresql() {
    let url = clickhouse_url();
    let database = database_name();
    let app = spawn(
        &url,
        &database,
        &[("D2__WORKER__JOBS__RETENTION__KEEP_DAYS", "1")],
    )
    .await;
    let tenant = app.bootstrap().await;
    ingest(&app, &tenant, seven()).await;
    let worker = Worker::new(app.app.clone()).unwrap();
    export(&worker).await.unwrap();
    ingest(&app, &tenant, json!([decision("late", "allowed", 1)])).await;

    let retention = || worker.run_once("retention", &|| true);
    assert_eq!(
        retention().await.unwrap(),
        JobOutcome::Done { items: 0 },
        "too recent"
    );
    app.advance(2 * 24 * 3600);
    assert_eq!(retention().await.unwrap(), JobOutcome::Done { items: 7 });
    let left = app.get("/v1/events?limit=1000", &tenant.token).await;
    let left = left.assert_status(200).as_array().unwrap().clone();
    assert_eq!(left.len(), 1, "the unexported event stays");
    assert_eq!(left[0]["payload"]["tool_id"], "late");
    clickhouse_sql(&url, &format!("DROP DATABASE {database}")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ingest_that_commits_after_an_export_run_reaches_clickhouse_once_and_is_kept_until_then()
{
    let url = clickhouse_url();
    let database = database_name();
    let app = spawn(
        &url,
        &database,
        &[("D2__WORKER__JOBS__RETENTION__KEEP_DAYS", "1")],
    )
    .await;
    // A transaction held open beside the server's is PostgreSQL's case: on SQLite a writer
    // excludes every other, the export's checkpoint included (the adapter's tests cover
    // its reads).
    let d2_app::Store::Postgres(store) = &app.app.store else {
        return;
    };
    let tenant = app.bootstrap().await;
    let account: d2_kernel::AccountId = tenant.account_id.parse().unwrap();
    ingest(&app, &tenant, seven()).await;
    let worker = Worker::new(app.app.clone()).unwrap();
    assert_eq!(
        export(&worker).await.unwrap(),
        JobOutcome::Done { items: 7 }
    );

    // An ingest stamped now whose transaction stays open, then one a second later that
    // commits at once: ordered by ingest time, the export would take the second, move past
    // the first, and never come back for it.
    let now = d2_kernel::Clock::now(app.app.clock.as_ref());
    let late = d2_testkit::fixtures::event(
        account,
        "authz_decision",
        json!({ "tool_id": "late", "result": "allowed" }),
        now,
        0,
    );
    let held = store.insert_events_uncommitted(&[late]).await;
    app.advance(1);
    app.post(
        "/v1/events/ingest",
        &tenant.token,
        json!({ "events": [decision("after", "allowed", 1)] }),
    )
    .await
    .assert_status(202);
    assert_eq!(
        export(&worker).await.unwrap(),
        JobOutcome::Done { items: 0 },
        "nothing after an open ingest is final"
    );

    // Retention while the events wait: the exported ones go, the committed one that has
    // not been exported stays.
    app.advance(2 * 24 * 3600);
    assert_eq!(
        worker.run_once("retention", &|| true).await.unwrap(),
        JobOutcome::Done { items: 7 }
    );
    let left = events_of(&app, &tenant).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["payload"]["tool_id"], "after");

    held.commit().await;
    app.events_final().await;
    assert_eq!(
        export(&worker).await.unwrap(),
        JobOutcome::Done { items: 2 }
    );
    assert_eq!(
        export(&worker).await.unwrap(),
        JobOutcome::Done { items: 0 }
    );
    let (_, checkpoints) = app.app.store.events();
    let checkpoint = checkpoints.load(EXPORT_JOB).await.unwrap().unwrap();
    let after = events_of(&app, &tenant)
        .await
        .into_iter()
        .find(|e| e["payload"]["tool_id"] == "after")
        .unwrap();
    assert_eq!(
        checkpoint.cursor.id,
        after["id"].as_i64().unwrap(),
        "the checkpoint is at the last event, the held one before it"
    );

    let (distinct, _) = distinct_and_stored(&url, &database).await;
    assert_eq!(distinct, "9");
    let counted = clickhouse_sql(
        &url,
        &format!(
            "SELECT tool, sum(events) FROM {database}.event_counts \
             WHERE account_id = '{account}' GROUP BY tool ORDER BY tool FORMAT CSV"
        ),
    )
    .await;
    assert_eq!(
        counted, "\"after\",1\n\"delete\",1\n\"late\",1\n\"read\",4\n\"write\",2",
        "each event counted once"
    );
    clickhouse_sql(&url, &format!("DROP DATABASE {database}")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_another_worker_holds_is_skipped_and_the_export_needs_clickhouse() {
    let app = TestApp::spawn().await;
    let worker = Worker::new(app.app.clone()).unwrap();
    let held = app.app.store.try_lock_job("trial-locker").await.unwrap();
    assert!(held.is_some());
    assert_eq!(
        worker.run_once("trial-locker", &|| true).await.unwrap(),
        JobOutcome::Busy
    );
    drop(held);
    assert!(matches!(
        export(&worker).await,
        Err(JobError::NotConfigured {
            job: "analytics-export",
            ..
        })
    ));
    let unknown = worker.run_once("nightly", &|| true).await.unwrap_err();
    assert!(matches!(unknown, JobError::Unknown(..)), "{unknown}");
    assert!(
        unknown.to_string().contains("trial-locker"),
        "names the jobs there are: {unknown}"
    );
    let scheduled: Vec<&str> = worker.schedule().into_iter().map(|(job, _)| job).collect();
    assert_eq!(
        scheduled,
        vec![
            "trial-locker",
            "token-expiry",
            "key-pruning",
            "oauth-token-pruning",
            "oauth-client-reaping",
            "reservation-expiry",
            "billing-thresholds"
        ],
        "no export or retention without ClickHouse"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_trials_lock_and_expired_tokens_are_revoked_with_audit() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let expires_at = (Utc::now() + Duration::hours(1)).to_rfc3339();
    let (_, short_id) = app
        .issue(&tenant, json!({ "kind": "dev", "expires_at": expires_at }))
        .await;
    let worker = Worker::new(app.app.clone()).unwrap();
    assert_eq!(
        worker.run_once("trial-locker", &|| true).await.unwrap(),
        JobOutcome::Done { items: 0 }
    );
    app.advance(15 * 24 * 3600);
    assert_eq!(
        worker.run_once("trial-locker", &|| true).await.unwrap(),
        JobOutcome::Done { items: 1 }
    );
    assert_eq!(
        worker.run_once("trial-locker", &|| true).await.unwrap(),
        JobOutcome::Done { items: 0 },
        "a locked account is not locked again"
    );
    assert_eq!(
        worker.run_once("token-expiry", &|| true).await.unwrap(),
        JobOutcome::Done { items: 1 }
    );
    assert_eq!(
        worker.run_once("token-expiry", &|| true).await.unwrap(),
        JobOutcome::Done { items: 0 },
        "nothing twice"
    );
    let me = app.get("/v1/accounts/me", &tenant.token).await;
    assert_eq!(me.assert_status(200)["plan"], "locked");
    crate::events::ingest(&app, &tenant.token, json!([]))
        .await
        .assert_problem(402, "locked");
    let audit = app.audit(&tenant).await;
    let actions: Vec<&str> = audit
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"account.lock"), "{actions:?}");
    let locks: Vec<&Value> = audit
        .iter()
        .filter(|r| r["action"] == "account.lock")
        .collect();
    assert_eq!(locks.len(), 1, "audited once");
    assert_eq!(locks[0]["metadata"]["from"], "trial");
    assert_eq!(locks[0]["metadata"]["to"], "locked");
    assert_eq!(locks[0]["metadata"]["reason"], "trial_ended");
    let expired = audit
        .iter()
        .find(|r| r["action"] == "token.expire")
        .unwrap();
    assert_eq!(expired["resource_id"], short_id.as_str());
    assert_eq!(
        worker.run_once("key-pruning", &|| true).await.unwrap(),
        JobOutcome::Done { items: 0 }
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_serves_its_metrics_and_stops_cleanly_on_shutdown() {
    let url = clickhouse_url();
    let database = database_name();
    let app = spawn(
        &url,
        &database,
        &[("D2__WORKER__JOBS__ANALYTICS_EXPORT__INTERVAL_SECONDS", "1")],
    )
    .await;
    let tenant = app.bootstrap().await;
    ingest(&app, &tenant, seven()).await;
    let worker = Worker::new(app.app.clone()).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (server, handle) = d2_worker::server::start(worker.clone(), listener).unwrap();
    tokio::spawn(server);

    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn({
        let worker = worker.clone();
        let shutdown = shutdown.clone();
        async move { worker.run(shutdown).await }
    });
    let mut exported = false;
    for _ in 0..200 {
        if worker.metrics().runs("analytics-export", "success") >= 1 {
            exported = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(exported, "the scheduled export ran");
    shutdown.cancel();
    running.await.unwrap();
    assert_eq!(summary(&app, &tenant).await, (7, 2));

    let get = |path: &str| {
        let url = format!("http://127.0.0.1:{port}{path}");
        let http = app.http.clone();
        async move { http.request(Method::GET, url).send().await.unwrap() }
    };
    let metrics = get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("d2_worker_job_runs_total{job=\"analytics-export\",outcome=\"success\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("d2_worker_job_items_total{job=\"analytics-export\"} 7"));
    assert_eq!(get("/healthz").await.status(), 200);
    assert_eq!(get("/readyz").await.status(), 200);
    handle.stop(true).await;
    clickhouse_sql(&url, &format!("DROP DATABASE {database}")).await;
}
