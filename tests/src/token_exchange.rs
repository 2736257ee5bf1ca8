//! Tokens under delegation through the real server: an agent acting for a principal under
//! a grant (`client_credentials` with `delegation_id`), a sub-agent one level deeper by an
//! RFC 8693 token exchange with a nested `act`, introspection naming the chain, and
//! revocation that follows the chain on every replica; every way of asking for more than
//! the chain allows refused with nothing issued.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::delegations::{API, agent_with, audited, by, principal, tool};
use crate::harness::{Reply, Tenant, TestApp};
use crate::oauth::{Client, client_credentials, form, issuer, published_key, verified_claims};
use crate::oidc::{OidcProvider, TestUser};
use crate::people::AUDIENCE;

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// A refused request: why, by whom, its form, and the error expected (with a fragment of
/// its description after `: `, when it matters which refusal it is).
type Case<'a, Form> = (&'a str, &'a Client, Form, &'a str);

/// Holds `reply` to what the case `why` expects: `error`, or `error: fragment` of its
/// description.
fn assert_case(why: &str, reply: &Reply, expected: &str) {
    let (error, description) = expected.split_once(": ").unwrap_or((expected, ""));
    assert_eq!(reply.status.as_u16(), 400, "{why}: {}", reply.text);
    assert_eq!(reply.body["error"], error, "{why}: {}", reply.text);
    let said = reply.body["error_description"].as_str().unwrap();
    assert!(said.contains(description), "{why}: {said}");
}

/// Makes a grant and answers its id.
async fn grant(app: &TestApp, tenant: &Tenant, body: Value) -> String {
    let reply = app.post("/v1/delegations", &tenant.token, body).await;
    reply.assert_status(201)["delegation_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn token(app: &TestApp, tenant: &Tenant, client: &Client, fields: &[(&str, &str)]) -> Reply {
    form(app, tenant, "token", Some(client), fields).await
}

pub(crate) fn access_token(reply: &Reply) -> String {
    reply.assert_status(200)["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub(crate) async fn introspect(
    app: &TestApp,
    tenant: &Tenant,
    caller: &Client,
    text: &str,
) -> Value {
    let reply = form(app, tenant, "introspect", Some(caller), &[("token", text)]).await;
    reply.assert_status(200).clone()
}

async fn claims(app: &TestApp, tenant: &Tenant, jwt: &str) -> Value {
    let jwks_uri = format!("{}/jwks", issuer(app, tenant));
    verified_claims(&jwks_uri, jwt, "RS256").await.0
}

fn assert_refused(reply: &Reply, error: &str) {
    assert_eq!(reply.status.as_u16(), 400, "{}", reply.text);
    assert_eq!(reply.body["error"], error, "{}", reply.text);
    assert!(reply.body["error_description"].is_string());
}

/// A principal, a planner and a researcher (each bound to `search.web` and `mail.send`),
/// the principal's grant to the planner (`search.web` only, two agents deep) and the
/// planner's grant to the researcher.
pub(crate) struct Chain {
    pub ada: String,
    pub planner: Client,
    pub researcher: Client,
    pub to_planner: String,
    pub to_researcher: String,
}

pub(crate) async fn chain(app: &TestApp, tenant: &Tenant, max_depth: u8) -> Chain {
    let ada = principal(app, tenant, "ada").await;
    let planner = agent_with(
        app,
        tenant,
        "planner",
        json!(["tools:execute", "reports.read"]),
    )
    .await;
    let researcher = agent_with(
        app,
        tenant,
        "researcher",
        json!(["tools:read", "reports.read"]),
    )
    .await;
    tool(app, tenant, "search.web", &[&planner, &researcher]).await;
    tool(app, tenant, "mail.send", &[&planner, &researcher]).await;
    let to_planner = grant(
        app,
        tenant,
        json!({"grantor": by("principal", &ada), "agent_id": planner.id,
               "scopes": ["reports.read", "tools:execute"], "tools": ["search.web"],
               "resources": [API], "max_depth": max_depth, "expires_in": 3600}),
    )
    .await;
    let to_researcher = grant(
        app,
        tenant,
        json!({"grantor": by("agent", &planner.id), "agent_id": researcher.id,
               "scopes": ["reports.read", "tools:read"]}),
    )
    .await;
    Chain {
        ada,
        planner,
        researcher,
        to_planner,
        to_researcher,
    }
}

/// The planner's token acting for the principal.
pub(crate) async fn planner_token(app: &TestApp, tenant: &Tenant, chain: &Chain) -> Reply {
    token(
        app,
        tenant,
        &chain.planner,
        &[
            ("grant_type", "client_credentials"),
            ("delegation_id", &chain.to_planner),
        ],
    )
    .await
}

/// The researcher's exchange of `subject` with its own token as the actor token.
pub(crate) async fn exchange(
    app: &TestApp,
    tenant: &Tenant,
    actor: &Client,
    subject: &str,
    extra: &[(&str, &str)],
) -> Reply {
    let own = access_token(&client_credentials(app, tenant, actor).await);
    let mut fields = vec![
        ("grant_type", EXCHANGE),
        ("subject_token", subject),
        ("subject_token_type", ACCESS),
        ("actor_token", own.as_str()),
        ("actor_token_type", ACCESS),
    ];
    fields.extend_from_slice(extra);
    token(app, tenant, actor, &fields).await
}

/// Whether `replica` answers `jwt` inactive within a second (revocations reach every
/// replica through the change feed).
async fn turns_inactive_within_a_second(
    replica: &TestApp,
    tenant: &Tenant,
    caller: &Client,
    jwt: &str,
) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(1) {
        if introspect(replica, tenant, caller, jwt).await["active"] != true {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn tool_access(
    app: &TestApp,
    tenant: &Tenant,
    caller: &Client,
    text: &str,
    name: &str,
) -> Value {
    let reply = form(
        app,
        tenant,
        "verify-tool-access",
        Some(caller),
        &[("token", text), ("tool", name)],
    )
    .await;
    reply.assert_status(200).clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_principal_delegates_to_an_agent_which_hands_on_and_revoking_the_grant_follows_the_chain()
{
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let replica = app.replica(&[]).await;
    let chain = chain(&app, &tenant, 2).await;

    // The planner acts for ada: `sub` is ada, `act` the planner, the scopes the grant's
    // (expanded), the audience the grant's resource, the tools the grant's.
    let first = planner_token(&app, &tenant, &chain).await;
    let first = first.assert_status(200).clone();
    let planner_jwt = first["access_token"].as_str().unwrap().to_owned();
    let planner_claims = claims(&app, &tenant, &planner_jwt).await;
    assert_eq!(planner_claims["sub"], chain.ada.as_str());
    assert_eq!(planner_claims["client_id"], chain.planner.id.as_str());
    assert_eq!(planner_claims["act"], json!({"sub": chain.planner.id}));
    assert_eq!(planner_claims["delegation_id"], chain.to_planner.as_str());
    assert_eq!(planner_claims["aud"], API);
    assert_eq!(
        planner_claims["scope"],
        "reports.read tools:execute tools:read"
    );
    let seen = introspect(&app, &tenant, &chain.researcher, &planner_jwt).await;
    assert_eq!(seen["active"], true);
    assert_eq!(seen["sub"], chain.ada.as_str());
    assert_eq!(seen["principal_id"], chain.ada.as_str());
    assert_eq!(seen["depth"], 1);
    assert_eq!(seen["delegation_id"], chain.to_planner.as_str());
    assert_eq!(seen["act"], json!({"sub": chain.planner.id}));
    let allowed = tool_access(&app, &tenant, &chain.researcher, &planner_jwt, "search.web").await;
    assert_eq!(allowed["allowed"], true, "{allowed}");
    let outside = tool_access(&app, &tenant, &chain.researcher, &planner_jwt, "mail.send").await;
    assert_eq!(outside["allowed"], false);
    assert_eq!(outside["reason"], "not_delegated");

    // A refresh keeps acting for ada.
    let refresh = first["refresh_token"].as_str().unwrap();
    let refreshed = token(
        &app,
        &tenant,
        &chain.planner,
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    let refreshed = refreshed.assert_status(200).clone();
    let refreshed_claims = claims(&app, &tenant, refreshed["access_token"].as_str().unwrap()).await;
    assert_eq!(refreshed_claims["sub"], chain.ada.as_str());
    assert_eq!(refreshed_claims["act"], json!({"sub": chain.planner.id}));

    // The researcher exchanges the planner's token: one level deeper, the scopes those
    // of the subject token the planner's grant to it allows, the task handed on.
    let deeper = exchange(
        &app,
        &tenant,
        &chain.researcher,
        &planner_jwt,
        &[("scope", "tools:read"), ("resource", API)],
    )
    .await;
    let deeper = deeper.assert_status(200).clone();
    assert_eq!(deeper["issued_token_type"], ACCESS);
    assert_eq!(deeper["scope"], "tools:read");
    assert_eq!(deeper["parent_task_id"], first["task_id"]);
    let researcher_jwt = deeper["access_token"].as_str().unwrap().to_owned();
    let researcher_claims = claims(&app, &tenant, &researcher_jwt).await;
    assert_eq!(researcher_claims["sub"], chain.ada.as_str());
    assert_eq!(researcher_claims["client_id"], chain.researcher.id.as_str());
    assert_eq!(
        researcher_claims["act"],
        json!({"sub": chain.researcher.id, "act": {"sub": chain.planner.id}})
    );
    let seen = introspect(&replica, &tenant, &chain.planner, &researcher_jwt).await;
    assert_eq!(seen["active"], true);
    assert_eq!(seen["depth"], 2);
    assert_eq!(seen["delegation_id"], chain.to_researcher.as_str());
    assert_eq!(seen["parent_task_id"], first["task_id"]);
    assert_eq!(seen["grant_type"], EXCHANGE);
    // `verify` follows the lineage across the exchange to the planner's token.
    let verified = form(
        &app,
        &tenant,
        "verify",
        Some(&chain.planner),
        &[("token", researcher_jwt.as_str())],
    )
    .await;
    let verified = verified.assert_status(200);
    assert_eq!(verified["valid"], true, "{verified}");
    assert_eq!(verified["lineage"][0]["jti"], first["token_id"]);
    assert_eq!(verified["lineage"].as_array().unwrap().len(), 1);
    // Asking for more than the subject token carries widens nothing: refused.
    let wider = exchange(
        &app,
        &tenant,
        &chain.researcher,
        &planner_jwt,
        &[("scope", "tools:execute")],
    )
    .await;
    assert_refused(&wider, "invalid_scope");

    // Revoking ada's grant revokes the planner's tokens and the researcher's, here at once
    // and on the other replica within a second.
    let revoked = app
        .delete(
            &format!("/v1/delegations/{}", chain.to_planner),
            &tenant.token,
        )
        .await;
    assert_eq!(revoked.assert_status(200)["status"], "revoked");
    for jwt in [&planner_jwt, &researcher_jwt] {
        let seen = introspect(&app, &tenant, &chain.researcher, jwt).await;
        crate::harness::assert_revoked(&seen, "delegation_revoked");
    }
    assert!(
        turns_inactive_within_a_second(&replica, &tenant, &chain.planner, &researcher_jwt).await,
        "the other replica still accepted the token a second later"
    );
    let record = app
        .audit(&tenant)
        .await
        .into_iter()
        .find(|r| r["action"] == "delegation.revoke")
        .unwrap();
    let named = record["metadata"]["revoked_tokens"]
        .as_array()
        .unwrap()
        .clone();
    for id in [
        &first["token_id"],
        &deeper["token_id"],
        &refreshed["token_id"],
    ] {
        assert!(named.contains(id), "{id} is not named in {record}");
    }
    // The refresh token went with them.
    let next = refreshed["refresh_token"].as_str().unwrap();
    let after = token(
        &app,
        &tenant,
        &chain.planner,
        &[("grant_type", "refresh_token"), ("refresh_token", next)],
    )
    .await;
    assert_refused(&after, "invalid_grant");
}

#[tokio::test(flavor = "multi_thread")]
async fn deactivating_the_principal_revokes_every_token_acting_for_it() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let chain = chain(&app, &tenant, 2).await;
    let planner_jwt = access_token(&planner_token(&app, &tenant, &chain).await);
    let deeper = exchange(&app, &tenant, &chain.researcher, &planner_jwt, &[]).await;
    let researcher_jwt = access_token(&deeper);
    let own = access_token(&client_credentials(&app, &tenant, &chain.researcher).await);

    let path = format!("/v1/users/{}", chain.ada);
    app.send(
        app.request(Method::PUT, &path, Some(&tenant.token))
            .json(&json!({"username": "ada", "active": false})),
    )
    .await
    .assert_status(200);
    for jwt in [&planner_jwt, &researcher_jwt] {
        let seen = introspect(&app, &tenant, &chain.researcher, jwt).await;
        crate::harness::assert_revoked(&seen, "principal_inactive");
    }
    assert_eq!(
        introspect(&app, &tenant, &chain.planner, &own).await["active"],
        true,
        "the researcher's own token acts for no one"
    );
    let refused = planner_token(&app, &tenant, &chain).await;
    assert_refused(&refused, "invalid_grant");
}

#[tokio::test(flavor = "multi_thread")]
async fn asking_for_more_than_the_chain_allows_is_refused_with_nothing_issued() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let other = app.bootstrap().await;
    // One agent deep only: the planner may not hand on.
    let chain = chain(&app, &tenant, 1).await;
    let planner_jwt = access_token(&planner_token(&app, &tenant, &chain).await);
    let researcher_own = access_token(&client_credentials(&app, &tenant, &chain.researcher).await);
    let stranger = agent_with(&app, &other, "stranger", json!(["tools:read"])).await;
    let strangers = access_token(&client_credentials(&app, &other, &stranger).await);
    let bystander = agent_with(&app, &tenant, "bystander", json!(["tools:read"])).await;
    let pinned = token(
        &app,
        &tenant,
        &chain.planner,
        &[
            ("grant_type", "client_credentials"),
            ("delegation_id", &chain.to_planner),
            ("may_act", &bystander.id),
        ],
    )
    .await;
    let pinned = access_token(&pinned);
    assert_eq!(
        claims(&app, &tenant, &pinned).await["may_act"],
        json!({"sub": bystander.id})
    );
    let issued = audited(&app, &tenant, "oauth.token_issue").await;

    let with = |extra: &[(&'static str, String)]| -> Vec<(String, String)> {
        let mut fields = vec![
            ("grant_type".to_owned(), EXCHANGE.to_owned()),
            ("subject_token".to_owned(), planner_jwt.clone()),
            ("subject_token_type".to_owned(), ACCESS.to_owned()),
        ];
        for (name, value) in extra {
            fields.retain(|(n, _)| n != name);
            fields.push(((*name).to_owned(), value.clone()));
        }
        fields
    };
    let cases: Vec<Case<'_, Vec<(String, String)>>> = vec![
        (
            "deeper than the grant allows",
            &chain.researcher,
            with(&[]),
            "invalid_grant: deep at most",
        ),
        (
            "an actor token of another account",
            &chain.researcher,
            with(&[
                ("actor_token", strangers.clone()),
                ("actor_token_type", ACCESS.to_owned()),
            ]),
            "invalid_grant",
        ),
        (
            "an actor token of another client",
            &chain.researcher,
            with(&[
                ("actor_token", planner_jwt.clone()),
                ("actor_token_type", ACCESS.to_owned()),
            ]),
            "invalid_grant",
        ),
        (
            "a may_act that names another agent",
            &chain.researcher,
            with(&[("subject_token", pinned.clone())]),
            "invalid_grant: the subject token's `may_act`",
        ),
        (
            "no grant from the subject's agent",
            &bystander,
            with(&[]),
            "invalid_grant",
        ),
        (
            "a grant for another agent",
            &bystander,
            with(&[("delegation_id", chain.to_researcher.clone())]),
            "invalid_grant",
        ),
        (
            "a subject token that is no token",
            &chain.researcher,
            with(&[("subject_token", "not-a-token".to_owned())]),
            "invalid_grant",
        ),
        (
            "the client's own token as the subject",
            &chain.researcher,
            with(&[("subject_token", researcher_own.clone())]),
            "invalid_grant",
        ),
        (
            "no subject token type",
            &chain.researcher,
            with(&[])
                .into_iter()
                .filter(|(n, _)| n != "subject_token_type")
                .collect(),
            "invalid_request",
        ),
        (
            "a subject token type D2 does not exchange",
            &chain.researcher,
            with(&[(
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:id_token".to_owned(),
            )]),
            "invalid_request",
        ),
        (
            "an actor token without its type",
            &chain.researcher,
            with(&[("actor_token", researcher_own.clone())]),
            "invalid_request",
        ),
        (
            "a malformed delegation id",
            &chain.researcher,
            with(&[("delegation_id", "nope".to_owned())]),
            "invalid_request",
        ),
        (
            "a parent task of its own",
            &chain.researcher,
            with(&[("parent_task_id", "t-1".to_owned())]),
            "invalid_request",
        ),
    ];
    for (why, client, fields, expected) in cases {
        let pairs: Vec<(&str, &str)> = fields
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let reply = token(&app, &tenant, client, &pairs).await;
        assert_case(why, &reply, expected);
    }

    // Under a grant: a resource it does not name, another task, a grant of another
    // agent, exchange parameters on client credentials.
    fn under<'a>(grant: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut fields = vec![
            ("grant_type", "client_credentials"),
            ("delegation_id", grant),
        ];
        fields.extend_from_slice(extra);
        fields
    }
    let to_planner = chain.to_planner.as_str();
    let grant_cases: Vec<Case<'_, Vec<(&str, &str)>>> = vec![
        (
            "a resource the grant does not name",
            &chain.planner,
            under(to_planner, &[("resource", "https://elsewhere.example/")]),
            "invalid_target",
        ),
        (
            "a grant for another agent",
            &chain.researcher,
            under(to_planner, &[]),
            "invalid_grant",
        ),
        (
            "a scope beyond the grant",
            &chain.planner,
            under(to_planner, &[("scope", "reports.write")]),
            "invalid_scope",
        ),
        (
            "a subject token on client credentials",
            &chain.planner,
            under(to_planner, &[("subject_token", "x")]),
            "invalid_request",
        ),
        (
            "may_act without a grant",
            &chain.planner,
            vec![
                ("grant_type", "client_credentials"),
                ("may_act", chain.researcher.id.as_str()),
            ],
            "invalid_request",
        ),
    ];
    for (why, client, fields, expected) in grant_cases {
        let reply = token(&app, &tenant, client, &fields).await;
        assert_case(why, &reply, expected);
    }
    let tasked = grant(
        &app,
        &tenant,
        json!({"grantor": by("principal", &chain.ada), "agent_id": chain.planner.id,
               "scopes": ["reports.read"], "task_id": "task-7", "expires_in": 60}),
    )
    .await;
    let other_task = token(
        &app,
        &tenant,
        &chain.planner,
        &[
            ("grant_type", "client_credentials"),
            ("delegation_id", &tasked),
            ("task_id", "task-8"),
        ],
    )
    .await;
    assert_refused(&other_task, "invalid_grant");
    assert_eq!(
        audited(&app, &tenant, "oauth.token_issue").await,
        issued,
        "nothing was issued"
    );

    // The grant's own task is the token's; the token never outlives the grant; an
    // expired grant is refused.
    let within = token(
        &app,
        &tenant,
        &chain.planner,
        &[
            ("grant_type", "client_credentials"),
            ("delegation_id", &tasked),
        ],
    )
    .await;
    let within = within.assert_status(200).clone();
    assert_eq!(within["task_id"], "task-7");
    assert!(within["expires_in"].as_u64().unwrap() <= 60, "{within}");
    app.advance(61);
    let expired = token(
        &app,
        &tenant,
        &chain.planner,
        &[
            ("grant_type", "client_credentials"),
            ("delegation_id", &tasked),
        ],
    )
    .await;
    assert_refused(&expired, "invalid_grant");
    assert_eq!(
        introspect(
            &app,
            &tenant,
            &chain.researcher,
            within["access_token"].as_str().unwrap()
        )
        .await,
        json!({"active": false})
    );
}

/// The payload of the account's revocation list `jws`, once its signature checks against
/// the account's `jwks_uri` and its header says what it is.
async fn verified_list(app: &TestApp, tenant: &Tenant, jws: &str) -> Value {
    let jwks_uri = format!("{}/jwks", issuer(app, tenant));
    let header = josekit::jwt::decode_header(jws).unwrap();
    assert_eq!(header.claim("typ"), Some(&json!("revocations+jwt")));
    let (_, jwk) = published_key(&jwks_uri, jws).await;
    let verifier = josekit::jws::RS256.verifier_from_jwk(&jwk).unwrap();
    let (payload, _) = josekit::jws::deserialize_compact(jws, &verifier).unwrap();
    serde_json::from_slice(&payload).unwrap()
}

/// The tenant's revocation list, polled with its admin token (as a fleet polls, clear of
/// the per-IP limit) or anonymously.
async fn revocation_list(
    app: &TestApp,
    tenant: &Tenant,
    if_none_match: Option<&str>,
    anonymous: bool,
) -> Reply {
    let path = format!("/oauth/{}/revocations", tenant.account_id);
    let token = (!anonymous).then_some(tenant.token.as_str());
    let mut request = app.request(Method::GET, &path, token);
    if let Some(etag) = if_none_match {
        request = request.header("If-None-Match", etag);
    }
    app.send(request).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_signed_revocation_list_names_what_was_revoked_on_every_replica() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let replica = app.replica(&[]).await;
    let chain = chain(&app, &tenant, 2).await;
    let planner = planner_token(&app, &tenant, &chain).await;
    let planner = planner.assert_status(200).clone();
    let planner_jwt = planner["access_token"].as_str().unwrap();
    let deeper = exchange(&app, &tenant, &chain.researcher, planner_jwt, &[]).await;
    let deeper = deeper.assert_status(200).clone();

    // Nothing revoked yet: an empty list, signed, with an entity tag a poll names.
    let empty = revocation_list(&app, &tenant, None, true).await;
    let etag = empty.header("etag").unwrap().to_owned();
    assert_eq!(empty.header("cache-control"), Some("no-cache"));
    let body = empty.assert_status(200);
    assert_eq!(format!("\"{}\"", body["etag"].as_str().unwrap()), etag);
    let list = verified_list(&app, &tenant, body["jws"].as_str().unwrap()).await;
    assert_eq!(list["iss"], issuer(&app, &tenant));
    assert_eq!(list["revoked_tokens"], json!([]));
    assert_eq!(list["revoked_delegations"], json!([]));
    let unchanged = revocation_list(&app, &tenant, Some(&etag), true).await;
    assert_eq!(unchanged.status, 304);
    assert_eq!(unchanged.header("etag"), Some(etag.as_str()));
    let on_replica = revocation_list(&replica, &tenant, Some(&etag), false).await;
    assert_eq!(on_replica.status, 304, "the replica builds the same list");

    // Revoking the principal's grant names the grant and both access tokens (refresh
    // tokens are never verified offline), here at once and on the replica within a second.
    app.delete(
        &format!("/v1/delegations/{}", chain.to_planner),
        &tenant.token,
    )
    .await
    .assert_status(200);
    let changed = revocation_list(&app, &tenant, Some(&etag), true).await;
    let changed = changed.assert_status(200).clone();
    let list = verified_list(&app, &tenant, changed["jws"].as_str().unwrap()).await;
    let mut named: Vec<Value> = list["revoked_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["jti"].clone())
        .collect();
    named.sort_by_key(Value::to_string);
    let mut expected = vec![planner["token_id"].clone(), deeper["token_id"].clone()];
    expected.sort_by_key(Value::to_string);
    assert_eq!(named, expected);
    assert_eq!(
        list["revoked_delegations"][0]["delegation_id"],
        chain.to_planner.as_str()
    );
    assert!(list["revoked_delegations"][0]["exp"].is_i64());
    assert_eq!(list["revoked_delegations"].as_array().unwrap().len(), 1);
    let started = Instant::now();
    let mut status = 304;
    while started.elapsed() < Duration::from_secs(1) {
        status = revocation_list(&replica, &tenant, Some(&etag), false)
            .await
            .status
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        status, 200,
        "the replica still served the old list a second later"
    );

    // Another account's list names none of it; an account that does not exist has none.
    let other = app.bootstrap().await;
    let theirs = revocation_list(&app, &other, None, false).await;
    let theirs = verified_list(
        &app,
        &other,
        theirs.assert_status(200)["jws"].as_str().unwrap(),
    )
    .await;
    assert_eq!(theirs["revoked_tokens"], json!([]));
    let nobody = app
        .send(app.request(
            Method::GET,
            &format!("/oauth/{}/revocations", uuid::Uuid::new_v4()),
            None,
        ))
        .await;
    assert_eq!(nobody.status, 404);
    assert_eq!(nobody.body["code"], "account_not_found", "{}", nobody.text);
    let malformed = app
        .send(app.request(Method::GET, "/oauth/not-an-account/revocations", None))
        .await;
    assert_eq!(malformed.status, 400, "{}", malformed.text);
    // A credential is verified: another account's token, or text that is no token, is
    // refused.
    let path = format!("/oauth/{}/revocations", tenant.account_id);
    let foreign = app
        .send(app.request(Method::GET, &path, Some(&other.token)))
        .await;
    assert_eq!(foreign.status, 403, "{}", foreign.text);
    let forged = app
        .send(app.request(Method::GET, &path, Some("d2_not-a-token")))
        .await;
    assert_eq!(forged.status, 401, "{}", forged.text);
}

/// How long a grant's revocation through one server takes to reach another replica's
/// introspection and revocation list: run by hand, figures in `docs/benchmarks.md`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement: cargo test -p d2-e2e --release -- --ignored --nocapture revocation_propagation"]
async fn revocation_propagation() {
    const ROUNDS: usize = 40;
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let replica = app.replica(&[]).await;
    let chain = chain(&app, &tenant, 2).await;
    let mut introspection = Vec::new();
    let mut lists = Vec::new();
    for _ in 0..ROUNDS {
        let grant_id = grant(
            &app,
            &tenant,
            json!({"grantor": by("principal", &chain.ada), "agent_id": chain.planner.id,
                   "scopes": ["reports.read"]}),
        )
        .await;
        let jwt = access_token(
            &token(
                &app,
                &tenant,
                &chain.planner,
                &[
                    ("grant_type", "client_credentials"),
                    ("delegation_id", &grant_id),
                ],
            )
            .await,
        );
        // The replica holds the token's row and the list in memory.
        assert_eq!(
            introspect(&replica, &tenant, &chain.researcher, &jwt).await["active"],
            true
        );
        let listed = revocation_list(&replica, &tenant, None, false).await;
        listed.assert_status(200);
        let etag = listed.header("etag").unwrap().to_owned();
        let revoked = Instant::now();
        app.delete(&format!("/v1/delegations/{grant_id}"), &tenant.token)
            .await
            .assert_status(200);
        let (mut seen_inactive, mut seen_list) = (None, None);
        while seen_inactive.is_none() || seen_list.is_none() {
            if seen_inactive.is_none()
                && introspect(&replica, &tenant, &chain.researcher, &jwt).await["active"] == false
            {
                seen_inactive = Some(revoked.elapsed());
            }
            if seen_list.is_none()
                && revocation_list(&replica, &tenant, Some(&etag), false)
                    .await
                    .status
                    == 200
            {
                seen_list = Some(revoked.elapsed());
            }
            assert!(
                revoked.elapsed() < Duration::from_secs(5),
                "never propagated"
            );
        }
        introspection.extend(seen_inactive);
        lists.extend(seen_list);
    }
    for (what, mut times) in [("introspection", introspection), ("revocation list", lists)] {
        times.sort();
        let at = |q: usize| times[(times.len() - 1) * q / 100];
        println!(
            "{what}: {ROUNDS} revocations, p50 {:?}, p90 {:?}, max {:?}",
            at(50),
            at(90),
            at(100)
        );
    }
}

/// A server taking its people's tokens from the tests' OpenID provider, with `chain`'s
/// principal given the email `ada@example.com`: the chain and ada's token from the
/// provider (verified email unless `verified` is false).
async fn chain_with_a_person() -> (TestApp, Tenant, Chain, &'static OidcProvider) {
    let provider = OidcProvider::shared().await;
    let app = TestApp::spawn_with(&[
        ("D2__AUTH__IDP__ISSUER", provider.issuer()),
        ("D2__AUTH__IDP__AUDIENCE", AUDIENCE),
        // The server's clock stands still while the provider's runs.
        ("D2__AUTH__IDP__LEEWAY_SECONDS", "600"),
    ])
    .await;
    let tenant = app.bootstrap().await;
    let chain = chain(&app, &tenant, 2).await;
    let path = format!("/v1/users/{}", chain.ada);
    let body = json!({"username": "ada", "email": "Ada@Example.com"});
    app.send(
        app.request(Method::PUT, &path, Some(&tenant.token))
            .json(&body),
    )
    .await
    .assert_status(200);
    (app, tenant, chain, provider)
}

async fn person_token(provider: &OidcProvider, email: &str, verified: bool) -> String {
    let user = TestUser::new(format!("sub-{email}"), AUDIENCE)
        .email(email)
        .email_verified(verified);
    provider.token(&user).await
}

/// `actor` exchanges a person's token from the identity provider.
async fn exchange_person(
    app: &TestApp,
    tenant: &Tenant,
    actor: &Client,
    person: &str,
    extra: &[(&str, &str)],
) -> Reply {
    let mut fields = vec![
        ("grant_type", EXCHANGE),
        ("subject_token", person),
        ("subject_token_type", JWT),
    ];
    fields.extend_from_slice(extra);
    token(app, tenant, actor, &fields).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_persons_token_from_the_identity_provider_starts_a_chain_of_two_exchanges() {
    let (app, tenant, chain, provider) = chain_with_a_person().await;
    let replica = app.replica(&[]).await;
    let ada = person_token(provider, "ada@example.com", true).await;

    // The planner acts for ada: the first exchange.
    let planner = exchange_person(&app, &tenant, &chain.planner, &ada, &[]).await;
    let planner = access_token(&planner);
    let planner_claims = claims(&app, &tenant, &planner).await;
    assert_eq!(planner_claims["sub"], chain.ada.as_str());
    assert_eq!(planner_claims["act"], json!({ "sub": chain.planner.id }));
    assert_eq!(planner_claims["delegation_id"], chain.to_planner.as_str());

    // The researcher acts for her after the planner: the second.
    let researcher = access_token(&exchange(&app, &tenant, &chain.researcher, &planner, &[]).await);
    let researcher_claims = claims(&app, &tenant, &researcher).await;
    assert_eq!(researcher_claims["sub"], chain.ada.as_str());
    assert_eq!(
        researcher_claims["act"],
        json!({ "sub": chain.researcher.id, "act": { "sub": chain.planner.id } })
    );
    let seen = introspect(&replica, &tenant, &chain.planner, &researcher).await;
    assert_eq!(seen["active"], true);
    assert_eq!(seen["depth"], 2);
    assert_eq!(seen["principal_id"], chain.ada.as_str());
    let allowed = tool_access(&app, &tenant, &chain.researcher, &researcher, "search.web").await;
    assert_eq!(allowed["allowed"], true, "{allowed}");

    // Revoking ada's grant to the planner stops the researcher's token on the other
    // replica within a second.
    let path = format!("/v1/delegations/{}", chain.to_planner);
    app.delete(&path, &tenant.token).await.assert_status(200);
    assert!(
        turns_inactive_within_a_second(&replica, &tenant, &chain.planner, &researcher).await,
        "the other replica still accepted the token a second later"
    );
    // And her token no longer starts a chain.
    let again = exchange_person(&app, &tenant, &chain.planner, &ada, &[]).await;
    assert_refused(&again, "invalid_grant");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_persons_token_that_proves_no_principal_with_a_grant_is_refused() {
    let (app, tenant, chain, provider) = chain_with_a_person().await;
    let unverified = person_token(provider, "ada@example.com", false).await;
    let stranger = person_token(provider, "eve@example.com", true).await;
    let ada = person_token(provider, "ada@example.com", true).await;
    let other_audience = provider
        .token(
            &TestUser::new("sub-ada", "https://elsewhere.example")
                .email("ada@example.com")
                .email_verified(true),
        )
        .await;
    for (why, client, subject, error) in [
        (
            "an unverified email",
            &chain.planner,
            unverified.as_str(),
            "invalid_grant",
        ),
        (
            "no principal has the email",
            &chain.planner,
            stranger.as_str(),
            "invalid_grant",
        ),
        (
            "a token for another audience",
            &chain.planner,
            other_audience.as_str(),
            "invalid_grant",
        ),
        ("not a JWT", &chain.planner, "garbage", "invalid_grant"),
        (
            "no grant from her to this agent",
            &chain.researcher,
            ada.as_str(),
            "invalid_grant",
        ),
    ] {
        let reply = exchange_person(&app, &tenant, client, subject, &[]).await;
        assert_eq!(reply.status.as_u16(), 400, "{why}: {}", reply.text);
        assert_eq!(reply.body["error"], error, "{why}: {}", reply.text);
    }
    let widened = exchange_person(
        &app,
        &tenant,
        &chain.planner,
        &ada,
        &[("scope", "agents:write")],
    )
    .await;
    assert_refused(&widened, "invalid_scope");
    assert_eq!(audited(&app, &tenant, "oauth.token_issue").await, 0);

    // A server without an identity provider takes no person's token.
    let plain = TestApp::spawn().await;
    let tenant = plain.bootstrap().await;
    let agent = agent_with(&plain, &tenant, "a", json!(["tools:read"])).await;
    let reply = exchange_person(&plain, &tenant, &agent, &ada, &[]).await;
    assert_refused(&reply, "invalid_request");
}
