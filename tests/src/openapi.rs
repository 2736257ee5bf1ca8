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
async fn swagger_ui_and_redoc_are_served_outside_production() {
    let app = TestApp::spawn().await;
    let reply = app.send(app.request(Method::GET, "/docs/", None)).await;
    assert_eq!(reply.status, 200);
    assert!(reply.text.to_lowercase().contains("swagger"));
    let redoc = app.send(app.request(Method::GET, "/redoc", None)).await;
    assert_eq!(redoc.status, 200);
    assert!(
        redoc.text.to_lowercase().contains("redoc"),
        "{}",
        redoc.text
    );
    assert!(
        redoc.text.contains("/v1/invitations"),
        "the document is the API's"
    );
    let hidden = TestApp::spawn_with(&[("D2__HTTP__SWAGGER_UI", "false")]).await;
    for path in ["/docs/", "/redoc"] {
        let reply = hidden.send(hidden.request(Method::GET, path, None)).await;
        reply.assert_problem(404, "route_not_found");
    }
}

/// `/public/openapi.yaml`: the same document as YAML, dated, cacheable, for any origin.
#[tokio::test(flavor = "multi_thread")]
async fn the_public_yaml_description_is_the_json_one_dated_and_cacheable() {
    let app = TestApp::spawn_with(&[("D2__HTTP__SWAGGER_UI", "false")]).await;
    let reply = app
        .send(
            app.request(Method::GET, "/public/openapi.yaml", None)
                .header("Origin", "https://anywhere.test"),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("cache-control"), Some("public, max-age=300"));
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    assert_eq!(reply.header("content-type"), Some("application/yaml"));
    let first = reply.text.lines().next().unwrap();
    assert!(
        first.starts_with("# ") && first.contains("generated"),
        "{first}"
    );
    let year = app.app.clock.now().format("%Y-").to_string();
    assert!(first.contains(&year), "{first}");
    let json = app
        .send(app.request(Method::GET, "/openapi.json", None))
        .await;
    for path in json.body["paths"].as_object().unwrap().keys() {
        assert!(
            reply.text.contains(&format!("{path}:")),
            "{path} missing from the YAML"
        );
    }
    // Other routes keep the configured origins.
    let private = app
        .send(
            app.request(Method::GET, "/healthz", None)
                .header("Origin", "https://anywhere.test"),
        )
        .await;
    assert_ne!(private.header("access-control-allow-origin"), Some("*"));
}

/// A method a documented path does not declare is 405 with `Allow` listing the declared
/// ones, also where a parameterised route of that method would take the path; a path no
/// route knows stays 404, and a parameter that does not parse stays 400.
#[tokio::test(flavor = "multi_thread")]
async fn an_undeclared_method_is_405_with_allow() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let server_tokens = format!("/v1/accounts/{}/tokens/server", tenant.account_id);
    let cases = [
        (Method::TRACE, "/healthz", "GET"),
        (Method::PUT, "/v1/keys", "GET, POST"),
        (Method::DELETE, "/v1/accounts/me", "GET, PATCH"),
        (Method::POST, "/openapi.json", "GET"),
        // Shadowed by GET /v1/policy/{policy_id} and DELETE .../tokens/{token_id}.
        (Method::GET, "/v1/policy/draft", "PUT"),
        (Method::DELETE, server_tokens.as_str(), "POST"),
    ];
    for (method, path, allow) in cases {
        let reply = app
            .send(app.request(method.clone(), path, Some(&tenant.token)))
            .await;
        reply.assert_problem(405, "method_not_allowed");
        assert_eq!(reply.header("allow"), Some(allow), "{method} {path}");
        assert_eq!(
            reply.header("content-type"),
            Some("application/problem+json"),
            "{method} {path}"
        );
    }
    // Unknown paths outside the resources' scopes, inside one, and beside one.
    for path in ["/v1/nothing", "/v1/billing/nothing", "/v1/billingx"] {
        app.send(app.request(Method::GET, path, Some(&tenant.token)))
            .await
            .assert_problem(404, "route_not_found");
    }
    app.get("/v1/policy/not-a-uuid", &tenant.token)
        .await
        .assert_problem(400, "invalid_path");
}

/// The document states the bounds the server enforces: the edges of `limit` are
/// accepted and one past them refused.
#[tokio::test(flavor = "multi_thread")]
async fn documented_bounds_are_the_enforced_ones() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let document = app
        .send(app.request(Method::GET, "/openapi.json", None))
        .await
        .body;
    let parameters = document["paths"]["/v1/audit"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let limit = parameters.iter().find(|p| p["name"] == "limit").unwrap();
    let (min, max) = (
        limit["schema"]["minimum"].as_u64().unwrap(),
        limit["schema"]["maximum"].as_u64().unwrap(),
    );
    assert_eq!((min, max), (1, 1000));
    for accepted in [min, max] {
        app.get(&format!("/v1/audit?limit={accepted}"), &tenant.token)
            .await
            .assert_status(200);
    }
    for refused in [min - 1, max + 1] {
        app.get(&format!("/v1/audit?limit={refused}"), &tenant.token)
            .await
            .assert_problem(400, "invalid_query");
    }
    let bucket = &document["paths"]["/v1/metrics/timeseries"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "bucket")
        .unwrap()["schema"]["pattern"];
    assert_eq!(bucket, "^(hour|day)$");
}

/// A body the document refuses is refused: the policy check takes an object, and a JSON
/// array is a malformed request rather than a policy that fails validation.
#[tokio::test(flavor = "multi_thread")]
async fn a_policy_check_of_a_non_object_is_refused() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    app.post(
        "/v1/policy/validate",
        &tenant.token,
        serde_json::json!([null, null]),
    )
    .await
    .assert_problem(400, "invalid_body");
    let checked = app
        .post("/v1/policy/validate", &tenant.token, serde_json::json!({}))
        .await;
    assert_eq!(checked.assert_status(200)["valid"], false);
}

/// Every operation declares the answers of the shared layers: 401 where a credential is
/// required, 429 and 503 on every route but the probes, 400/413/415 where a body is read.
#[tokio::test(flavor = "multi_thread")]
async fn every_operation_declares_the_shared_answers() {
    let app = TestApp::spawn().await;
    let document = app
        .send(app.request(Method::GET, "/openapi.json", None))
        .await
        .body;
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            let declares = |status: &str| responses.contains_key(status);
            if operation.get("security").is_some() {
                assert!(declares("401"), "{method} {path}");
            }
            if !matches!(path.as_str(), "/" | "/healthz" | "/readyz" | "/metrics") {
                assert!(declares("429") && declares("503"), "{method} {path}");
            }
            if operation.get("requestBody").is_some() {
                for status in ["400", "413", "415"] {
                    assert!(declares(status), "{method} {path} {status}");
                }
            }
        }
    }
}
