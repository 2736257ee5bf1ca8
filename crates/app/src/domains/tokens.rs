//! Tokens: the `[auth]` section, the verifier, the token service and the bootstrap, and
//! the servers' periodic write of when tokens were last used.

use std::sync::Arc;
use std::time::Duration;

use d2_accounts::AccountService;
use d2_oidc::OidcSettings;
use d2_tokens::{BootstrapService, ControlPlaneSecret, TokenExpiry, TokenService, TokenVerifier};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{Registry, Shared};
use crate::settings::{CacheConfig, SettingsError, blank_is_none};
use crate::{Mode, StartupError};

/// `[auth]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// The secret of `POST /v1/user-token/issue`; unset, the route is disabled.
    #[serde(default, deserialize_with = "blank_is_none")]
    pub control_plane_token: Option<SecretString>,
    /// How long a rotated token keeps working.
    pub rotation_grace_seconds: u64,
    pub token_cache: CacheConfig,
    /// Sign-in through an OpenID provider (`[auth.idp]`, read by the members domain);
    /// unset, only API tokens authenticate.
    #[serde(default)]
    pub idp: Option<OidcSettings>,
}

impl AuthSettings {
    pub(crate) fn validate(&self) -> Result<(), SettingsError> {
        if let Some(token) = &self.control_plane_token
            && token.expose_secret().len() < 16
        {
            return Err(SettingsError::invalid(
                "auth.control_plane_token",
                "must be at least 16 characters",
            ));
        }
        if let Some(idp) = &self.idp {
            idp.validate().map_err(|error| {
                SettingsError::invalid(format!("auth.idp.{}", error.key), error.reason)
            })?;
        }
        Ok(())
    }
}

pub(crate) struct Tokens {
    pub verifier: Arc<TokenVerifier>,
    pub tokens: TokenService,
    pub bootstrap: Arc<BootstrapService>,
}

/// How often a server writes the token uses its verifier noted (one statement per flush;
/// a use is noted at most once a minute per token, so lists lag by at most this much more).
const USAGE_FLUSH_INTERVAL: Duration = Duration::from_secs(30);

pub(crate) fn build(
    shared: &Shared<'_>,
    registry: &mut Registry,
    accounts: &AccountService,
) -> Result<Tokens, StartupError> {
    let settings = &shared.settings.auth;
    let repositories = &shared.repositories;
    let control_plane = settings
        .control_plane_token
        .as_ref()
        .map(|secret| ControlPlaneSecret::new(secret.expose_secret()))
        .transpose()?;
    if control_plane.is_none() && shared.mode == Mode::Server {
        tracing::info!("no auth.control_plane_token set: POST /v1/user-token/issue is disabled");
    }
    let verifier = Arc::new(TokenVerifier::new(
        repositories.clone(),
        shared.pepper.clone(),
        shared.clock.clone(),
        settings.token_cache.settings(),
    ));
    let grace = chrono::Duration::seconds(
        i64::try_from(settings.rotation_grace_seconds).unwrap_or(i64::MAX),
    );
    let tokens = TokenService::new(
        repositories.clone(),
        verifier.clone(),
        shared.pepper.clone(),
        shared.clock.clone(),
        Arc::new(accounts.clone()),
        grace,
    );
    let bootstrap = Arc::new(BootstrapService::new(
        control_plane,
        repositories.clone(),
        repositories.clone(),
        repositories.clone(),
        shared.pepper.clone(),
        shared.clock.clone(),
        shared.settings.plans.trial_days,
    ));
    registry.subscribe(verifier.clone());
    registry.schedule(TokenExpiry(tokens.clone()));
    let flushing = verifier.clone();
    registry.spawn(move |shutdown| {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(USAGE_FLUSH_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = ticks.tick() => flush_usage(&flushing).await,
                }
            }
            // What was noted since the last tick is written before the process ends.
            flush_usage(&flushing).await;
        })
    });
    Ok(Tokens {
        verifier,
        tokens,
        bootstrap,
    })
}

async fn flush_usage(verifier: &TokenVerifier) {
    if let Err(error) = verifier.flush_usage().await {
        tracing::warn!(error = %error, "cannot record when tokens were last used; kept for the next flush");
    }
}
