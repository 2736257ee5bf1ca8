//! People signed in through a real OpenID provider (panva's `oidc-provider`): sessions,
//! accounts they create, members and roles route by route, and the tokens the server
//! must refuse.

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Reply, TestApp};
use crate::oidc::{OidcProvider, TestUser, decode_jwt};

pub(crate) const AUDIENCE: &str = "https://d2.e2e.test";

/// A server whose people sign in through `provider`, with the role claim `role`.
pub(crate) async fn app_signing_in_with(provider: &OidcProvider) -> TestApp {
    TestApp::spawn_with(&[
        ("D2__AUTH__IDP__ISSUER", provider.issuer()),
        ("D2__AUTH__IDP__AUDIENCE", AUDIENCE),
        ("D2__AUTH__IDP__ROLE_CLAIM", "role"),
    ])
    .await
}

/// A person of the provider: a subject of their own, verified email, a name.
pub(crate) fn person(name: &str) -> TestUser {
    let sub = uuid::Uuid::new_v4().to_string();
    TestUser::new(sub.clone(), AUDIENCE)
        .email(format!("{name}-{sub}@people.test"))
        .email_verified(true)
        .name(name)
}

pub(crate) async fn signed_in(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    org: Option<&str>,
) -> Reply {
    let mut request = app.request(method, path, Some(token));
    if let Some(org) = org {
        request = request.header("X-Org-ID", org);
    }
    app.send(request).await
}

pub(crate) async fn me(app: &TestApp, token: &str) -> Value {
    signed_in(app, token, Method::GET, "/v1/users/me", None)
        .await
        .assert_status(200)
        .clone()
}

/// A new account owned by the person behind `token`; its id.
pub(crate) async fn create_account(app: &TestApp, token: &str, name: &str) -> String {
    let reply = app
        .send(
            app.request(Method::POST, "/v1/accounts", Some(token))
                .json(&json!({ "name": name })),
        )
        .await;
    let body = reply.assert_status(201);
    assert_eq!(body["role"], "owner");
    assert_eq!(body["plan"], "trial");
    body["account_id"].as_str().unwrap().to_owned()
}

/// Makes the person `user_id` a member of `account` with `role`, through the store (the
/// way in, invitations, is tested on its own).
pub(crate) async fn add_member(app: &TestApp, account: &str, user_id: &str, role: d2_kernel::Role) {
    let account: d2_kernel::AccountId = account.parse().unwrap();
    let user: d2_kernel::UserId = user_id.parse().unwrap();
    let audit = d2_audit::AuditEntry::system(
        account,
        d2_audit::AuditAction::MemberRoleChange,
        app.app.clock.now(),
    );
    let added = d2_members::MemberRepo::add_member(
        app.app.store.repositories().as_ref(),
        account,
        user,
        role,
        &audit,
    )
    .await
    .unwrap();
    assert!(added);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_sign_in_creates_the_person_who_creates_accounts_and_acts_in_them() {
    let provider = OidcProvider::shared().await;
    let app = app_signing_in_with(provider).await;
    let ada = person("Ada");
    let token = provider.token(&ada).await;

    let first = me(&app, &token).await;
    assert_eq!(first["user"]["email"], ada.email.clone().unwrap());
    assert_eq!(first["user"]["email_verified"], true);
    assert_eq!(first["user"]["display_name"], "Ada");
    assert!(first["user"]["last_sign_in_at"].is_string());
    assert_eq!(first["accounts"], json!([]));

    let account = create_account(&app, &token, "Ada's agents").await;
    app.advance(1);
    let second = create_account(&app, &token, "Ada's lab").await;
    let again = me(&app, &token).await;
    assert_eq!(
        again["user"]["user_id"], first["user"]["user_id"],
        "the same person"
    );
    let accounts = again["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 2);
    assert_eq!(accounts[0]["account_id"], account);
    assert_eq!(accounts[0]["account_name"], "Ada's agents");
    assert_eq!(accounts[0]["role"], "owner");
    assert_eq!(accounts[1]["account_id"], second);

    // A session names the account it acts in: in the path, or with X-Org-ID.
    signed_in(&app, &token, Method::GET, "/v1/accounts/me", None)
        .await
        .assert_problem(400, "account_required");
    let overview = signed_in(&app, &token, Method::GET, "/v1/accounts/me", Some(&account)).await;
    assert_eq!(overview.assert_status(200)["account_id"], account);
    assert_eq!(overview.body["quotas"]["current_members"], 1);
    signed_in(
        &app,
        &token,
        Method::GET,
        "/v1/accounts/me",
        Some("not-a-uuid"),
    )
    .await
    .assert_problem(400, "malformed_request");
    let members = signed_in(
        &app,
        &token,
        Method::GET,
        &format!("/v1/accounts/{second}/members"),
        None,
    )
    .await;
    let members = members.assert_status(200)["members"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["user_id"], first["user"]["user_id"]);
    assert_eq!(members[0]["display_name"], "Ada");
    assert_eq!(members[0]["role"], "owner");

    // Audited in the account, by the person.
    let audit = signed_in(&app, &token, Method::GET, "/v1/audit", Some(&account)).await;
    let records = audit.assert_status(200).as_array().unwrap().clone();
    let created = records
        .iter()
        .find(|r| r["action"] == "account.create")
        .expect("account.create");
    assert_eq!(
        created["actor"],
        format!("user:{}", first["user"]["user_id"].as_str().unwrap())
    );

    // API tokens are not people; bad names of an account are refused.
    let tenant = app.bootstrap().await;
    app.get("/v1/users/me", &tenant.token)
        .await
        .assert_problem(403, "user_session_required");
    app.send(
        app.request(Method::POST, "/v1/accounts", Some(&tenant.token))
            .json(&json!({ "name": "Mine" })),
    )
    .await
    .assert_problem(403, "user_session_required");
    for body in [
        json!({ "name": "" }),
        json!({ "name": "x".repeat(201) }),
        json!({}),
    ] {
        let reply = app
            .send(
                app.request(Method::POST, "/v1/accounts", Some(&token))
                    .json(&body),
            )
            .await;
        assert_eq!(reply.status.as_u16(), 400, "{body}: {}", reply.text);
    }
    assert_eq!(
        me(&app, &token).await["accounts"].as_array().unwrap().len(),
        2
    );
    // An API token names its own account only.
    signed_in(
        &app,
        &tenant.token,
        Method::GET,
        "/v1/accounts/me",
        Some(&account),
    )
    .await
    .assert_problem(403, "account_mismatch");
    signed_in(
        &app,
        &tenant.token,
        Method::GET,
        "/v1/accounts/me",
        Some(&tenant.account_id),
    )
    .await
    .assert_status(200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_owner_bootstrap_created_is_claimed_by_a_verified_sign_in_with_their_email() {
    let provider = OidcProvider::shared().await;
    let app = app_signing_in_with(provider).await;
    let email = format!("owner-{}@claim.test", uuid::Uuid::new_v4());
    let reply = app
        .send(
            app.request(Method::POST, "/v1/user-token/issue", None)
                .header("X-Control-Plane-Token", &app.control_plane)
                .json(&json!({ "owner_email": email, "owner_name": "Grace" })),
        )
        .await;
    let tenant = reply.assert_status(201).clone();

    let unverified = provider
        .token(
            &person("Mallory")
                .email(email.to_uppercase())
                .email_verified(false),
        )
        .await;
    let stranger = me(&app, &unverified).await;
    assert_ne!(stranger["user"]["user_id"], tenant["user_id"]);
    assert_eq!(
        stranger["accounts"],
        json!([]),
        "an unverified email claims nothing"
    );

    let grace = provider
        .token(&person("Grace").email(email.to_uppercase()))
        .await;
    let owner = me(&app, &grace).await;
    assert_eq!(owner["user"]["user_id"], tenant["user_id"]);
    assert_eq!(owner["accounts"][0]["account_id"], tenant["account_id"]);
    assert_eq!(owner["accounts"][0]["role"], "owner");
}

/// What a route needs of its caller.
#[derive(Clone, Copy, Debug)]
enum Need {
    /// A credential holding this scope, in the account.
    Scope(&'static str),
    /// Any credential of the account.
    Member,
    /// A signed-in person, whatever their accounts.
    Person,
    /// The API token presented itself (rotating or revoking it).
    ApiToken,
    /// The control-plane secret.
    ControlPlane,
    /// An agent's own credential: its client secret, access token or registration token.
    Agent,
    /// Nobody: public.
    Public,
}

/// Every documented route, with a request for it and what it needs. The OpenAPI document
/// is held to this list, so a new route cannot go untested.
fn routes(account: &str) -> Vec<(Method, String, &'static str, Option<Value>, Need)> {
    let id = uuid::Uuid::new_v4();
    let policy = json!({ "bundle": { "metadata": { "name": "roles" }, "policies": [] } });
    use Need::*;
    vec![
        (Method::GET, "/".into(), "/", None, Public),
        (Method::GET, "/healthz".into(), "/healthz", None, Public),
        (Method::GET, "/readyz".into(), "/readyz", None, Public),
        (Method::GET, "/metrics".into(), "/metrics", None, Public),
        (
            Method::GET,
            "/.well-known/jwks.json".into(),
            "/.well-known/jwks.json",
            None,
            Member,
        ),
        (
            Method::POST,
            "/v1/accounts".into(),
            "/v1/accounts",
            Some(json!({ "name": "More" })),
            Person,
        ),
        (
            Method::GET,
            "/v1/users/me".into(),
            "/v1/users/me",
            None,
            Person,
        ),
        (
            Method::GET,
            "/v1/accounts/me".into(),
            "/v1/accounts/me",
            None,
            Member,
        ),
        (
            Method::PATCH,
            "/v1/accounts/me".into(),
            "/v1/accounts/me",
            Some(json!({ "metrics_enabled": true })),
            Scope("admin"),
        ),
        (
            Method::GET,
            format!("/v1/accounts/{account}/members"),
            "/v1/accounts/{account_id}/members",
            None,
            Scope("members.read"),
        ),
        (
            Method::PATCH,
            format!("/v1/accounts/{account}/members/{id}"),
            "/v1/accounts/{account_id}/members/{user_id}",
            Some(json!({ "role": "member" })),
            Scope("admin"),
        ),
        (
            Method::DELETE,
            format!("/v1/accounts/{account}/members/{id}"),
            "/v1/accounts/{account_id}/members/{user_id}",
            None,
            Scope("admin"),
        ),
        (
            Method::PATCH,
            format!("/v1/accounts/{account}/name"),
            "/v1/accounts/{account_id}/name",
            Some(json!({ "name": "Renamed" })),
            Scope("admin"),
        ),
        (
            Method::GET,
            format!("/v1/accounts/{account}/scopes"),
            "/v1/accounts/{account_id}/scopes",
            None,
            Member,
        ),
        (
            Method::GET,
            format!("/v1/accounts/{account}/tokens"),
            "/v1/accounts/{account_id}/tokens",
            None,
            Scope("admin"),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{account}/tokens"),
            "/v1/accounts/{account_id}/tokens",
            Some(json!({ "kind": "dev" })),
            Scope("admin"),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{account}/tokens/server"),
            "/v1/accounts/{account_id}/tokens/server",
            Some(json!({ "app_name": "roles" })),
            Scope("admin"),
        ),
        (
            Method::GET,
            format!("/v1/accounts/{account}/tokens/{id}"),
            "/v1/accounts/{account_id}/tokens/{token_id}",
            None,
            Scope("admin"),
        ),
        (
            Method::PATCH,
            format!("/v1/accounts/{account}/tokens/{id}"),
            "/v1/accounts/{account_id}/tokens/{token_id}",
            Some(json!({ "token_name": "roles" })),
            Scope("admin"),
        ),
        (
            Method::DELETE,
            format!("/v1/accounts/{account}/tokens/{id}"),
            "/v1/accounts/{account_id}/tokens/{token_id}",
            None,
            Scope("admin"),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{account}/tokens/{id}/rotate"),
            "/v1/accounts/{account_id}/tokens/{token_id}/rotate",
            None,
            Scope("admin"),
        ),
        (
            Method::GET,
            "/v1/audit".into(),
            "/v1/audit",
            None,
            Scope("admin"),
        ),
        (
            Method::GET,
            "/v1/events".into(),
            "/v1/events",
            None,
            Scope("metrics.read"),
        ),
        (
            Method::POST,
            "/v1/events/ingest".into(),
            "/v1/events/ingest",
            Some(json!({ "events": [] })),
            Scope("event.ingest"),
        ),
        (
            Method::GET,
            "/v1/jwks/configuration".into(),
            "/v1/jwks/configuration",
            None,
            Scope("admin"),
        ),
        (
            Method::GET,
            "/v1/jwks/history".into(),
            "/v1/jwks/history",
            None,
            Scope("admin"),
        ),
        (
            Method::POST,
            "/v1/jwks/rotate".into(),
            "/v1/jwks/rotate",
            None,
            Scope("admin"),
        ),
        (
            Method::GET,
            "/v1/keys".into(),
            "/v1/keys",
            None,
            Scope("key.upload"),
        ),
        (
            Method::POST,
            "/v1/keys".into(),
            "/v1/keys",
            Some(
                json!({ "public_key": base64::engine::general_purpose::STANDARD.encode([7u8; 32]) }),
            ),
            Scope("key.upload"),
        ),
        (
            Method::DELETE,
            "/v1/keys/ed_000000000000".into(),
            "/v1/keys/{key_id}",
            None,
            Scope("key.upload"),
        ),
        (
            Method::POST,
            "/v1/keys/ed_000000000000/approve".into(),
            "/v1/keys/{key_id}/approve",
            None,
            Scope("admin"),
        ),
        (
            Method::GET,
            "/v1/metrics/summary".into(),
            "/v1/metrics/summary",
            None,
            Scope("metrics.read"),
        ),
        (
            Method::GET,
            "/v1/metrics/timeseries".into(),
            "/v1/metrics/timeseries",
            None,
            Scope("metrics.read"),
        ),
        (
            Method::GET,
            "/v1/metrics/top".into(),
            "/v1/metrics/top",
            None,
            Scope("metrics.read"),
        ),
        (
            Method::GET,
            "/v1/policy/apps".into(),
            "/v1/policy/apps",
            None,
            Scope("policy.read"),
        ),
        (
            Method::GET,
            "/v1/policy/bundle?app_name=roles".into(),
            "/v1/policy/bundle",
            None,
            Scope("policy.read"),
        ),
        (
            Method::PUT,
            "/v1/policy/draft".into(),
            "/v1/policy/draft",
            Some(policy.clone()),
            Scope("policy.publish"),
        ),
        (
            Method::GET,
            "/v1/policy/list".into(),
            "/v1/policy/list",
            None,
            Scope("policy.read"),
        ),
        (
            Method::POST,
            "/v1/policy/publish?app_name=roles".into(),
            "/v1/policy/publish",
            Some(policy.clone()),
            Scope("policy.publish"),
        ),
        (
            Method::POST,
            "/v1/policy/revert".into(),
            "/v1/policy/revert",
            Some(json!({ "policy_id": id })),
            Scope("policy.revert"),
        ),
        (
            Method::POST,
            "/v1/policy/revoke?app_name=roles".into(),
            "/v1/policy/revoke",
            None,
            Scope("policy.revoke"),
        ),
        (
            Method::GET,
            "/v1/policy/roles-permissions?app_name=roles".into(),
            "/v1/policy/roles-permissions",
            None,
            Scope("policy.read"),
        ),
        (
            Method::POST,
            "/v1/policy/validate".into(),
            "/v1/policy/validate",
            Some(policy.clone()),
            Scope("policy.read"),
        ),
        (
            Method::GET,
            "/v1/policy/versions?app_name=roles".into(),
            "/v1/policy/versions",
            None,
            Scope("policy.read"),
        ),
        (
            Method::GET,
            format!("/v1/policy/{id}"),
            "/v1/policy/{policy_id}",
            None,
            Scope("policy.read"),
        ),
        (
            Method::PATCH,
            format!("/v1/policy/{id}/bundle"),
            "/v1/policy/{policy_id}/bundle",
            Some(policy),
            Scope("policy.publish"),
        ),
        (
            Method::PATCH,
            format!("/v1/policy/{id}/description"),
            "/v1/policy/{policy_id}/description",
            Some(json!({ "description": "d" })),
            Scope("policy.publish"),
        ),
        (
            Method::GET,
            "/v1/admin/dashboard".into(),
            "/v1/admin/dashboard",
            None,
            Scope("admin"),
        ),
        (
            Method::GET,
            "/v1/admin/tokens".into(),
            "/v1/admin/tokens",
            None,
            Scope("admin"),
        ),
        (
            Method::GET,
            format!("/v1/admin/tokens/{id}"),
            "/v1/admin/tokens/{token_id}",
            None,
            Scope("admin"),
        ),
        (
            Method::POST,
            format!("/v1/admin/tokens/{id}/revoke"),
            "/v1/admin/tokens/{token_id}/revoke",
            None,
            Scope("admin"),
        ),
        (
            Method::POST,
            "/v1/admin/introspect".into(),
            "/v1/admin/introspect",
            Some(json!({ "token": "x" })),
            Scope("admin"),
        ),
        (
            Method::GET,
            "/v1/admin/tasks/task-1".into(),
            "/v1/admin/tasks/{task_id}",
            None,
            Scope("admin"),
        ),
        (
            Method::POST,
            "/v1/invitations".into(),
            "/v1/invitations",
            Some(json!({ "email": "someone@roles.test", "role": "member" })),
            Scope("admin"),
        ),
        (
            Method::GET,
            "/v1/invitations".into(),
            "/v1/invitations",
            None,
            Scope("admin"),
        ),
        (
            Method::DELETE,
            format!("/v1/invitations/{id}"),
            "/v1/invitations/{invitation_id}",
            None,
            Scope("admin"),
        ),
        (
            Method::POST,
            "/v1/users".into(),
            "/v1/users",
            Some(json!({ "username": "roles" })),
            Scope("admin"),
        ),
        (
            Method::GET,
            "/v1/users".into(),
            "/v1/users",
            None,
            Scope("admin"),
        ),
        (
            Method::GET,
            format!("/v1/users/{id}"),
            "/v1/users/{principal_id}",
            None,
            Scope("admin"),
        ),
        (
            Method::PUT,
            format!("/v1/users/{id}"),
            "/v1/users/{principal_id}",
            Some(json!({ "username": "roles" })),
            Scope("admin"),
        ),
        (
            Method::DELETE,
            format!("/v1/users/{id}"),
            "/v1/users/{principal_id}",
            None,
            Scope("admin"),
        ),
        (
            Method::POST,
            "/v1/delegations".into(),
            "/v1/delegations",
            Some(
                json!({ "grantor": {"type": "principal", "id": id}, "agent_id": id, "scopes": ["roles"] }),
            ),
            Scope("admin"),
        ),
        (
            Method::GET,
            "/v1/delegations".into(),
            "/v1/delegations",
            None,
            Scope("admin"),
        ),
        (
            Method::GET,
            format!("/v1/delegations/{id}"),
            "/v1/delegations/{delegation_id}",
            None,
            Scope("admin"),
        ),
        (
            Method::DELETE,
            format!("/v1/delegations/{id}"),
            "/v1/delegations/{delegation_id}",
            None,
            Scope("admin"),
        ),
        (
            Method::POST,
            "/v1/access-rules".into(),
            "/v1/access-rules",
            Some(json!({ "name": "roles", "effect": "deny" })),
            Scope("admin"),
        ),
        (
            Method::GET,
            "/v1/access-rules".into(),
            "/v1/access-rules",
            None,
            Scope("admin"),
        ),
        (
            Method::GET,
            format!("/v1/access-rules/{id}"),
            "/v1/access-rules/{rule_id}",
            None,
            Scope("admin"),
        ),
        (
            Method::PUT,
            format!("/v1/access-rules/{id}"),
            "/v1/access-rules/{rule_id}",
            Some(json!({ "name": "roles", "effect": "deny" })),
            Scope("admin"),
        ),
        (
            Method::DELETE,
            format!("/v1/access-rules/{id}"),
            "/v1/access-rules/{rule_id}",
            None,
            Scope("admin"),
        ),
        (
            Method::POST,
            "/v1/access-rules/explain".into(),
            "/v1/access-rules/explain",
            Some(json!({ "agent": { "id": id, "name": "roles" } })),
            Scope("admin"),
        ),
        (
            Method::GET,
            "/public/invitations/d2inv_nope".into(),
            "/public/invitations/{token}",
            None,
            Public,
        ),
        (
            Method::POST,
            "/public/invitations/accept".into(),
            "/public/invitations/accept",
            Some(json!({ "token": "d2inv_nope" })),
            Person,
        ),
        (
            Method::POST,
            "/v1/user-token/issue".into(),
            "/v1/user-token/issue",
            Some(json!({})),
            ControlPlane,
        ),
        (
            Method::POST,
            "/v1/user-token/revoke".into(),
            "/v1/user-token/revoke",
            None,
            ApiToken,
        ),
        (
            Method::POST,
            "/v1/user-token/rotate".into(),
            "/v1/user-token/rotate",
            None,
            ApiToken,
        ),
        (
            Method::POST,
            "/v1/agents/register".into(),
            "/v1/agents/register",
            Some(json!({ "name": "Roles agent" })),
            Scope("admin"),
        ),
        (
            Method::POST,
            "/v1/agents/activate".into(),
            "/v1/agents/activate",
            Some(json!({ "registration_token": "d2reg_nope" })),
            Agent,
        ),
        (
            Method::GET,
            "/v1/agents".into(),
            "/v1/agents",
            None,
            Scope("admin"),
        ),
        (
            Method::GET,
            "/v1/billing/credits".into(),
            "/v1/billing/credits",
            None,
            Scope("admin"),
        ),
        (
            Method::GET,
            "/v1/billing/credits/entries".into(),
            "/v1/billing/credits/entries",
            None,
            Scope("admin"),
        ),
        (
            Method::POST,
            "/v1/billing/credits/add".into(),
            "/v1/billing/credits/add",
            Some(json!({ "amount": 1, "source": "promotion" })),
            Scope("admin"),
        ),
        (
            Method::POST,
            "/v1/billing/credits/spend".into(),
            "/v1/billing/credits/spend",
            Some(json!({ "amount": 1, "idempotency_key": "roles" })),
            Scope("admin"),
        ),
        (
            Method::POST,
            "/v1/billing/credits/reserve".into(),
            "/v1/billing/credits/reserve",
            Some(json!({ "amount": 1, "idempotency_key": "roles-reserve" })),
            Scope("usage.report"),
        ),
        (
            Method::GET,
            format!("/v1/billing/credits/reservations/{id}"),
            "/v1/billing/credits/reservations/{reservation_id}",
            None,
            Scope("usage.report"),
        ),
        (
            Method::POST,
            format!("/v1/billing/credits/reservations/{id}/settle"),
            "/v1/billing/credits/reservations/{reservation_id}/settle",
            Some(json!({ "amount": 0 })),
            Scope("usage.report"),
        ),
        (
            Method::GET,
            "/v1/billing/prices".into(),
            "/v1/billing/prices",
            None,
            Member,
        ),
        (
            Method::POST,
            "/v1/billing/usage".into(),
            "/v1/billing/usage",
            Some(
                json!({ "reports": [{ "idempotency_key": "roles-usage", "usage": {
                "kind": "agent", "agent": "a", "operation": "invoke", "invocations": 1 } }] }),
            ),
            Scope("usage.report"),
        ),
        (
            Method::GET,
            "/v1/billing/usage".into(),
            "/v1/billing/usage",
            None,
            Scope("admin"),
        ),
        (
            Method::GET,
            "/v1/billing/usage/records".into(),
            "/v1/billing/usage/records",
            None,
            Scope("admin"),
        ),
        (
            Method::POST,
            "/v1/billing/eligibility".into(),
            "/v1/billing/eligibility",
            Some(json!({ "kind": "hire", "agent": "roles" })),
            Scope("usage.report"),
        ),
        (
            Method::GET,
            "/v1/billing/forecast".into(),
            "/v1/billing/forecast",
            None,
            Scope("admin"),
        ),
        (
            Method::GET,
            "/v1/billing/budgets".into(),
            "/v1/billing/budgets",
            None,
            Scope("admin"),
        ),
        (
            Method::PUT,
            "/v1/billing/budgets/model/roles-model".into(),
            "/v1/billing/budgets/{kind}/{subject}",
            Some(json!({ "monthly_credits": 10 })),
            Scope("admin"),
        ),
        (
            Method::DELETE,
            "/v1/billing/budgets/model/roles-none".into(),
            "/v1/billing/budgets/{kind}/{subject}",
            None,
            Scope("admin"),
        ),
        (
            Method::POST,
            "/v1/billing/checkout/process".into(),
            "/v1/billing/checkout/process",
            Some(json!({ "session_id": "cs_roles" })),
            Scope("admin"),
        ),
        (
            Method::GET,
            "/v1/billing/notices".into(),
            "/v1/billing/notices",
            None,
            Scope("admin"),
        ),
        (
            Method::GET,
            "/v1/billing/notices/endpoint".into(),
            "/v1/billing/notices/endpoint",
            None,
            Scope("admin"),
        ),
        (
            Method::PUT,
            "/v1/billing/notices/endpoint".into(),
            "/v1/billing/notices/endpoint",
            Some(json!({ "url": "https://hooks.example.com/roles" })),
            Scope("admin"),
        ),
        (
            Method::DELETE,
            "/v1/billing/notices/endpoint".into(),
            "/v1/billing/notices/endpoint",
            None,
            Scope("admin"),
        ),
        (
            Method::GET,
            "/v1/billing/subscription".into(),
            "/v1/billing/subscription",
            None,
            Scope("admin"),
        ),
        (
            Method::POST,
            "/v1/billing/webhooks/stripe".into(),
            "/v1/billing/webhooks/stripe",
            Some(json!({ "id": "evt_1" })),
            Public,
        ),
        (
            Method::GET,
            "/v1/agents/client-policy".into(),
            "/v1/agents/client-policy",
            None,
            Scope("admin"),
        ),
        (
            Method::PUT,
            "/v1/agents/client-policy".into(),
            "/v1/agents/client-policy",
            Some(json!({ "metadata_documents": false })),
            Scope("admin"),
        ),
        (
            Method::POST,
            "/v1/agents/client-policy/initial-access-token".into(),
            "/v1/agents/client-policy/initial-access-token",
            None,
            Scope("admin"),
        ),
        (
            Method::GET,
            "/v1/agents/me".into(),
            "/v1/agents/me",
            None,
            Agent,
        ),
        (
            Method::GET,
            format!("/v1/agents/{id}"),
            "/v1/agents/{client_id}",
            None,
            Scope("admin"),
        ),
        (
            Method::PUT,
            format!("/v1/agents/{id}"),
            "/v1/agents/{client_id}",
            Some(json!({ "name": "Renamed" })),
            Scope("admin"),
        ),
        (
            Method::DELETE,
            format!("/v1/agents/{id}"),
            "/v1/agents/{client_id}",
            None,
            Scope("admin"),
        ),
        (
            Method::POST,
            format!("/v1/agents/{id}/rotate-secret"),
            "/v1/agents/{client_id}/rotate-secret",
            None,
            Scope("admin"),
        ),
        (
            Method::GET,
            format!("/.well-known/oauth-authorization-server/oauth/{account}"),
            "/.well-known/oauth-authorization-server/oauth/{account_id}",
            None,
            Public,
        ),
        (
            Method::GET,
            format!("/oauth/{account}/.well-known/openid-configuration"),
            "/oauth/{account_id}/.well-known/openid-configuration",
            None,
            Public,
        ),
        (
            Method::GET,
            format!("/oauth/{account}/jwks"),
            "/oauth/{account_id}/jwks",
            None,
            Public,
        ),
        // Anyone; a credential presented must be the account's (its own e2e test holds
        // another account's to 403, answered as RFC 6749 JSON like every OAuth route).
        (
            Method::GET,
            format!("/oauth/{account}/revocations"),
            "/oauth/{account_id}/revocations",
            None,
            Public,
        ),
        (
            Method::POST,
            format!("/oauth/{account}/token"),
            "/oauth/{account_id}/token",
            Some(json!({ "grant_type": "client_credentials" })),
            Agent,
        ),
        (
            Method::POST,
            format!("/oauth/{account}/register"),
            "/oauth/{account_id}/register",
            Some(json!({ "redirect_uris": ["https://app.example/cb"] })),
            Agent,
        ),
        (
            Method::POST,
            format!("/oauth/{account}/introspect"),
            "/oauth/{account_id}/introspect",
            Some(json!({ "token": "x" })),
            Agent,
        ),
        (
            Method::POST,
            format!("/oauth/{account}/revoke"),
            "/oauth/{account_id}/revoke",
            Some(json!({ "token": "x" })),
            Agent,
        ),
        (
            Method::GET,
            format!("/oauth/{account}/agentinfo"),
            "/oauth/{account_id}/agentinfo",
            None,
            Agent,
        ),
        (
            Method::POST,
            format!("/oauth/{account}/verify"),
            "/oauth/{account_id}/verify",
            Some(json!({ "token": "x" })),
            Agent,
        ),
        (
            Method::POST,
            format!("/oauth/{account}/verify-tool-access"),
            "/oauth/{account_id}/verify-tool-access",
            Some(json!({ "token": "x", "tool": "search" })),
            Agent,
        ),
        (
            Method::POST,
            format!("/oauth/{account}/check_token_access"),
            "/oauth/{account_id}/check_token_access",
            Some(json!({ "token": "x", "tool": "search" })),
            Agent,
        ),
        (
            Method::POST,
            "/v1/tools".into(),
            "/v1/tools",
            Some(json!({ "name": "roles.tool" })),
            Scope("admin"),
        ),
        (
            Method::GET,
            "/v1/tools".into(),
            "/v1/tools",
            None,
            Scope("admin"),
        ),
        (
            Method::GET,
            format!("/v1/tools/{id}"),
            "/v1/tools/{tool_id}",
            None,
            Scope("admin"),
        ),
        (
            Method::PUT,
            format!("/v1/tools/{id}"),
            "/v1/tools/{tool_id}",
            Some(json!({ "name": "roles.tool" })),
            Scope("admin"),
        ),
        (
            Method::DELETE,
            format!("/v1/tools/{id}"),
            "/v1/tools/{tool_id}",
            None,
            Scope("admin"),
        ),
        (
            Method::POST,
            format!("/v1/tools/{id}/activate"),
            "/v1/tools/{tool_id}/activate",
            None,
            Scope("admin"),
        ),
        (
            Method::POST,
            format!("/v1/tools/{id}/deactivate"),
            "/v1/tools/{tool_id}/deactivate",
            None,
            Scope("admin"),
        ),
        (
            Method::GET,
            format!("/v1/agents/{id}/tools"),
            "/v1/agents/{client_id}/tools",
            None,
            Scope("admin"),
        ),
        (
            Method::POST,
            format!("/v1/agents/{id}/tools/{id}"),
            "/v1/agents/{client_id}/tools/{tool_id}",
            None,
            Scope("admin"),
        ),
        (
            Method::DELETE,
            format!("/v1/agents/{id}/tools/{id}"),
            "/v1/agents/{client_id}/tools/{tool_id}",
            None,
            Scope("admin"),
        ),
        (
            Method::POST,
            "/v1/scopes".into(),
            "/v1/scopes",
            Some(json!({ "name": "roles:scope" })),
            Scope("admin"),
        ),
        (
            Method::GET,
            "/v1/scopes".into(),
            "/v1/scopes",
            None,
            Scope("admin"),
        ),
        (
            Method::GET,
            "/v1/scopes/registry".into(),
            "/v1/scopes/registry",
            None,
            Scope("admin"),
        ),
        (
            Method::POST,
            "/v1/scopes/expand".into(),
            "/v1/scopes/expand",
            Some(json!({ "scopes": ["openid"] })),
            Scope("admin"),
        ),
        (
            Method::GET,
            "/v1/scopes/openid".into(),
            "/v1/scopes/{name}",
            None,
            Scope("admin"),
        ),
        (
            Method::PUT,
            "/v1/scopes/nope".into(),
            "/v1/scopes/{name}",
            Some(json!({})),
            Scope("admin"),
        ),
        (
            Method::DELETE,
            "/v1/scopes/nope".into(),
            "/v1/scopes/{name}",
            None,
            Scope("admin"),
        ),
    ]
}

/// The scopes of each role's sessions, as `docs/api.md` states them.
fn role_scopes(role: &str) -> &'static [&'static str] {
    const EVERY: &[&str] = &[
        "policy.read",
        "policy.publish",
        "policy.revoke",
        "policy.revert",
        "key.upload",
        "event.ingest",
        "metrics.read",
        "usage.report",
        "members.read",
        "admin",
    ];
    match role {
        "owner" | "admin" => EVERY,
        "developer" => &[
            "policy.read",
            "policy.publish",
            "policy.revoke",
            "policy.revert",
            "key.upload",
            "metrics.read",
            "members.read",
        ],
        "member" => &["policy.read", "metrics.read", "members.read"],
        other => panic!("no role {other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_role_table_holds_on_every_route_and_another_accounts_member_reads_nothing() {
    let provider = OidcProvider::shared().await;
    let app = app_signing_in_with(provider).await;
    let owner = provider.token(&person("Owner")).await;
    let account = create_account(&app, &owner, "Roles").await;

    // Every route of the OpenAPI document is in the table, and nothing else.
    let document = app
        .send(app.request(Method::GET, "/openapi.json", None))
        .await;
    let mut documented = BTreeSet::new();
    for (path, operations) in document.assert_status(200)["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            documented.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let listed: BTreeSet<String> = routes(&account)
        .iter()
        .map(|(method, _, template, _, _)| format!("{method} {template}"))
        .collect();
    assert_eq!(
        documented, listed,
        "a route without a row, or a row without a route"
    );

    let mut sessions = vec![("owner".to_owned(), owner.clone())];
    for role in ["admin", "developer", "member"] {
        let token = provider.token(&person(role)).await;
        let user_id = me(&app, &token).await["user"]["user_id"]
            .as_str()
            .unwrap()
            .to_owned();
        add_member(&app, &account, &user_id, role.parse().unwrap()).await;
        sessions.push((role.to_owned(), token));
    }
    for (role, token) in &sessions {
        let held = role_scopes(role);
        for (method, path, template, body, need) in routes(&account) {
            let mut request = app
                .request(method.clone(), &path, Some(token))
                .header("X-Org-ID", &account);
            if let Some(body) = &body {
                request = request.json(body);
            }
            let reply = app.send(request).await;
            let status = reply.status.as_u16();
            assert!(status < 500, "{role} {method} {template}: {}", reply.text);
            let refused = status == 403 && reply.body["code"] == "insufficient_scope";
            match need {
                Need::Scope(scope) => assert_eq!(
                    refused,
                    !held.contains(&scope),
                    "{role} {method} {template}: {status} {}",
                    reply.text
                ),
                Need::Member | Need::Person | Need::Public => {
                    assert!(
                        !refused && status != 401,
                        "{role} {method} {template}: {}",
                        reply.text
                    );
                }
                Need::ApiToken | Need::ControlPlane | Need::Agent => {
                    assert!(
                        (400..500).contains(&status),
                        "{role} {method} {template}: {}",
                        reply.text
                    );
                }
            }
        }
    }

    // A member of another account gets 403 on every route of this one, and reads nothing.
    let stranger = provider.token(&person("Stranger")).await;
    let elsewhere = create_account(&app, &stranger, "Elsewhere").await;
    let secret_name = "Roles";
    for (method, path, template, body, need) in routes(&account) {
        if !matches!(need, Need::Scope(_) | Need::Member) {
            continue;
        }
        let mut request = app
            .request(method.clone(), &path, Some(&stranger))
            .header("X-Org-ID", &account);
        if let Some(body) = &body {
            request = request.json(body);
        }
        let reply = app.send(request).await;
        reply.assert_problem(403, "not_a_member");
        assert!(!reply.text.contains(&account[..8]) || template.contains("{account_id}"));
        assert!(
            !reply.text.contains(secret_name),
            "{method} {template} leaked"
        );
    }
    // Their own account still answers them.
    signed_in(
        &app,
        &stranger,
        Method::GET,
        "/v1/accounts/me",
        Some(&elsewhere),
    )
    .await
    .assert_status(200);
}

#[tokio::test(flavor = "multi_thread")]
async fn members_change_roles_and_leave_an_account_always_keeps_an_owner() {
    let provider = OidcProvider::shared().await;
    let app = app_signing_in_with(provider).await;
    let owner = provider.token(&person("Owner")).await;
    let owner_id = me(&app, &owner).await["user"]["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let account = create_account(&app, &owner, "Team").await;
    let admin = provider.token(&person("Admin")).await;
    let admin_id = me(&app, &admin).await["user"]["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    add_member(&app, &account, &admin_id, d2_kernel::Role::Admin).await;
    let dev = provider.token(&person("Dev")).await;
    let dev_id = me(&app, &dev).await["user"]["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    add_member(&app, &account, &dev_id, d2_kernel::Role::Developer).await;
    let member = |user: &str| format!("/v1/accounts/{account}/members/{user}");
    let set_role = async |token: &str, user: &str, role: &str| {
        app.send(
            app.request(Method::PATCH, &member(user), Some(token))
                .json(&json!({ "role": role })),
        )
        .await
    };

    // An admin manages developers and members, not owners.
    let promoted = set_role(&admin, &dev_id, "admin").await;
    assert_eq!(promoted.assert_status(200)["role"], "admin");
    set_role(&admin, &dev_id, "owner")
        .await
        .assert_problem(403, "owner_required");
    set_role(&admin, &owner_id, "member")
        .await
        .assert_problem(403, "owner_required");
    set_role(&admin, &dev_id, "root")
        .await
        .assert_problem(400, "invalid_role");
    set_role(&admin, &uuid::Uuid::new_v4().to_string(), "member")
        .await
        .assert_problem(404, "member_not_found");
    // The last owner stays one.
    set_role(&owner, &owner_id, "admin")
        .await
        .assert_problem(409, "last_owner");
    app.send(app.request(Method::DELETE, &member(&owner_id), Some(&owner)))
        .await
        .assert_problem(409, "last_owner");
    // A developer changes nobody, but may leave.
    set_role(&owner, &dev_id, "developer")
        .await
        .assert_status(200);
    set_role(&dev, &admin_id, "member")
        .await
        .assert_problem(403, "insufficient_scope");
    app.send(app.request(Method::DELETE, &member(&dev_id), Some(&dev)))
        .await
        .assert_status(204);
    signed_in(&app, &dev, Method::GET, "/v1/accounts/me", Some(&account))
        .await
        .assert_problem(403, "not_a_member");
    // With a second owner, the first may step down.
    set_role(&owner, &admin_id, "owner")
        .await
        .assert_status(200);
    set_role(&admin, &owner_id, "member")
        .await
        .assert_status(200);
    let mut roles: Vec<(String, String)> = signed_in(
        &app,
        &admin,
        Method::GET,
        &format!("/v1/accounts/{account}/members"),
        None,
    )
    .await
    .assert_status(200)["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["user_id"].as_str().unwrap().to_owned(),
                m["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    roles.sort();
    let mut expected = vec![
        (owner_id.clone(), "member".to_owned()),
        (admin_id.clone(), "owner".to_owned()),
    ];
    expected.sort();
    assert_eq!(roles, expected);
    // The demoted owner's session has the member's scopes at once.
    signed_in(&app, &owner, Method::GET, "/v1/audit", Some(&account))
        .await
        .assert_problem(403, "insufficient_scope");

    let audit = signed_in(
        &app,
        &admin,
        Method::GET,
        "/v1/audit?limit=100",
        Some(&account),
    )
    .await;
    let actions: Vec<String> = audit
        .assert_status(200)
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"].as_str().unwrap().starts_with("member."))
        .map(|r| {
            format!(
                "{} {}",
                r["action"].as_str().unwrap(),
                r["resource_id"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(
        actions.contains(&format!("member.remove {dev_id}")),
        "{actions:?}"
    );
    assert_eq!(
        actions
            .iter()
            .filter(|a| a.starts_with("member.role_change"))
            .count(),
        // The two additions through the store, then four changes.
        2 + 4,
        "{actions:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_a_member_stops_their_sessions_on_every_replica_within_a_second() {
    let provider = OidcProvider::shared().await;
    let app = app_signing_in_with(provider).await;
    let replica = app
        .replica(&[
            ("D2__AUTH__IDP__ISSUER", provider.issuer()),
            ("D2__AUTH__IDP__AUDIENCE", AUDIENCE),
        ])
        .await;
    let owner = provider.token(&person("Owner")).await;
    let account = create_account(&app, &owner, "Fleet").await;
    let leaver = provider.token(&person("Leaver")).await;
    let leaver_id = me(&app, &leaver).await["user"]["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    add_member(&app, &account, &leaver_id, d2_kernel::Role::Developer).await;

    // Cached on the replica.
    for _ in 0..3 {
        signed_in(
            &replica,
            &leaver,
            Method::GET,
            "/v1/accounts/me",
            Some(&account),
        )
        .await
        .assert_status(200);
    }
    app.send(app.request(
        Method::DELETE,
        &format!("/v1/accounts/{account}/members/{leaver_id}"),
        Some(&owner),
    ))
    .await
    .assert_status(204);
    let mut refused = false;
    for _ in 0..20 {
        let reply = signed_in(
            &replica,
            &leaver,
            Method::GET,
            "/v1/accounts/me",
            Some(&account),
        )
        .await;
        if reply.status.as_u16() == 403 {
            reply.assert_problem(403, "not_a_member");
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        refused,
        "the replica still served the removed member after a second"
    );
}

/// A token like `token` with its header replaced (the signature left as it was).
fn with_header(token: &str, header: &Value) -> String {
    let (_, rest) = token.split_once('.').unwrap();
    format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header.to_string()))
}

fn hs256(secret: &[u8], header: &Value, payload: &Value) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let signature = ring::hmac::sign(&key, signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.as_ref())
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_the_provider_did_not_sign_for_us_are_refused_and_write_nothing() {
    let provider = OidcProvider::shared().await;
    let app = app_signing_in_with(provider).await;
    let victim = person("Victim");
    let good = provider.token(&victim).await;
    let (header, payload) = decode_jwt(&good);

    let other_provider = OidcProvider::start().await;
    let from_elsewhere = other_provider.token(&victim).await;
    let wrong_audience = provider
        .token(&TestUser {
            audience: "https://someone-else.test".into(),
            ..victim.clone()
        })
        .await;
    let unknown_kid = with_header(
        &good,
        &json!({ "alg": "RS256", "kid": "no-such-key", "typ": "at+jwt" }),
    );
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({ "alg": "none" }).to_string()),
        good.split('.').nth(1).unwrap()
    );
    let none_signed = format!("{none}c2ln");
    let jwks = provider.jwks().await;
    let rsa = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .unwrap()
        .clone();
    let hs_with_public_key = hs256(
        rsa.to_string().as_bytes(),
        &json!({ "alg": "HS256", "kid": header["kid"] }),
        &payload,
    );
    let hs_with_modulus = hs256(
        &URL_SAFE_NO_PAD.decode(rsa["n"].as_str().unwrap()).unwrap(),
        &json!({ "alg": "HS256", "kid": header["kid"] }),
        &payload,
    );
    let mut tampered_payload = payload.clone();
    tampered_payload["sub"] = json!("someone-else");
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(tampered_payload.to_string()),
        parts[2]
    );

    for (what, token) in [
        ("another issuer", from_elsewhere.as_str()),
        ("another audience", wrong_audience.as_str()),
        ("an unknown kid", unknown_kid.as_str()),
        ("alg none", none.as_str()),
        ("alg none, signed", none_signed.as_str()),
        (
            "HS256 keyed with the public JWK",
            hs_with_public_key.as_str(),
        ),
        ("HS256 keyed with the modulus", hs_with_modulus.as_str()),
        ("a tampered payload", tampered.as_str()),
    ] {
        let reply = signed_in(&app, token, Method::GET, "/v1/users/me", None).await;
        reply.assert_problem(401, "invalid_token");
        assert!(!reply.text.contains(token), "{what}: the token is echoed");
        let post = app
            .send(
                app.request(Method::POST, "/v1/accounts", Some(token))
                    .json(&json!({ "name": "Nope" })),
            )
            .await;
        assert_eq!(post.status.as_u16(), 401, "{what}: {}", post.text);
    }

    // Expired: past `exp` and the leeway, by the server's clock.
    let short = provider.token(&person("Brief").ttl_seconds(60)).await;
    signed_in(&app, &short, Method::GET, "/v1/users/me", None)
        .await
        .assert_status(200);
    app.advance(120);
    signed_in(&app, &short, Method::GET, "/v1/users/me", None)
        .await
        .assert_problem(401, "token_expired");

    // Nothing refused was recorded: the victim's first sign-in is the one below.
    let first = me(&app, &good).await;
    assert_eq!(
        first["user"]["created_at"],
        first["user"]["last_sign_in_at"]
    );
    assert_eq!(first["accounts"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_keep_working_across_a_rotation_of_the_providers_keys() {
    let provider = OidcProvider::start().await;
    let app = app_signing_in_with(&provider).await;
    for alg in ["RS256", "ES256", "EdDSA"] {
        let token = provider.token(&person(alg).alg(alg)).await;
        me(&app, &token).await;
    }
    let before = provider.token(&person("Before")).await;
    let account = create_account(&app, &before, "Rotation").await;
    let kids = provider.rotate_keys().await;
    let after = provider.token(&person("After")).await;
    assert!(kids.contains(&decode_jwt(&after).0["kid"].as_str().unwrap().to_owned()));
    // The new key is fetched on first sight; the old token still verifies, here and on a
    // replica that never saw it.
    me(&app, &after).await;
    signed_in(
        &app,
        &before,
        Method::GET,
        "/v1/accounts/me",
        Some(&account),
    )
    .await
    .assert_status(200);
    let fresh = app
        .replica(&[
            ("D2__AUTH__IDP__ISSUER", provider.issuer()),
            ("D2__AUTH__IDP__AUDIENCE", AUDIENCE),
        ])
        .await;
    signed_in(
        &fresh,
        &before,
        Method::GET,
        "/v1/accounts/me",
        Some(&account),
    )
    .await
    .assert_status(200);
    me(&fresh, &after).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_routes_take_the_agent_token_header_like_the_others() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    for path in [
        "/v1/accounts/me",
        "/.well-known/jwks.json",
        "/v1/policy/bundle?app_name=none",
    ] {
        let with_agent_header = app
            .send(
                app.request(Method::GET, path, None)
                    .header("X-Agent-Token", &tenant.token),
            )
            .await;
        assert_ne!(
            with_agent_header.status.as_u16(),
            401,
            "{path}: {}",
            with_agent_header.text
        );
    }
    app.send(
        app.request(Method::GET, "/v1/accounts/me", None)
            .header("X-Agent-Token", "d2_nope"),
    )
    .await
    .assert_problem(401, "invalid_token");
    // Without sign-in configured, a JWT is refused as such.
    let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
    app.get("/v1/users/me", jwt)
        .await
        .assert_problem(401, "invalid_token");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_first_requests_of_one_sign_in_make_one_person() {
    let provider = OidcProvider::shared().await;
    let app = app_signing_in_with(provider).await;
    let owner = provider.token(&person("Owner")).await;
    let account = create_account(&app, &owner, "Busy").await;
    // A person opening a dashboard: many requests at once with a token never seen before.
    let fresh = provider.token(&person("Fresh")).await;
    let replies = futures_util::future::join_all(
        (0..30).map(|_| signed_in(&app, &fresh, Method::GET, "/v1/users/me", None)),
    )
    .await;
    let ids: BTreeSet<String> = replies
        .iter()
        .map(|reply| {
            reply.assert_status(200)["user"]["user_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one person: {ids:?}");
    // And the owner's concurrent requests in their account all pass.
    let replies = futures_util::future::join_all(
        (0..30).map(|_| signed_in(&app, &owner, Method::GET, "/v1/accounts/me", Some(&account))),
    )
    .await;
    for reply in replies {
        reply.assert_status(200);
    }
}
