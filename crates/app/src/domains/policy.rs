//! Policies and their signing keys: the `[policy]` and `[jwks]` sections, the keyring, the
//! JWKS and the policy service.

use std::sync::Arc;
use std::time::Duration;

use d2_accounts::AccountService;
use d2_jwks::{AesKey, Jwks, KeyAlgorithm, KeyPruning, Keyring};
use d2_policy::{PolicyService, PolicySettings, PollCeiling, PublisherKeys};
use serde::Deserialize;

use super::{Registry, Shared};
use crate::settings::{CacheConfig, SettingsError};
use crate::{Settings, StartupError, random_bytes};

/// `[jwks]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksSettings {
    /// Retired signing keys stay in the JWKS this long.
    pub grace_seconds: u64,
    /// `Cache-Control: max-age` of `GET /.well-known/jwks.json`.
    pub cache_max_age_seconds: u64,
    /// Signing-key rotations an account may ask for per hour (`POST /v1/jwks/rotate`).
    pub max_rotations_per_hour: u32,
    pub cache: CacheConfig,
}

impl JwksSettings {
    pub(crate) fn validate(&self) -> Result<(), SettingsError> {
        if self.max_rotations_per_hour == 0 {
            return Err(SettingsError::invalid(
                "jwks.max_rotations_per_hour",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// `[policy]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The signed bundle's `exp`.
    pub bundle_ttl_days: u32,
    /// `metadata.expires` of a published bundle.
    pub expiry_days: u32,
    /// `iat` is set this far in the past (the SDK refuses a future `iat`).
    pub iat_backdate_seconds: u32,
    /// Bundle polls a credential may make per second and replica, and at once.
    pub poll_ceiling_per_second: u32,
    pub poll_ceiling_burst: u32,
    pub cache: ByteCacheConfig,
}

impl PolicyConfig {
    pub(crate) fn validate(&self) -> Result<(), SettingsError> {
        if self.poll_ceiling_per_second == 0 || self.poll_ceiling_burst == 0 {
            return Err(SettingsError::invalid(
                "policy.poll_ceiling_per_second",
                "the ceiling and its burst must be at least 1",
            ));
        }
        Ok(())
    }
}

/// A cache bounded by the bytes it holds, for values from bytes to megabytes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByteCacheConfig {
    pub ttl_seconds: u64,
    pub max_bytes: u64,
}

impl ByteCacheConfig {
    pub fn settings(&self) -> d2_kernel::CacheSettings {
        d2_kernel::CacheSettings {
            ttl: Duration::from_secs(self.ttl_seconds),
            capacity: self.max_bytes,
        }
    }
}

fn seconds(s: u64) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX))
}

pub(crate) fn build(
    shared: &Shared<'_>,
    registry: &mut Registry,
    accounts: &AccountService,
) -> Result<PolicyService, StartupError> {
    let settings = shared.settings;
    let repositories = &shared.repositories;
    let jwks = Arc::new(Jwks::new(
        repositories.clone(),
        KeyAlgorithm::Rs256,
        Arc::new(keyring(settings)?),
        shared.clock.clone(),
        Arc::new(crate::BlockingPool),
        seconds(settings.jwks.grace_seconds),
        settings.jwks.cache.settings(),
    ));
    let policy = &settings.policy;
    let policy_settings = PolicySettings {
        bundle_ttl: chrono::Duration::days(i64::from(policy.bundle_ttl_days)),
        policy_expiry: chrono::Duration::days(i64::from(policy.expiry_days)),
        iat_backdate: seconds(u64::from(policy.iat_backdate_seconds)),
        poll_ceiling: PollCeiling {
            per_second: policy.poll_ceiling_per_second,
            burst: policy.poll_ceiling_burst,
        },
        max_rotations_per_hour: settings.jwks.max_rotations_per_hour,
        cache: policy.cache.settings(),
    };
    let policies = PolicyService::new(
        repositories.clone(),
        PublisherKeys::new(repositories.clone(), accounts.clone(), shared.clock.clone()),
        jwks.clone(),
        Arc::new(accounts.clone()),
        shared.clock.clone(),
        policy_settings,
    );
    registry.subscribe(Arc::new(policies.clone()));
    registry.schedule(KeyPruning(jwks));
    registry.every(Duration::from_secs(60), {
        let policies = policies.clone();
        move || policies.forget_idle_pollers()
    });
    Ok(policies)
}

/// The keyring of signing keys: the configured AES keys, or (dev only) a throwaway one.
pub fn keyring(settings: &Settings) -> Result<Keyring, StartupError> {
    let (current, previous) = match settings.jwk_aes_keys()? {
        Some(keys) => (keys.current, keys.previous),
        None => {
            tracing::warn!(
                "dev profile: no crypto.jwk_aes_key set, using a throwaway one; signing keys stop working when the server restarts"
            );
            (random_bytes(32)?, Vec::new())
        }
    };
    let invalid = |_| SettingsError::invalid("crypto.jwk_aes_key", "must be 32 bytes");
    let previous = previous
        .iter()
        .map(|k| AesKey::new(k).map_err(invalid))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(
        Keyring::new(AesKey::new(&current).map_err(invalid)?, previous)
            .accepting_legacy(settings.crypto.accept_legacy_seals),
    )
}
