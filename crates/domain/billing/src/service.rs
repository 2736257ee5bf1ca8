use std::sync::Arc;

use chrono::{DateTime, Utc};
use d2_accounts::{Account, AccountError, AccountService};
use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::{
    AccessError, AccountId, AccountLock, AuthContext, Clock, Code, ErrorCode, Plan, PlanCatalog,
    Scope, StoreError,
};
use serde_json::json;

use crate::credits::{CreditGrant, GrantId, GrantSource};
use crate::ledger::MAX_CREDITS;
use crate::ledger::{EntryId, EntryKind, LedgerEntry, SYSTEM_ACTOR};
use crate::ports::{
    BillingRepo, CheckoutSessions, Decision, EventGrant, EventOutcome, ProviderUnavailable,
};
use crate::provider::{
    CheckoutReport, InvoiceReport, MalformedEvent, PriceTiers, ProviderEvent, Report,
    SubscriptionReport,
};
use crate::signature::{SignatureError, WebhookSecrets};
use crate::subscription::{Subscription, SubscriptionStatus};

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("payment provider webhooks are not configured (billing.webhook_secrets)")]
    NotConfigured,
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Malformed(#[from] MalformedEvent),
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error("the payment provider's API is not configured (billing.provider_api_key)")]
    ApiNotConfigured,
    #[error("session_id: a checkout session id (cs_...), at most 255 characters")]
    InvalidCheckout,
    /// Unknown to the provider, or not the caller's account's: one answer.
    #[error("no checkout session of the account has that id")]
    CheckoutNotFound,
    #[error("the checkout session is not complete and paid")]
    CheckoutIncomplete,
    #[error("the checkout was paid in {paid}; credits are sold in {sold}")]
    CurrencyMismatch { paid: String, sold: String },
    #[error("the payment provider could not answer: {0}")]
    ProviderUnavailable(#[from] ProviderUnavailable),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for BillingError {
    fn code(&self) -> Code {
        match self {
            BillingError::Access(error) => error.code(),
            BillingError::NotConfigured | BillingError::ApiNotConfigured => {
                Code::BillingNotConfigured
            }
            BillingError::InvalidCheckout => Code::InvalidCheckout,
            BillingError::CheckoutNotFound => Code::CheckoutNotFound,
            BillingError::CheckoutIncomplete => Code::CheckoutIncomplete,
            BillingError::CurrencyMismatch { .. } => Code::CurrencyMismatch,
            BillingError::ProviderUnavailable(_) => Code::PaymentProviderUnavailable,
            BillingError::Signature(_) => Code::InvalidWebhookSignature,
            BillingError::Malformed(_) => Code::InvalidWebhookEvent,
            BillingError::Account(error) => error.code(),
            BillingError::Store(error) => error.code(),
        }
    }
}

/// What a delivered event came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub event_id: String,
    pub outcome: EventOutcome,
}

/// What credits cost: the currency checkouts of credits are paid in, and the credits each
/// of its minor units (a cent) buys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditPrice {
    /// ISO 4217, lower case.
    pub currency: String,
    pub credits_per_minor_unit: u64,
}

/// Why a paid checkout buys no credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoCredits {
    /// Paid in another currency than credits are sold in.
    CurrencyMismatch,
    NothingPaid,
    /// No amount, or more credits than a grant may hold.
    AmountOutOfRange,
}

impl NoCredits {
    /// The reason an ignored event records.
    fn reason(self) -> &'static str {
        match self {
            NoCredits::CurrencyMismatch => "currency_mismatch",
            NoCredits::NothingPaid => "nothing_paid",
            NoCredits::AmountOutOfRange => "amount_out_of_range",
        }
    }
}

impl CreditPrice {
    /// The credits `checkout` buys, or why it buys none.
    fn credits(&self, checkout: &CheckoutReport) -> Result<u64, NoCredits> {
        if checkout.currency.as_deref() != Some(self.currency.as_str()) {
            return Err(NoCredits::CurrencyMismatch);
        }
        let credits = checkout
            .amount_subtotal
            .and_then(|paid| paid.checked_mul(self.credits_per_minor_unit))
            .ok_or(NoCredits::AmountOutOfRange)?;
        match credits {
            0 => Err(NoCredits::NothingPaid),
            credits if credits > MAX_CREDITS => Err(NoCredits::AmountOutOfRange),
            credits => Ok(credits),
        }
    }
}

/// What processing a checkout came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessedCheckout {
    pub session_id: String,
    /// `applied`; `unchanged` or `duplicate` when it was applied before (by its webhook,
    /// or an earlier call).
    pub outcome: EventOutcome,
    /// The credits it buys, for a checkout of credits.
    pub credits: Option<u64>,
}

/// An account's billing: its plan and lock in force, and its subscription.
#[derive(Debug, Clone)]
pub struct BillingOverview {
    pub plan: Plan,
    pub lock: Option<AccountLock>,
    pub subscription: Option<Subscription>,
}

pub struct BillingService {
    repo: Arc<dyn BillingRepo>,
    accounts: AccountService,
    secrets: Arc<WebhookSecrets>,
    prices: Arc<PriceTiers>,
    plans: Arc<PlanCatalog>,
    credit_price: CreditPrice,
    /// The provider's API, when a key is configured.
    sessions: Option<Arc<dyn CheckoutSessions>>,
    clock: Arc<dyn Clock>,
}

/// What the service is made of besides its store and clock.
#[derive(Clone)]
pub struct BillingConfig {
    pub secrets: Arc<WebhookSecrets>,
    pub prices: Arc<PriceTiers>,
    pub plans: Arc<PlanCatalog>,
    pub credit_price: CreditPrice,
    pub sessions: Option<Arc<dyn CheckoutSessions>>,
}

impl std::fmt::Debug for BillingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillingConfig")
            .field("credit_price", &self.credit_price)
            .field("provider_api", &self.sessions.is_some())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for BillingService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillingService")
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

impl BillingService {
    pub fn new(
        repo: Arc<dyn BillingRepo>,
        accounts: AccountService,
        config: BillingConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            repo,
            accounts,
            secrets: config.secrets,
            prices: config.prices,
            plans: config.plans,
            credit_price: config.credit_price,
            sessions: config.sessions,
            clock,
        }
    }

    /// A webhook delivery of the payment provider: `payload` as received and its
    /// `Stripe-Signature` header. Verified before it is read; each event id is processed
    /// once, in the order the provider created the events whatever the order they arrive.
    pub async fn receive(
        &self,
        signature: Option<&str>,
        payload: &[u8],
    ) -> Result<Received, BillingError> {
        // A delivery without a signature is refused as such, configured or not.
        if signature.is_none() {
            return Err(SignatureError::Missing.into());
        }
        if !self.secrets.is_configured() {
            return Err(BillingError::NotConfigured);
        }
        let now = self.clock.now();
        self.secrets.verify(signature, payload, now)?;
        let event = ProviderEvent::read(payload, &self.prices)?;
        let outcome = self.apply(&event, None, now).await?;
        tracing::info!(
            billing.event_id = %event.id,
            billing.event_type = %event.kind,
            billing.outcome = outcome.as_str(),
            billing.reason = outcome.reason().unwrap_or(""),
            "payment provider event received"
        );
        Ok(Received {
            event_id: event.id,
            outcome,
        })
    }

    /// Applies `event` (received by webhook, or read from the provider's API for `by`).
    async fn apply(
        &self,
        event: &ProviderEvent,
        by: Option<&AuthContext>,
        now: DateTime<Utc>,
    ) -> Result<EventOutcome, BillingError> {
        let decide = |account: &Account, current: Option<&Subscription>, granted: bool| {
            let mut decision = decide(event, account, current, now);
            match &event.report {
                Report::Invoice(invoice) if !granted => {
                    if let Some(grant) =
                        included_grant(event, account.id, current, invoice, &self.plans, now)
                    {
                        decision.outcome = EventOutcome::Applied;
                        decision.grant = Some(grant);
                    }
                }
                Report::Checkout(checkout) if checkout.buys_credits() => {
                    decision = if !checkout.paid {
                        Decision::nothing(EventOutcome::Ignored("unpaid".to_owned()))
                    } else if granted {
                        Decision::nothing(EventOutcome::Unchanged)
                    } else {
                        match self.credit_price.credits(checkout) {
                            Ok(credits) => purchase(event, account.id, checkout, credits, by, now),
                            Err(refusal) => Decision::nothing(EventOutcome::Ignored(
                                refusal.reason().to_owned(),
                            )),
                        }
                    };
                }
                _ => {}
            }
            decision
        };
        let (outcome, account) = self.repo.receive_event(event, now, &decide).await?;
        if let Some(account) = account {
            self.accounts.invalidate(account);
        }
        Ok(outcome)
    }

    /// Processes a checkout the caller's account completed in its front end (admin): the
    /// session is read from the provider's API (a front end cannot prove a payment; the
    /// provider can) and applied as its `checkout.session.completed` event would be, once
    /// whatever the calls and deliveries that report it: its customer linked to the
    /// account, a checkout of credits (mode `payment`) granting what was paid for.
    pub async fn process_checkout(
        &self,
        ctx: &AuthContext,
        session_id: &str,
    ) -> Result<ProcessedCheckout, BillingError> {
        ctx.require(Scope::Admin)?;
        let well_formed = session_id.starts_with("cs_")
            && session_id.len() <= 255
            && session_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !well_formed {
            return Err(BillingError::InvalidCheckout);
        }
        let sessions = self
            .sessions
            .as_ref()
            .ok_or(BillingError::ApiNotConfigured)?;
        let session = sessions
            .checkout_session(session_id)
            .await?
            .ok_or(BillingError::CheckoutNotFound)?;
        let now = self.clock.now();
        let event = ProviderEvent::completed_session(&session, now)
            .map_err(|e| ProviderUnavailable(format!("the session is unreadable: {e}")))?;
        if event.account != Some(ctx.account_id) {
            return Err(BillingError::CheckoutNotFound);
        }
        let credits = match &event.report {
            Report::Checkout(checkout) if !checkout.paid => {
                return Err(BillingError::CheckoutIncomplete);
            }
            Report::Checkout(checkout) if checkout.buys_credits() => {
                match self.credit_price.credits(checkout) {
                    Ok(credits) => Some(credits),
                    Err(NoCredits::CurrencyMismatch) => {
                        return Err(BillingError::CurrencyMismatch {
                            paid: checkout.currency.clone().unwrap_or_default(),
                            sold: self.credit_price.currency.clone(),
                        });
                    }
                    Err(_) => return Err(BillingError::CheckoutIncomplete),
                }
            }
            Report::Checkout(_) => None,
            _ => return Err(BillingError::CheckoutNotFound),
        };
        let outcome = self.apply(&event, Some(ctx), now).await?;
        tracing::info!(
            billing.session_id = %session_id,
            billing.outcome = outcome.as_str(),
            "checkout processed"
        );
        Ok(ProcessedCheckout {
            session_id: session_id.to_owned(),
            outcome,
            credits,
        })
    }

    /// The caller's account's plan, lock and subscription (admin).
    pub async fn overview(&self, ctx: &AuthContext) -> Result<BillingOverview, BillingError> {
        ctx.require(Scope::Admin)?;
        let entitlement = self.accounts.entitlement_of(ctx.account_id).await?;
        let subscription = self.subscription_of(ctx.account_id).await?;
        Ok(BillingOverview {
            plan: entitlement.plan,
            lock: entitlement.lock,
            subscription,
        })
    }
}

impl BillingService {
    /// The account's subscription, if the provider reported one.
    pub async fn subscription_of(
        &self,
        account: AccountId,
    ) -> Result<Option<Subscription>, BillingError> {
        Ok(self.repo.subscription(account).await?)
    }
}

/// What `event` does to `account`, whose subscription is `current`, at `now`.
fn decide(
    event: &ProviderEvent,
    account: &Account,
    current: Option<&Subscription>,
    now: DateTime<Utc>,
) -> Decision {
    match &event.report {
        Report::Ignored(reason) => Decision::nothing(EventOutcome::Ignored((*reason).to_owned())),
        Report::Checkout(_) => {
            let mut decision = Decision::nothing(EventOutcome::Applied);
            decision.audit.push(
                AuditEntry::system(account.id, AuditAction::BillingCheckoutComplete, now)
                    .target("account", account.id)
                    .metadata(json!({
                        "provider": "stripe",
                        "event_id": event.id,
                        "customer_id": event.customer,
                    })),
            );
            decision
        }
        Report::Subscription(report) => {
            if current.is_some_and(|c| !c.is_superseded_by(&report.subscription_id, event.created))
            {
                return Decision::nothing(EventOutcome::Stale);
            }
            change(
                event,
                account,
                current,
                subscription_of(event, account.id, report, now),
                now,
            )
        }
        Report::Invoice(InvoiceReport {
            subscription_id,
            paid,
            ..
        }) => {
            let Some(current) = current.filter(|c| c.subscription_id == *subscription_id) else {
                // The subscription's own events carry its state: an invoice of a
                // subscription not reported yet waits for them.
                return Decision::nothing(EventOutcome::Ignored("unknown_subscription".to_owned()));
            };
            if !current.is_superseded_by(subscription_id, event.created) {
                return Decision::nothing(EventOutcome::Stale);
            }
            let status = match (paid, current.status) {
                (true, SubscriptionStatus::PastDue | SubscriptionStatus::Unpaid) => {
                    SubscriptionStatus::Active
                }
                (false, SubscriptionStatus::Active | SubscriptionStatus::Trialing) => {
                    SubscriptionStatus::PastDue
                }
                _ => return Decision::nothing(EventOutcome::Unchanged),
            };
            let next = Subscription {
                status,
                event_created_at: event.created,
                event_id: event.id.clone(),
                updated_at: now,
                ..current.clone()
            };
            change(event, account, Some(current), next, now)
        }
    }
}

/// Included credits are granted at the API's default priority: among grants of equal
/// priority the earliest expiry goes first, so a period's credits go before purchases.
const INCLUDED_PRIORITY: u8 = 10;

/// The credits a paid invoice includes: its tier's `included_credits` (the tier of its
/// line's price, else its subscription's), for the period it pays, spendable from the
/// period's start and lapsing at its end. None for a failed payment, a tier that includes
/// none, an invoice that names no period, or a period already over.
fn included_grant(
    event: &ProviderEvent,
    account: AccountId,
    current: Option<&Subscription>,
    invoice: &InvoiceReport,
    plans: &PlanCatalog,
    now: DateTime<Utc>,
) -> Option<EventGrant> {
    let origin = event.credits_origin()?;
    let plan = invoice.plan.or_else(|| {
        current
            .filter(|c| c.subscription_id == invoice.subscription_id)
            .map(|c| c.plan)
    })?;
    let amount = plans.quotas(plan).included_credits;
    let (start, end) = invoice.period?;
    if amount == 0 || end <= start || end <= now {
        return None;
    }
    let grant = CreditGrant {
        id: GrantId::random(),
        source: GrantSource::Plan,
        amount,
        remaining: amount,
        priority: INCLUDED_PRIORITY,
        effective_at: start,
        expires_at: Some(end),
    };
    let entry = LedgerEntry {
        id: EntryId::random(),
        kind: EntryKind::Grant,
        amount,
        balance_after: 0,
        grant_id: Some(grant.id),
        burns: Vec::new(),
        idempotency_key: None,
        reason: Some(format!(
            "{plan} plan (plans v{}), invoice {}",
            plans.version, invoice.invoice_id
        )),
        actor: SYSTEM_ACTOR.to_owned(),
        created_at: now,
    };
    let audit = AuditEntry::system(account, AuditAction::BillingCreditsAdd, now)
        .target("credit_grant", grant.id)
        .metadata(json!({
            "source": grant.source.as_str(),
            "amount": amount,
            "priority": grant.priority,
            "effective_at": grant.effective_at,
            "expires_at": grant.expires_at,
            "plan": plan.as_str(),
            "plans_version": plans.version,
            "invoice_id": invoice.invoice_id,
            "event_id": event.id,
        }));
    Some(EventGrant {
        origin,
        grant,
        entry,
        audit,
    })
}

/// The credits a paid checkout buys: a `purchase` grant, in effect now and never
/// expiring, audited `billing.credits_add` (by the admin who processed it, else by
/// `system`) beside `billing.checkout_complete`.
fn purchase(
    event: &ProviderEvent,
    account: AccountId,
    checkout: &CheckoutReport,
    credits: u64,
    by: Option<&AuthContext>,
    now: DateTime<Utc>,
) -> Decision {
    let audit_of = |action| match by {
        Some(ctx) => AuditEntry::by(ctx, action, now),
        None => AuditEntry::system(account, action, now),
    };
    let grant = CreditGrant {
        id: GrantId::random(),
        source: GrantSource::Purchase,
        amount: credits,
        remaining: credits,
        priority: INCLUDED_PRIORITY,
        effective_at: now,
        expires_at: None,
    };
    let paid = checkout.amount_subtotal.unwrap_or(0);
    let currency = checkout.currency.clone().unwrap_or_default();
    let entry = LedgerEntry {
        id: EntryId::random(),
        kind: EntryKind::Grant,
        amount: credits,
        balance_after: 0,
        grant_id: Some(grant.id),
        burns: Vec::new(),
        idempotency_key: None,
        reason: Some(format!(
            "checkout {} ({paid} {currency} minor units)",
            checkout.session_id
        )),
        actor: by.map_or_else(|| SYSTEM_ACTOR.to_owned(), |ctx| ctx.actor()),
        created_at: now,
    };
    let details = json!({
        "provider": "stripe",
        "event_id": event.id,
        "checkout_session_id": checkout.session_id,
        "customer_id": event.customer,
        "currency": currency,
        "amount_paid": paid,
    });
    let added = audit_of(AuditAction::BillingCreditsAdd)
        .target("credit_grant", grant.id)
        .metadata(json!({
            "source": grant.source.as_str(),
            "amount": credits,
            "priority": grant.priority,
            "effective_at": grant.effective_at,
            "expires_at": grant.expires_at,
            "checkout_session_id": checkout.session_id,
            "currency": currency,
            "amount_paid": paid,
            "event_id": event.id,
        }));
    Decision {
        outcome: EventOutcome::Applied,
        subscription: None,
        account: None,
        grant: Some(EventGrant {
            origin: format!("checkout:{}", checkout.session_id),
            grant,
            entry,
            audit: added,
        }),
        audit: vec![
            audit_of(AuditAction::BillingCheckoutComplete)
                .target("account", account)
                .metadata(details),
        ],
    }
}

fn subscription_of(
    event: &ProviderEvent,
    account: AccountId,
    report: &SubscriptionReport,
    now: DateTime<Utc>,
) -> Subscription {
    Subscription {
        account_id: account,
        subscription_id: report.subscription_id.clone(),
        customer_id: report.customer_id.clone(),
        plan: report.plan,
        status: report.status,
        current_period_start: report.current_period_start,
        current_period_end: report.current_period_end,
        cancel_at_period_end: report.cancel_at_period_end,
        canceled_at: report.canceled_at,
        ended_at: report.ended_at,
        event_created_at: event.created,
        event_id: event.id.clone(),
        updated_at: now,
    }
}

/// The subscription becomes `next`, and the account what it makes of it; audited
/// `billing.subscription_update` with both befores and afters.
fn change(
    event: &ProviderEvent,
    account: &Account,
    current: Option<&Subscription>,
    next: Subscription,
    now: DateTime<Utc>,
) -> Decision {
    let after = next.apply_to(account, now);
    let lock = |account: &Account| {
        account
            .locked
            .map(|lock| json!({"since": lock.since, "reason": lock.reason.as_str()}))
    };
    let audit = AuditEntry::system(account.id, AuditAction::BillingSubscriptionUpdate, now)
        .target("subscription", &next.subscription_id)
        .metadata(json!({
            "provider": "stripe",
            "event_id": event.id,
            "event_type": event.kind,
            "customer_id": next.customer_id,
            "status": {"from": current.map(|c| c.status.as_str()), "to": next.status.as_str()},
            "plan": {"from": account.plan.as_str(), "to": after.plan.as_str()},
            "lock": {"from": lock(account), "to": lock(&after)},
            "cancel_at_period_end": next.cancel_at_period_end,
            "current_period_end": next.current_period_end,
        }));
    Decision {
        outcome: EventOutcome::Applied,
        account: (after != *account).then_some(after),
        subscription: Some(next),
        grant: None,
        audit: vec![audit],
    }
}
