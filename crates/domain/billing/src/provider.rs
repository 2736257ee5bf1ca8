//! The payment provider's events (Stripe's event objects), read into what they report.
//!
//! Which account an event is about: the `d2_account_id` of the object's metadata (the
//! front end sets it on the checkout session and the subscription it creates), the
//! checkout session's `client_reference_id`, or else the customer a checkout linked to
//! an account before. Which tier: the price of the subscription's first item, as
//! configured in `billing.prices`; an unknown price is ignored, never guessed.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use d2_kernel::{AccountId, Plan};
use serde_json::Value;

use crate::subscription::SubscriptionStatus;

/// The longest provider id kept (event, customer, subscription ids are about 30 bytes).
const MAX_ID_BYTES: usize = 255;

/// What a signed payload that is no event of the provider lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the payload is not a provider event: {0}")]
pub struct MalformedEvent(pub &'static str);

/// One event of the provider, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEvent {
    /// The provider's event id (`evt_...`): each is processed once.
    pub id: String,
    /// The provider's event type (`customer.subscription.updated`, ...).
    pub kind: String,
    /// When the provider created it: the order of events, whatever the order they arrive.
    pub created: DateTime<Utc>,
    /// The account it names, if it names one.
    pub account: Option<AccountId>,
    /// The provider's customer it is about, if any.
    pub customer: Option<String>,
    pub report: Report,
}

/// What an event reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A checkout completed: its customer is the account's from now on, and a paid
    /// checkout of credits (mode `payment`) buys them.
    Checkout(CheckoutReport),
    /// A subscription's state (created, updated, deleted).
    Subscription(SubscriptionReport),
    /// An invoice of a subscription was paid, or its payment failed.
    Invoice(InvoiceReport),
    /// Nothing D2 acts on; the reason is recorded with the event.
    Ignored(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionReport {
    pub subscription_id: String,
    pub customer_id: String,
    pub plan: Plan,
    pub status: SubscriptionStatus,
    pub current_period_start: Option<DateTime<Utc>>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// A checkout session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutReport {
    pub session_id: String,
    /// `payment` (credits bought), `subscription` or `setup`.
    pub mode: String,
    /// Complete and paid (`status` `complete`, `payment_status` `paid`).
    pub paid: bool,
    /// ISO 4217, lower case, as the provider writes it.
    pub currency: Option<String>,
    /// What the items cost before discounts and taxes, in the currency's minor unit.
    pub amount_subtotal: Option<u64>,
}

impl CheckoutReport {
    /// A checkout that buys credits.
    pub fn buys_credits(&self) -> bool {
        self.mode == "payment"
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceReport {
    pub invoice_id: String,
    pub subscription_id: String,
    pub paid: bool,
    /// The tier of its first line's price, when `billing.prices` names it.
    pub plan: Option<Plan>,
    /// The period its first line pays for (start, end).
    pub period: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

impl ProviderEvent {
    /// What grants credits once, whatever the events and calls that report it: a paid
    /// invoice's included credits (`invoice:<id>`), a paid checkout's bought ones
    /// (`checkout:<session id>`).
    pub fn credits_origin(&self) -> Option<String> {
        match &self.report {
            Report::Invoice(invoice) if invoice.paid => {
                Some(format!("invoice:{}", invoice.invoice_id))
            }
            Report::Checkout(checkout) if checkout.paid && checkout.buys_credits() => {
                Some(format!("checkout:{}", checkout.session_id))
            }
            _ => None,
        }
    }

    /// A checkout session read from the provider's API, as the event that completes it:
    /// its id is `checkout:<session id>`, so that processing it again is a duplicate.
    pub fn completed_session(
        session: &Value,
        received_at: DateTime<Utc>,
    ) -> Result<Self, MalformedEvent> {
        let session_id = provider_id(session, "id").ok_or(MalformedEvent("session id"))?;
        let account = checkout_account(session);
        let report = checkout(session, session_id.clone())?;
        Ok(ProviderEvent {
            id: format!("checkout:{session_id}"),
            kind: "checkout.session.completed".to_owned(),
            created: time(session, "created").unwrap_or(received_at),
            account,
            customer: provider_id(session, "customer"),
            report,
        })
    }
}

/// The account a checkout session names: its `d2_account_id` metadata, else its
/// `client_reference_id`.
fn checkout_account(session: &Value) -> Option<AccountId> {
    session
        .pointer("/metadata/d2_account_id")
        .or_else(|| session.get("client_reference_id"))
        .and_then(Value::as_str)
        .and_then(|text| text.parse().ok())
}

/// A checkout session's report: a checkout of credits stands on its own; another needs
/// the customer it links.
fn checkout(session: &Value, session_id: String) -> Result<Report, MalformedEvent> {
    let text = |name: &str| session.get(name).and_then(Value::as_str);
    let mode = text("mode")
        .ok_or(MalformedEvent("checkout mode"))?
        .to_owned();
    let report = CheckoutReport {
        session_id,
        paid: text("status") == Some("complete") && text("payment_status") == Some("paid"),
        currency: text("currency").map(str::to_ascii_lowercase),
        amount_subtotal: session.get("amount_subtotal").and_then(Value::as_u64),
        mode,
    };
    if !report.buys_credits() && provider_id(session, "customer").is_none() {
        return Ok(Report::Ignored("no_customer"));
    }
    Ok(Report::Checkout(report))
}

/// Which tier each of the provider's prices is.
#[derive(Debug, Clone, Default)]
pub struct PriceTiers(HashMap<String, Plan>);

impl PriceTiers {
    pub fn new(prices: impl IntoIterator<Item = (String, Plan)>) -> Self {
        Self(prices.into_iter().collect())
    }

    fn tier(&self, price: &str) -> Option<Plan> {
        self.0.get(price).copied()
    }
}

impl ProviderEvent {
    /// Reads a verified payload. Types D2 does not act on are [`Report::Ignored`];
    /// a payload without an event's id, type, time and object is malformed.
    pub fn read(payload: &[u8], prices: &PriceTiers) -> Result<Self, MalformedEvent> {
        let event: Value =
            serde_json::from_slice(payload).map_err(|_| MalformedEvent("not JSON"))?;
        let id = provider_id(&event, "id").ok_or(MalformedEvent("id"))?;
        let kind = event
            .get("type")
            .and_then(Value::as_str)
            .filter(|kind| !kind.is_empty() && kind.len() <= MAX_ID_BYTES)
            .ok_or(MalformedEvent("type"))?
            .to_owned();
        let created = time(&event, "created").ok_or(MalformedEvent("created"))?;
        let object = event
            .pointer("/data/object")
            .filter(|object| object.is_object())
            .ok_or(MalformedEvent("data.object"))?;
        let metadata_account = object
            .pointer("/metadata/d2_account_id")
            .or_else(|| object.pointer("/parent/subscription_details/metadata/d2_account_id"))
            .or_else(|| object.pointer("/subscription_details/metadata/d2_account_id"))
            .and_then(Value::as_str)
            .and_then(|text| text.parse::<AccountId>().ok());
        let customer = provider_id(object, "customer");
        let mut account = metadata_account;
        let report = match kind.as_str() {
            "checkout.session.completed" => {
                account = account.or_else(|| checkout_account(object));
                let session_id = provider_id(object, "id").ok_or(MalformedEvent("session id"))?;
                checkout(object, session_id)?
            }
            "customer.subscription.created"
            | "customer.subscription.updated"
            | "customer.subscription.deleted" => subscription(object, prices)?,
            "invoice.paid" | "invoice.payment_succeeded" | "invoice.payment_failed" => {
                let subscription_id = provider_id(object, "subscription").or_else(|| {
                    object
                        .pointer("/parent/subscription_details/subscription")
                        .and_then(Value::as_str)
                        .filter(|id| id.len() <= MAX_ID_BYTES)
                        .map(str::to_owned)
                });
                match subscription_id {
                    Some(subscription_id) => Report::Invoice(InvoiceReport {
                        invoice_id: provider_id(object, "id")
                            .ok_or(MalformedEvent("invoice id"))?,
                        subscription_id,
                        paid: kind != "invoice.payment_failed",
                        plan: invoice_line_price(object).and_then(|price| prices.tier(price)),
                        period: object.pointer("/lines/data/0/period").and_then(|period| {
                            Some((time(period, "start")?, time(period, "end")?))
                        }),
                    }),
                    None => Report::Ignored("no_subscription"),
                }
            }
            _ => Report::Ignored("unhandled_type"),
        };
        Ok(ProviderEvent {
            id,
            kind,
            created,
            account,
            customer,
            report,
        })
    }
}

fn subscription(object: &Value, prices: &PriceTiers) -> Result<Report, MalformedEvent> {
    let subscription_id = provider_id(object, "id").ok_or(MalformedEvent("subscription id"))?;
    let customer_id =
        provider_id(object, "customer").ok_or(MalformedEvent("subscription customer"))?;
    let status = object
        .get("status")
        .and_then(Value::as_str)
        .ok_or(MalformedEvent("subscription status"))?;
    let Ok(status) = status.parse::<SubscriptionStatus>() else {
        return Ok(Report::Ignored("unknown_status"));
    };
    let item = object.pointer("/items/data/0");
    let Some(plan) = item
        .and_then(|item| item.pointer("/price/id"))
        .and_then(Value::as_str)
        .and_then(|price| prices.tier(price))
    else {
        return Ok(Report::Ignored("unknown_price"));
    };
    // Newer API versions keep the period on the item, older ones on the subscription.
    let period = |name: &str| time(object, name).or_else(|| item.and_then(|item| time(item, name)));
    Ok(Report::Subscription(SubscriptionReport {
        subscription_id,
        customer_id,
        plan,
        status,
        current_period_start: period("current_period_start"),
        current_period_end: period("current_period_end"),
        cancel_at_period_end: object
            .get("cancel_at_period_end")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        canceled_at: time(object, "canceled_at"),
        ended_at: time(object, "ended_at"),
    }))
}

/// The price of an invoice's first line: `price.id` in older API versions,
/// `pricing.price_details.price` in newer ones.
fn invoice_line_price(invoice: &Value) -> Option<&str> {
    let line = invoice.pointer("/lines/data/0")?;
    line.pointer("/price/id")
        .or_else(|| line.pointer("/pricing/price_details/price"))
        .and_then(Value::as_str)
}

/// A provider id: a non-empty string of at most [`MAX_ID_BYTES`] (an expanded object's
/// `id` is taken too).
fn provider_id(object: &Value, name: &str) -> Option<String> {
    let value = object.get(name)?;
    let text = value
        .as_str()
        .or_else(|| value.get("id").and_then(Value::as_str))?;
    (!text.is_empty() && text.len() <= MAX_ID_BYTES && !text.contains('\0'))
        .then(|| text.to_owned())
}

/// A time in Unix seconds.
fn time(object: &Value, name: &str) -> Option<DateTime<Utc>> {
    object
        .get(name)
        .and_then(Value::as_i64)
        .and_then(|seconds| DateTime::from_timestamp(seconds, 0))
}
