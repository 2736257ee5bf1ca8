//! OAuth for agents: the `[oauth]` section and the services of the account's authorization
//! server (agents as clients, principals, access rules, and what the token endpoint needs).

use std::sync::Arc;

use d2_oauth::{AccessRules, AgentService, ClientAuthenticator, PrincipalService};
use serde::Deserialize;

use super::{Registry, Shared};
use crate::settings::{CacheConfig, SettingsError};

/// `[oauth]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthSettings {
    /// How long a rotated-out client secret still authenticates.
    pub secret_grace_seconds: u64,
    /// Each account's access rules, compiled, as decisions read them; a rule change drops
    /// its account's entry on every replica.
    pub rules_cache: CacheConfig,
}

impl OAuthSettings {
    pub(crate) fn validate(&self) -> Result<(), SettingsError> {
        if self.secret_grace_seconds > 30 * 86_400 {
            return Err(SettingsError::invalid(
                "oauth.secret_grace_seconds",
                "must be at most 30 days (2592000)",
            ));
        }
        Ok(())
    }
}

/// The services of the OAuth domain.
#[derive(Clone, Debug)]
pub struct OAuth {
    pub agents: Arc<AgentService>,
    pub clients: Arc<ClientAuthenticator>,
    /// The account's end users (principals) agents act for.
    pub principals: Arc<PrincipalService>,
    /// The access rules, and the decisions the token endpoint asks of them.
    pub rules: Arc<AccessRules>,
}

pub(crate) fn build(shared: &Shared<'_>, registry: &mut Registry) -> OAuth {
    let settings = &shared.settings.oauth;
    let grace =
        chrono::Duration::seconds(i64::try_from(settings.secret_grace_seconds).unwrap_or(i64::MAX));
    let rules = Arc::new(AccessRules::new(
        shared.repositories.clone(),
        shared.clock.clone(),
        settings.rules_cache.settings(),
    ));
    registry.subscribe(rules.clone());
    OAuth {
        agents: Arc::new(AgentService::new(
            shared.repositories.clone(),
            shared.pepper.clone(),
            shared.clock.clone(),
            grace,
        )),
        clients: Arc::new(ClientAuthenticator::new(
            shared.repositories.clone(),
            shared.pepper.clone(),
            shared.clock.clone(),
        )),
        principals: Arc::new(PrincipalService::new(
            shared.repositories.clone(),
            shared.clock.clone(),
        )),
        rules,
    }
}
