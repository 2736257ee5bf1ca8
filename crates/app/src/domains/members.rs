//! Members: the `[members]` and `[smtp]` sections, the identity provider of `auth.idp`,
//! sessions, the members and invitations services, and the task that mails invitations.

use std::sync::Arc;

use d2_accounts::AccountService;
use d2_members::{InvitationMailer, Invitations, MembersService, SessionVerifier};
use d2_oauth::{BrowserSignIn, PersonTokens};
use d2_oidc::OidcProvider;
use d2_smtp::SmtpMailer;
use serde::Deserialize;

use super::{Registry, Shared};
use crate::StartupError;
use crate::settings::{CacheConfig, SettingsError};

/// `[members]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembersSettings {
    /// Verified sign-in tokens and members' roles; a membership change invalidates its
    /// entries on every replica.
    pub session_cache: CacheConfig,
    /// The acceptance page of invitations (a dashboard's): an invitation's link is this
    /// followed by its token.
    pub invitation_link: String,
}

impl MembersSettings {
    pub(crate) fn validate(&self) -> Result<(), SettingsError> {
        if !(self.invitation_link.starts_with("https://")
            || self.invitation_link.starts_with("http://"))
        {
            return Err(SettingsError::invalid(
                "members.invitation_link",
                "must be an http(s) URL",
            ));
        }
        Ok(())
    }
}

pub(crate) struct Members {
    pub members: Arc<MembersService>,
    pub invitations: Arc<Invitations>,
    /// Sign-in, when `auth.idp` is configured.
    pub sessions: Option<Arc<SessionVerifier>>,
    /// Browser sign-in at the provider (the consent pages), when `auth.idp.client_id` is
    /// set too.
    pub browser_sign_in: Option<Arc<dyn BrowserSignIn>>,
    /// People's tokens from the provider, as token exchange subjects.
    pub person_tokens: Option<Arc<dyn PersonTokens>>,
}

pub(crate) async fn build(
    shared: &Shared<'_>,
    registry: &mut Registry,
    accounts: &AccountService,
) -> Result<Members, StartupError> {
    let provider = identity_provider(shared).await?;
    let person_tokens = provider
        .clone()
        .map(|provider| -> Arc<dyn PersonTokens> { provider });
    let browser_sign_in = provider
        .clone()
        .filter(|provider| provider.browser_sign_in_enabled())
        .map(|provider| -> Arc<dyn BrowserSignIn> { provider });
    let sessions = match provider {
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
    let mailer = match &shared.settings.smtp {
        Some(smtp) => Some(Arc::new(
            SmtpMailer::new(smtp.clone()).map_err(StartupError::Smtp)?,
        )),
        None => None,
    };
    let invitations = Arc::new(Invitations::new(
        shared.repositories.clone(),
        shared.repositories.clone(),
        Arc::new(accounts.clone()),
        shared.pepper.clone(),
        shared.clock.clone(),
        mailer.is_some(),
    ));
    if let Some(mailer) = mailer {
        registry.handle(InvitationMailer::new(
            shared.repositories.clone(),
            mailer,
            shared.pepper.clone(),
            shared.clock.clone(),
            shared.settings.members.invitation_link.clone(),
        ));
    }
    Ok(Members {
        members,
        invitations,
        sessions,
        browser_sign_in,
        person_tokens,
    })
}

/// The OpenID provider of `auth.idp`, if configured. Its keys are fetched now and
/// refreshed in the background; a provider unreachable at start is not fatal (sign-ins
/// answer 503 until its keys can be fetched).
async fn identity_provider(shared: &Shared<'_>) -> Result<Option<Arc<OidcProvider>>, StartupError> {
    let Some(settings) = &shared.settings.auth.idp else {
        return Ok(None);
    };
    let provider = OidcProvider::connect(settings.clone(), shared.clock.clone())
        .await
        .map_err(StartupError::IdentityProvider)?;
    tracing::info!(issuer = %settings.issuer, "identity-provider sign-in enabled");
    Ok(Some(Arc::new(provider)))
}
