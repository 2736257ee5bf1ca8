//! Going back to an earlier version is a revert (audited), never a publish of the old body.

use serde_json::{Value, json};

use crate::harness::TestApp;
use crate::policy::{publishing_tenant, yaml_policy};

#[tokio::test(flavor = "multi_thread")]
async fn publishing_an_earlier_versions_body_is_refused_and_revert_is_the_audited_way_back() {
    let app = TestApp::spawn().await;
    let (tenant, dev, publisher) = publishing_tenant(&app).await;
    let first = publisher.publish_tools(&app, &dev, "app", &["a"]).await;
    let second = publisher
        .publish_tools(&app, &dev, "app", &["a", "b"])
        .await;

    let old = yaml_policy("app", &["a"]);
    let refused = publisher
        .publish(&app, &dev, old.as_bytes(), "?app_name=app")
        .await;
    refused.assert_problem(409, "identical_to_version");
    let detail = refused.body["detail"].as_str().unwrap();
    assert!(detail.contains("version 1"), "{detail}");
    assert!(detail.contains("POST /v1/policy/revert"), "{detail}");
    assert!(
        detail.contains(first["policy_id"].as_str().unwrap()),
        "{detail}"
    );
    // The same content as JSON, members in another order, is the same version.
    let as_json = serde_json::to_vec(&json!({
        "policies": [{ "permissions": ["a", { "allow": false, "tool": "secrets.read" }], "role": "analyst" }],
        "metadata": { "description": "e2e", "name": "app" },
    }))
    .unwrap();
    publisher
        .publish(&app, &dev, &as_json, "?app_name=app")
        .await
        .assert_problem(409, "identical_to_version");
    let versions = app.get("/v1/policy/versions?app_name=app", &dev).await;
    let versions = versions.assert_status(200).as_array().unwrap().clone();
    assert_eq!(versions.len(), 2, "nothing published");
    assert_eq!(versions[0]["version"], second["version"]);

    // Republishing the active body is what `d2 publish` run twice does: it still works.
    let renewed = publisher
        .publish_tools(&app, &dev, "app", &["a", "b"])
        .await;
    assert_eq!(renewed["version"], 3);

    let reverted = app
        .post(
            "/v1/policy/revert",
            &tenant.token,
            json!({ "policy_id": first["policy_id"] }),
        )
        .await;
    let reverted = reverted.assert_status(200).clone();
    assert_eq!(reverted["version"], 4);
    let trail = app.audit(&tenant).await;
    let revert = trail
        .iter()
        .find(|r| r["action"] == "policy.revert")
        .expect("the revert is audited");
    assert_eq!(revert["actor"], format!("token:{}", tenant.token_id));
    assert_eq!(revert["resource_type"], "policy");
    assert_eq!(revert["resource_id"], reverted["id"]);
    assert_eq!(revert["metadata"]["from_version"], 1);
    assert_eq!(revert["metadata"]["version"], 4);
    assert_eq!(revert["metadata"]["app_name"], "app");
    // The body is the active content now: publishing it is allowed again.
    publisher
        .publish(&app, &dev, old.as_bytes(), "?app_name=app")
        .await
        .assert_status(200);

    // Malformed reverts change nothing.
    for (body, status, code) in [
        (json!({ "policy_id": "not-a-uuid" }), 400, "invalid_body"),
        (json!({}), 400, "invalid_body"),
        (
            json!({ "policy_id": uuid::Uuid::new_v4() }),
            404,
            "policy_not_found",
        ),
    ] {
        app.post("/v1/policy/revert", &tenant.token, body)
            .await
            .assert_problem(status, code);
    }
    let reverts = app
        .audit(&tenant)
        .await
        .into_iter()
        .filter(|r| r["action"] == "policy.revert")
        .collect::<Vec<Value>>();
    assert_eq!(reverts.len(), 1);
}
