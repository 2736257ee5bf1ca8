//! Billing: the `[billing]` section and the billing service (subscriptions reported by the
//! payment provider's signed webhooks).

use std::path::Path;
use std::sync::Arc;

use d2_accounts::AccountService;
use d2_billing::jobs::ReservationExpiry;
use d2_billing::{
    BillingService, CreditLedger, Eligibility, PriceTable, PriceTiers, UsageMeter, WebhookSecrets,
};
use d2_kernel::Plan;
use secrecy::SecretString;
use serde::Deserialize;

use super::{Registry, Shared};
use crate::settings::{CacheConfig, SettingsError};

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
    /// Each account's standing this month, as eligibility reads it: a replica reads it from
    /// the stores at most once per `ttl_seconds`.
    pub eligibility_cache: CacheConfig,
    /// The YAML price table of models and agent operations (absolute, or relative to the
    /// config directory). Unset: the config directory's `prices.yml`, else the copy built
    /// into the binary.
    #[serde(default, deserialize_with = "crate::settings::blank_is_none")]
    pub price_table_file: Option<String>,
    /// The price table, read and checked when the settings are loaded.
    #[serde(skip)]
    pub price_table: Arc<PriceTable>,
}

/// The price table shipped in `config/prices.yml`.
pub const SHIPPED_PRICE_TABLE: &str = include_str!("../../../../config/prices.yml");

/// `[billing.prices]`: the provider's price ids of each paid tier.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSettings {
    pub essentials: Vec<String>,
    pub pro: Vec<String>,
    pub enterprise: Vec<String>,
}

impl BillingSettings {
    /// Reads and checks the price table (`dir` is the config directory): a file that is
    /// missing or not a valid table is an error naming the key, the file and the problem.
    pub(crate) fn load_price_table(&mut self, dir: &Path) -> Result<(), SettingsError> {
        const KEY: &str = "billing.price_table_file";
        let (source, text) = crate::settings::config_file(
            dir,
            KEY,
            self.price_table_file.as_deref(),
            "prices.yml",
            SHIPPED_PRICE_TABLE,
        )?;
        let table = PriceTable::from_yaml(&text)
            .map_err(|e| SettingsError::invalid(KEY, format!("{source}: {e}")))?;
        self.price_table = Arc::new(table);
        Ok(())
    }

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
    /// Usage reports, priced from the price table and paid in credits.
    pub usage: Arc<UsageMeter>,
    /// Eligibility before work, and the credits' forecast.
    pub eligibility: Arc<Eligibility>,
}

pub(crate) fn build(
    shared: &Shared<'_>,
    registry: &mut Registry,
    accounts: &AccountService,
) -> Billing {
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
        Arc::new(shared.settings.plans.clone()),
        shared.clock.clone(),
    ));
    let credits = Arc::new(CreditLedger::new(
        shared.repositories.clone(),
        shared.clock.clone(),
    ));
    registry.schedule(ReservationExpiry(credits.clone()));
    let usage = Arc::new(UsageMeter::new(
        shared.repositories.clone(),
        settings.price_table.clone(),
        shared.clock.clone(),
    ));
    let eligibility = Arc::new(Eligibility::new(
        shared.repositories.clone(),
        shared.repositories.clone(),
        Arc::new(accounts.clone()),
        Arc::new(shared.settings.plans.clone()),
        usage.clone(),
        shared.clock.clone(),
        settings.eligibility_cache.settings(),
    ));
    Billing {
        subscriptions,
        credits,
        usage,
        eligibility,
    }
}
