//! Subscriptions from the payment provider's signed webhooks, through the real server:
//! payloads signed here with the configured secrets (the provider is not faked, its
//! signature scheme is), including wrong signatures, stale timestamps, replays,
//! concurrent deliveries and events out of order.

use chrono::{DateTime, Duration, Utc};
use d2_billing::sign;
use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Reply, Tenant, TestApp};

const SECRET: &str = "whsec_e2e_current";
const PREVIOUS: &str = "whsec_e2e_previous";
const WEBHOOK: &str = "/v1/billing/webhooks/stripe";

async fn billing_app() -> TestApp {
    TestApp::spawn_with(&[
        (
            "D2__BILLING__WEBHOOK_SECRETS",
            &format!("{SECRET},{PREVIOUS}"),
        ),
        (
            "D2__BILLING__PRICES__PRO",
            "price_Pro_monthly,price_Pro_yearly",
        ),
        ("D2__BILLING__PRICES__ENTERPRISE", "price_Enterprise"),
    ])
    .await
}

fn now(app: &TestApp) -> DateTime<Utc> {
    use d2_kernel::Clock;
    app.clock.now()
}

/// A subscription event of `tenant`'s account (its id in the metadata when `named`).
fn subscription(
    id: &str,
    kind: &str,
    created: DateTime<Utc>,
    tenant: Option<&Tenant>,
    status: &str,
    price: &str,
) -> Value {
    let metadata = tenant.map_or(json!({}), |t| json!({ "d2_account_id": t.account_id }));
    json!({
        "id": id,
        "object": "event",
        "type": kind,
        "created": created.timestamp(),
        "livemode": false,
        "data": { "object": {
            "id": format!("sub_{}", tenant.map_or("x", |t| &t.account_id[..8])),
            "object": "subscription",
            "customer": format!("cus_{}", tenant.map_or("x", |t| &t.account_id[..8])),
            "status": status,
            "metadata": metadata,
            "cancel_at_period_end": false,
            "items": { "data": [{
                "price": { "id": price },
                "current_period_start": created.timestamp(),
                "current_period_end": (created + Duration::days(30)).timestamp(),
            }]},
        }},
    })
}

async fn deliver_signed(app: &TestApp, payload: &[u8], header: Option<String>) -> Reply {
    let mut request = app
        .request(Method::POST, WEBHOOK, None)
        .header("content-type", "application/json")
        .body(payload.to_vec());
    if let Some(header) = header {
        request = request.header("Stripe-Signature", header);
    }
    app.send(request).await
}

async fn deliver(app: &TestApp, event: &Value) -> Reply {
    let payload = serde_json::to_vec(event).unwrap();
    let header = sign(SECRET, &payload, now(app));
    deliver_signed(app, &payload, Some(header)).await
}

async fn outcome(app: &TestApp, event: &Value) -> String {
    let reply = deliver(app, event).await;
    reply.assert_status(200)["outcome"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn billing(app: &TestApp, tenant: &Tenant) -> Value {
    app.get("/v1/billing/subscription", &tenant.token)
        .await
        .assert_status(200)
        .clone()
}

async fn plan(app: &TestApp, tenant: &Tenant) -> String {
    app.get("/v1/accounts/me", &tenant.token)
        .await
        .assert_status(200)["plan"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn billing_records(audit: &[Value]) -> Vec<&Value> {
    audit
        .iter()
        .filter(|r| r["action"].as_str().unwrap().starts_with("billing."))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscription_sets_the_plan_its_end_locks_the_account_and_a_new_one_lifts_it() {
    let app = billing_app().await;
    let tenant = app.bootstrap().await;
    let other = app.bootstrap().await;
    let before = billing(&app, &tenant).await;
    assert_eq!(before["plan"], "trial");
    assert!(before["subscription"].is_null() && before["lock"].is_null());

    let start = now(&app);
    let created = subscription(
        "evt_created",
        "customer.subscription.created",
        start,
        Some(&tenant),
        "active",
        "price_Pro_monthly",
    );
    let reply = deliver(&app, &created).await;
    let receipt = reply.assert_status(200);
    assert_eq!(receipt["outcome"], "applied", "{receipt}");
    assert_eq!(receipt["event_id"], "evt_created");
    assert_eq!(plan(&app, &tenant).await, "pro");
    let state = billing(&app, &tenant).await;
    assert_eq!(state["subscription"]["status"], "active");
    assert_eq!(state["subscription"]["plan"], "pro");
    assert_eq!(
        state["subscription"]["current_period_end"],
        json!((start + Duration::days(30)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    );
    // Another account is untouched, and reads only its own.
    assert_eq!(plan(&app, &other).await, "trial");
    assert!(billing(&app, &other).await["subscription"].is_null());
    assert!(billing_records(&app.audit(&other).await).is_empty());

    // Delivered again (the provider retries): nothing is done twice.
    assert_eq!(outcome(&app, &created).await, "duplicate");

    // The customer cancels at the period's end; the deletion then locks the account.
    app.advance(60);
    let mut canceling = subscription(
        "evt_cancel",
        "customer.subscription.updated",
        now(&app),
        Some(&tenant),
        "active",
        "price_Pro_monthly",
    );
    canceling["data"]["object"]["cancel_at_period_end"] = json!(true);
    assert_eq!(outcome(&app, &canceling).await, "applied");
    assert_eq!(
        billing(&app, &tenant).await["subscription"]["cancel_at_period_end"],
        true
    );
    assert_eq!(plan(&app, &tenant).await, "pro");
    app.advance(60);
    let ended = now(&app);
    let mut deleted = subscription(
        "evt_deleted",
        "customer.subscription.deleted",
        ended,
        None,
        "canceled",
        "price_Pro_monthly",
    );
    // Without metadata: the customer the first event linked names the account.
    deleted["data"]["object"]["customer"] = created["data"]["object"]["customer"].clone();
    deleted["data"]["object"]["id"] = created["data"]["object"]["id"].clone();
    deleted["data"]["object"]["ended_at"] = json!(ended.timestamp());
    assert_eq!(outcome(&app, &deleted).await, "applied");
    assert_eq!(plan(&app, &tenant).await, "locked");
    let state = billing(&app, &tenant).await;
    assert_eq!(state["plan"], "pro", "a lock keeps the plan");
    assert_eq!(state["lock"]["reason"], "subscription_ended");
    assert_eq!(state["subscription"]["status"], "canceled");
    // Locked: the account is served nothing new.
    let draft = app
        .post(
            "/v1/policy/publish",
            &tenant.token,
            json!({"app": "shop", "signature": "x", "key_id": "k"}),
        )
        .await;
    assert_eq!(draft.status.as_u16(), 402, "{}", draft.text);

    // An update created before the deletion, arriving late, is kept as it is.
    let late = subscription(
        "evt_late",
        "customer.subscription.updated",
        ended - Duration::seconds(30),
        Some(&tenant),
        "active",
        "price_Enterprise",
    );
    assert_eq!(outcome(&app, &late).await, "stale");
    assert_eq!(plan(&app, &tenant).await, "locked");

    // A new subscription (another id) lifts the lock.
    app.advance(60);
    let mut renewed = subscription(
        "evt_renewed",
        "customer.subscription.created",
        now(&app),
        Some(&tenant),
        "trialing",
        "price_Enterprise",
    );
    renewed["data"]["object"]["id"] = json!("sub_renewed");
    assert_eq!(outcome(&app, &renewed).await, "applied");
    assert_eq!(plan(&app, &tenant).await, "enterprise");

    let audit = app.audit(&tenant).await;
    let records = billing_records(&audit);
    assert_eq!(records.len(), 4, "{records:?}");
    let lock = records
        .iter()
        .find(|r| r["metadata"]["event_id"] == "evt_deleted")
        .unwrap();
    assert_eq!(lock["action"], "billing.subscription_update");
    assert_eq!(lock["actor"], "system");
    assert_eq!(
        lock["metadata"]["lock"]["to"]["reason"],
        "subscription_ended"
    );
    assert_eq!(lock["metadata"]["status"]["from"], "active");
    assert!(!audit.iter().any(|r| r.to_string().contains(SECRET)));
}

#[tokio::test(flavor = "multi_thread")]
async fn payments_that_fail_then_lapse_lock_the_account_until_an_invoice_is_paid() {
    let app = billing_app().await;
    let tenant = app.bootstrap().await;
    let start = now(&app);
    let created = subscription(
        "evt_1",
        "customer.subscription.created",
        start,
        Some(&tenant),
        "active",
        "price_Pro_yearly",
    );
    assert_eq!(outcome(&app, &created).await, "applied");
    let invoice = |id: &str, kind: &str, at: DateTime<Utc>| {
        json!({"id": id, "type": kind, "created": at.timestamp(),
            "data": {"object": {"id": "in_1", "object": "invoice",
                "customer": created["data"]["object"]["customer"],
                "parent": {"subscription_details": {
                    "subscription": created["data"]["object"]["id"]}}}}})
    };
    let failed = invoice(
        "evt_2",
        "invoice.payment_failed",
        start + Duration::seconds(10),
    );
    assert_eq!(outcome(&app, &failed).await, "applied");
    assert_eq!(
        billing(&app, &tenant).await["subscription"]["status"],
        "past_due"
    );
    assert_eq!(plan(&app, &tenant).await, "pro", "past due is still served");

    let unpaid = subscription(
        "evt_3",
        "customer.subscription.updated",
        start + Duration::seconds(20),
        Some(&tenant),
        "unpaid",
        "price_Pro_yearly",
    );
    assert_eq!(outcome(&app, &unpaid).await, "applied");
    assert_eq!(plan(&app, &tenant).await, "locked");
    assert_eq!(
        billing(&app, &tenant).await["lock"]["reason"],
        "payment_lapsed"
    );
    let paid = invoice("evt_4", "invoice.paid", start + Duration::seconds(30));
    assert_eq!(outcome(&app, &paid).await, "applied");
    assert_eq!(plan(&app, &tenant).await, "pro");
    assert_eq!(
        billing(&app, &tenant).await["subscription"]["status"],
        "active"
    );
    let paid_again = invoice("evt_5", "invoice.paid", start + Duration::seconds(40));
    assert_eq!(outcome(&app, &paid_again).await, "unchanged");
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_stale_and_malformed_deliveries_are_refused_and_change_nothing() {
    let app = billing_app().await;
    let tenant = app.bootstrap().await;
    let event = subscription(
        "evt_forged",
        "customer.subscription.created",
        now(&app),
        Some(&tenant),
        "active",
        "price_Pro_monthly",
    );
    let payload = serde_json::to_vec(&event).unwrap();
    let at = now(&app);
    let tampered = serde_json::to_vec(&json!({"id": "evt_other"})).unwrap();
    let refused = [
        (payload.clone(), None),
        (payload.clone(), Some("nonsense".to_owned())),
        (
            payload.clone(),
            Some(sign("whsec_someone_else", &payload, at)),
        ),
        (
            payload.clone(),
            Some(sign(SECRET, &payload, at - Duration::seconds(301))),
        ),
        (
            payload.clone(),
            Some(sign(SECRET, &payload, at + Duration::seconds(301))),
        ),
        (tampered, Some(sign(SECRET, &payload, at))),
    ];
    for (body, header) in refused {
        let reply = deliver_signed(&app, &body, header.clone()).await;
        reply.assert_problem(400, "invalid_webhook_signature");
        assert!(!reply.text.contains(SECRET), "{}", reply.text);
    }
    // Correctly signed, but no event.
    for body in [
        b"not json".to_vec(),
        b"[]".to_vec(),
        serde_json::to_vec(&json!({"id": "evt_x", "type": "invoice.paid"})).unwrap(),
    ] {
        let header = sign(PREVIOUS, &body, at);
        deliver_signed(&app, &body, Some(header))
            .await
            .assert_problem(400, "invalid_webhook_event");
    }
    assert_eq!(plan(&app, &tenant).await, "trial");
    assert!(billing_records(&app.audit(&tenant).await).is_empty());

    // The previous secret still works (a rotation in progress); unknown prices, accounts
    // and event types are acknowledged and recorded as ignored.
    let header = sign(PREVIOUS, &payload, at);
    let reply = deliver_signed(&app, &payload, Some(header)).await;
    assert_eq!(reply.assert_status(200)["outcome"], "applied");
    let unknown_price = subscription(
        "evt_price",
        "customer.subscription.updated",
        at,
        Some(&tenant),
        "active",
        "price_unknown",
    );
    let receipt = deliver(&app, &unknown_price).await;
    assert_eq!(receipt.assert_status(200)["reason"], "unknown_price");
    let stranger = Tenant {
        account_id: uuid::Uuid::new_v4().to_string(),
        ..tenant.clone()
    };
    let unknown_account = subscription(
        "evt_stranger",
        "customer.subscription.created",
        at,
        Some(&stranger),
        "active",
        "price_Pro_monthly",
    );
    let receipt = deliver(&app, &unknown_account).await;
    assert_eq!(receipt.assert_status(200)["reason"], "unknown_account");

    // Without secrets configured, webhooks are not received.
    let plain = TestApp::spawn().await;
    let header = sign(SECRET, &payload, now(&plain));
    deliver_signed(&plain, &payload, Some(header))
        .await
        .assert_problem(404, "billing_not_configured");
    deliver_signed(&plain, &payload, None)
        .await
        .assert_problem(400, "invalid_webhook_signature");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_and_reordered_deliveries_end_in_the_newest_state_each_applied_once() {
    let app = billing_app().await;
    let tenant = app.bootstrap().await;
    let start = now(&app);
    // The same event delivered twenty times at once: applied once.
    let created = subscription(
        "evt_once",
        "customer.subscription.created",
        start,
        Some(&tenant),
        "active",
        "price_Pro_monthly",
    );
    let outcomes = join_all((0..20).map(|_| outcome(&app, &created))).await;
    assert_eq!(
        outcomes.iter().filter(|o| *o == "applied").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| *o == "duplicate").count(),
        19,
        "{outcomes:?}"
    );
    // A run of updates delivered all at once, in any order: the newest wins.
    let statuses = [
        "past_due", "active", "past_due", "unpaid", "active", "past_due",
    ];
    let updates: Vec<Value> = statuses
        .iter()
        .enumerate()
        .map(|(i, status)| {
            subscription(
                &format!("evt_update_{i}"),
                "customer.subscription.updated",
                start + Duration::seconds(i64::try_from(i).unwrap() + 1),
                Some(&tenant),
                status,
                if i == statuses.len() - 1 {
                    "price_Enterprise"
                } else {
                    "price_Pro_monthly"
                },
            )
        })
        .rev()
        .collect();
    join_all(updates.iter().map(|event| outcome(&app, event))).await;
    let state = billing(&app, &tenant).await;
    assert_eq!(state["subscription"]["status"], "past_due", "{state}");
    assert_eq!(state["subscription"]["plan"], "enterprise", "{state}");
    assert_eq!(plan(&app, &tenant).await, "enterprise");
    let audit = app.audit(&tenant).await;
    assert_eq!(
        billing_records(&audit)
            .iter()
            .filter(|r| r["metadata"]["event_id"] == "evt_once")
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_admins_read_the_subscription() {
    let app = billing_app().await;
    let tenant = app.bootstrap().await;
    let (server, _) = app.issue(&tenant, json!({ "kind": "server" })).await;
    app.get("/v1/billing/subscription", &server)
        .await
        .assert_problem(403, "insufficient_scope");
    app.send(app.request(Method::GET, "/v1/billing/subscription", None))
        .await
        .assert_problem(401, "missing_authorization");
}

async fn credits(app: &TestApp, tenant: &Tenant) -> Value {
    app.get("/v1/billing/credits", &tenant.token)
        .await
        .assert_status(200)
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn credits_are_granted_spent_in_burn_order_and_a_retry_spends_once() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let other = app.bootstrap().await;
    let expiry = now(&app) + Duration::days(1);
    let purchase = app
        .post(
            "/v1/billing/credits/add",
            &tenant.token,
            json!({"amount": 100, "source": "purchase", "reason": "order 42"}),
        )
        .await;
    let purchase = purchase.assert_status(201).clone();
    assert_eq!(purchase["grant"]["remaining"], 100);
    assert_eq!(purchase["entry"]["balance_after"], 100);
    let promotion = app
        .post(
            "/v1/billing/credits/add",
            &tenant.token,
            json!({"amount": 30, "source": "promotion", "expires_at": expiry}),
        )
        .await;
    let promotion = promotion.assert_status(201).clone();
    assert_eq!(credits(&app, &tenant).await["balance"], 130);

    let spend = |amount: u64, key: &str| {
        app.post(
            "/v1/billing/credits/spend",
            &tenant.token,
            json!({"amount": amount, "idempotency_key": key, "reason": "gpt tokens"}),
        )
    };
    app.advance(1);
    let first = spend(40, "report-1").await;
    let first = first.assert_status(201).clone();
    // The promotion expires first: spent first.
    assert_eq!(
        first["burns"],
        json!([
            {"grant_id": promotion["grant"]["grant_id"], "amount": 30},
            {"grant_id": purchase["grant"]["grant_id"], "amount": 10},
        ])
    );
    assert_eq!(first["balance_after"], 90);
    // The provider of the report retries: the first spend, nothing spent again.
    let retry = spend(40, "report-1").await;
    assert_eq!(retry.assert_status(200)["entry_id"], first["entry_id"]);
    spend(41, "report-1")
        .await
        .assert_problem(409, "idempotency_key_reused");
    let short = spend(91, "report-2").await;
    short.assert_problem(402, "insufficient_credits");
    assert!(
        short.body["detail"]
            .as_str()
            .unwrap()
            .contains("90 available")
    );
    let state = credits(&app, &tenant).await;
    assert_eq!(state["balance"], 90);
    assert_eq!(state["entries"].as_array().unwrap().len(), 3);
    assert_eq!(state["entries"][0]["entry_id"], first["entry_id"]);

    // Concurrent spends never overdraw: 90 credits hold twelve spends of 7.
    let outcomes = join_all((0..20).map(|n| {
        app.post(
            "/v1/billing/credits/spend",
            &tenant.token,
            json!({"amount": 7, "idempotency_key": format!("burst-{n}")}),
        )
    }))
    .await;
    let statuses: Vec<u16> = outcomes.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        12,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 402).count(),
        8,
        "{statuses:?}"
    );
    assert_eq!(credits(&app, &tenant).await["balance"], 6);

    let audit = app.audit(&tenant).await;
    let count = |action: &str| audit.iter().filter(|r| r["action"] == action).count();
    assert_eq!(count("billing.credits_add"), 2);
    assert_eq!(count("billing.credits_spend"), 13);
    // The other account has none of it, and cannot spend the first one's.
    let theirs = credits(&app, &other).await;
    assert_eq!(theirs["balance"], 0);
    assert!(theirs["grants"].as_array().unwrap().is_empty());
    app.post(
        "/v1/billing/credits/spend",
        &other.token,
        json!({"amount": 1, "idempotency_key": "report-1"}),
    )
    .await
    .assert_problem(402, "insufficient_credits");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_credit_requests_are_refused_and_write_nothing() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    app.post(
        "/v1/billing/credits/add",
        &tenant.token,
        json!({"amount": 10, "source": "purchase"}),
    )
    .await
    .assert_status(201);
    let start = now(&app);
    let refused_grants = [
        (
            json!({"amount": 0, "source": "purchase"}),
            "invalid_credits",
        ),
        (
            json!({"amount": 1_000_000_000_001_u64, "source": "purchase"}),
            "invalid_credits",
        ),
        (json!({"amount": -5, "source": "purchase"}), "invalid_body"),
        (json!({"amount": 1.5, "source": "purchase"}), "invalid_body"),
        (json!({"amount": 5, "source": "gift"}), "invalid_body"),
        (json!({"amount": 5}), "invalid_body"),
        (
            json!({"amount": 5, "source": "plan", "currency": "usd"}),
            "invalid_body",
        ),
        (
            json!({"amount": 5, "source": "plan", "priority": 256}),
            "invalid_body",
        ),
        (
            json!({"amount": 5, "source": "plan", "effective_at": start, "expires_at": start}),
            "invalid_credits",
        ),
        (
            json!({"amount": 5, "source": "plan", "reason": "a\u{7}b"}),
            "invalid_credits",
        ),
    ];
    for (body, code) in refused_grants {
        let reply = app
            .post("/v1/billing/credits/add", &tenant.token, body.clone())
            .await;
        assert_eq!(reply.status.as_u16(), 400, "{body}: {}", reply.text);
        assert_eq!(reply.body["code"], code, "{body}: {}", reply.text);
    }
    let refused_spends = [
        (
            json!({"amount": 0, "idempotency_key": "k"}),
            "invalid_credits",
        ),
        (
            json!({"amount": 1, "idempotency_key": ""}),
            "invalid_credits",
        ),
        (
            json!({"amount": 1, "idempotency_key": "x".repeat(256)}),
            "invalid_credits",
        ),
        (
            json!({"amount": 1, "idempotency_key": "a\nb"}),
            "invalid_credits",
        ),
        (
            json!({"amount": 1.5, "idempotency_key": "k"}),
            "invalid_body",
        ),
        (json!({"amount": 1}), "invalid_body"),
        (
            json!({"amount": 1, "idempotency_key": "k", "model": "x"}),
            "invalid_body",
        ),
    ];
    for (body, code) in refused_spends {
        let reply = app
            .post("/v1/billing/credits/spend", &tenant.token, body.clone())
            .await;
        assert_eq!(reply.status.as_u16(), 400, "{body}: {}", reply.text);
        assert_eq!(reply.body["code"], code, "{body}: {}", reply.text);
    }
    let state = credits(&app, &tenant).await;
    assert_eq!(state["balance"], 10);
    assert_eq!(state["entries"].as_array().unwrap().len(), 1);

    // Only admins: a server token is refused on every credits route.
    let (server, _) = app.issue(&tenant, json!({ "kind": "server" })).await;
    app.get("/v1/billing/credits", &server)
        .await
        .assert_problem(403, "insufficient_scope");
    app.post(
        "/v1/billing/credits/spend",
        &server,
        json!({"amount": 1, "idempotency_key": "k"}),
    )
    .await
    .assert_problem(403, "insufficient_scope");
    app.post(
        "/v1/billing/credits/add",
        &server,
        json!({"amount": 1, "source": "promotion"}),
    )
    .await
    .assert_problem(403, "insufficient_scope");
    assert_eq!(credits(&app, &tenant).await["balance"], 10);
}

async fn grant(app: &TestApp, tenant: &Tenant, amount: u64) {
    app.post(
        "/v1/billing/credits/add",
        &tenant.token,
        json!({"amount": amount, "source": "purchase"}),
    )
    .await
    .assert_status(201);
}

/// A token of `tenant` that may report usage and nothing else, and its id.
async fn reporter(app: &TestApp, tenant: &Tenant) -> (String, String) {
    app.issue(tenant, json!({ "scopes": ["usage.report"] }))
        .await
}

fn model_report(key: &str, model: &str, input: u64, output: u64) -> Value {
    json!({"idempotency_key": key, "usage": {
        "kind": "model", "model": model, "input_tokens": input, "output_tokens": output,
    }})
}

fn agent_report(key: &str, operation: &str, invocations: u64) -> Value {
    json!({"idempotency_key": key, "usage": {
        "kind": "agent", "agent": "researcher", "operation": operation, "invocations": invocations,
    }})
}

async fn report(app: &TestApp, token: &str, reports: Vec<Value>) -> Reply {
    app.post("/v1/billing/usage", token, json!({ "reports": reports }))
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_is_priced_from_the_table_paid_in_credits_and_summed_by_window() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let other = app.bootstrap().await;
    grant(&app, &tenant, 1000).await;
    let (token, token_id) = reporter(&app, &tenant).await;
    let prices = app.get("/v1/billing/prices", &token).await;
    let prices = prices.assert_status(200);
    assert_eq!(prices["models"]["gpt-4o"]["input_per_million"], 2500);
    assert_eq!(prices["operations"]["invoke"]["per_invocation"], 1);

    // gpt-4o: 1000 × 2500 + 100 × 10000 millionths = 3.5 credits, rounded up once: 4.
    let batch = vec![
        model_report("call-1", "gpt-4o", 1000, 100),
        agent_report("call-2", "invoke", 5),
    ];
    let first = report(&app, &token, batch.clone()).await;
    let first = first.assert_status(201).clone();
    assert_eq!(first["charged"], 9);
    assert_eq!(first["balance"], 991);
    assert_eq!(first["reports"][0]["credits"], 4);
    assert_eq!(first["reports"][0]["price_version"], 1);
    assert_eq!(first["reports"][0]["usage"]["input_tokens"], 1000);
    assert_eq!(first["reports"][1]["usage"]["operation"], "invoke");
    assert_eq!(
        first["reports"][0]["credential"],
        format!("token:{token_id}")
    );
    // The reporter retries the batch: the first records, nothing charged.
    let retry = report(&app, &token, batch).await;
    let retry = retry.assert_status(200).clone();
    assert_eq!(retry["charged"], 0);
    assert_eq!(retry["balance"], 991);
    for field in ["record_id", "entry_id"] {
        assert_eq!(retry["reports"][0][field], first["reports"][0][field]);
    }
    assert_eq!(
        first["reports"][0]["entry_id"], first["reports"][1]["entry_id"],
        "one entry paid for the batch"
    );
    assert_ne!(
        first["reports"][0]["record_id"],
        first["reports"][1]["record_id"]
    );
    assert_eq!(retry["reports"][0]["replayed"], true);
    report(&app, &token, vec![agent_report("call-2", "invoke", 6)])
        .await
        .assert_problem(409, "idempotency_key_reused");

    // Windows: an hour later another report; by hour two buckets, by day one.
    app.advance(3600);
    report(&app, &token, vec![agent_report("call-3", "hire", 1)])
        .await
        .assert_status(201);
    let by_hour = app
        .get("/v1/billing/usage?window=hour", &tenant.token)
        .await;
    let by_hour = by_hour.assert_status(200).clone();
    assert_eq!(by_hour["totals"]["credits"], 109);
    assert_eq!(by_hour["totals"]["reports"], 3);
    assert_eq!(by_hour["buckets"].as_array().unwrap().len(), 2);
    let first_hour = &by_hour["buckets"][0]["by"];
    assert_eq!(first_hour.as_array().unwrap().len(), 2);
    assert_eq!(first_hour[0]["kind"], "agent");
    assert_eq!(first_hour[0]["invocations"], 5);
    assert_eq!(first_hour[1]["subject"], "gpt-4o");
    assert_eq!(first_hour[1]["output_tokens"], 100);
    let by_day = app.get("/v1/billing/usage", &tenant.token).await;
    let by_day = by_day.assert_status(200).clone();
    assert_eq!(by_day["window"], "day");
    assert_eq!(by_day["totals"], by_hour["totals"]);
    let only_model = app
        .get("/v1/billing/usage?subject=gpt-4o", &tenant.token)
        .await;
    assert_eq!(only_model.assert_status(200)["totals"]["credits"], 4);
    app.get("/v1/billing/usage?window=week", &tenant.token)
        .await
        .assert_problem(400, "invalid_query");
    app.get(
        "/v1/billing/usage?window=hour&from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z",
        &tenant.token,
    )
    .await
    .assert_problem(400, "invalid_usage");
    // Reading usage is the admins'; the reporter only reports.
    app.get("/v1/billing/usage", &token)
        .await
        .assert_problem(403, "insufficient_scope");
    let state = credits(&app, &tenant).await;
    assert_eq!(state["balance"], 891);
    assert_eq!(state["entries"][0]["kind"], "usage");
    let audit = app.audit(&tenant).await;
    let recorded = audit
        .iter()
        .filter(|r| r["action"] == "billing.usage_record")
        .count();
    assert_eq!(recorded, 2, "once per batch that recorded something");

    // The other account sees none of it; its keys are its own; without credits, 402.
    let theirs = app.get("/v1/billing/usage", &other.token).await;
    assert_eq!(theirs.assert_status(200)["totals"]["reports"], 0);
    let (their_token, _) = reporter(&app, &other).await;
    let short = report(
        &app,
        &their_token,
        vec![agent_report("call-1", "invoke", 1)],
    )
    .await;
    short.assert_problem(402, "insufficient_credits");
    grant(&app, &other, 1).await;
    report(
        &app,
        &their_token,
        vec![agent_report("call-1", "invoke", 1)],
    )
    .await
    .assert_status(201);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_usage_reports_never_overdraw_and_bad_reports_write_nothing() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    grant(&app, &tenant, 90).await;
    let (token, _) = reporter(&app, &tenant).await;
    let outcomes = join_all((0..20).map(|n| {
        report(
            &app,
            &token,
            vec![agent_report(&format!("burst-{n}"), "invoke", 7)],
        )
    }))
    .await;
    let statuses: Vec<u16> = outcomes.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        12,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 402).count(),
        8,
        "{statuses:?}"
    );
    assert_eq!(credits(&app, &tenant).await["balance"], 6);

    let refused = [
        (json!({"reports": []}), "invalid_usage"),
        (
            json!({"reports": [model_report("k", "gpt-9", 1, 1)]}),
            "unknown_model",
        ),
        (
            json!({"reports": [agent_report("k", "teleport", 1)]}),
            "unknown_operation",
        ),
        (
            json!({"reports": [agent_report("k", "invoke", 0)]}),
            "invalid_usage",
        ),
        (
            json!({"reports": [model_report("k", "gpt-4o", 0, 0)]}),
            "invalid_usage",
        ),
        (
            json!({"reports": [agent_report("k", "invoke", 1), agent_report("k", "invoke", 1)]}),
            "invalid_usage",
        ),
        (
            json!({"reports": [model_report("", "gpt-4o", 1, 1)]}),
            "invalid_usage",
        ),
        (
            json!({"reports": [{"idempotency_key": "k", "usage": {"kind": "model", "model": "gpt-4o", "input_tokens": -1}}]}),
            "invalid_body",
        ),
        (
            json!({"reports": [{"idempotency_key": "k", "usage": {"kind": "agent", "agent": "a", "operation": "invoke", "invocations": 1.5}}]}),
            "invalid_body",
        ),
        (
            json!({"reports": [{"idempotency_key": "k", "usage": {"kind": "model", "model": "gpt-4o", "input_tokens": 1, "currency": "usd"}}]}),
            "invalid_body",
        ),
        (
            json!({"reports": [{"idempotency_key": "k", "usage": {"kind": "barter"}}]}),
            "invalid_body",
        ),
        (
            json!({"reports": [{"usage": {"kind": "agent"}}]}),
            "invalid_body",
        ),
    ];
    for (body, code) in refused {
        let reply = app.post("/v1/billing/usage", &token, body.clone()).await;
        assert_eq!(reply.status.as_u16(), 400, "{body}: {}", reply.text);
        assert_eq!(reply.body["code"], code, "{body}: {}", reply.text);
    }
    let (reader, _) = app.issue(&tenant, json!({ "kind": "server" })).await;
    report(&app, &reader, vec![agent_report("k", "invoke", 1)])
        .await
        .assert_problem(403, "insufficient_scope");
    assert_eq!(credits(&app, &tenant).await["balance"], 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reservation_is_settled_for_what_the_work_cost_or_given_back_at_its_expiry() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let other = app.bootstrap().await;
    grant(&app, &tenant, 100).await;
    let (token, _) = reporter(&app, &tenant).await;
    let reserve = |key: &str, amount: u64, seconds: u64| {
        app.post(
            "/v1/billing/credits/reserve",
            &token,
            json!({"amount": amount, "idempotency_key": key, "expires_in_seconds": seconds}),
        )
    };
    let made = reserve("job-1", 50, 600).await;
    let made = made.assert_status(201).clone();
    let id = made["reservation"]["reservation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(made["reservation"]["status"], "held");
    assert_eq!(made["entry"]["kind"], "reserve");
    assert_eq!(credits(&app, &tenant).await["balance"], 50);
    let again = reserve("job-1", 50, 600).await;
    assert_eq!(
        again.assert_status(200)["reservation"]["reservation_id"],
        id
    );
    reserve("job-1", 60, 600)
        .await
        .assert_problem(409, "idempotency_key_reused");
    reserve("job-2", 51, 600)
        .await
        .assert_problem(402, "insufficient_credits");
    for (body, code) in [
        (
            json!({"amount": 1, "idempotency_key": "k", "expires_in_seconds": 5}),
            "invalid_credits",
        ),
        (
            json!({"amount": 0, "idempotency_key": "k"}),
            "invalid_credits",
        ),
        (json!({"amount": 1}), "invalid_body"),
        (
            json!({"amount": 1, "idempotency_key": "k", "expires_in_seconds": -1}),
            "invalid_body",
        ),
    ] {
        let reply = app
            .post("/v1/billing/credits/reserve", &token, body.clone())
            .await;
        assert_eq!(reply.status.as_u16(), 400, "{body}: {}", reply.text);
        assert_eq!(reply.body["code"], code, "{body}: {}", reply.text);
    }

    let settle_path = format!("/v1/billing/credits/reservations/{id}/settle");
    let settle = |amount: Value| app.post(&settle_path, &token, json!({ "amount": amount }));
    settle(json!(51))
        .await
        .assert_problem(400, "invalid_credits");
    settle(json!(-1)).await.assert_problem(400, "invalid_body");
    let settled = settle(json!(20)).await;
    let settled = settled.assert_status(200).clone();
    assert_eq!(settled["reservation"]["status"], "settled");
    assert_eq!(settled["reservation"]["settled_amount"], 20);
    assert_eq!(settled["release"]["amount"], 30);
    assert_eq!(settled["release"]["kind"], "release");
    assert_eq!(credits(&app, &tenant).await["balance"], 80);
    let retry = settle(json!(20)).await;
    assert_eq!(retry.assert_status(200)["release"], Value::Null);
    settle(json!(10))
        .await
        .assert_problem(409, "reservation_settled");
    assert_eq!(credits(&app, &tenant).await["balance"], 80);

    // Another account's reservation does not exist for it.
    let (their_token, _) = reporter(&app, &other).await;
    app.get(
        &format!("/v1/billing/credits/reservations/{id}"),
        &their_token,
    )
    .await
    .assert_problem(404, "reservation_not_found");
    app.post(
        &format!("/v1/billing/credits/reservations/{id}/settle"),
        &their_token,
        json!({"amount": 0}),
    )
    .await
    .assert_problem(404, "reservation_not_found");

    // Left unsettled past its expiry: too late to settle, and the worker gives it back.
    let short = reserve("job-3", 10, 10).await;
    let short_id = short.assert_status(201)["reservation"]["reservation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(credits(&app, &tenant).await["balance"], 70);
    app.advance(11);
    app.post(
        &format!("/v1/billing/credits/reservations/{short_id}/settle"),
        &token,
        json!({"amount": 5}),
    )
    .await
    .assert_problem(409, "reservation_expired");
    let job = app.app.job("reservation-expiry").unwrap();
    assert_eq!(job.run(&|| true).await.unwrap().items, 1);
    assert_eq!(credits(&app, &tenant).await["balance"], 80);
    let expired = app
        .get(
            &format!("/v1/billing/credits/reservations/{short_id}"),
            &token,
        )
        .await;
    assert_eq!(expired.assert_status(200)["status"], "expired");
    let audit = app.audit(&tenant).await;
    let count = |action: &str| audit.iter().filter(|r| r["action"] == action).count();
    assert_eq!(count("billing.credits_reserve"), 2);
    assert_eq!(count("billing.credits_settle"), 1);
    assert_eq!(count("billing.credits_expire"), 1);
}

async fn ask(app: &TestApp, token: &str, body: Value) -> Reply {
    app.post("/v1/billing/eligibility", token, body).await
}

fn model_ask(model: &str, input: u64, output: u64) -> Value {
    json!({"kind": "model", "model": model, "input_tokens": input, "output_tokens": output})
}

#[tokio::test(flavor = "multi_thread")]
async fn eligibility_names_the_limit_the_usage_and_the_upgrades() {
    // Standings read fresh on every check, to follow the reports made here.
    let app = TestApp::spawn_with(&[("D2__BILLING__ELIGIBILITY_CACHE__TTL_SECONDS", "0")]).await;
    let tenant = app.bootstrap().await;
    let (token, _) = reporter(&app, &tenant).await;

    // No credits yet: the cost against a balance of 0.
    let short = ask(&app, &token, model_ask("gpt-4o", 1000, 100)).await;
    short.assert_problem(402, "not_eligible");
    assert_eq!(short.body["limit"], "credits");
    assert_eq!(short.body["allowed"], 0);
    assert_eq!(short.body["requested"], 4);
    assert_eq!(short.body["upgrades"], json!([]));
    grant(&app, &tenant, 1000).await;
    let allowed = ask(&app, &token, model_ask("gpt-4o", 1000, 100)).await;
    let allowed = allowed.assert_status(200).clone();
    assert_eq!(allowed["allowed"], true);
    assert_eq!(allowed["cost"], 4);
    assert_eq!(allowed["balance"], 1000);

    // The trial's model tokens a month: 1,000,000.
    report(
        &app,
        &token,
        vec![model_report("m-1", "gpt-4o-mini", 600_000, 0)],
    )
    .await
    .assert_status(201);
    let tokens = ask(&app, &token, model_ask("gpt-4o-mini", 300_000, 200_000)).await;
    tokens.assert_problem(402, "not_eligible");
    assert_eq!(tokens.body["limit"], "model_tokens");
    assert_eq!(tokens.body["allowed"], 1_000_000);
    assert_eq!(tokens.body["used"], 600_000);
    assert_eq!(tokens.body["requested"], 500_000);
    let upgrades: Vec<&str> = tokens.body["upgrades"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["plan"].as_str().unwrap())
        .collect();
    assert_eq!(upgrades, ["essentials", "pro", "enterprise"]);
    assert_eq!(tokens.body["upgrades"][0]["allowed"], 10_000_000);

    // The trial's one agent slot: the agent it used, and no other.
    ask(&app, &token, json!({"kind": "hire", "agent": "researcher"}))
        .await
        .assert_status(200);
    report(&app, &token, vec![agent_report("a-1", "invoke", 1)])
        .await
        .assert_status(201);
    ask(&app, &token, json!({"kind": "hire", "agent": "researcher"}))
        .await
        .assert_status(200);
    let slot = ask(&app, &token, json!({"kind": "hire", "agent": "writer"})).await;
    slot.assert_problem(402, "not_eligible");
    assert_eq!(slot.body["limit"], "agent_slots");
    assert_eq!(
        (slot.body["allowed"].clone(), slot.body["used"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(slot.body["upgrades"][0]["plan"], "essentials");
    let other_agent = ask(
        &app,
        &token,
        json!({"kind": "agent", "agent": "writer", "operation": "invoke", "invocations": 1}),
    )
    .await;
    assert_eq!(other_agent.body["limit"], "agent_slots");

    // Bad questions are 400; a token without usage.report is 403.
    for (body, code) in [
        (model_ask("gpt-9", 1, 1), "unknown_model"),
        (model_ask("gpt-4o", 0, 0), "invalid_usage"),
        (json!({"kind": "hire", "agent": ""}), "invalid_usage"),
        (json!({"kind": "hire"}), "invalid_body"),
        (
            json!({"kind": "model", "model": "gpt-4o", "input_tokens": -1}),
            "invalid_body",
        ),
        (json!({"kind": "lunch"}), "invalid_body"),
    ] {
        let reply = ask(&app, &token, body.clone()).await;
        assert_eq!(reply.status.as_u16(), 400, "{body}: {}", reply.text);
        assert_eq!(reply.body["code"], code, "{body}: {}", reply.text);
    }
    let (server, _) = app.issue(&tenant, json!({ "kind": "server" })).await;
    ask(
        &app,
        &server,
        json!({"kind": "hire", "agent": "researcher"}),
    )
    .await
    .assert_problem(403, "insufficient_scope");

    // An ended trial is locked: nothing is eligible.
    app.advance(15 * 86_400);
    let locked = ask(&app, &token, json!({"kind": "hire", "agent": "researcher"})).await;
    locked.assert_problem(402, "not_eligible");
    assert_eq!(locked.body["limit"], "locked");
}

#[tokio::test(flavor = "multi_thread")]
async fn eligibility_answers_from_memory_until_the_standing_is_read_again() {
    let app = TestApp::spawn_with(&[("D2__BILLING__ELIGIBILITY_CACHE__TTL_SECONDS", "3600")]).await;
    let tenant = app.bootstrap().await;
    let (token, _) = reporter(&app, &tenant).await;
    grant(&app, &tenant, 100).await;
    let first = ask(&app, &token, json!({"kind": "hire", "agent": "a"})).await;
    let first = first.assert_status(200).clone();
    assert_eq!(first["balance"], 100);
    report(&app, &token, vec![agent_report("x", "hire", 1)])
        .await
        .assert_status(201);
    // The standing read before the report still answers: no store was read.
    let cached = ask(&app, &token, json!({"kind": "hire", "agent": "a"})).await;
    let cached = cached.assert_status(200).clone();
    assert_eq!(cached["balance"], 100);
    assert_eq!(cached["as_of"], first["as_of"]);
    // The report itself was paid exactly, from the ledger.
    assert_eq!(credits(&app, &tenant).await["balance"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standing_past_its_lifetime_answers_at_once_while_a_task_reads_it_again() {
    let app = TestApp::spawn_with(&[("D2__BILLING__ELIGIBILITY_CACHE__TTL_SECONDS", "60")]).await;
    let tenant = app.bootstrap().await;
    let (token, _) = reporter(&app, &tenant).await;
    grant(&app, &tenant, 100).await;
    let hire = || json!({"kind": "hire", "agent": "researcher"});
    let first = ask(&app, &token, hire()).await.assert_status(200).clone();
    report(&app, &token, vec![agent_report("x", "hire", 1)])
        .await
        .assert_status(201);
    app.advance(61);
    // Past its lifetime, the standing still answers: the check does not wait for the
    // stores...
    let stale = ask(&app, &token, hire()).await.assert_status(200).clone();
    assert_eq!(stale["as_of"], first["as_of"]);
    assert_eq!(stale["balance"], 100);
    // A fleet sharing the token checks at once meanwhile: each answers, from the old
    // reading or the new one, never anything else.
    let fleet = join_all((0..32).map(|_| ask(&app, &token, hire()))).await;
    for reply in &fleet {
        let body = reply.assert_status(200);
        let balance = if body["as_of"] == first["as_of"] {
            100
        } else {
            0
        };
        assert_eq!(body["balance"], balance, "{body}");
    }
    // ... while a task reads it again, which the checks after it answer from.
    let mut fresh = stale;
    for _ in 0..400 {
        if fresh["as_of"] != first["as_of"] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        fresh = ask(&app, &token, hire()).await.assert_status(200).clone();
    }
    assert_ne!(
        fresh["as_of"], first["as_of"],
        "the standing was read again"
    );
    assert_eq!(fresh["balance"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_forecast_projects_the_month_from_the_last_seven_days() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let (token, _) = reporter(&app, &tenant).await;
    grant(&app, &tenant, 10_000).await;
    let reported_at = now(&app);
    report(&app, &token, vec![agent_report("day-0", "hire", 4)])
        .await
        .assert_status(201);
    app.advance(86_400);
    let forecast = app.get("/v1/billing/forecast", &tenant.token).await;
    let forecast = forecast.assert_status(200).clone();
    assert_eq!(forecast["balance"], 9_600);
    let daily = forecast["daily"].as_array().unwrap();
    assert_eq!(daily.len(), 7);
    assert_eq!(
        daily[6]["credits"], 400,
        "yesterday, the latest complete day"
    );
    assert!(daily[..6].iter().all(|d| d["credits"] == 0));
    // Only the latest day used anything: it weighs 7 of 28, so 100 credits a day.
    assert_eq!(forecast["daily_rate"], 100);
    let period_start: DateTime<Utc> = forecast["period_start"].as_str().unwrap().parse().unwrap();
    let used = if reported_at >= period_start { 400 } else { 0 };
    assert_eq!(forecast["used_in_period"], used);
    let runs_out: DateTime<Utc> = forecast["runs_out_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(runs_out, now(&app) + Duration::days(96));
    app.get("/v1/billing/forecast", &token)
        .await
        .assert_problem(403, "insufficient_scope");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budget_caps_what_a_model_or_agent_may_cost_in_a_month() {
    let app = TestApp::spawn_with(&[("D2__BILLING__ELIGIBILITY_CACHE__TTL_SECONDS", "0")]).await;
    let tenant = app.bootstrap().await;
    let other = app.bootstrap().await;
    grant(&app, &tenant, 10_000).await;
    let (token, _) = reporter(&app, &tenant).await;
    let set = app
        .request(
            Method::PUT,
            "/v1/billing/budgets/model/gpt-4o",
            Some(&tenant.token),
        )
        .json(&json!({"monthly_credits": 10}));
    let set = app.send(set).await;
    let set = set.assert_status(200).clone();
    assert_eq!(set["kind"], "model");
    assert_eq!(set["monthly_credits"], 10);

    // 4 credits a call: two fit in 10, the third does not.
    for key in ["b-1", "b-2"] {
        ask(&app, &token, model_ask("gpt-4o", 1000, 100))
            .await
            .assert_status(200);
        report(&app, &token, vec![model_report(key, "gpt-4o", 1000, 100)])
            .await
            .assert_status(201);
    }
    let over = ask(&app, &token, model_ask("gpt-4o", 1000, 100)).await;
    over.assert_problem(402, "not_eligible");
    assert_eq!(over.body["limit"], "budget");
    assert_eq!(over.body["subject"], "model:gpt-4o");
    assert_eq!(over.body["allowed"], 10);
    assert_eq!(over.body["used"], 8);
    assert_eq!(over.body["requested"], 4);
    // Other models are not capped by it.
    ask(&app, &token, model_ask("gpt-4o-mini", 1000, 100))
        .await
        .assert_status(200);
    let listed = app.get("/v1/billing/budgets", &tenant.token).await;
    let listed = listed.assert_status(200).clone();
    assert_eq!(listed[0]["spent_this_month"], 8);

    // Bad budgets are 400; another account sees none and deletes none.
    for (path, body, code) in [
        (
            "/v1/billing/budgets/model/gpt-4o",
            json!({"monthly_credits": 0}),
            "invalid_budget",
        ),
        (
            "/v1/billing/budgets/planet/gpt-4o",
            json!({"monthly_credits": 5}),
            "invalid_budget",
        ),
        (
            "/v1/billing/budgets/model/gpt-4o",
            json!({"monthly_credits": -5}),
            "invalid_body",
        ),
        (
            "/v1/billing/budgets/model/gpt-4o",
            json!({"monthly_credits": 5, "x": 1}),
            "invalid_body",
        ),
    ] {
        let request = app
            .request(Method::PUT, path, Some(&tenant.token))
            .json(&body);
        let reply = app.send(request).await;
        assert_eq!(reply.status.as_u16(), 400, "{path} {body}: {}", reply.text);
        assert_eq!(reply.body["code"], code, "{path} {body}: {}", reply.text);
    }
    let theirs = app.get("/v1/billing/budgets", &other.token).await;
    assert_eq!(theirs.assert_status(200), &json!([]));
    app.delete("/v1/billing/budgets/model/gpt-4o", &other.token)
        .await
        .assert_problem(404, "budget_not_found");
    app.get("/v1/billing/budgets", &token)
        .await
        .assert_problem(403, "insufficient_scope");

    // Removed: the model is free of it again.
    let gone = app
        .delete("/v1/billing/budgets/model/gpt-4o", &tenant.token)
        .await;
    assert_eq!(gone.status.as_u16(), 204);
    ask(&app, &token, model_ask("gpt-4o", 1000, 100))
        .await
        .assert_status(200);
    let audit = app.audit(&tenant).await;
    let count = |action: &str| audit.iter().filter(|r| r["action"] == action).count();
    assert_eq!(count("billing.budget_set"), 1);
    assert_eq!(count("billing.budget_delete"), 1);
}

/// Every page of `path` (which has a query already), `limit` at a time.
async fn every_page(app: &TestApp, token: &str, path: &str, limit: u32) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(cursor) => format!("{path}&limit={limit}&cursor={cursor}"),
            None => format!("{path}&limit={limit}"),
        };
        let reply = app.get(&url, token).await;
        pages.push(reply.assert_status(200).as_array().unwrap().clone());
        cursor = reply.header("x-next-cursor").map(str::to_owned);
        if cursor.is_none() {
            return pages;
        }
        assert!(pages.len() < 50, "the pages end");
    }
}

fn field(items: &[Value], name: &str) -> Vec<String> {
    items
        .iter()
        .map(|item| item[name].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_records_and_credit_movements_page_through_the_whole_history() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let other = app.bootstrap().await;
    grant(&app, &tenant, 10_000).await;
    grant(&app, &other, 100).await;
    app.advance(60);
    let (token, token_id) = reporter(&app, &tenant).await;
    let (second, _) = reporter(&app, &tenant).await;
    // Five reports in one batch (one instant), then two an hour later from another token.
    let batch: Vec<Value> = (0..5)
        .map(|n| model_report(&format!("r-{n}"), "gpt-4o", 1000, 0))
        .collect();
    report(&app, &token, batch).await.assert_status(201);
    let start = now(&app);
    app.advance(3600);
    report(
        &app,
        &second,
        vec![
            agent_report("r-5", "invoke", 1),
            model_report("r-6", "gpt-4o-mini", 1000, 0),
        ],
    )
    .await
    .assert_status(201);
    let (their_token, _) = reporter(&app, &other).await;
    report(&app, &their_token, vec![agent_report("r-0", "invoke", 1)])
        .await
        .assert_status(201);

    let pages = every_page(&app, &tenant.token, "/v1/billing/usage/records?", 3).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    let all = pages.concat();
    let mut keys = field(&all, "idempotency_key");
    let mut newest = keys[..2].to_vec();
    newest.sort();
    assert_eq!(newest, ["r-5", "r-6"], "the later batch first");
    keys.sort();
    assert_eq!(keys, (0..7).map(|n| format!("r-{n}")).collect::<Vec<_>>());
    assert!(all.iter().all(|record| record.get("replayed").is_none()));
    let mine = format!("token:{token_id}");
    let by_first_token = every_page(
        &app,
        &tenant.token,
        &format!("/v1/billing/usage/records?credential={mine}"),
        10,
    )
    .await
    .concat();
    assert_eq!(by_first_token.len(), 5);
    let agents = every_page(
        &app,
        &tenant.token,
        "/v1/billing/usage/records?kind=agent",
        10,
    )
    .await
    .concat();
    assert_eq!(field(&agents, "idempotency_key"), ["r-5"]);
    let mini = app
        .get(
            "/v1/billing/usage/records?subject=gpt-4o-mini",
            &tenant.token,
        )
        .await;
    assert_eq!(
        field(
            mini.assert_status(200).as_array().unwrap(),
            "idempotency_key"
        ),
        ["r-6"]
    );
    let until =
        (start + chrono::Duration::seconds(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let early = app
        .get(
            &format!("/v1/billing/usage/records?until={until}"),
            &tenant.token,
        )
        .await;
    assert_eq!(early.assert_status(200).as_array().unwrap().len(), 5);

    // The ledger: the grant, a minute before the reports, and the reports' entries.
    let entries = every_page(&app, &tenant.token, "/v1/billing/credits/entries?", 4)
        .await
        .concat();
    assert_eq!(entries.len(), 3, "the grant and an entry for each batch");
    assert_eq!(entries.last().unwrap()["kind"], "grant");
    let usage_ids = field(
        &every_page(
            &app,
            &tenant.token,
            "/v1/billing/credits/entries?kind=usage",
            2,
        )
        .await
        .concat(),
        "entry_id",
    );
    let mut paid_by = field(&all, "entry_id");
    paid_by.sort();
    paid_by.dedup();
    let mut sorted_usage = usage_ids.clone();
    sorted_usage.sort();
    assert_eq!(
        sorted_usage, paid_by,
        "each record names the entry that paid for it"
    );
    assert_eq!(
        entries[0]["amount"].as_u64().unwrap() + entries[1]["amount"].as_u64().unwrap(),
        all.iter()
            .map(|r| r["credits"].as_u64().unwrap())
            .sum::<u64>(),
        "the batches' entries paid what their records cost"
    );

    // The other account's history is its own.
    let theirs = app.get("/v1/billing/usage/records", &other.token).await;
    assert_eq!(
        field(
            theirs.assert_status(200).as_array().unwrap(),
            "idempotency_key"
        ),
        ["r-0"]
    );
    let their_entries = app.get("/v1/billing/credits/entries", &other.token).await;
    assert_eq!(
        their_entries.assert_status(200).as_array().unwrap().len(),
        2
    );

    // Bad queries are 400; the reporter may not read the history.
    for (path, code) in [
        ("/v1/billing/usage/records?kind=tool", "invalid_query"),
        ("/v1/billing/usage/records?limit=0", "invalid_query"),
        (
            "/v1/billing/usage/records?cursor=not-a-cursor",
            "invalid_cursor",
        ),
        // A well-formed cursor whose id is not an entry's.
        (
            "/v1/billing/usage/records?cursor=MXwxfG5vdC1hbi1pZA",
            "invalid_cursor",
        ),
        (
            "/v1/billing/credits/entries?cursor=MXwxfG5vdC1hbi1pZA",
            "invalid_cursor",
        ),
        ("/v1/billing/credits/entries?kind=refund", "invalid_query"),
        ("/v1/billing/credits/entries?unknown=1", "invalid_query"),
        (
            "/v1/billing/credits/entries?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
            "invalid_credits",
        ),
        (
            "/v1/billing/usage/records?since=2026-01-02T00:00:00Z&until=2026-01-02T00:00:00Z",
            "invalid_usage",
        ),
    ] {
        app.get(path, &tenant.token).await.assert_problem(400, code);
    }
    app.get("/v1/billing/usage/records", &token)
        .await
        .assert_problem(403, "insufficient_scope");
    app.get("/v1/billing/credits/entries", &token)
        .await
        .assert_problem(403, "insufficient_scope");
}

/// A paid invoice (`invoice.paid` or `invoice.payment_succeeded`) of `tenant`'s
/// subscription for the period `[start, end)`, its line at `price`.
fn paid_invoice(
    event: &str,
    kind: &str,
    invoice: &str,
    tenant: &Tenant,
    price: &str,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
) -> Value {
    json!({"id": event, "type": kind, "created": start.timestamp(),
        "data": {"object": {"id": invoice, "object": "invoice",
            "customer": format!("cus_{}", &tenant.account_id[..8]),
            "parent": {"subscription_details": {
                "subscription": format!("sub_{}", &tenant.account_id[..8]),
                "metadata": {"d2_account_id": tenant.account_id}}},
            "lines": {"data": [{"price": {"id": price},
                "period": {"start": start.timestamp(), "end": end.timestamp()}}]}}}})
}

fn plan_grants(credits: &Value) -> Vec<Value> {
    credits["grants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|grant| grant["source"] == "plan")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paid_invoice_grants_the_plans_included_credits_once_for_its_period() {
    let app = billing_app().await;
    let tenant = app.bootstrap().await;
    let other = app.bootstrap().await;
    // The provider's times are whole seconds.
    let start = DateTime::from_timestamp(now(&app).timestamp(), 0).unwrap();
    let period = (start, start + Duration::days(30));
    // The invoice may come before the subscription's own events: its line names the tier.
    let paid = paid_invoice(
        "evt_1",
        "invoice.paid",
        "in_1",
        &tenant,
        "price_Pro_monthly",
        period,
    );
    assert_eq!(outcome(&app, &paid).await, "applied");
    let state = credits(&app, &tenant).await;
    let grants = plan_grants(&state);
    assert_eq!(grants.len(), 1);
    assert_eq!(
        grants[0]["amount"], 100_000,
        "pro includes 100,000 a period"
    );
    assert_eq!(
        grants[0]["expires_at"]
            .as_str()
            .map(|t| t.parse::<DateTime<Utc>>().unwrap()),
        Some(period.1)
    );
    assert_eq!(state["balance"], 100_000);
    assert_eq!(state["entries"][0]["kind"], "grant");
    assert_eq!(
        state["entries"][0]["reason"],
        "pro plan (plans v1), invoice in_1"
    );
    // The provider reports the same payment again: nothing granted twice.
    let succeeded = paid_invoice(
        "evt_2",
        "invoice.payment_succeeded",
        "in_1",
        &tenant,
        "price_Pro_monthly",
        period,
    );
    assert_eq!(
        outcome(&app, &succeeded).await,
        "ignored",
        "no subscription reported yet, nothing granted"
    );
    assert_eq!(plan_grants(&credits(&app, &tenant).await).len(), 1);
    let audit = app.audit(&tenant).await;
    let granted: Vec<&Value> = audit
        .iter()
        .filter(|r| r["action"] == "billing.credits_add")
        .collect();
    assert_eq!(granted.len(), 1);
    assert_eq!(granted[0]["actor"], "system");
    assert_eq!(granted[0]["metadata"]["plan"], "pro");
    assert_eq!(granted[0]["metadata"]["plans_version"], 1);
    assert_eq!(granted[0]["metadata"]["invoice_id"], "in_1");

    // The next period's invoice grants the next period's credits.
    app.advance(30 * 86_400);
    let next = (period.1, period.1 + Duration::days(30));
    let renewal = paid_invoice(
        "evt_3",
        "invoice.paid",
        "in_2",
        &tenant,
        "price_Pro_monthly",
        next,
    );
    assert_eq!(outcome(&app, &renewal).await, "applied");
    let state = credits(&app, &tenant).await;
    assert_eq!(plan_grants(&state).len(), 2);
    assert_eq!(
        state["balance"], 100_000,
        "the first period's credits lapsed"
    );
    // A payment for a period already over, and an unknown price, grant nothing.
    let late = paid_invoice(
        "evt_4",
        "invoice.paid",
        "in_0",
        &tenant,
        "price_Pro_monthly",
        period,
    );
    assert_ne!(outcome(&app, &late).await, "applied");
    let unknown = paid_invoice(
        "evt_5",
        "invoice.paid",
        "in_3",
        &tenant,
        "price_other",
        next,
    );
    assert_ne!(outcome(&app, &unknown).await, "applied");
    assert_eq!(plan_grants(&credits(&app, &tenant).await).len(), 2);
    // A failed payment grants nothing.
    let mut failed = paid_invoice(
        "evt_6",
        "invoice.payment_failed",
        "in_4",
        &tenant,
        "price_Pro_monthly",
        next,
    );
    failed["created"] = json!(now(&app).timestamp());
    deliver(&app, &failed).await.assert_status(200);
    assert_eq!(plan_grants(&credits(&app, &tenant).await).len(), 2);

    // The other account has none of it; the same invoice id names its own invoice.
    assert!(plan_grants(&credits(&app, &other).await).is_empty());
    let theirs = paid_invoice(
        "evt_7",
        "invoice.paid",
        "in_1",
        &other,
        "price_Enterprise",
        next,
    );
    assert_eq!(outcome(&app, &theirs).await, "applied");
    assert_eq!(
        plan_grants(&credits(&app, &other).await)[0]["amount"],
        1_000_000
    );
    assert_eq!(plan_grants(&credits(&app, &tenant).await).len(), 2);

    // An invoice event without its id is malformed: 400, nothing recorded.
    let mut no_id = paid_invoice(
        "evt_8",
        "invoice.paid",
        "in_5",
        &tenant,
        "price_Pro_monthly",
        next,
    );
    no_id["data"]["object"]
        .as_object_mut()
        .unwrap()
        .remove("id");
    deliver(&app, &no_id)
        .await
        .assert_problem(400, "invalid_webhook_event");
}

/// The notice `request` carried, after checking its signature: a JWS with a detached
/// payload over the exact body, by a key of the account's published JWKS.
async fn verified_notice(app: &TestApp, tenant: &Tenant, request: &wiremock::Request) -> Value {
    use base64::Engine as _;
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(header("content-type"), "application/json");
    let signature = header("d2-signature");
    let parts: Vec<&str> = signature.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert!(parts[1].is_empty(), "the payload is detached");
    let protected: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[0])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(protected["typ"], "d2-notice+jws");
    let jwks = app
        .send(app.request(
            Method::GET,
            &format!("/.well-known/jwks.json?account_id={}", tenant.account_id),
            None,
        ))
        .await;
    let key = jwks.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|key| key["kid"] == protected["kid"])
        .expect("the signing key is published in the account's JWKS")
        .clone();
    let jwk = josekit::jwk::Jwk::from_bytes(serde_json::to_vec(&key).unwrap()).unwrap();
    let verifier = josekit::jws::RS256.verifier_from_jwk(&jwk).unwrap();
    let attached = format!(
        "{}.{}.{}",
        parts[0],
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&request.body),
        parts[2]
    );
    let (payload, _) = josekit::jws::deserialize_compact(&attached, &verifier)
        .expect("the signature verifies over the exact body");
    let notice: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(header("d2-notice-id"), notice["id"].as_str().unwrap());
    // Tampered with, it no longer verifies.
    let mut tampered = request.body.clone();
    tampered.push(b' ');
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tampered),
        parts[2]
    );
    assert!(josekit::jws::deserialize_compact(&forged, &verifier).is_err());
    notice
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budget_reaching_its_thresholds_posts_signed_notices_once_each_with_retries() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let app = TestApp::spawn_with(&[
        ("D2__BILLING__ELIGIBILITY_CACHE__TTL_SECONDS", "0"),
        ("D2__OAUTH__FETCH_PRIVATE_ADDRESSES", "true"),
        ("D2__WORKER__TASKS__FIRST_RETRY_SECONDS", "0"),
    ])
    .await;
    let tenant = app.bootstrap().await;
    let other = app.bootstrap().await;
    grant(&app, &tenant, 10_000).await;
    let (token, _) = reporter(&app, &tenant).await;
    let put = |body: Value, who: &str| {
        let request = app
            .request(Method::PUT, "/v1/billing/notices/endpoint", Some(who))
            .json(&body);
        app.send(request)
    };

    // The endpoint: https, or http to a loopback host; anything else is refused.
    app.get("/v1/billing/notices/endpoint", &tenant.token)
        .await
        .assert_problem(404, "notice_endpoint_not_found");
    for bad in [
        json!({"url": "http://hooks.example.com/d2"}),
        json!({"url": "ftp://hooks.example.com/d2"}),
        json!({"url": "https://user:secret@hooks.example.com/d2"}),
        json!({"url": "not a url"}),
    ] {
        put(bad.clone(), &tenant.token)
            .await
            .assert_problem(400, "invalid_notice_endpoint");
    }
    for bad in [
        json!({}),
        json!({"url": "https://a.example", "secret": "x"}),
    ] {
        put(bad, &tenant.token)
            .await
            .assert_problem(400, "invalid_body");
    }
    put(json!({"url": "https://hooks.example.com/d2"}), &token)
        .await
        .assert_problem(403, "insufficient_scope");

    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks/d2"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .and(path("/hooks/d2"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    let url = format!("{}/hooks/d2", receiver.uri());
    let set = put(json!({ "url": url }), &tenant.token).await;
    assert_eq!(set.assert_status(200)["url"], url);
    assert_eq!(
        app.get("/v1/billing/notices/endpoint", &tenant.token)
            .await
            .assert_status(200)["url"],
        url
    );
    app.get("/v1/billing/notices/endpoint", &other.token)
        .await
        .assert_problem(404, "notice_endpoint_not_found");

    // A budget of 10 credits; 4 credits a call.
    let budget = app
        .request(
            Method::PUT,
            "/v1/billing/budgets/model/gpt-4o",
            Some(&tenant.token),
        )
        .json(&json!({"monthly_credits": 10}));
    app.send(budget).await.assert_status(200);
    let scan = app.app.job("billing-thresholds").unwrap();
    report(&app, &token, vec![model_report("n-1", "gpt-4o", 1000, 100)])
        .await
        .assert_status(201);
    assert_eq!(scan.run(&|| true).await.unwrap().items, 0, "40 %");
    report(&app, &token, vec![model_report("n-2", "gpt-4o", 1000, 100)])
        .await
        .assert_status(201);
    assert_eq!(scan.run(&|| true).await.unwrap().items, 1, "80 %");
    assert_eq!(scan.run(&|| true).await.unwrap().items, 0, "once a period");

    // Delivered by the task queue: the first try meets a 503 and is retried.
    let runner = app.app.task_runner(&[]);
    let first = runner.run_once().await.unwrap();
    assert_eq!((first.done, first.retried), (0, 1));
    let second = runner.run_once().await.unwrap();
    assert_eq!((second.done, second.retried), (1, 0));
    let requests = receiver.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].body, requests[1].body,
        "a retry posts the same notice"
    );
    let notice = verified_notice(&app, &tenant, &requests[1]).await;
    assert_eq!(notice["type"], "billing.threshold_reached");
    assert_eq!(notice["account_id"], tenant.account_id.as_str());
    assert_eq!(notice["subject"], "budget:model:gpt-4o");
    assert_eq!(notice["threshold"], 80);
    assert_eq!(notice["used"], 8);
    assert_eq!(notice["limit"], 10);

    // Past the budget (the report is paid; eligibility would have refused it): 90 and 100.
    report(&app, &token, vec![model_report("n-3", "gpt-4o", 1000, 100)])
        .await
        .assert_status(201);
    assert_eq!(scan.run(&|| true).await.unwrap().items, 2);
    assert_eq!(runner.run_once().await.unwrap().done, 2);
    let requests = receiver.received_requests().await.unwrap();
    assert_eq!(requests.len(), 4);
    let mut thresholds = Vec::new();
    for request in &requests[2..] {
        thresholds.push(verified_notice(&app, &tenant, request).await["threshold"].clone());
    }
    thresholds.sort_by_key(|t| t.as_u64());
    assert_eq!(thresholds, [json!(90), json!(100)]);

    let listed = app.get("/v1/billing/notices", &tenant.token).await;
    let listed = listed.assert_status(200).as_array().unwrap().clone();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[2]["threshold"], 80, "newest first");
    assert_eq!(listed[2]["id"], notice["id"]);
    let theirs = app.get("/v1/billing/notices", &other.token).await;
    assert_eq!(theirs.assert_status(200), &json!([]));
    app.get("/v1/billing/notices?limit=0", &tenant.token)
        .await
        .assert_problem(400, "invalid_query");
    app.get("/v1/billing/notices", &token)
        .await
        .assert_problem(403, "insufficient_scope");
    let audit = app.audit(&tenant).await;
    let count = |action: &str| audit.iter().filter(|r| r["action"] == action).count();
    assert_eq!(count("billing.threshold_notice"), 3);
    assert_eq!(count("billing.notice_endpoint_set"), 1);

    // Removed: another account cannot, the account can once.
    app.delete("/v1/billing/notices/endpoint", &other.token)
        .await
        .assert_problem(404, "notice_endpoint_not_found");
    let gone = app
        .delete("/v1/billing/notices/endpoint", &tenant.token)
        .await;
    assert_eq!(gone.status.as_u16(), 204);
    app.delete("/v1/billing/notices/endpoint", &tenant.token)
        .await
        .assert_problem(404, "notice_endpoint_not_found");
    assert_eq!(count("billing.notice_endpoint_delete"), 0, "read before");
    assert_eq!(
        app.audit(&tenant)
            .await
            .iter()
            .filter(|r| r["action"] == "billing.notice_endpoint_delete")
            .count(),
        1
    );
}

/// A checkout session of credits as the provider's API answers it.
fn credit_session(id: &str, tenant: &Tenant, currency: &str, cents: u64) -> Value {
    json!({
        "id": id, "object": "checkout.session", "mode": "payment",
        "status": "complete", "payment_status": "paid",
        "currency": currency, "amount_subtotal": cents, "amount_total": cents + 150,
        "customer": "cus_checkout", "client_reference_id": tenant.account_id,
        "created": 1_780_000_000,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_processed_checkout_is_read_from_the_provider_and_grants_its_credits_once() {
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let provider = MockServer::start().await;
    let app = TestApp::spawn_with(&[
        ("D2__BILLING__WEBHOOK_SECRETS", SECRET),
        ("D2__BILLING__PROVIDER_API_KEY", "sk_test_e2e"),
        ("D2__BILLING__PROVIDER_API_URL", &provider.uri()),
    ])
    .await;
    let tenant = app.bootstrap().await;
    let other = app.bootstrap().await;
    let sessions = [
        (
            "cs_test_paid",
            credit_session("cs_test_paid", &tenant, "usd", 1_250),
        ),
        (
            "cs_test_euro",
            credit_session("cs_test_euro", &tenant, "eur", 1_250),
        ),
        (
            "cs_test_theirs",
            credit_session("cs_test_theirs", &other, "usd", 999),
        ),
        (
            "cs_test_open",
            json!({"id": "cs_test_open", "mode": "payment", "status": "open",
                "payment_status": "unpaid", "currency": "usd", "amount_subtotal": 500,
                "client_reference_id": tenant.account_id}),
        ),
    ];
    for (id, session) in &sessions {
        Mock::given(method("GET"))
            .and(path(format!("/v1/checkout/sessions/{id}")))
            .and(header("authorization", "Bearer sk_test_e2e"))
            .respond_with(ResponseTemplate::new(200).set_body_json(session))
            .mount(&provider)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/v1/checkout/sessions/cs_test_down"))
        .respond_with(ResponseTemplate::new(502))
        .mount(&provider)
        .await;
    let process = |session: &'static str, who: String| {
        let app = &app;
        async move {
            app.post(
                "/v1/billing/checkout/process",
                &who,
                json!({ "session_id": session }),
            )
            .await
        }
    };

    let processed = process("cs_test_paid", tenant.token.clone()).await;
    let processed = processed.assert_status(200).clone();
    assert_eq!(processed["outcome"], "applied");
    assert_eq!(
        processed["credits"], 12_500,
        "10 credits a cent, before tax"
    );
    assert_eq!(credits(&app, &tenant).await["balance"], 12_500);
    let again = process("cs_test_paid", tenant.token.clone()).await;
    assert_eq!(again.assert_status(200)["outcome"], "duplicate");
    // The provider's webhook for the same checkout, after: nothing granted twice.
    let event = json!({"id": "evt_checkout_paid", "type": "checkout.session.completed",
        "created": now(&app).timestamp(), "data": {"object": sessions[0].1}});
    let payload = serde_json::to_vec(&event).unwrap();
    let delivered = deliver_signed(&app, &payload, Some(sign(SECRET, &payload, now(&app)))).await;
    assert_eq!(delivered.assert_status(200)["outcome"], "unchanged");
    assert_eq!(credits(&app, &tenant).await["balance"], 12_500);

    for (session, status, code) in [
        ("cs_test_theirs", 404, "checkout_not_found"),
        ("cs_test_unknown", 404, "checkout_not_found"),
        ("cs_test_euro", 400, "currency_mismatch"),
        ("cs_test_open", 409, "checkout_incomplete"),
        ("cs_test_down", 503, "payment_provider_unavailable"),
        ("pi_not_a_session", 400, "invalid_checkout"),
    ] {
        process(session, tenant.token.clone())
            .await
            .assert_problem(status, code);
    }
    app.post(
        "/v1/billing/checkout/process",
        &tenant.token,
        json!({"session_id": "cs_test_paid", "amount": 99}),
    )
    .await
    .assert_problem(400, "invalid_body");
    let (reporter_token, _) = reporter(&app, &tenant).await;
    process("cs_test_paid", reporter_token.clone())
        .await
        .assert_problem(403, "insufficient_scope");
    assert_eq!(
        credits(&app, &tenant).await["balance"],
        12_500,
        "nothing written"
    );
    assert_eq!(credits(&app, &other).await["balance"], 0);
    let audit = app.audit(&tenant).await;
    let added: Vec<&Value> = audit
        .iter()
        .filter(|r| r["action"] == "billing.credits_add")
        .collect();
    assert_eq!(added.len(), 1);
    assert_eq!(added[0]["metadata"]["checkout_session_id"], "cs_test_paid");
    assert!(added[0]["actor"].as_str().unwrap().starts_with("token:"));
    // Every call to the provider was a read of the session named, with the key.
    for request in provider.received_requests().await.unwrap() {
        assert_eq!(request.method.as_str(), "GET");
        assert!(
            request
                .url
                .path()
                .starts_with("/v1/checkout/sessions/cs_test_")
        );
        assert_eq!(request.headers["authorization"], "Bearer sk_test_e2e");
    }

    // Without a key, the route says so.
    let unconfigured = TestApp::spawn().await;
    let someone = unconfigured.bootstrap().await;
    unconfigured
        .post(
            "/v1/billing/checkout/process",
            &someone.token,
            json!({"session_id": "cs_test_paid"}),
        )
        .await
        .assert_problem(404, "billing_not_configured");
}
