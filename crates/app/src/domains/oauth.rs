//! OAuth for agents: the `[oauth]` section and the services of the account's authorization
//! server (agents as clients, and what the token endpoint needs).

use std::sync::Arc;

use d2_oauth::{AgentService, ClientAuthenticator};
use serde::Deserialize;

use super::{Registry, Shared};
use crate::settings::SettingsError;

/// `[oauth]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthSettings {
    /// How long a rotated-out client secret still authenticates.
    pub secret_grace_seconds: u64,
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
}

pub(crate) fn build(shared: &Shared<'_>, _registry: &mut Registry) -> OAuth {
    let settings = &shared.settings.oauth;
    let grace =
        chrono::Duration::seconds(i64::try_from(settings.secret_grace_seconds).unwrap_or(i64::MAX));
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
    }
}
