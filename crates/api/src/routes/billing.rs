use actix_web::web::{Bytes, Data};
use actix_web::{HttpRequest, HttpResponse, get, post};
use chrono::{DateTime, Utc};
use d2_billing::Subscription;
use d2_kernel::AccountLock;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::Auth;
use crate::error::ApiResult;
use crate::state::ApiState;

pub fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(stripe_webhook).service(subscription);
}

/// What became of a delivered event.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookReceipt {
    pub received: bool,
    /// The provider's event id.
    pub event_id: String,
    /// `applied`, `unchanged` (an invoice that agrees with the subscription), `stale` (a
    /// newer event about the subscription came first), `ignored` (see `reason`), or
    /// `duplicate` (received before; nothing done again).
    pub outcome: String,
    /// Why an event was ignored: `unknown_account`, `unknown_price`, `unknown_status`,
    /// `unknown_subscription`, `no_customer`, `no_subscription` or `unhandled_type`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The payment provider's webhook (Stripe): the raw event, signed in `Stripe-Signature`
/// (`t=<seconds>,v1=<HMAC-SHA256 of "t.payload">` with one of
/// `billing.webhook_secrets`, within `billing.webhook_tolerance_seconds`). Each event id
/// is processed once, and an event older than the state it would change is kept as it
/// is. Checkout completed links its customer to the account (`client_reference_id` or
/// the `d2_account_id` metadata); subscription created, updated and deleted, and invoice
/// paid and payment failed, set the account's subscription, plan and lock. Audited as
/// `billing.checkout_complete` and `billing.subscription_update`. Events D2 does not
/// act on are acknowledged (200) and recorded as ignored.
#[utoipa::path(tag = "billing", security(()),
    params(("Stripe-Signature" = String, Header, description = "t=<unix seconds>,v1=<hex HMAC-SHA256>")),
    request_body(content = String, content_type = "application/json"),
    responses(
    (status = 200, body = WebhookReceipt),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/v1/billing/webhooks/stripe")]
async fn stripe_webhook(
    state: Data<ApiState>,
    request: HttpRequest,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    let signature = request
        .headers()
        .get("stripe-signature")
        .and_then(|value| value.to_str().ok());
    let received = state.app.billing.receive(signature, &body).await?;
    Ok(HttpResponse::Ok().json(WebhookReceipt {
        received: true,
        reason: received.outcome.reason().map(str::to_owned),
        outcome: received.outcome.as_str().to_owned(),
        event_id: received.event_id,
    }))
}

/// The account's subscription as the payment provider last reported it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionView {
    /// The provider's subscription id.
    pub subscription_id: String,
    /// The provider's customer id.
    pub customer_id: String,
    /// The tier its price is (`billing.prices`).
    pub plan: String,
    /// `trialing`, `active`, `past_due`, `incomplete`, `incomplete_expired`, `unpaid`,
    /// `paused` or `canceled`.
    pub status: String,
    pub current_period_start: Option<DateTime<Utc>>,
    pub current_period_end: Option<DateTime<Utc>>,
    /// Canceled by the customer, ending with the current period.
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// When the provider created the event this state comes from.
    pub event_created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Subscription> for SubscriptionView {
    fn from(s: Subscription) -> Self {
        Self {
            subscription_id: s.subscription_id,
            customer_id: s.customer_id,
            plan: s.plan.as_str().to_owned(),
            status: s.status.as_str().to_owned(),
            current_period_start: s.current_period_start,
            current_period_end: s.current_period_end,
            cancel_at_period_end: s.cancel_at_period_end,
            canceled_at: s.canceled_at,
            ended_at: s.ended_at,
            event_created_at: s.event_created_at,
            updated_at: s.updated_at,
        }
    }
}

/// An account's lock: since when, and why.
#[derive(Debug, Serialize, ToSchema)]
pub struct LockView {
    pub since: DateTime<Utc>,
    /// `trial_ended`, `payment_lapsed` or `subscription_ended`.
    pub reason: String,
}

impl From<AccountLock> for LockView {
    fn from(lock: AccountLock) -> Self {
        Self {
            since: lock.since,
            reason: lock.reason.as_str().to_owned(),
        }
    }
}

/// The account's billing.
#[derive(Debug, Serialize, ToSchema)]
pub struct BillingView {
    /// The plan the account is on (kept while locked).
    pub plan: String,
    /// The lock in force, if any: `trial_ended`, `payment_lapsed` or `subscription_ended`.
    pub lock: Option<LockView>,
    /// `null` until the payment provider reports a subscription.
    pub subscription: Option<SubscriptionView>,
}

/// The account's plan, lock and subscription (admin).
#[utoipa::path(tag = "billing", security(("bearer" = []), ("api_key" = [])), responses(
    (status = 200, body = BillingView),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/v1/billing/subscription")]
async fn subscription(state: Data<ApiState>, auth: Auth) -> ApiResult<HttpResponse> {
    let overview = state.app.billing.overview(&auth).await?;
    Ok(HttpResponse::Ok().json(BillingView {
        plan: overview.plan.as_str().to_owned(),
        lock: overview.lock.map(LockView::from),
        subscription: overview.subscription.map(SubscriptionView::from),
    }))
}
