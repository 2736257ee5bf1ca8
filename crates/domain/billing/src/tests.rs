use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use d2_accounts::memory::MemoryAccountRepo;
use d2_accounts::{Account, AccountName, AccountService, SamplingPolicy};
use d2_audit::memory::MemoryAuditLog;
use d2_kernel::{
    AccountId, CacheSettings, Clock, ErrorCode, LockReason, ManualClock, Plan, PlanCatalog, Scope,
};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::memory::MemoryBillingRepo;
use crate::{
    BillingConfig, BillingError, BillingService, CheckoutSessions, CreditPrice, CreditRepo,
    EventOutcome, PriceTiers, ProviderUnavailable, SignatureError, SubscriptionStatus,
    WebhookSecrets, sign,
};

const SECRET: &str = "whsec_current";
const PREVIOUS: &str = "whsec_previous";

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0)
        .single()
        .unwrap_or_default()
}

struct World {
    billing: BillingService,
    repo: Arc<MemoryBillingRepo>,
    accounts: Arc<MemoryAccountRepo>,
    clock: Arc<ManualClock>,
    account: AccountId,
}

fn world() -> World {
    world_with(None)
}

/// The payment provider's checkout sessions, as its API would answer them.
#[derive(Default)]
struct Sessions(std::sync::Mutex<HashMap<String, Value>>);

#[async_trait::async_trait]
impl CheckoutSessions for Sessions {
    async fn checkout_session(&self, id: &str) -> Result<Option<Value>, ProviderUnavailable> {
        if id == "cs_down" {
            return Err(ProviderUnavailable(
                "the payment provider answered 500".into(),
            ));
        }
        Ok(self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned())
    }
}

fn world_with(sessions: Option<Arc<Sessions>>) -> World {
    let clock = Arc::new(ManualClock::new(start()));
    let accounts = Arc::new(MemoryAccountRepo::new(Arc::new(MemoryAuditLog::default())));
    let account = AccountId::random();
    accounts.insert_account(Account::new_trial(
        account,
        AccountName::parse("Acme").unwrap_or_else(|_| unreachable!()),
        start() - Duration::days(30),
        14,
    ));
    let service = AccountService::new(
        accounts.clone(),
        Arc::new(PlanCatalog::default()),
        Arc::new(SamplingPolicy::new(&BTreeMap::new())),
        clock.clone(),
        CacheSettings::default(),
    );
    let repo = Arc::new(MemoryBillingRepo::new(accounts.clone()));
    let billing = BillingService::new(
        repo.clone(),
        service,
        BillingConfig {
            secrets: Arc::new(WebhookSecrets::new(
                &[SecretString::from(SECRET), SecretString::from(PREVIOUS)],
                300,
            )),
            prices: Arc::new(PriceTiers::new([
                ("price_pro".to_owned(), Plan::Pro),
                ("price_ent".to_owned(), Plan::Enterprise),
            ])),
            plans: Arc::new(PlanCatalog::default()),
            credit_price: CreditPrice {
                currency: "usd".to_owned(),
                credits_per_minor_unit: 10,
            },
            sessions: sessions.map(|s| -> Arc<dyn CheckoutSessions> { s }),
        },
        clock.clone(),
    );
    World {
        billing,
        repo,
        accounts,
        clock,
        account,
    }
}

fn subscription_event(
    id: &str,
    kind: &str,
    created: DateTime<Utc>,
    account: Option<AccountId>,
    status: &str,
    price: &str,
) -> Value {
    let metadata = account.map_or(json!({}), |a| json!({ "d2_account_id": a.to_string() }));
    json!({
        "id": id,
        "object": "event",
        "type": kind,
        "created": created.timestamp(),
        "data": { "object": {
            "id": "sub_1",
            "object": "subscription",
            "customer": "cus_1",
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

impl World {
    async fn deliver(&self, event: &Value) -> Result<EventOutcome, BillingError> {
        let payload = serde_json::to_vec(event).unwrap_or_default();
        let header = sign(SECRET, &payload, self.clock.now());
        self.billing
            .receive(Some(&header), &payload)
            .await
            .map(|received| received.outcome)
    }

    fn account(&self) -> Account {
        self.accounts
            .account(self.account)
            .unwrap_or_else(|| unreachable!())
    }

    fn audited(&self, action: &str) -> usize {
        self.accounts
            .audit()
            .all()
            .iter()
            .filter(|record| record.entry.action.as_str() == action)
            .count()
    }
}

#[test]
fn signatures_are_checked_against_every_secret_within_the_tolerance() {
    let secrets = WebhookSecrets::new(
        &[SecretString::from(SECRET), SecretString::from(PREVIOUS)],
        300,
    );
    let now = start();
    let payload = br#"{"id":"evt_1"}"#;
    for secret in [SECRET, PREVIOUS] {
        assert_eq!(
            secrets.verify(Some(&sign(secret, payload, now)), payload, now),
            Ok(now)
        );
    }
    let foreign = sign("whsec_other", payload, now);
    assert_eq!(
        secrets.verify(Some(&foreign), payload, now),
        Err(SignatureError::Mismatch)
    );
    let header = sign(SECRET, payload, now);
    assert_eq!(
        secrets.verify(Some(&header), br#"{"id":"evt_2"}"#, now),
        Err(SignatureError::Mismatch)
    );
    for late in [Duration::seconds(301), Duration::seconds(-301)] {
        assert_eq!(
            secrets.verify(Some(&header), payload, now + late),
            Err(SignatureError::OutsideTolerance {
                tolerance_seconds: 300
            })
        );
    }
    assert!(
        secrets
            .verify(Some(&header), payload, now + Duration::seconds(300))
            .is_ok()
    );
    // One good signature among others is enough (the provider signs with each secret
    // during its own rotation).
    let good = header
        .split_once(",v1=")
        .map(|(_, s)| s.to_owned())
        .unwrap_or_default();
    let several = format!(
        "t={},v1={},v1={good},v0=zz",
        now.timestamp(),
        "00".repeat(32)
    );
    assert_eq!(secrets.verify(Some(&several), payload, now), Ok(now));
    for malformed in [
        "",
        "t=abc,v1=00",
        "v1=00",
        &format!("t={}", now.timestamp()),
        &format!("t={},v1=not-hex", now.timestamp()),
        &format!("t={},v0={good}", now.timestamp()),
        &format!("t=99999999999999999,v1={good}"),
        &"x".repeat(2000),
    ] {
        assert_eq!(
            secrets.verify(Some(malformed), payload, now),
            Err(SignatureError::Malformed),
            "{malformed}"
        );
    }
    assert_eq!(
        secrets.verify(None, payload, now),
        Err(SignatureError::Missing)
    );
}

#[tokio::test]
async fn a_subscription_puts_the_account_on_its_tier_and_its_end_locks_it() {
    let world = world();
    // An expired trial is locked...
    assert_eq!(world.account().plan, Plan::Trial);
    let created = start() - Duration::seconds(60);
    let outcome = world
        .deliver(&subscription_event(
            "evt_1",
            "customer.subscription.created",
            created,
            Some(world.account),
            "active",
            "price_pro",
        ))
        .await;
    assert_eq!(outcome.ok(), Some(EventOutcome::Applied));
    // ...until it subscribes: on its tier, the lock lifted.
    let account = world.account();
    assert_eq!(account.plan, Plan::Pro);
    assert_eq!(account.locked, None);
    assert_eq!(world.audited("billing.subscription_update"), 1);

    // The same event again does nothing.
    let again = world
        .deliver(&subscription_event(
            "evt_1",
            "customer.subscription.created",
            created,
            Some(world.account),
            "active",
            "price_pro",
        ))
        .await;
    assert_eq!(again.ok(), Some(EventOutcome::Duplicate));
    assert_eq!(world.audited("billing.subscription_update"), 1);

    // The deletion, without metadata: the customer names the account.
    let ended = start() - Duration::seconds(10);
    let mut deleted = subscription_event(
        "evt_3",
        "customer.subscription.deleted",
        ended,
        None,
        "canceled",
        "price_pro",
    );
    deleted["data"]["object"]["ended_at"] = json!(ended.timestamp());
    assert_eq!(
        world.deliver(&deleted).await.ok(),
        Some(EventOutcome::Applied)
    );
    let account = world.account();
    assert_eq!(account.plan, Plan::Pro, "a lock keeps the plan");
    let lock = account.locked.unwrap_or_else(|| unreachable!());
    assert_eq!(lock.reason, LockReason::SubscriptionEnded);
    assert_eq!(lock.since, ended);

    // An update created between the two, arriving late, changes nothing.
    let late = subscription_event(
        "evt_2",
        "customer.subscription.updated",
        start() - Duration::seconds(30),
        Some(world.account),
        "active",
        "price_ent",
    );
    assert_eq!(world.deliver(&late).await.ok(), Some(EventOutcome::Stale));
    assert!(world.account().locked.is_some());
    // Nor does a later one about the canceled subscription.
    let after = subscription_event(
        "evt_4",
        "customer.subscription.updated",
        start(),
        Some(world.account),
        "active",
        "price_ent",
    );
    assert_eq!(world.deliver(&after).await.ok(), Some(EventOutcome::Stale));

    // A new subscription lifts the lock.
    let mut renewed = subscription_event(
        "evt_5",
        "customer.subscription.created",
        start(),
        Some(world.account),
        "trialing",
        "price_ent",
    );
    renewed["data"]["object"]["id"] = json!("sub_2");
    assert_eq!(
        world.deliver(&renewed).await.ok(),
        Some(EventOutcome::Applied)
    );
    let account = world.account();
    assert_eq!((account.plan, account.locked), (Plan::Enterprise, None));
}

#[tokio::test]
async fn invoices_move_the_status_and_an_unpaid_subscription_locks() {
    let world = world();
    let at = |seconds: i64| start() - Duration::seconds(100 - seconds);
    let created = subscription_event(
        "evt_1",
        "customer.subscription.created",
        at(0),
        Some(world.account),
        "active",
        "price_pro",
    );
    assert_eq!(
        world.deliver(&created).await.ok(),
        Some(EventOutcome::Applied)
    );
    let invoice = |id: &str, kind: &str, seconds: i64| {
        json!({
            "id": id, "type": kind, "created": at(seconds).timestamp(),
            "data": {"object": {"id": "in_1", "customer": "cus_1",
                "parent": {"subscription_details": {"subscription": "sub_1"}}}},
        })
    };
    let failed = invoice("evt_2", "invoice.payment_failed", 10);
    assert_eq!(
        world.deliver(&failed).await.ok(),
        Some(EventOutcome::Applied)
    );
    let overview = world.billing_subscription().await;
    assert_eq!(overview, Some(SubscriptionStatus::PastDue));
    assert_eq!(world.account().locked, None, "past due is still served");

    let unpaid = subscription_event(
        "evt_3",
        "customer.subscription.updated",
        at(20),
        None,
        "unpaid",
        "price_pro",
    );
    assert_eq!(
        world.deliver(&unpaid).await.ok(),
        Some(EventOutcome::Applied)
    );
    let lock = world.account().locked.unwrap_or_else(|| unreachable!());
    assert_eq!(lock.reason, LockReason::PaymentLapsed);
    assert_eq!(lock.since, world.clock.now());

    // An invoice failure created before the lapse is stale; a payment after lifts it.
    let older = invoice("evt_4", "invoice.payment_failed", 15);
    assert_eq!(world.deliver(&older).await.ok(), Some(EventOutcome::Stale));
    let paid = invoice("evt_5", "invoice.paid", 30);
    assert_eq!(world.deliver(&paid).await.ok(), Some(EventOutcome::Applied));
    assert_eq!(world.account().locked, None);
    assert_eq!(
        world.billing_subscription().await,
        Some(SubscriptionStatus::Active)
    );
    let again = invoice("evt_6", "invoice.paid", 40);
    assert_eq!(
        world.deliver(&again).await.ok(),
        Some(EventOutcome::Unchanged)
    );
}

#[tokio::test]
async fn events_d2_cannot_place_are_recorded_as_ignored_and_bad_ones_refused() {
    let world = world();
    let ignored = |reason: &str| Some(EventOutcome::Ignored(reason.to_owned()));
    let unknown_account = subscription_event(
        "evt_1",
        "customer.subscription.created",
        start(),
        Some(AccountId::random()),
        "active",
        "price_pro",
    );
    assert_eq!(
        world.deliver(&unknown_account).await.ok(),
        ignored("unknown_account")
    );
    let unknown_price = subscription_event(
        "evt_2",
        "customer.subscription.created",
        start(),
        Some(world.account),
        "active",
        "price_unknown",
    );
    assert_eq!(
        world.deliver(&unknown_price).await.ok(),
        ignored("unknown_price")
    );
    let other = json!({"id": "evt_3", "type": "charge.refunded", "created": start().timestamp(),
        "data": {"object": {"id": "ch_1", "metadata": {"d2_account_id": world.account.to_string()}}}});
    assert_eq!(world.deliver(&other).await.ok(), ignored("unhandled_type"));
    assert_eq!(world.account().plan, Plan::Trial);

    for malformed in [
        json!([]),
        json!({"type": "invoice.paid", "created": 1, "data": {"object": {}}}),
        json!({"id": "evt_9", "created": 1, "data": {"object": {}}}),
        json!({"id": "evt_9", "type": "invoice.paid", "data": {"object": {}}}),
        json!({"id": "evt_9", "type": "invoice.paid", "created": 1, "data": {}}),
        json!({"id": "", "type": "invoice.paid", "created": 1, "data": {"object": {}}}),
        json!({"id": "evt_9", "type": "customer.subscription.updated", "created": 1,
            "data": {"object": {"id": "sub_1", "customer": "cus_1"}}}),
    ] {
        assert!(
            matches!(
                world.deliver(&malformed).await,
                Err(BillingError::Malformed(_))
            ),
            "{malformed}"
        );
    }
    // A bad signature is refused before the payload is read.
    let payload = b"not even JSON";
    let refused = world.billing.receive(Some("t=1,v1=00"), payload).await;
    assert!(matches!(refused, Err(BillingError::Signature(_))));
}

#[tokio::test]
async fn a_checkout_links_its_customer_for_the_events_that_follow() {
    let world = world();
    let checkout = json!({"id": "evt_1", "type": "checkout.session.completed",
        "created": start().timestamp(),
        "data": {"object": {"id": "cs_1", "mode": "subscription", "customer": "cus_1",
            "subscription": "sub_1", "client_reference_id": world.account.to_string()}}});
    assert_eq!(
        world.deliver(&checkout).await.ok(),
        Some(EventOutcome::Applied)
    );
    assert_eq!(world.audited("billing.checkout_complete"), 1);
    let created = subscription_event(
        "evt_2",
        "customer.subscription.created",
        start(),
        None,
        "active",
        "price_pro",
    );
    assert_eq!(
        world.deliver(&created).await.ok(),
        Some(EventOutcome::Applied)
    );
    assert_eq!(world.account().plan, Plan::Pro);
}

impl World {
    async fn billing_subscription(&self) -> Option<SubscriptionStatus> {
        self.billing
            .subscription_of(self.account)
            .await
            .ok()
            .flatten()
            .map(|s| s.status)
    }
}

/// A checkout session of credits paid by `account`.
fn credit_session(id: &str, account: AccountId, currency: &str, cents: u64) -> Value {
    json!({"id": id, "object": "checkout.session", "mode": "payment", "status": "complete",
        "payment_status": "paid", "currency": currency, "amount_subtotal": cents,
        "amount_total": cents + 200, "customer": null,
        "created": start().timestamp(), "client_reference_id": account.to_string()})
}

fn completed(id: &str, session: &Value) -> Value {
    json!({"id": id, "type": "checkout.session.completed", "created": start().timestamp(),
        "data": {"object": session}})
}

impl World {
    async fn balance(&self) -> u64 {
        let grants = self
            .repo
            .credit_grants(self.account)
            .await
            .unwrap_or_default();
        crate::balance(&grants, self.clock.now())
    }
}

#[tokio::test]
async fn a_paid_checkout_of_credits_grants_them_once_in_the_currency_they_are_sold_in() {
    let world = world();
    let paid = credit_session("cs_1", world.account, "usd", 2_500);
    assert_eq!(
        world.deliver(&completed("evt_1", &paid)).await.ok(),
        Some(EventOutcome::Applied)
    );
    assert_eq!(
        world.balance().await,
        25_000,
        "10 credits a cent, before tax"
    );
    // The provider's retry of another event for the session grants nothing more.
    assert_eq!(
        world.deliver(&completed("evt_1b", &paid)).await.ok(),
        Some(EventOutcome::Unchanged)
    );
    assert_eq!(world.balance().await, 25_000);
    for (event, session, reason) in [
        (
            "evt_2",
            credit_session("cs_2", world.account, "eur", 2_500),
            "currency_mismatch",
        ),
        (
            "evt_3",
            credit_session("cs_3", world.account, "usd", 0),
            "nothing_paid",
        ),
        (
            "evt_4",
            json!({"id": "cs_4", "mode": "payment", "status": "open", "payment_status": "unpaid",
                "currency": "usd", "amount_subtotal": 100,
                "client_reference_id": world.account.to_string()}),
            "unpaid",
        ),
    ] {
        assert_eq!(
            world.deliver(&completed(event, &session)).await.ok(),
            Some(EventOutcome::Ignored(reason.to_owned())),
            "{event}"
        );
    }
    assert_eq!(world.balance().await, 25_000, "nothing written");
    assert_eq!(world.audited("billing.credits_add"), 1);
    assert_eq!(world.audited("billing.checkout_complete"), 1);
}

#[tokio::test]
async fn processing_a_checkout_reads_it_from_the_provider_and_applies_it_once() {
    let sessions = Arc::new(Sessions::default());
    let world = world_with(Some(sessions.clone()));
    let admin = crate::usage_tests::context(world.account, &[Scope::Admin]);
    let insert = |session: Value| {
        let id = session["id"].as_str().unwrap_or_default().to_owned();
        sessions
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, session);
    };
    insert(credit_session("cs_paid", world.account, "usd", 1_000));
    insert(credit_session(
        "cs_theirs",
        AccountId::random(),
        "usd",
        1_000,
    ));
    insert(credit_session("cs_euro", world.account, "eur", 1_000));
    insert(json!({"id": "cs_open", "mode": "payment", "status": "open",
        "payment_status": "unpaid", "currency": "usd", "amount_subtotal": 1_000,
        "client_reference_id": world.account.to_string()}));

    let processed = world.billing.process_checkout(&admin, "cs_paid").await;
    let processed = processed.unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(processed.outcome, EventOutcome::Applied);
    assert_eq!(processed.credits, Some(10_000));
    assert_eq!(world.balance().await, 10_000);
    let again = world.billing.process_checkout(&admin, "cs_paid").await;
    assert_eq!(again.map(|p| p.outcome).ok(), Some(EventOutcome::Duplicate));
    // Its webhook, arriving after: granted before.
    let paid = credit_session("cs_paid", world.account, "usd", 1_000);
    assert_eq!(
        world.deliver(&completed("evt_paid", &paid)).await.ok(),
        Some(EventOutcome::Unchanged)
    );
    assert_eq!(world.balance().await, 10_000);
    let entries = world.accounts.audit().all();
    let added = entries
        .iter()
        .find(|r| r.entry.action.as_str() == "billing.credits_add")
        .unwrap_or_else(|| unreachable!());
    assert!(
        added.entry.actor.starts_with("token:"),
        "by the admin who processed it"
    );

    for (id, refused) in [
        ("cs_theirs", "checkout_not_found"),
        ("cs_unknown", "checkout_not_found"),
        ("cs_euro", "currency_mismatch"),
        ("cs_open", "checkout_incomplete"),
        ("cs_down", "payment_provider_unavailable"),
        ("pi_123", "invalid_checkout"),
        ("cs_../../v1/customers", "invalid_checkout"),
    ] {
        let error = world.billing.process_checkout(&admin, id).await.err();
        assert_eq!(error.map(|e| e.code().as_str()), Some(refused), "{id}");
    }
    assert_eq!(world.balance().await, 10_000, "nothing written");
    let reporter = crate::usage_tests::context(world.account, &[Scope::UsageReport]);
    assert!(matches!(
        world.billing.process_checkout(&reporter, "cs_paid").await,
        Err(BillingError::Access(_))
    ));
    let unconfigured = self::world();
    let admin = crate::usage_tests::context(unconfigured.account, &[Scope::Admin]);
    assert_eq!(
        unconfigured
            .billing
            .process_checkout(&admin, "cs_paid")
            .await
            .err()
            .map(|e| e.code().as_str()),
        Some("billing_not_configured")
    );
}
