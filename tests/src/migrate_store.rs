//! `d2ctl migrate-store`: a store copied into an empty database of the other kind, and a
//! server on the copy with the same secrets serves exactly what the first one did.

use d2_app::{CopyError, Store};
use d2_events::{EXPORT_JOB, ExportCheckpoint};
use d2_kernel::TaskState;
use serde_json::{Value, json};

use crate::events::{decision, events_of, ingest};
use crate::harness::{TestApp, TestDatabase, settings};
use crate::policy::{publishing_tenant, server_token};
use crate::token_exchange;
use crate::token_people::person;

#[tokio::test(flavor = "multi_thread")]
async fn a_sqlite_store_moves_to_postgresql_with_tokens_keys_bundles_and_events_intact() {
    let sqlite = TestDatabase::Sqlite(d2_sqlite::testing::TestDatabase::empty());
    let postgres = TestDatabase::Postgres(d2_postgres::testing::TestDatabase::new().await);
    Box::pin(moves_intact(sqlite, postgres)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgresql_store_moves_to_sqlite_just_as_well() {
    let postgres = TestDatabase::Postgres(d2_postgres::testing::TestDatabase::new().await);
    let sqlite = TestDatabase::Sqlite(d2_sqlite::testing::TestDatabase::empty());
    Box::pin(moves_intact(postgres, sqlite)).await;
}

async fn moves_intact(from: TestDatabase, to: TestDatabase) {
    let app = TestApp::spawn_on_database(from, &[]).await;
    let (tenant, dev, publisher) = publishing_tenant(&app).await;
    publisher
        .publish_tools(&app, &dev, "billing", &["reports.read"])
        .await;
    let server = server_token(&app, &tenant, "billing").await;
    let bundle = app.get("/v1/policy/bundle", &server).await;
    let etag = bundle.header("etag").unwrap().to_owned();
    let jws = bundle.assert_status(200)["jws"].clone();
    let jwks = app.get("/.well-known/jwks.json", &dev).await.body;
    // A rotated token: the old one names its replacement.
    let (old, old_id) = app.issue(&tenant, json!({ "kind": "dev" })).await;
    let path = format!("/v1/accounts/{}/tokens/{old_id}/rotate", tenant.account_id);
    let rotated = app.post(&path, &tenant.token, Value::Null).await;
    let new = rotated.assert_status(201)["token"]
        .as_str()
        .unwrap()
        .to_owned();
    ingest(
        &app,
        &server,
        json!([
            decision("reports.read", "allowed", 3),
            decision("secrets.read", "denied", 2)
        ]),
    )
    .await
    .assert_status(202);
    // A token issued for a member, and when tokens were last used.
    let member = person(&app, Some("Mo Member"), "mo@copy.test", Some(&tenant)).await;
    let tokens_path = format!("/v1/accounts/{}/tokens", tenant.account_id);
    app.post(
        &tokens_path,
        &tenant.token,
        json!({ "kind": "dev", "assigned_user_id": member }),
    )
    .await
    .assert_status(201);
    app.app.tokens.flush_usage().await.unwrap();
    let people_of = |list: &Value| {
        let mut people: Vec<(Value, Value, Value, Value)> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["token_id"].clone(),
                    t["assigned_user_id"].clone(),
                    t["user_name"].clone(),
                    t["last_used_at"].clone(),
                )
            })
            .collect();
        people.sort_by_key(|p| p.0.to_string());
        people
    };
    let people = people_of(&app.get(&tokens_path, &tenant.token).await.body);
    assert!(people.iter().any(|p| p.1 == member.as_str()));
    assert!(people.iter().any(|p| p.3.is_string()));
    // A principal's grant to an agent, which handed on to another by a token exchange.
    let chain = token_exchange::chain(&app, &tenant, 2).await;
    let planner_jwt =
        token_exchange::access_token(&token_exchange::planner_token(&app, &tenant, &chain).await);
    let exchanged =
        token_exchange::exchange(&app, &tenant, &chain.researcher, &planner_jwt, &[]).await;
    let researcher_jwt = token_exchange::access_token(&exchanged);
    let introspected = async |app: &TestApp| {
        let mut seen = Vec::new();
        for jwt in [&planner_jwt, &researcher_jwt] {
            let mut answer = token_exchange::introspect(app, &tenant, &chain.planner, jwt).await;
            // The issuer names the server's address, which the move changes.
            answer.as_object_mut().unwrap().remove("iss");
            seen.push(answer);
        }
        seen
    };
    let delegated = introspected(&app).await;
    assert_eq!(delegated[1]["depth"], 2);
    let events = events_of(&app, &tenant).await;
    let audit = app.audit(&tenant).await;
    // The export has passed the first event, not the second.
    app.events_final().await;
    let (stream, checkpoints) = app.app.store.events();
    let first = stream.events_after(None, 1).await.unwrap();
    let exported = ExportCheckpoint {
        cursor: first.end.unwrap(),
        ingested_at: first.events[0].event.ingested_at,
    };
    checkpoints.save(EXPORT_JOB, exported).await.unwrap();
    // Work still queued: a pending task and a dead one.
    let now = app.app.clock.now();
    let queued = d2_kernel::NewTask {
        kind: "test.copy".into(),
        account_id: None,
        payload: serde_json::json!({ "to": "ada@example.com" }),
        run_at: now,
    };
    let queue = &app.app.tasks;
    queue.enqueue(&queued, now).await.unwrap();
    let buried = queue.enqueue(&queued, now).await.unwrap();
    let claimed = queue
        .claim(&["test.copy"], 2, now, chrono::Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    assert!(queue.bury(buried, 1, "no such mailbox").await.unwrap());
    let pending = queue.tasks(TaskState::Pending, 10).await.unwrap();
    let dead = queue.tasks(TaskState::Dead, 10).await.unwrap();

    // The copy, as `d2ctl migrate-store --from ... --to ...` runs it.
    let config = settings(&app.db().url(), &app.pepper, &app.control_plane, &[]);
    let source = Store::open_url(&config, &app.db().url()).await.unwrap();
    let copy = Store::open_url(&config, &to.url()).await.unwrap();
    let copied = source.copy_to(&copy).await.unwrap();
    let count = |table: &str| copied.iter().find(|(t, _)| *t == table).unwrap().1;
    assert_eq!(count("accounts"), 1);
    assert_eq!(count("policies"), 1);
    assert_eq!(count("events"), 2);
    assert_eq!(count("audit_logs"), u64::try_from(audit.len()).unwrap());
    assert_eq!(count("tasks"), 2);
    assert_eq!(count("delegations"), 2);
    // A second copy into the same database is refused: it is not empty any more.
    assert!(matches!(
        source.copy_to(&copy).await,
        Err(CopyError::TargetNotEmpty)
    ));

    let (moved, _from) = TestApp::move_to(app, to).await;
    assert_eq!(
        people_of(&moved.get(&tokens_path, &tenant.token).await.body),
        people,
        "assignees and last uses are copied"
    );
    moved
        .get("/v1/accounts/me", &tenant.token)
        .await
        .assert_status(200);
    moved.get("/v1/accounts/me", &new).await.assert_status(200);
    moved.get("/v1/accounts/me", &old).await.assert_status(200);
    // Tokens under delegation work as they did.
    assert_eq!(introspected(&moved).await, delegated);
    let poll = moved
        .send(
            moved
                .request(reqwest::Method::GET, "/v1/policy/bundle", Some(&server))
                .header("if-none-match", &etag),
        )
        .await;
    assert_eq!(poll.status, 304, "the same bundle, by its etag");
    let bundle = moved.get("/v1/policy/bundle", &server).await;
    assert_eq!(bundle.assert_status(200)["jws"], jws);
    assert_eq!(moved.get("/.well-known/jwks.json", &dev).await.body, jwks);
    assert_eq!(events_of(&moved, &tenant).await, events);
    assert_eq!(moved.audit(&tenant).await.len(), audit.len());
    // Revoking the grant on the copy still reaches the token exchanged from its token.
    moved
        .delete(
            &format!("/v1/delegations/{}", chain.to_planner),
            &tenant.token,
        )
        .await
        .assert_status(200);
    for seen in introspected(&moved).await {
        crate::harness::assert_revoked(&seen, "delegation_revoked");
    }
    let without_ids = |tasks: Vec<d2_kernel::Task>| {
        tasks
            .into_iter()
            .map(|task| {
                (
                    task.kind,
                    task.payload,
                    task.attempts,
                    task.run_at,
                    task.last_error,
                )
            })
            .collect::<Vec<_>>()
    };
    let queue = &moved.app.tasks;
    assert_eq!(
        without_ids(queue.tasks(TaskState::Pending, 10).await.unwrap()),
        without_ids(pending)
    );
    assert_eq!(
        without_ids(queue.tasks(TaskState::Dead, 10).await.unwrap()),
        without_ids(dead)
    );
    // New rows continue after the copied ones.
    ingest(
        &moved,
        &server,
        json!([decision("reports.read", "allowed", 1)]),
    )
    .await
    .assert_status(202);
    assert_eq!(events_of(&moved, &tenant).await.len(), 3);
    moved.issue(&tenant, json!({ "kind": "dev" })).await;

    // The checkpoint is a place in the target's own stream: the export goes on with the
    // second event, then the new one.
    moved.events_final().await;
    let (stream, checkpoints) = moved.app.store.events();
    let resumed = checkpoints.load(EXPORT_JOB).await.unwrap().unwrap();
    assert_eq!(resumed.ingested_at, exported.ingested_at);
    let next = stream
        .events_after(Some(resumed.cursor), 100)
        .await
        .unwrap();
    let ids: Vec<i64> = next.events.iter().map(|e| e.id).collect();
    let newest = events_of(&moved, &tenant).await[0]["id"].as_i64().unwrap();
    assert_eq!(ids, vec![first.events[0].id + 1, newest]);
}
