//! Billing: the `[billing]` section and the billing service (subscriptions reported by the
//! payment provider's signed webhooks).

use std::sync::Arc;

use d2_accounts::AccountService;
use d2_billing::{BillingService, CreditLedger, PriceTiers, WebhookSecrets};
use d2_kernel::Plan;
use secrecy::SecretString;
use serde::Deserialize;

use super::Shared;
use crate::settings::SettingsError;

/// `[billing]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingSettings {
    /// The webhook endpoint's signing secrets (Stripe's `whsec_...`), several while one is
    /// rotated. Empty: webhooks are answered 404 `billing_not_configured`.
    pub webhook_secrets: Vec<SecretString>,
    /// How far a signature's timestamp may be from now, in seconds.
    pub webhook_tolerance_seconds: u64,
    /// Which tier each of the provider's prices is.
    pub prices: PriceSettings,
}

/// `[billing.prices]`: the provider's price ids of each paid tier.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSettings {
    pub essentials: Vec<String>,
    pub pro: Vec<String>,
    pub enterprise: Vec<String>,
}

impl BillingSettings {
    pub(crate) fn validate(&self) -> Result<(), SettingsError> {
        if !(1..=3600).contains(&self.webhook_tolerance_seconds) {
            return Err(SettingsError::invalid(
                "billing.webhook_tolerance_seconds",
                "must be 1 to 3600",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (_, price) in self.prices.tiers() {
            if price.is_empty() || !seen.insert(price.clone()) {
                return Err(SettingsError::invalid(
                    "billing.prices",
                    "each price id must be non-empty and name one tier",
                ));
            }
        }
        Ok(())
    }
}

impl PriceSettings {
    fn tiers(&self) -> impl Iterator<Item = (Plan, String)> + '_ {
        [
            (Plan::Essentials, &self.essentials),
            (Plan::Pro, &self.pro),
            (Plan::Enterprise, &self.enterprise),
        ]
        .into_iter()
        .flat_map(|(plan, prices)| prices.iter().map(move |price| (plan, price.clone())))
    }
}

/// The billing domain's services.
#[derive(Clone, Debug)]
pub struct Billing {
    /// Subscriptions reported by the payment provider.
    pub subscriptions: Arc<BillingService>,
    /// The credits ledger.
    pub credits: Arc<CreditLedger>,
}

pub(crate) fn build(shared: &Shared<'_>, accounts: &AccountService) -> Billing {
    let settings = &shared.settings.billing;
    let subscriptions = Arc::new(BillingService::new(
        shared.repositories.clone(),
        accounts.clone(),
        Arc::new(WebhookSecrets::new(
            &settings.webhook_secrets,
            settings.webhook_tolerance_seconds,
        )),
        Arc::new(PriceTiers::new(
            settings.prices.tiers().map(|(plan, price)| (price, plan)),
        )),
        shared.clock.clone(),
    ));
    let credits = Arc::new(CreditLedger::new(
        shared.repositories.clone(),
        shared.clock.clone(),
    ));
    Billing {
        subscriptions,
        credits,
    }
}
