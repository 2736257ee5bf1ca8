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
