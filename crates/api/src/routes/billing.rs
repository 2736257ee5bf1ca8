use actix_web::web::{Bytes, Data, Path, Query};
use actix_web::{HttpRequest, HttpResponse, get, post};
use chrono::{DateTime, Utc};
use d2_billing::{
    CreditGrant, CreditsOverview, EntryId, EntryKind, GrantRequest, GrantSource, LedgerEntry,
    LedgerFilter, Reservation, SpendRequest, Subscription,
};
use d2_kernel::AccountLock;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::Auth;
use crate::body::Json;
use crate::error::ApiResult;
use crate::state::ApiState;

pub fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(stripe_webhook)
        .service(process_checkout)
        .service(subscription)
        .service(add_credits)
        .service(spend_credits)
        .service(credits)
        .service(credit_entries)
        .service(reserve_credits)
        .service(get_reservation)
        .service(settle_reservation);
}

/// 201 for what a request made, 200 for a retry answered with what its first try made.
pub(super) fn made_or_replayed(replayed: bool) -> actix_web::HttpResponseBuilder {
    if replayed {
        HttpResponse::Ok()
    } else {
        HttpResponse::Created()
    }
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

/// A checkout to process.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutBody {
    /// The provider's checkout session id (`cs_...`), as its redirect names it.
    #[schema(min_length = 4, max_length = 255, pattern = "^cs_[A-Za-z0-9_]+$")]
    pub session_id: String,
}

/// What processing a checkout came to.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckoutReceipt {
    pub session_id: String,
    /// `applied`; `unchanged` or `duplicate` when it was applied before (by its webhook or
    /// an earlier call): nothing is granted twice.
    pub outcome: String,
    /// The credits a checkout of credits buys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credits: Option<u64>,
}

/// Process a checkout the account completed in its front end (admin): the session is
/// read from the payment provider's API (`billing.provider_api_key`), never taken from
/// the caller, and applied as its `checkout.session.completed` webhook would be, once
/// whichever comes first: its customer linked to the account; a checkout of credits
/// (mode `payment`, complete and paid) grants `amount_subtotal` ×
/// `billing.credit_price.credits_per_minor_unit` credits. 404 `checkout_not_found` for a
/// session the provider does not know or that names another account; 409
/// `checkout_incomplete` (not paid); 400 `currency_mismatch` (paid in another currency
/// than credits are sold in); 503 `payment_provider_unavailable`. Audited
/// `billing.checkout_complete` and `billing.credits_add`, by the caller.
#[utoipa::path(tag = "billing", security(("bearer" = []), ("api_key" = [])),
    request_body = CheckoutBody, responses(
    (status = 200, body = CheckoutReceipt),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 409, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 503, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/checkout/process")]
async fn process_checkout(
    state: Data<ApiState>,
    auth: Auth,
    body: Json<CheckoutBody>,
) -> ApiResult<HttpResponse> {
    let processed = state
        .app
        .billing
        .subscriptions
        .process_checkout(&auth, &body.0.session_id)
        .await?;
    Ok(HttpResponse::Ok().json(CheckoutReceipt {
        session_id: processed.session_id,
        outcome: processed.outcome.as_str().to_owned(),
        credits: processed.credits,
    }))
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
#[post("/webhooks/stripe")]
async fn stripe_webhook(
    state: Data<ApiState>,
    request: HttpRequest,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    let signature = request
        .headers()
        .get("stripe-signature")
        .and_then(crate::headers::text);
    let received = state
        .app
        .billing
        .subscriptions
        .receive(signature, &body)
        .await?;
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
#[get("/subscription")]
async fn subscription(state: Data<ApiState>, auth: Auth) -> ApiResult<HttpResponse> {
    let overview = state.app.billing.subscriptions.overview(&auth).await?;
    Ok(HttpResponse::Ok().json(BillingView {
        plan: overview.plan.as_str().to_owned(),
        lock: overview.lock.map(LockView::from),
        subscription: overview.subscription.map(SubscriptionView::from),
    }))
}

/// Where granted credits come from.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GrantSourceBody {
    Purchase,
    Plan,
    Promotion,
}

impl From<GrantSourceBody> for GrantSource {
    fn from(source: GrantSourceBody) -> Self {
        match source {
            GrantSourceBody::Purchase => GrantSource::Purchase,
            GrantSourceBody::Plan => GrantSource::Plan,
            GrantSourceBody::Promotion => GrantSource::Promotion,
        }
    }
}

/// Credits to grant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddCreditsBody {
    /// Whole credits, 1 to 10^12.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_u64)]
    pub amount: u64,
    pub source: GrantSourceBody,
    /// Lower is spent first (default 10).
    #[schema(minimum = 0, maximum = 255)]
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// When the credits may be spent from (default now).
    pub effective_at: Option<DateTime<Utc>>,
    /// When what is left of them is gone (default never); after `effective_at`.
    pub expires_at: Option<DateTime<Utc>>,
    /// At most 500 characters.
    #[schema(max_length = 500)]
    pub reason: Option<String>,
}

fn default_priority() -> u8 {
    10
}

/// A spend of credits.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpendCreditsBody {
    /// Whole credits, 1 to 10^12.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_u64)]
    pub amount: u64,
    /// The caller's key of this spend, 1 to 255 characters: a retry with it is answered
    /// with the first spend and spends nothing again.
    #[schema(min_length = 1, max_length = 255)]
    pub idempotency_key: String,
    /// At most 500 characters.
    #[schema(max_length = 500)]
    pub reason: Option<String>,
}

/// A grant of credits.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantView {
    pub grant_id: String,
    /// `purchase`, `plan` or `promotion`.
    pub source: String,
    pub amount: u64,
    /// Not spent yet.
    pub remaining: u64,
    pub priority: u8,
    pub effective_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<&CreditGrant> for GrantView {
    fn from(grant: &CreditGrant) -> Self {
        Self {
            grant_id: grant.id.to_string(),
            source: grant.source.as_str().to_owned(),
            amount: grant.amount,
            remaining: grant.remaining,
            priority: grant.priority,
            effective_at: grant.effective_at,
            expires_at: grant.expires_at,
        }
    }
}

/// What a spend took from one grant.
#[derive(Debug, Serialize, ToSchema)]
pub struct BurnView {
    pub grant_id: String,
    pub amount: u64,
}

/// One movement of the ledger.
#[derive(Debug, Serialize, ToSchema)]
pub struct EntryView {
    pub entry_id: String,
    /// `grant`, `spend`, `usage`, `reserve` or `release`.
    pub kind: String,
    pub amount: u64,
    /// The spendable balance right after it.
    pub balance_after: u64,
    pub grant_id: Option<String>,
    /// What a spend took from each grant, in burn order.
    pub burns: Vec<BurnView>,
    pub idempotency_key: Option<String>,
    pub reason: Option<String>,
    /// Who made it, as the audit trail names them.
    pub actor: String,
    pub created_at: DateTime<Utc>,
}

impl From<&LedgerEntry> for EntryView {
    fn from(entry: &LedgerEntry) -> Self {
        Self {
            entry_id: entry.id.to_string(),
            kind: entry.kind.as_str().to_owned(),
            amount: entry.amount,
            balance_after: entry.balance_after,
            grant_id: entry.grant_id.map(|id| id.to_string()),
            burns: entry
                .burns
                .iter()
                .map(|burn| BurnView {
                    grant_id: burn.grant.to_string(),
                    amount: burn.amount,
                })
                .collect(),
            idempotency_key: entry.idempotency_key.clone(),
            reason: entry.reason.clone(),
            actor: entry.actor.clone(),
            created_at: entry.created_at,
        }
    }
}

/// A grant made, with its ledger entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantMade {
    pub grant: GrantView,
    pub entry: EntryView,
}

/// The account's credits.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreditsView {
    /// Credits that may be spent now.
    pub balance: u64,
    /// Every grant, oldest first.
    pub grants: Vec<GrantView>,
    /// The latest 100 movements, newest first.
    pub entries: Vec<EntryView>,
}

impl From<&CreditsOverview> for CreditsView {
    fn from(overview: &CreditsOverview) -> Self {
        Self {
            balance: overview.balance,
            grants: overview.grants.iter().map(GrantView::from).collect(),
            entries: overview.entries.iter().map(EntryView::from).collect(),
        }
    }
}

/// Grant credits to the account (admin): a purchase recorded by the operator, credits
/// included in the plan, or a promotion. Audited as `billing.credits_add`.
#[utoipa::path(tag = "billing", security(("bearer" = []), ("api_key" = [])),
    request_body = AddCreditsBody, responses(
    (status = 201, body = GrantMade),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/credits/add")]
async fn add_credits(
    state: Data<ApiState>,
    auth: Auth,
    body: Json<AddCreditsBody>,
) -> ApiResult<HttpResponse> {
    let body = body.0;
    let (grant, entry) = state
        .app
        .billing
        .credits
        .add(
            &auth,
            GrantRequest {
                source: body.source.into(),
                amount: body.amount,
                priority: body.priority,
                effective_at: body.effective_at,
                expires_at: body.expires_at,
                reason: body.reason,
            },
        )
        .await?;
    Ok(HttpResponse::Created().json(GrantMade {
        grant: GrantView::from(&grant),
        entry: EntryView::from(&entry),
    }))
}

/// Spend credits of the account (admin), burned from its grants by priority, then
/// earliest expiry, then the oldest; never more than the balance (402
/// `insufficient_credits`). A retry with the same `idempotency_key` and the same spend is
/// answered 200 with the first entry and spends nothing; with another amount or reason it
/// is 409 `idempotency_key_reused`. Audited as `billing.credits_spend`.
#[utoipa::path(tag = "billing", security(("bearer" = []), ("api_key" = [])),
    request_body = SpendCreditsBody, responses(
    (status = 201, body = EntryView),
    (status = 200, body = EntryView, description = "A retry: the first spend's entry"),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 402, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 409, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/credits/spend")]
async fn spend_credits(
    state: Data<ApiState>,
    auth: Auth,
    body: Json<SpendCreditsBody>,
) -> ApiResult<HttpResponse> {
    let body = body.0;
    let spent = state
        .app
        .billing
        .credits
        .spend(
            &auth,
            SpendRequest {
                amount: body.amount,
                idempotency_key: body.idempotency_key,
                reason: body.reason,
            },
        )
        .await?;
    Ok(made_or_replayed(spent.replayed).json(EntryView::from(&spent.entry)))
}

/// The account's credits (admin): the balance that may be spent now, every grant, and the
/// latest movements.
#[utoipa::path(tag = "billing", security(("bearer" = []), ("api_key" = [])), responses(
    (status = 200, body = CreditsView),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/credits")]
async fn credits(state: Data<ApiState>, auth: Auth) -> ApiResult<HttpResponse> {
    let overview = state.app.billing.credits.overview(&auth).await?;
    Ok(HttpResponse::Ok().json(CreditsView::from(&overview)))
}

/// Which movements of the ledger to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EntriesQuery {
    /// Items per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The `X-Next-Cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only this kind: `grant`, `spend`, `usage`, `reserve` or `release`.
    #[param(pattern = "^(grant|spend|usage|reserve|release)$")]
    pub kind: Option<String>,
    /// From this instant (inclusive, RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Before this instant (exclusive, RFC 3339).
    pub until: Option<DateTime<Utc>>,
}

/// The account's credit movements (admin), newest first, a page at a time: every grant,
/// spend, usage charge, reservation and release, with what each took from which grant.
#[utoipa::path(tag = "billing", security(("bearer" = []), ("api_key" = [])),
    params(EntriesQuery), responses(
    (status = 200, body = Vec<EntryView>, headers(("X-Next-Cursor" = String, description = "Present when another page follows"))),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/credits/entries")]
async fn credit_entries(
    state: Data<ApiState>,
    auth: Auth,
    query: Query<EntriesQuery>,
) -> ApiResult<HttpResponse> {
    let query = query.into_inner();
    crate::time::check_instants(&[("since", query.since), ("until", query.until)])?;
    let page = super::PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    }
    .parse()?;
    let kind = query
        .kind
        .as_deref()
        .map(str::parse::<EntryKind>)
        .transpose()
        .map_err(|e| super::invalid_query(e.to_string()))?;
    let filter = LedgerFilter {
        kind,
        since: query.since,
        until: query.until,
    };
    let entries = state
        .app
        .billing
        .credits
        .history(&auth, &filter, &page)
        .await?;
    Ok(super::paged(entries, |entry| EntryView::from(&entry)))
}

/// Credits to hold for work under way.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveBody {
    /// Whole credits, 1 to 10^12: the estimate of the work's cost.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_u64)]
    pub amount: u64,
    /// The caller's key of this reservation, 1 to 255 characters: a retry with it is
    /// answered with the first reservation.
    #[schema(min_length = 1, max_length = 255)]
    pub idempotency_key: String,
    /// How long the credits are held unless settled: 10 seconds to 7 days (default 900).
    #[schema(minimum = 10, maximum = 604_800)]
    #[serde(default = "default_hold_seconds")]
    pub expires_in_seconds: u32,
    /// At most 500 characters.
    #[schema(max_length = 500)]
    pub reason: Option<String>,
}

fn default_hold_seconds() -> u32 {
    900
}

/// What the work cost.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettleBody {
    /// Whole credits, 0 to what was reserved.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_u64)]
    pub amount: u64,
}

/// Credits held for work under way.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReservationView {
    /// Its reserve ledger entry's id.
    pub reservation_id: String,
    pub amount: u64,
    /// `held`, `settled` or `expired`.
    pub status: String,
    /// What the work cost, once settled.
    pub settled_amount: Option<u64>,
    /// What reserving took from each grant.
    pub burns: Vec<BurnView>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
}

impl From<&Reservation> for ReservationView {
    fn from(reservation: &Reservation) -> Self {
        Self {
            reservation_id: reservation.id.to_string(),
            amount: reservation.amount,
            status: reservation.status.as_str().to_owned(),
            settled_amount: reservation.settled_amount,
            burns: reservation
                .burns
                .iter()
                .map(|burn| BurnView {
                    grant_id: burn.grant.to_string(),
                    amount: burn.amount,
                })
                .collect(),
            expires_at: reservation.expires_at,
            created_at: reservation.created_at,
            closed_at: reservation.closed_at,
        }
    }
}

/// A reservation made, with its ledger entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReservationMade {
    pub reservation: ReservationView,
    pub entry: EntryView,
}

/// A reservation settled, with what it gave back.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReservationSettled {
    pub reservation: ReservationView,
    /// The release entry; absent on a retry of the same settlement.
    pub release: Option<EntryView>,
}

/// Reserve credits before long work (scope `usage.report`): taken from the grants like a
/// spend (402 `insufficient_credits` beyond the balance), held until settled or until
/// `expires_in_seconds`, when the worker gives them all back. A retry with the same
/// `idempotency_key` and amount answers 200 with the first reservation; with another, 409
/// `idempotency_key_reused`. Audited as `billing.credits_reserve`.
#[utoipa::path(tag = "billing", security(("bearer" = []), ("api_key" = [])),
    request_body = ReserveBody, responses(
    (status = 201, body = ReservationMade),
    (status = 200, body = ReservationMade, description = "A retry: the first reservation"),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 402, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 409, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/credits/reserve")]
async fn reserve_credits(
    state: Data<ApiState>,
    auth: Auth,
    body: Json<ReserveBody>,
) -> ApiResult<HttpResponse> {
    let body = body.0;
    let (reservation, spent) = state
        .app
        .billing
        .credits
        .reserve(
            &auth,
            SpendRequest {
                amount: body.amount,
                idempotency_key: body.idempotency_key,
                reason: body.reason,
            },
            chrono::Duration::seconds(i64::from(body.expires_in_seconds)),
        )
        .await?;
    Ok(made_or_replayed(spent.replayed).json(ReservationMade {
        reservation: ReservationView::from(&reservation),
        entry: EntryView::from(&spent.entry),
    }))
}

/// One reservation of the account (scope `usage.report`); another account's is 404
/// `reservation_not_found`.
#[utoipa::path(tag = "billing", security(("bearer" = []), ("api_key" = [])),
    params(("reservation_id" = Uuid, Path)), responses(
    (status = 200, body = ReservationView),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/credits/reservations/{reservation_id}")]
async fn get_reservation(
    state: Data<ApiState>,
    auth: Auth,
    reservation_id: Path<EntryId>,
) -> ApiResult<HttpResponse> {
    let reservation = state
        .app
        .billing
        .credits
        .reservation(&auth, *reservation_id)
        .await?;
    Ok(HttpResponse::Ok().json(ReservationView::from(&reservation)))
}

/// Settle a reservation for what the work cost (scope `usage.report`): the rest goes back
/// to the grants it was taken from, the last taken first. At most the amount reserved
/// (400 `invalid_credits`); after its expiry, 409 `reservation_expired` (the credits were
/// given back); settled before for another amount, 409 `reservation_settled`; a retry for
/// the same amount answers the settlement again. Audited as `billing.credits_settle`.
#[utoipa::path(tag = "billing", security(("bearer" = []), ("api_key" = [])),
    params(("reservation_id" = Uuid, Path)), request_body = SettleBody, responses(
    (status = 200, body = ReservationSettled),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 409, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/credits/reservations/{reservation_id}/settle")]
async fn settle_reservation(
    state: Data<ApiState>,
    auth: Auth,
    reservation_id: Path<EntryId>,
    body: Json<SettleBody>,
) -> ApiResult<HttpResponse> {
    let (reservation, release) = state
        .app
        .billing
        .credits
        .settle(&auth, *reservation_id, body.0.amount)
        .await?;
    Ok(HttpResponse::Ok().json(ReservationSettled {
        reservation: ReservationView::from(&reservation),
        release: release.as_ref().map(EntryView::from),
    }))
}
