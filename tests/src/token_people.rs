//! Tokens for people: tokens issued for a member, the names the token, key and audit lists
//! show ("Server Token" where no person is involved), one token read and changed, the
//! plan's cap on tokens that work, and when each token was last used.

use chrono::{DateTime, Duration, SubsecRound as _, Utc};
use d2_kernel::{AccountId, Role, TokenId, UserId};
use d2_members::Identity;
use d2_tokens::{ApiToken, NewToken, Pepper, TokenGrant, TokenSecret};
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Tenant, TestApp};
use crate::policy::Publisher;

fn tokens_path(tenant: &Tenant) -> String {
    format!("/v1/accounts/{}/tokens", tenant.account_id)
}

fn token_path(tenant: &Tenant, token_id: &str) -> String {
    format!("{}/{token_id}", tokens_path(tenant))
}

/// A person who signed in with these names, a member of `tenant`'s account when given
/// (through the store: the ways in, sign-in and membership changes, are tested on their
/// own); their id.
pub(crate) async fn person(
    app: &TestApp,
    name: Option<&str>,
    email: &str,
    tenant: Option<&Tenant>,
) -> String {
    let store = app.app.store.repositories();
    let identity = Identity {
        issuer: "https://idp.token-people.test".into(),
        subject: uuid::Uuid::new_v4().to_string(),
        email: Some(email.to_owned()),
        email_verified: true,
        display_name: name.map(str::to_owned),
        role_cap: None,
    };
    let user = store.sign_in(&identity, app.app.clock.now()).await.unwrap();
    if let Some(tenant) = tenant {
        let account: AccountId = tenant.account_id.parse().unwrap();
        let audit = d2_audit::AuditEntry::system(
            account,
            d2_audit::AuditAction::MemberRoleChange,
            app.app.clock.now(),
        );
        assert!(
            store
                .add_member(account, user.id, Role::Developer, &audit)
                .await
                .unwrap()
        );
    }
    user.id.to_string()
}

/// An admin token of `tenant`'s account created for nobody, as the control plane can
/// (through the store); its secret.
async fn token_for_nobody(app: &TestApp, tenant: &Tenant) -> String {
    let account: AccountId = tenant.account_id.parse().unwrap();
    let pepper = Pepper::new(&app.app.settings.token_pepper_bytes().unwrap().unwrap()).unwrap();
    let secret = TokenSecret::generate().unwrap();
    let now = app.app.clock.now();
    let token = NewToken {
        digest: pepper.digest(&secret),
        token: ApiToken {
            id: TokenId::random(),
            account_id: account,
            kind: TokenGrant::Admin.kind(),
            scopes: TokenGrant::Admin.scopes(),
            name: Some("control plane".into()),
            app_name: None,
            created_by: None,
            assigned_to: None,
            created_at: now,
            expires_at: None,
            revoked_at: None,
            replaced_by: None,
            last_used_at: None,
        },
    };
    let audit =
        d2_audit::AuditEntry::control_plane(account, d2_audit::AuditAction::TokenBreakGlass, now);
    app.app
        .store
        .repositories()
        .insert(&token, &audit)
        .await
        .unwrap();
    let secret = secret.expose().to_owned();
    app.remember(&secret);
    secret
}

/// The token `token_id` as the list shows it.
async fn listed(app: &TestApp, tenant: &Tenant, token_id: &str) -> Value {
    app.get(&tokens_path(tenant), &tenant.token)
        .await
        .assert_status(200)
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["token_id"] == token_id)
        .cloned()
        .unwrap_or_else(|| panic!("{token_id} listed"))
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_issued_for_members_and_the_lists_name_the_people() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let other = app.bootstrap().await;
    let dana = person(&app, Some("Dana Dev"), "dana@people.test", Some(&tenant)).await;
    let stranger = person(&app, Some("Stranger"), "stranger@people.test", Some(&other)).await;
    let server_path = format!("{}/server", tokens_path(&tenant));

    // For a member: the token says so, and still acts as its creator's.
    let for_dana = app
        .post(
            &tokens_path(&tenant),
            &tenant.token,
            json!({ "kind": "dev", "token_name": "dana's laptop", "assigned_user_id": dana }),
        )
        .await;
    let body = for_dana.assert_status(201);
    assert_eq!(body["assigned_user_id"], dana.as_str());
    let dana_token = body["token_id"].as_str().unwrap().to_owned();
    let server = app
        .post(
            &server_path,
            &tenant.token,
            json!({ "app_name": "billing", "assigned_user_id": dana }),
        )
        .await;
    assert_eq!(server.assert_status(201)["assigned_user_id"], dana.as_str());
    let server_token = server.body["token_id"].as_str().unwrap().to_owned();

    // Anyone else is refused, and nothing is issued.
    let before = app.get(&tokens_path(&tenant), &tenant.token).await.text;
    for (path, assignee, problem) in [
        (
            &tokens_path(&tenant),
            json!(stranger),
            (400, "invalid_assignee"),
        ),
        (&server_path, json!(stranger), (400, "invalid_assignee")),
        (
            &tokens_path(&tenant),
            json!(UserId::random().to_string()),
            (400, "invalid_assignee"),
        ),
        (
            &tokens_path(&tenant),
            json!("not-a-uuid"),
            (400, "invalid_body"),
        ),
        (&server_path, json!(42), (400, "invalid_body")),
    ] {
        app.post(path, &tenant.token, json!({ "assigned_user_id": assignee }))
            .await
            .assert_problem(problem.0, problem.1);
    }
    assert_eq!(
        app.get(&tokens_path(&tenant), &tenant.token).await.text,
        before
    );

    // The list names the creator (the bootstrap's owner: no name, so their email) and the
    // assignee; whom a token is for is its assignee, else its creator.
    let listed_for_dana = listed(&app, &tenant, &dana_token).await;
    assert_eq!(listed_for_dana["created_by"], tenant.user_id.as_str());
    assert_eq!(listed_for_dana["created_by_name"], "owner@tenant.test");
    assert_eq!(listed_for_dana["assigned_user_id"], dana.as_str());
    assert_eq!(listed_for_dana["assigned_user_name"], "Dana Dev");
    assert_eq!(listed_for_dana["user_id"], dana.as_str());
    assert_eq!(listed_for_dana["user_name"], "Dana Dev");
    assert_eq!(
        listed(&app, &tenant, &server_token).await["user_name"],
        "Dana Dev"
    );
    let bootstrap = listed(&app, &tenant, &tenant.token_id).await;
    assert_eq!(bootstrap["created_by_name"], "owner@tenant.test");
    assert!(bootstrap["assigned_user_id"].is_null());
    assert!(bootstrap["assigned_user_name"].is_null());
    assert_eq!(bootstrap["user_id"], tenant.user_id.as_str());
    assert_eq!(bootstrap["user_name"], "owner@tenant.test");

    // Where no person is involved: "Server Token", in all three lists.
    let nobody = token_for_nobody(&app, &tenant).await;
    let (_, by_nobody) = {
        let reply = app
            .post(&tokens_path(&tenant), &nobody, json!({ "kind": "server" }))
            .await;
        let body = reply.assert_status(201);
        (
            body["token"].as_str().unwrap().to_owned(),
            body["token_id"].as_str().unwrap().to_owned(),
        )
    };
    let listed_by_nobody = listed(&app, &tenant, &by_nobody).await;
    assert!(listed_by_nobody["created_by"].is_null());
    assert_eq!(listed_by_nobody["created_by_name"], "Server Token");
    assert!(listed_by_nobody["user_id"].is_null());
    assert_eq!(listed_by_nobody["user_name"], "Server Token");

    let by_server_token = Publisher::generate();
    app.post(
        "/v1/keys",
        &nobody,
        json!({ "public_key": by_server_token.public_key() }),
    )
    .await
    .assert_status(201);
    let by_owner = Publisher::generate();
    app.post(
        "/v1/keys",
        &tenant.token,
        json!({ "public_key": by_owner.public_key() }),
    )
    .await
    .assert_status(201);
    let keys = app.get("/v1/keys", &tenant.token).await;
    let keys = keys.assert_status(200).as_array().unwrap().clone();
    let name_of = |key_id: &str| {
        keys.iter()
            .find(|k| k["key_id"] == key_id)
            .map(|k| k["uploaded_by_name"].clone())
            .unwrap_or_else(|| panic!("{key_id} listed"))
    };
    assert_eq!(name_of(&by_server_token.key_id), "Server Token");
    assert_eq!(name_of(&by_owner.key_id), "owner@tenant.test");
    assert!(
        keys.iter()
            .all(|k| k["uploaded_by"].as_str().unwrap().starts_with("token:")),
        "the fields there were keep their meaning"
    );

    let trail = app.audit(&tenant).await;
    let created: Vec<(&str, &Value)> = trail
        .iter()
        .filter(|r| r["action"] == "token.create")
        .map(|r| (r["resource_id"].as_str().unwrap(), &r["user_name"]))
        .collect();
    assert!(created.contains(&(by_nobody.as_str(), &json!("Server Token"))));
    assert!(created.contains(&(dana_token.as_str(), &json!("owner@tenant.test"))));
    let bootstrapped = trail
        .iter()
        .find(|r| r["action"] == "account.bootstrap")
        .unwrap();
    assert_eq!(bootstrapped["actor"], "control_plane");
    assert_eq!(
        bootstrapped["user_name"], "owner@tenant.test",
        "the control plane acted for the owner"
    );
    let break_glass = trail
        .iter()
        .find(|r| r["action"] == "token.break_glass")
        .unwrap();
    assert!(
        break_glass["user_name"].is_null(),
        "the control plane, for nobody"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_token_is_read_and_changed_and_malformed_requests_change_nothing() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let theirs = app.bootstrap().await;
    let (secret, id) = app
        .issue(&tenant, json!({ "kind": "dev", "token_name": "ci" }))
        .await;
    let (_, their_id) = app.issue(&theirs, json!({ "kind": "dev" })).await;
    let path = token_path(&tenant, &id);

    // GET: the token as the list shows it.
    let read = app.get(&path, &tenant.token).await;
    let body = read.assert_status(200).clone();
    assert_eq!(read.header("cache-control"), Some("no-store"));
    assert_eq!(body, listed(&app, &tenant, &id).await);
    assert_eq!(body["token_name"], "ci");
    assert!(!read.text.contains(&secret));
    app.get(&token_path(&tenant, "not-a-uuid"), &tenant.token)
        .await
        .assert_problem(400, "invalid_path");
    app.get(
        &token_path(&tenant, &TokenId::random().to_string()),
        &tenant.token,
    )
    .await
    .assert_problem(404, "token_not_found");
    app.get(&token_path(&tenant, &their_id), &tenant.token)
        .await
        .assert_problem(404, "token_not_found");
    app.get(&token_path(&theirs, &their_id), &tenant.token)
        .await
        .assert_problem(403, "account_mismatch");
    app.get(&path, &secret)
        .await
        .assert_problem(403, "insufficient_scope");

    // PATCH: each malformed change is refused and writes nothing.
    let now = app.app.clock.now();
    let trail = app.audit(&tenant).await.len();
    let refusals: Vec<(String, Value, u16, &str)> = vec![
        (
            token_path(&tenant, "not-a-uuid"),
            json!({ "token_name": "x" }),
            400,
            "invalid_path",
        ),
        (
            token_path(&tenant, &TokenId::random().to_string()),
            json!({ "token_name": "x" }),
            404,
            "token_not_found",
        ),
        (
            token_path(&tenant, &their_id),
            json!({ "token_name": "x" }),
            404,
            "token_not_found",
        ),
        (
            token_path(&theirs, &their_id),
            json!({ "token_name": "x" }),
            403,
            "account_mismatch",
        ),
        (path.clone(), json!({}), 400, "invalid_body"),
        (path.clone(), json!([null, null]), 400, "invalid_body"),
        (path.clone(), json!(null), 400, "invalid_body"),
        (
            path.clone(),
            json!({ "scopes": ["admin"] }),
            400,
            "invalid_body",
        ),
        (
            path.clone(),
            json!({ "expires_at": "soon" }),
            400,
            "invalid_body",
        ),
        (
            path.clone(),
            json!({ "expires_at": now - Duration::minutes(1) }),
            400,
            "invalid_expiry",
        ),
        (
            path.clone(),
            json!({ "token_name": "x".repeat(101) }),
            400,
            "invalid_token_request",
        ),
    ];
    for (target, body, status, code) in refusals {
        app.patch(&target, &tenant.token, body.clone())
            .await
            .assert_problem(status, code);
    }
    app.send(
        app.request(Method::PATCH, &path, Some(&tenant.token))
            .header("content-type", "application/json"),
    )
    .await
    .assert_problem(400, "invalid_body");
    app.patch(&path, &secret, json!({ "token_name": "mine" }))
        .await
        .assert_problem(403, "insufficient_scope");
    assert_eq!(app.audit(&tenant).await.len(), trail);
    assert_eq!(app.get(&path, &tenant.token).await.body, body);

    // A rename and a new expiry, audited; the token stops working at its new expiry.
    let expires_at = now.trunc_subsecs(0) + Duration::minutes(10);
    let changed = app
        .patch(
            &path,
            &tenant.token,
            json!({ "token_name": "deploys", "expires_at": expires_at }),
        )
        .await;
    let changed = changed.assert_status(200).clone();
    assert_eq!(changed["token_name"], "deploys");
    let stored: DateTime<Utc> = changed["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(stored, expires_at);
    let record = app.audit(&tenant).await.remove(0);
    assert_eq!(record["action"], "token.update");
    assert_eq!(record["resource_id"], id.as_str());
    assert_eq!(record["metadata"]["changes"]["token_name"]["from"], "ci");
    assert_eq!(record["metadata"]["changes"]["token_name"]["to"], "deploys");
    assert_eq!(record["user_name"], "owner@tenant.test");
    // `null` clears; absent keeps.
    let cleared = app
        .patch(&path, &tenant.token, json!({ "expires_at": null }))
        .await;
    assert!(cleared.assert_status(200)["expires_at"].is_null());
    assert_eq!(cleared.body["token_name"], "deploys");
    app.patch(&path, &tenant.token, json!({ "expires_at": expires_at }))
        .await
        .assert_status(200);
    app.get("/v1/accounts/me", &secret).await.assert_status(200);
    app.advance(600);
    app.get("/v1/accounts/me", &secret)
        .await
        .assert_problem(401, "token_expired");
    app.patch(&path, &tenant.token, json!({ "expires_at": null }))
        .await
        .assert_problem(410, "token_already_expired");

    // A revoked token is finished.
    let (_, revoked) = app.issue(&tenant, json!({ "kind": "dev" })).await;
    app.delete(&token_path(&tenant, &revoked), &tenant.token)
        .await
        .assert_status(202);
    app.patch(
        &token_path(&tenant, &revoked),
        &tenant.token,
        json!({ "token_name": "again" }),
    )
    .await
    .assert_problem(410, "token_already_revoked");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plan_caps_the_tokens_that_work_and_revoking_one_frees_a_place() {
    let app = TestApp::spawn_with(&[("D2__PLANS__TRIAL__MAX_TOKENS", "3")]).await;
    let tenant = app.bootstrap().await;
    let me = app.get("/v1/accounts/me", &tenant.token).await;
    assert_eq!(me.assert_status(200)["quotas"]["max_tokens"], 3);

    // The bootstrap's token holds one place.
    let (_, first) = app.issue(&tenant, json!({ "kind": "dev" })).await;
    let (_, second) = app.issue(&tenant, json!({ "kind": "dev" })).await;
    let trail = app.audit(&tenant).await.len();
    let refused = app
        .post(
            &tokens_path(&tenant),
            &tenant.token,
            json!({ "kind": "dev" }),
        )
        .await;
    refused.assert_problem(402, "token_limit");
    assert!(
        refused.body["detail"].as_str().unwrap().contains('3'),
        "{}",
        refused.text
    );
    app.post(
        &format!("{}/server", tokens_path(&tenant)),
        &tenant.token,
        json!({ "app_name": "billing" }),
    )
    .await
    .assert_problem(402, "token_limit");
    assert_eq!(app.audit(&tenant).await.len(), trail, "nothing written");

    // A rotation replaces a token: not refused.
    app.post(
        &format!("{}/rotate", token_path(&tenant, &first)),
        &tenant.token,
        Value::Null,
    )
    .await
    .assert_status(201);

    // The replacement and the old token (in its grace period) both work: revoking the
    // old one and another frees one place.
    for id in [&first, &second] {
        app.delete(&token_path(&tenant, id), &tenant.token)
            .await
            .assert_status(202);
    }
    app.issue(&tenant, json!({ "kind": "dev" })).await;
    app.post(&tokens_path(&tenant), &tenant.token, json!({}))
        .await
        .assert_problem(402, "token_limit");

    // Another account has places of its own.
    let other = app.bootstrap().await;
    app.issue(&other, json!({})).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn last_used_at_appears_after_a_use_and_a_flush_and_only_moves_forward() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let (secret, id) = app.issue(&tenant, json!({ "kind": "server" })).await;
    let last_used = || async {
        let token = app.get(&token_path(&tenant, &id), &tenant.token).await;
        token.assert_status(200)["last_used_at"].clone()
    };
    app.app.tokens.flush_usage().await.unwrap();
    assert!(last_used().await.is_null(), "never used");

    // A use is noted in memory, and written by a flush.
    let used_at = app.app.clock.now().trunc_subsecs(0);
    app.get("/v1/accounts/me", &secret).await.assert_status(200);
    assert!(last_used().await.is_null(), "not written per request");
    app.app.tokens.flush_usage().await.unwrap();
    let first: DateTime<Utc> = last_used().await.as_str().unwrap().parse().unwrap();
    assert_eq!(first, used_at);

    // Within the minute, uses change nothing; a minute later, it moves forward.
    app.advance(30);
    app.get("/v1/accounts/me", &secret).await.assert_status(200);
    app.app.tokens.flush_usage().await.unwrap();
    assert_eq!(last_used().await, json!(first));
    app.advance(31);
    app.get("/v1/accounts/me", &secret).await.assert_status(200);
    app.app.tokens.flush_usage().await.unwrap();
    let second: DateTime<Utc> = last_used().await.as_str().unwrap().parse().unwrap();
    assert_eq!(second, first + Duration::seconds(61));
    let listed = listed(&app, &tenant, &id).await;
    assert_eq!(listed["last_used_at"], json!(second));

    // A refused token is not noted.
    app.delete(&token_path(&tenant, &id), &tenant.token)
        .await
        .assert_status(202);
    app.advance(120);
    app.get("/v1/accounts/me", &secret)
        .await
        .assert_problem(401, "token_revoked");
    app.app.tokens.flush_usage().await.unwrap();
    assert_eq!(last_used().await, json!(second));
}
