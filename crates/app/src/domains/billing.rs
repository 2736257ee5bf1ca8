//! Billing: the `[billing]` section and the billing service (subscriptions reported by the
//! payment provider's signed webhooks).

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use d2_accounts::AccountService;
use d2_audit::{AuditAction, AuditEntry};
use d2_billing::jobs::ReservationExpiry;
use d2_billing::{
    BillingConfig, BillingService, CheckoutSessions, CreditLedger, CreditPrice, Eligibility,
    NoticeDelivery, NoticeSigner, Notices, PriceTable, PriceTiers, ThresholdScan, UsageMeter,
    WebhookSecrets,
};
use d2_jwks::{Jwks, JwsHeaderExtras};
use d2_kernel::{AccountId, Clock, Plan};
use d2_oidc::WebhookPosts;
use d2_stripe::StripeApi;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;

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
    /// The payment provider's secret API key (Stripe's `sk_...`), with which
    /// `POST /v1/billing/checkout/process` reads checkout sessions. Unset: that route
    /// answers 404 `billing_not_configured`.
    #[serde(default, deserialize_with = "crate::settings::blank_is_none")]
    pub provider_api_key: Option<SecretString>,
    /// The provider API's origin.
    pub provider_api_url: String,
    /// What credits cost: the currency checkouts of credits are paid in, and how many
    /// credits each of its minor units buys.
    pub credit_price: CreditPriceSettings,
}

/// `[billing.credit_price]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditPriceSettings {
    /// ISO 4217 (`usd`), lower case.
    pub currency: String,
    pub credits_per_minor_unit: u64,
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
        let currency = &self.credit_price.currency;
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(SettingsError::invalid(
                "billing.credit_price.currency",
                "an ISO 4217 code in lower case (usd)",
            ));
        }
        if !(1..=1_000_000).contains(&self.credit_price.credits_per_minor_unit) {
            return Err(SettingsError::invalid(
                "billing.credit_price.credits_per_minor_unit",
                "must be 1 to 1000000",
            ));
        }
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
    /// Threshold notices and the endpoint they are posted to.
    pub notices: Arc<Notices>,
}

/// The `typ` of a notice's signature.
const NOTICE_SIGNATURE_TYPE: &str = "d2-notice+jws";

/// Signs notices with the account's signing key (the one its policy bundles are signed
/// with, created on first use), detached: `header..signature` over the exact body.
struct AccountKeySigner {
    keys: Arc<Jwks>,
    clock: Arc<dyn Clock>,
}

#[async_trait]
impl NoticeSigner for AccountKeySigner {
    async fn sign_detached(&self, account: AccountId, body: &[u8]) -> Result<String, String> {
        let now = self.clock.now();
        let key = self
            .keys
            .active_key(account, |key| {
                AuditEntry::system(account, AuditAction::KeyCreate, now)
                    .target("signing_key", &key.kid)
                    .metadata(json!({ "reason": "first billing notice" }))
            })
            .await
            .map_err(|e| e.to_string())?;
        let extras = JwsHeaderExtras {
            token_type: Some(NOTICE_SIGNATURE_TYPE),
            ..JwsHeaderExtras::default()
        };
        let jws = self
            .keys
            .sign(&key, &extras, body)
            .map_err(|e| e.to_string())?;
        let mut parts = jws.split('.');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(header), Some(_), Some(signature)) => Ok(format!("{header}..{signature}")),
            _ => Err("the signature is not a compact JWS".to_owned()),
        }
    }
}

pub(crate) fn build(
    shared: &Shared<'_>,
    registry: &mut Registry,
    accounts: &AccountService,
    keys: Arc<Jwks>,
) -> Result<Billing, crate::StartupError> {
    let settings = &shared.settings.billing;
    let sessions: Option<Arc<dyn CheckoutSessions>> = match &settings.provider_api_key {
        Some(key) => Some(Arc::new(
            StripeApi::new(&settings.provider_api_url, key.clone())
                .map_err(|e| SettingsError::invalid("billing.provider_api_url", e.to_string()))?,
        )),
        None => None,
    };
    let subscriptions = Arc::new(BillingService::new(
        shared.repositories.clone(),
        accounts.clone(),
        BillingConfig {
            secrets: Arc::new(WebhookSecrets::new(
                &settings.webhook_secrets,
                settings.webhook_tolerance_seconds,
            )),
            prices: Arc::new(PriceTiers::new(
                settings.prices.tiers().map(|(plan, price)| (price, plan)),
            )),
            plans: Arc::new(shared.settings.plans.clone()),
            credit_price: CreditPrice {
                currency: settings.credit_price.currency.clone(),
                credits_per_minor_unit: settings.credit_price.credits_per_minor_unit,
            },
            sessions,
        },
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
    let posts = WebhookPosts::new(shared.settings.oauth.outbound_fetch.clone()).map_err(|e| {
        SettingsError::invalid(
            "oauth",
            format!("cannot build the client that posts billing notices: {e}"),
        )
    })?;
    let notices = Arc::new(Notices::new(
        shared.repositories.clone(),
        shared.repositories.clone(),
        eligibility.clone(),
        Arc::new(AccountKeySigner {
            keys,
            clock: shared.clock.clone(),
        }),
        Arc::new(posts),
        shared.clock.clone(),
    ));
    registry.schedule(ThresholdScan(notices.clone()));
    registry.handle(NoticeDelivery(notices.clone()));
    Ok(Billing {
        subscriptions,
        credits,
        usage,
        eligibility,
        notices,
    })
}
