//! OAuth for agents: the `[oauth]` section and the services of the account's authorization
//! server (agents as clients, principals, access rules, and what the token endpoint needs).

use std::sync::Arc;

use d2_jwks::Jwks;
use d2_oauth::{
    AccessRules, AgentCache, AgentService, ClientAuthenticator, PrincipalService, TokenIssuer,
};
use serde::Deserialize;

use super::{Registry, Shared};
use crate::settings::{CacheConfig, SettingsError};

/// `[oauth]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthSettings {
    /// How long a rotated-out client secret still authenticates.
    pub secret_grace_seconds: u64,
    /// How long a refresh token already spent, presented again, gets the answer it got
    /// (a retry) instead of revoking its family (a reuse).
    pub refresh_replay_seconds: u64,
    /// Issued tokens and agents, for introspection; revocations and agent changes
    /// invalidate them on every replica.
    pub token_cache: CacheConfig,
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
        if self.refresh_replay_seconds > 60 {
            return Err(SettingsError::invalid(
                "oauth.refresh_replay_seconds",
                "must be at most 60",
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
    /// The token endpoint's grants, introspection and revocation.
    pub issuer: Arc<TokenIssuer>,
    /// The account's end users (principals) agents act for.
    pub principals: Arc<PrincipalService>,
    /// The access rules, and the decisions the token endpoint asks of them.
    pub rules: Arc<AccessRules>,
}

fn seconds(s: u64) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX))
}

/// `jwks`: the accounts' signing keys, which sign access tokens as they sign bundles.
pub(crate) fn build(shared: &Shared<'_>, registry: &mut Registry, jwks: Arc<Jwks>) -> OAuth {
    let settings = &shared.settings.oauth;
    let grace = seconds(settings.secret_grace_seconds);
    let cache = Arc::new(AgentCache::new(
        shared.repositories.clone(),
        settings.token_cache.settings(),
    ));
    registry.subscribe(cache.clone());
    let issuer = Arc::new(TokenIssuer::new(
        shared.repositories.clone(),
        cache.clone(),
        jwks,
        shared.pepper.clone(),
        shared.clock.clone(),
        seconds(settings.refresh_replay_seconds),
        settings.token_cache.settings(),
    ));
    registry.subscribe(issuer.clone());
    let rules = Arc::new(AccessRules::new(
        shared.repositories.clone(),
        shared.clock.clone(),
        settings.rules_cache.settings(),
    ));
    registry.subscribe(rules.clone());
    OAuth {
        issuer,
        agents: Arc::new(AgentService::new(
            shared.repositories.clone(),
            cache,
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
