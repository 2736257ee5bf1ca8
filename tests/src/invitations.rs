//! Invitations through the real server: a person invited by email joins once, with the
//! role given; mailed through a real SMTP server by the task queue when one is configured.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::TestApp;
use crate::oidc::OidcProvider;
use crate::people::{AUDIENCE, app_signing_in_with, create_account, me, person, signed_in};
use crate::smtp::OwnSmtp;

async fn invite(app: &TestApp, token: &str, account: &str, body: Value) -> crate::harness::Reply {
    app.send(
        app.request(Method::POST, "/v1/invitations", Some(token))
            .header("X-Org-ID", account)
            .json(&body),
    )
    .await
}

async fn accept(app: &TestApp, session: &str, token: &str) -> crate::harness::Reply {
    app.send(
        app.request(Method::POST, "/public/invitations/accept", Some(session))
            .json(&json!({ "token": token })),
    )
    .await
}

async fn public(app: &TestApp, token: &str) -> crate::harness::Reply {
    app.send(
        app.request(Method::GET, &format!("/public/invitations/{token}"), None)
            .header("Origin", "https://dashboard.elsewhere.test"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invited_person_joins_once_with_the_role_given() {
    let provider = OidcProvider::shared().await;
    let app = app_signing_in_with(provider).await;
    let owner = provider.token(&person("Olive")).await;
    let account = create_account(&app, &owner, "Invited Co").await;
    let ada = person("Ada");
    let email = ada.email.clone().unwrap();

    let invited = invite(
        &app,
        &owner,
        &account,
        json!({ "email": email.to_uppercase(), "role": "developer" }),
    )
    .await;
    let body = invited.assert_status(201).clone();
    assert_eq!(invited.header("cache-control"), Some("no-store"));
    assert_eq!(body["mailed"], false);
    assert_eq!(body["role"], "developer");
    let token = body["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("d2inv_"));
    assert_eq!(
        body["accept_url"],
        format!("http://localhost:8080/invitations/accept?token={token}")
    );
    let pending = signed_in(&app, &owner, Method::GET, "/v1/invitations", Some(&account)).await;
    let pending = pending.assert_status(200)["invitations"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(pending.len(), 1);
    assert!(
        pending[0].get("token").is_none(),
        "the token is answered once"
    );

    // The acceptance page's view: public, any origin, nothing but what it shows.
    let shown = public(&app, &token).await;
    assert_eq!(shown.header("access-control-allow-origin"), Some("*"));
    assert_eq!(shown.header("access-control-allow-credentials"), None);
    let shown = shown.assert_status(200).clone();
    let mut keys: Vec<&String> = shown.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["account_name", "expires_at", "inviter_name", "role"]);
    assert_eq!(shown["account_name"], "Invited Co");
    assert_eq!(shown["inviter_name"], "Olive");
    assert_eq!(shown["role"], "developer");
    let preflight = app
        .send(
            app.request(Method::OPTIONS, "/public/invitations/accept", None)
                .header("Origin", "https://dashboard.elsewhere.test")
                .header("Access-Control-Request-Method", "POST")
                .header(
                    "Access-Control-Request-Headers",
                    "authorization, content-type",
                ),
        )
        .await;
    assert_eq!(preflight.status.as_u16(), 204);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));

    // Someone else, or the right email unverified, cannot use it.
    let mallory = provider.token(&person("Mallory")).await;
    accept(&app, &mallory, &token)
        .await
        .assert_problem(403, "invitation_email_mismatch");
    let unverified = provider
        .token(&person("Ada").email(email.clone()).email_verified(false))
        .await;
    accept(&app, &unverified, &token)
        .await
        .assert_problem(403, "invitation_email_mismatch");
    // API tokens are not people.
    let tenant = app.bootstrap().await;
    accept(&app, &tenant.token, &token)
        .await
        .assert_problem(403, "user_session_required");

    let session = provider.token(&ada).await;
    let joined = accept(&app, &session, &token).await;
    let joined = joined.assert_status(200).clone();
    assert_eq!(
        joined,
        json!({ "account_id": account, "account_name": "Invited Co", "role": "developer" })
    );
    let mine = me(&app, &session).await;
    assert_eq!(mine["accounts"][0]["account_id"], account);
    assert_eq!(mine["accounts"][0]["role"], "developer");
    // A developer session acts in the account now.
    signed_in(
        &app,
        &session,
        Method::GET,
        "/v1/policy/apps",
        Some(&account),
    )
    .await
    .assert_status(200);

    // Single use.
    accept(&app, &session, &token)
        .await
        .assert_problem(410, "invitation_used");
    accept(&app, &mallory, &token)
        .await
        .assert_problem(410, "invitation_used");
    public(&app, &token)
        .await
        .assert_problem(410, "invitation_used");
    public(&app, "d2inv_nope")
        .await
        .assert_problem(404, "invitation_not_found");
    accept(&app, &session, "not-a-token")
        .await
        .assert_problem(404, "invitation_not_found");
    assert!(
        signed_in(&app, &owner, Method::GET, "/v1/invitations", Some(&account))
            .await
            .assert_status(200)["invitations"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let audit = signed_in(&app, &owner, Method::GET, "/v1/audit", Some(&account)).await;
    let actions: Vec<&str> = audit
        .assert_status(200)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"invitation.create"), "{actions:?}");
    assert!(actions.contains(&"invitation.accept"), "{actions:?}");
    let logs = crate::harness::captured_logs();
    assert!(!logs.contains(&token), "the token is never logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn invitations_are_refused_clearly_and_write_nothing() {
    let provider = OidcProvider::shared().await;
    let app = app_signing_in_with(provider).await;
    let owner_user = person("Owner");
    let owner = provider.token(&owner_user).await;
    let account = create_account(&app, &owner, "Strict Co").await;
    let other = create_account(&app, &owner, "Other Co").await;

    for (body, status, code) in [
        (
            json!({ "email": "not an email", "role": "member" }),
            400,
            "invalid_email",
        ),
        (
            json!({ "email": "x@y.test", "role": "root" }),
            400,
            "invalid_role",
        ),
        (
            json!({ "email": owner_user.email.clone().unwrap(), "role": "member" }),
            409,
            "already_member",
        ),
    ] {
        invite(&app, &owner, &account, body)
            .await
            .assert_problem(status, code);
    }
    let reply = invite(&app, &owner, &account, json!({ "email": "x@y.test" })).await;
    assert_eq!(reply.status.as_u16(), 400, "{}", reply.text);

    // A trial allows two members: the owner and one pending invitation.
    let first = invite(
        &app,
        &owner,
        &account,
        json!({ "email": "first@strict.test", "role": "admin" }),
    )
    .await;
    let first = first.assert_status(201).clone();
    invite(
        &app,
        &owner,
        &account,
        json!({ "email": "FIRST@strict.test", "role": "member" }),
    )
    .await
    .assert_problem(409, "already_invited");
    invite(
        &app,
        &owner,
        &account,
        json!({ "email": "second@strict.test", "role": "member" }),
    )
    .await
    .assert_problem(402, "member_limit");

    // Cancelled by another account's admin: not found there; by its own: gone for good.
    let id = first["invitation_id"].as_str().unwrap();
    app.send(
        app.request(
            Method::DELETE,
            &format!("/v1/invitations/{id}"),
            Some(&owner),
        )
        .header("X-Org-ID", &other),
    )
    .await
    .assert_problem(404, "invitation_not_found");
    app.send(
        app.request(
            Method::DELETE,
            &format!("/v1/invitations/{id}"),
            Some(&owner),
        )
        .header("X-Org-ID", &account),
    )
    .await
    .assert_status(204);
    let token = first["token"].as_str().unwrap();
    public(&app, token)
        .await
        .assert_problem(410, "invitation_used");
    // Cancelled, it frees its place.
    let second = invite(
        &app,
        &owner,
        &account,
        json!({ "email": "second@strict.test", "role": "member" }),
    )
    .await;
    let second_token = second.assert_status(201)["token"]
        .as_str()
        .unwrap()
        .to_owned();

    // An admin does not invite owners.
    let tenant = app.bootstrap().await;
    let (admin_token, _) = app.issue(&tenant, json!({ "kind": "admin" })).await;
    app.send(
        app.request(Method::POST, "/v1/invitations", Some(&admin_token))
            .json(&json!({ "email": "boss@t.test", "role": "owner" })),
    )
    .await
    .assert_problem(403, "owner_required");

    // Expired after seven days, by the server's clock.
    app.advance(7 * 24 * 3600 + 1);
    public(&app, &second_token)
        .await
        .assert_problem(410, "invitation_expired");
    let invitee = provider
        .token(
            &person("Second")
                .email("second@strict.test")
                .ttl_seconds(30 * 24 * 3600),
        )
        .await;
    accept(&app, &invitee, &second_token)
        .await
        .assert_problem(410, "invitation_expired");
    assert_eq!(
        me(&app, &invitee).await["accounts"],
        json!([]),
        "nothing joined"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_mail_server_the_invitation_is_mailed_after_it_commits_and_retried() {
    let provider = OidcProvider::shared().await;
    let smtp = OwnSmtp::start();
    let app = TestApp::spawn_with(&[
        ("D2__AUTH__IDP__ISSUER", provider.issuer()),
        ("D2__AUTH__IDP__AUDIENCE", AUDIENCE),
        ("D2__SMTP__URL", &smtp.url),
        ("D2__SMTP__FROM", "D2 <no-reply@d2.e2e.test>"),
        (
            "D2__MEMBERS__INVITATION_LINK",
            "https://app.d2.e2e.test/join?token=",
        ),
    ])
    .await;
    let owner = provider.token(&person("Olive")).await;
    let account = create_account(&app, &owner, "Mailing Co").await;
    // The server's clock moves ahead below: a session that outlives it.
    let ada = person("Ada").ttl_seconds(30 * 24 * 3600);
    let invited = invite(
        &app,
        &owner,
        &account,
        json!({ "email": ada.email.clone().unwrap(), "role": "member" }),
    )
    .await;
    let body = invited.assert_status(201).clone();
    assert_eq!(body["mailed"], true);
    assert!(body["token"].is_null() && body["accept_url"].is_null());
    assert!(
        smtp.messages().is_empty(),
        "mailed by the worker, not the request"
    );

    // The server answers 451: the task is retried later, nothing was sent.
    smtp.refuse();
    let runner = app.app.task_runner(&[]);
    let pass = runner.run_once().await.unwrap();
    assert_eq!((pass.done, pass.retried), (0, 1));
    assert!(smtp.messages().is_empty());
    smtp.accept();
    app.advance(3600);
    let pass = runner.run_once().await.unwrap();
    assert_eq!(pass.done, 1);

    let messages = smtp.messages();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert!(
        message.contains(&format!("To: {}", ada.email.clone().unwrap())),
        "{message}"
    );
    assert!(
        message.contains("From: D2 <no-reply@d2.e2e.test>"),
        "{message}"
    );
    assert!(
        message.contains("Subject: You are invited to join Mailing Co on D2"),
        "{message}"
    );
    assert!(message.contains("Olive invited you"), "{message}");
    let start = message
        .find("https://app.d2.e2e.test/join?token=")
        .expect("the link");
    let token: String = message[start + "https://app.d2.e2e.test/join?token=".len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    assert!(token.starts_with("d2inv_"));

    let session = provider.token(&ada).await;
    accept(&app, &session, &token).await.assert_status(200);
    assert_eq!(me(&app, &session).await["accounts"][0]["role"], "member");
    let logs = crate::harness::captured_logs();
    assert!(!logs.contains(&token), "the token is never logged");
}
