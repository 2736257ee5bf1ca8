use serde_json::json;

use crate::harness::TestApp;

#[tokio::test(flavor = "multi_thread")]
async fn me_reports_exactly_what_the_sdk_reads_for_any_credential() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let (server, _) = app.issue(&tenant, json!({ "kind": "server" })).await;
    for token in [&tenant.token, &server] {
        let reply = app.get("/v1/accounts/me", token).await;
        let body = reply.assert_status(200);
        let mut keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "account_id",
                "event_sample",
                "metrics_enabled",
                "plan",
                "poll_seconds",
                "quotas",
                "require_publisher_key_approval",
                "trial_expires"
            ]
        );
        let mut quotas: Vec<&str> = body["quotas"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        quotas.sort_unstable();
        assert_eq!(
            quotas,
            [
                "current_members",
                "event_batch",
                "event_payload_max_bytes",
                "included_credits",
                "ingest_events_per_minute",
                "ingest_interval",
                "max_agents",
                "max_apps",
                "max_members",
                "max_tokens",
                "max_tools",
                "monthly_model_tokens",
                "poll_sec"
            ]
        );
        assert_eq!(body["account_id"], tenant.account_id.as_str());
        assert_eq!(body["plan"], "trial");
        assert_eq!(body["quotas"]["poll_sec"], 300);
        assert_eq!(body["poll_seconds"], 300);
        assert_eq!(body["quotas"]["ingest_interval"], 60);
        assert_eq!(body["quotas"]["ingest_events_per_minute"], 10_000);
        assert_eq!(body["quotas"]["max_tools"], 5);
        assert_eq!(body["quotas"]["event_batch"], 1000);
        assert_eq!(body["quotas"]["current_members"], 1);
        assert_eq!(body["quotas"]["max_tokens"], 10);
        assert_eq!(body["metrics_enabled"], true);
        assert_eq!(body["require_publisher_key_approval"], false);
        assert_eq!(body["event_sample"]["authz_decision"], 1.0);
        assert_eq!(body["event_sample"]["policy_poll_interval"], 0.1);
        assert_eq!(body["event_sample"]["missing_policy"], 0.5);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_trial_is_served_as_locked() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    app.advance(15 * 24 * 3600);
    let body = app
        .get("/v1/accounts/me", &tenant.token)
        .await
        .assert_status(200)
        .clone();
    assert_eq!(body["plan"], "locked");
    assert_eq!(body["quotas"]["max_members"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn admins_change_sampling_and_metrics_and_it_is_audited() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let reply = app
        .patch(
            "/v1/accounts/me",
            &tenant.token,
            json!({ "metrics_enabled": false, "event_sample": { "authz_decision": 0.25, "jwks_fetch": 0.0 } }),
        )
        .await;
    let body = reply.assert_status(200);
    assert_eq!(body["metrics_enabled"], false);
    assert_eq!(body["event_sample"]["authz_decision"], 0.25);
    assert_eq!(body["event_sample"]["jwks_fetch"], 0.0);

    // `null` drops the account's own rate: the default comes back.
    let reply = app
        .patch(
            "/v1/accounts/me",
            &tenant.token,
            json!({ "event_sample": { "authz_decision": null } }),
        )
        .await;
    assert_eq!(
        reply.assert_status(200)["event_sample"]["authz_decision"],
        1.0
    );

    let trail = app.audit(&tenant).await;
    let updates: Vec<_> = trail
        .iter()
        .filter(|r| r["action"] == "account.update")
        .collect();
    assert_eq!(updates.len(), 2);
    assert_eq!(
        updates[1]["metadata"]["changes"]["metrics_enabled"]["new"],
        false
    );
    assert_eq!(updates[1]["actor"], format!("token:{}", tenant.token_id));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_settings_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let (dev, _) = app.issue(&tenant, json!({ "kind": "dev" })).await;
    let cases = [
        (
            json!({ "event_sample": { "authz_decision": 1.5 } }),
            400,
            "invalid_sample_rate",
        ),
        (
            json!({ "event_sample": { "authz_decision": -0.1 } }),
            400,
            "invalid_sample_rate",
        ),
        (
            json!({ "event_sample": { "Bad Type": 0.5 } }),
            400,
            "invalid_sample_rate",
        ),
        (
            json!({ "event_sample": { "authz_decision": "half" } }),
            400,
            "invalid_body",
        ),
        (json!({ "event_sample": [0.5] }), 400, "invalid_body"),
        (json!({ "metrics_enabled": "no" }), 400, "invalid_body"),
        (json!({ "metrics": false }), 400, "invalid_body"),
        (json!({}), 400, "invalid_body"),
        (json!({ "name": "   " }), 400, "invalid_account_name"),
    ];
    for (body, status, code) in cases {
        app.patch("/v1/accounts/me", &tenant.token, body)
            .await
            .assert_problem(status, code);
    }
    app.patch("/v1/accounts/me", &dev, json!({ "metrics_enabled": false }))
        .await
        .assert_problem(403, "insufficient_scope");
    let me = app.get("/v1/accounts/me", &tenant.token).await;
    assert_eq!(me.body["metrics_enabled"], true);
    assert_eq!(me.body["event_sample"]["authz_decision"], 1.0);
    assert!(
        app.audit(&tenant)
            .await
            .iter()
            .all(|r| r["action"] != "account.update")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rename_and_users() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let path = format!("/v1/accounts/{}/name", tenant.account_id);
    let body = app
        .patch(&path, &tenant.token, json!({ "name": "  Acme Agents " }))
        .await
        .assert_status(200)
        .clone();
    assert_eq!(body["name"], "Acme Agents");
    app.patch(&path, &tenant.token, json!({ "name": "" }))
        .await
        .assert_problem(400, "invalid_account_name");
    app.patch(&path, &tenant.token, json!({ "name": "x".repeat(201) }))
        .await
        .assert_problem(400, "invalid_account_name");

    let members = app
        .get(
            &format!("/v1/accounts/{}/members", tenant.account_id),
            &tenant.token,
        )
        .await;
    let members = members.assert_status(200)["members"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["role"], "owner");
    assert_eq!(members[0]["email"], "owner@tenant.test");
    assert_eq!(members[0]["user_id"], tenant.user_id.as_str());
    assert!(members[0]["last_sign_in_at"].is_null(), "not signed in yet");
}
