//! Members: the `[members]` section, the identity provider of `auth.idp`, sessions and the
//! members service.

use std::sync::Arc;

use d2_members::{IdentityProvider, MembersService, SessionVerifier};
use d2_oidc::OidcProvider;
use serde::Deserialize;

use super::{Registry, Shared};
use crate::StartupError;
use crate::settings::CacheConfig;

/// `[members]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembersSettings {
    /// Verified sign-in tokens and members' roles; a membership change invalidates its
    /// entries on every replica.
    pub session_cache: CacheConfig,
}

pub(crate) struct Members {
    pub members: Arc<MembersService>,
    /// Sign-in, when `auth.idp` is configured.
    pub sessions: Option<Arc<SessionVerifier>>,
}

pub(crate) async fn build(
    shared: &Shared<'_>,
    registry: &mut Registry,
) -> Result<Members, StartupError> {
    let sessions = match identity_provider(shared).await? {
        Some(provider) => {
            let sessions = Arc::new(SessionVerifier::new(
                provider,
                shared.repositories.clone(),
                shared.pepper.clone(),
                shared.clock.clone(),
                shared.settings.members.session_cache.settings(),
            ));
            registry.subscribe(sessions.clone());
            Some(sessions)
        }
        None => None,
    };
    let members = Arc::new(MembersService::new(
        shared.repositories.clone(),
        sessions.clone(),
        shared.clock.clone(),
        shared.settings.plans.trial_days,
    ));
    Ok(Members { members, sessions })
}

/// The OpenID provider of `auth.idp`, if configured. Its keys are fetched now and
/// refreshed in the background; a provider unreachable at start is not fatal (sign-ins
/// answer 503 until its keys can be fetched).
async fn identity_provider(
    shared: &Shared<'_>,
) -> Result<Option<Arc<dyn IdentityProvider>>, StartupError> {
    let Some(settings) = &shared.settings.auth.idp else {
        return Ok(None);
    };
    let provider = OidcProvider::connect(settings.clone(), shared.clock.clone())
        .await
        .map_err(StartupError::IdentityProvider)?;
    tracing::info!(issuer = %settings.issuer, "identity-provider sign-in enabled");
    Ok(Some(Arc::new(provider)))
}
