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
use crate::ledger::{EntryId, EntryKind, LedgerEntry, SYSTEM_ACTOR};
use crate::ports::{BillingRepo, Decision, EventOutcome, IncludedGrant};
use crate::provider::{
    InvoiceReport, MalformedEvent, PriceTiers, ProviderEvent, Report, SubscriptionReport,
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
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for BillingError {
    fn code(&self) -> Code {
        match self {
            BillingError::Access(error) => error.code(),
            BillingError::NotConfigured => Code::BillingNotConfigured,
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
    clock: Arc<dyn Clock>,
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
        secrets: Arc<WebhookSecrets>,
        prices: Arc<PriceTiers>,
        plans: Arc<PlanCatalog>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            repo,
            accounts,
            secrets,
            prices,
            plans,
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
        let decide = |account: &Account, current: Option<&Subscription>, granted: bool| {
            let mut decision = decide(&event, account, current, now);
            if let Report::Invoice(invoice) = &event.report
                && !granted
                && let Some(grant) =
                    included_grant(&event, account.id, current, invoice, &self.plans, now)
            {
                decision.outcome = EventOutcome::Applied;
                decision.grant = Some(grant);
            }
            decision
        };
        let (outcome, account) = self.repo.receive_event(&event, now, &decide).await?;
        if let Some(account) = account {
            self.accounts.invalidate(account);
        }
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
        Report::Checkout => {
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
) -> Option<IncludedGrant> {
    let origin = event.included_credits_origin()?;
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
    Some(IncludedGrant {
        origin,
        grant,
        entry,
        audit,
    })
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
