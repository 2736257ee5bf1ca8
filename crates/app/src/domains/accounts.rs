//! Accounts: the `[accounts]` section and the account service.

use std::sync::Arc;

use d2_accounts::{AccountService, SamplingPolicy, TrialLocker};
use serde::Deserialize;

use super::{Registry, Shared};
use crate::settings::CacheConfig;

/// `[accounts]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountsSettings {
    /// `GET /v1/accounts/me` is served from here; changes invalidate it on every replica.
    pub cache: CacheConfig,
}

pub(crate) fn build(shared: &Shared<'_>, registry: &mut Registry) -> AccountService {
    let settings = shared.settings;
    let accounts = AccountService::new(
        shared.repositories.clone(),
        Arc::new(settings.plans.clone()),
        Arc::new(SamplingPolicy::new(&settings.events.sample)),
        shared.clock.clone(),
        settings.accounts.cache.settings(),
    );
    registry.subscribe(Arc::new(accounts.clone()));
    registry.schedule(TrialLocker(accounts.clone()));
    accounts
}
