use reqwest::Method;
use serde_json::Value;

use crate::harness::TestApp;

#[tokio::test(flavor = "multi_thread")]
async fn the_document_is_snapshotted_so_changes_are_deliberate() {
    let app = TestApp::spawn().await;
    let reply = app
        .send(app.request(Method::GET, "/openapi.json", None))
        .await;
    let document = reply.assert_status(200).clone();
    assert_eq!(document["openapi"], "3.1.0");
    insta::assert_json_snapshot!("openapi", document);
}

/// Every operation the document describes is served: none answers "no such route".
#[tokio::test(flavor = "multi_thread")]
async fn every_documented_operation_is_routed() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let document = app
        .send(app.request(Method::GET, "/openapi.json", None))
        .await
        .body;
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.len() >= 15, "{}", paths.len());
    for (template, operations) in paths {
        let path = template
            .replace("{account_id}", &tenant.account_id)
            .replace("{token_id}", &uuid::Uuid::new_v4().to_string())
            .replace("{policy_id}", &uuid::Uuid::new_v4().to_string())
            .replace("{key_id}", "ed_000000000000");
        for method in operations.as_object().unwrap().keys() {
            let method: Method = method.to_uppercase().parse().unwrap();
            let reply = app
                .send(app.request(method.clone(), &path, Some(&tenant.token)))
                .await;
            assert_ne!(
                reply.body["code"],
                Value::from("route_not_found"),
                "{method} {template}"
            );
            assert!(
                reply.status.as_u16() < 500,
                "{method} {template}: {}",
                reply.text
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn swagger_ui_is_served_outside_production() {
    let app = TestApp::spawn().await;
    let reply = app.send(app.request(Method::GET, "/docs/", None)).await;
    assert_eq!(reply.status, 200);
    assert!(reply.text.to_lowercase().contains("swagger"));
    let hidden = TestApp::spawn_with(&[("D2__HTTP__SWAGGER_UI", "false")]).await;
    let reply = hidden
        .send(hidden.request(Method::GET, "/docs/", None))
        .await;
    reply.assert_problem(404, "route_not_found");
}
