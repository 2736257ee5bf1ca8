use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::TestApp;

#[tokio::test(flavor = "multi_thread")]
async fn every_change_is_audited_with_its_actor_and_never_a_secret() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let tokens = format!("/v1/accounts/{}/tokens", tenant.account_id);
    let (secret, id) = app
        .issue(&tenant, json!({ "kind": "server", "app_name": "billing" }))
        .await;
    let rotated = app
        .post(&format!("{tokens}/{id}/rotate"), &tenant.token, Value::Null)
        .await;
    let new_id = rotated.assert_status(201)["token_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.delete(&format!("{tokens}/{new_id}"), &tenant.token)
        .await
        .assert_status(202);
    app.patch(
        "/v1/accounts/me",
        &tenant.token,
        json!({ "metrics_enabled": false }),
    )
    .await
    .assert_status(200);

    let reply = app.get("/v1/audit", &tenant.token).await;
    let trail = reply.assert_status(200).as_array().unwrap().clone();
    let actions: Vec<&str> = trail
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "account.update",
            "token.revoke",
            "token.rotate",
            "token.create",
            "account.bootstrap"
        ]
    );
    let actor = format!("token:{}", tenant.token_id);
    for record in &trail[..4] {
        assert_eq!(record["actor"], actor.as_str());
        assert_eq!(record["token_id"], tenant.token_id.as_str());
        assert_eq!(record["status"], "success");
    }
    assert_eq!(trail[3]["resource_id"], id.as_str());
    assert_eq!(trail[3]["metadata"]["app_name"], "billing");
    assert_eq!(trail[2]["metadata"]["new_token_id"], new_id.as_str());
    assert_eq!(trail[4]["actor"], "control_plane");
    assert!(!reply.text.contains(&secret));
    assert!(!reply.text.contains(rotated.body["token"].as_str().unwrap()));
    assert!(!reply.text.contains(&tenant.token));
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_changes_leave_no_audit_record() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let tokens = format!("/v1/accounts/{}/tokens", tenant.account_id);
    let (_, id) = app.issue(&tenant, json!({})).await;
    app.delete(&format!("{tokens}/{id}"), &tenant.token)
        .await
        .assert_status(202);
    let before = app.audit(&tenant).await.len();

    app.post(&format!("{tokens}/{id}/rotate"), &tenant.token, Value::Null)
        .await
        .assert_problem(410, "token_already_revoked");
    app.delete(&format!("{tokens}/{id}"), &tenant.token)
        .await
        .assert_status(202);
    app.delete(&format!("{tokens}/{}", uuid::Uuid::new_v4()), &tenant.token)
        .await
        .assert_problem(404, "token_not_found");
    app.post(&tokens, &tenant.token, json!({ "scopes": ["nope"] }))
        .await
        .assert_problem(400, "invalid_token_request");
    app.patch(
        "/v1/accounts/me",
        &tenant.token,
        json!({ "event_sample": { "x": 2.0 } }),
    )
    .await
    .assert_problem(400, "invalid_sample_rate");

    assert_eq!(app.audit(&tenant).await.len(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_trail_filters_and_pages() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let start = {
        use d2_kernel::Clock as _;
        app.clock.now()
    };
    for _ in 0..4 {
        app.advance(60);
        app.issue(&tenant, json!({})).await;
    }
    let creates = app
        .get("/v1/audit?action=token.create", &tenant.token)
        .await;
    assert_eq!(creates.assert_status(200).as_array().unwrap().len(), 4);
    let by_control_plane = app
        .get("/v1/audit?actor=control_plane", &tenant.token)
        .await;
    assert_eq!(
        by_control_plane
            .assert_status(200)
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let since = (start + chrono::Duration::seconds(90))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let until = (start + chrono::Duration::seconds(210))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let window = app
        .send(
            app.request(Method::GET, "/v1/audit", Some(&tenant.token))
                .query(&[("since", &since), ("until", &until)]),
        )
        .await;
    assert_eq!(window.assert_status(200).as_array().unwrap().len(), 2);

    let first = app.get("/v1/audit?limit=3", &tenant.token).await;
    assert_eq!(first.assert_status(200).as_array().unwrap().len(), 3);
    let cursor = first.header("x-next-cursor").unwrap().to_owned();
    let rest = app
        .get(&format!("/v1/audit?limit=3&cursor={cursor}"), &tenant.token)
        .await;
    assert_eq!(rest.assert_status(200).as_array().unwrap().len(), 2);
    assert!(rest.header("x-next-cursor").is_none());

    app.get("/v1/audit?action=token.explode", &tenant.token)
        .await
        .assert_problem(400, "invalid_query");
    app.get("/v1/audit?cursor=zzz", &tenant.token)
        .await
        .assert_problem(400, "invalid_cursor");
    app.get("/v1/audit?since=yesterday", &tenant.token)
        .await
        .assert_problem(400, "invalid_query");
    app.get("/v1/audit?colour=red", &tenant.token)
        .await
        .assert_problem(400, "invalid_query");
    let backwards = app
        .send(
            app.request(Method::GET, "/v1/audit", Some(&tenant.token))
                .query(&[("since", &until), ("until", &since)]),
        )
        .await;
    backwards.assert_problem(400, "invalid_time_range");
}
