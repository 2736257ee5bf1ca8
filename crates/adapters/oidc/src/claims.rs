//! A verified token's claims: checked against the settings and the clock, then mapped to
//! the identity they prove.

use chrono::{DateTime, TimeDelta, Utc};
use d2_kernel::{Role, later};
use d2_members::{Identity, IdentityError, VerifiedIdentity};
use serde_json::{Map, Value};

use crate::settings::OidcSettings;

const fn invalid(reason: &'static str) -> IdentityError {
    IdentityError::Invalid(reason)
}

/// Checks the claims of a token whose signature is verified, in this order: issuer,
/// audience, expiry, not-before and issued-at, subject. `now` is the clock's time.
pub(crate) fn verified_identity(
    payload: &[u8],
    settings: &OidcSettings,
    now: DateTime<Utc>,
) -> Result<VerifiedIdentity, IdentityError> {
    let claims: Map<String, Value> =
        serde_json::from_slice(payload).map_err(|_| invalid("malformed token claims"))?;
    identity_of(&claims, settings, &settings.audience, now)
}

/// Checks the claims of an ID token whose signature is verified, as [`verified_identity`]
/// does with this server's `client_id` as the audience, and then its `nonce`: the identity
/// and the `auth_time` (else `iat`).
pub(crate) fn verified_id_token(
    payload: &[u8],
    settings: &OidcSettings,
    client_id: &str,
    nonce: &str,
    now: DateTime<Utc>,
) -> Result<(VerifiedIdentity, DateTime<Utc>), IdentityError> {
    let claims: Map<String, Value> =
        serde_json::from_slice(payload).map_err(|_| invalid("malformed token claims"))?;
    let verified = identity_of(&claims, settings, client_id, now)?;
    if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
        return Err(invalid("wrong nonce"));
    }
    let auth_time = claims
        .get("auth_time")
        .or_else(|| claims.get("iat"))
        .and_then(numeric_date)
        .unwrap_or(now);
    Ok((verified, auth_time))
}

fn identity_of(
    claims: &Map<String, Value>,
    settings: &OidcSettings,
    audience: &str,
    now: DateTime<Utc>,
) -> Result<VerifiedIdentity, IdentityError> {
    let text = |name: &str| claims.get(name).and_then(Value::as_str);

    if text("iss") != Some(settings.issuer.as_str()) {
        return Err(invalid("wrong issuer"));
    }
    if !has_audience(claims.get("aud"), audience) {
        return Err(invalid("wrong audience"));
    }
    let leeway = TimeDelta::try_seconds(i64::try_from(settings.leeway_seconds).unwrap_or(0))
        .unwrap_or_default();
    let expires_at = claims
        .get("exp")
        .and_then(numeric_date)
        .ok_or(invalid("missing or malformed `exp`"))?;
    if later(expires_at, leeway) <= now {
        return Err(IdentityError::Expired);
    }
    let latest_start = later(now, leeway);
    if let Some(nbf) = claims.get("nbf") {
        let nbf = numeric_date(nbf).ok_or(invalid("malformed `nbf`"))?;
        if nbf > latest_start {
            return Err(invalid("token not yet valid"));
        }
    }
    if let Some(iat) = claims.get("iat") {
        let iat = numeric_date(iat).ok_or(invalid("malformed `iat`"))?;
        if iat > latest_start {
            return Err(invalid("token issued in the future"));
        }
    }
    let subject = text("sub")
        .filter(|sub| !sub.is_empty())
        .ok_or(invalid("missing subject"))?;

    let nonempty = |name: &str| {
        text(name)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
    };
    let identity = Identity {
        issuer: settings.issuer.clone(),
        subject: subject.to_owned(),
        email: nonempty(&settings.email_claim),
        email_verified: claims.get("email_verified") == Some(&Value::Bool(true)),
        display_name: nonempty(&settings.name_claim),
        role_cap: settings
            .role_claim
            .as_deref()
            .and_then(|name| claims.get(name))
            .map(role_cap),
    };
    Ok(VerifiedIdentity {
        identity,
        expires_at,
    })
}

/// `aud` is the audience, or an array holding it.
fn has_audience(aud: Option<&Value>, audience: &str) -> bool {
    match aud {
        Some(Value::String(aud)) => aud == audience,
        Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(audience)),
        _ => false,
    }
}

/// The cap a present role claim sets: the role it names, or the highest of the roles an
/// array names; [`Role::Member`] when it names none (least privilege).
fn role_cap(claim: &Value) -> Role {
    let named = match claim {
        Value::String(name) => Role::from_claim(name),
        Value::Array(names) => names
            .iter()
            .filter_map(Value::as_str)
            .filter_map(Role::from_claim)
            // Roles order from most to least powerful.
            .min(),
        _ => None,
    };
    named.unwrap_or(Role::Member)
}

/// A JSON NumericDate: seconds since the epoch, an integer or not (RFC 7519, section 2).
fn numeric_date(value: &Value) -> Option<DateTime<Utc>> {
    if let Some(seconds) = value.as_i64() {
        return DateTime::from_timestamp(seconds, 0);
    }
    let seconds = value.as_f64().filter(|seconds| seconds.is_finite())?;
    #[expect(
        clippy::as_conversions,
        reason = "float to integer `as` saturates; out-of-range values fail below"
    )]
    let micros = (seconds * 1e6).floor() as i64;
    DateTime::from_timestamp_micros(micros)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn role_claims_cap_at_what_they_name_and_else_at_member() {
        assert_eq!(role_cap(&json!("Admin")), Role::Admin);
        assert_eq!(role_cap(&json!("root")), Role::Member);
        assert_eq!(role_cap(&json!("")), Role::Member);
        assert_eq!(
            role_cap(&json!(["user", "developer", "x"])),
            Role::Developer
        );
        assert_eq!(role_cap(&json!([])), Role::Member);
        assert_eq!(role_cap(&json!(true)), Role::Member);
        assert_eq!(role_cap(&json!(null)), Role::Member);
    }

    #[test]
    fn numeric_dates_may_be_fractional_and_must_be_in_range() {
        assert_eq!(
            numeric_date(&json!(1_700_000_000)),
            DateTime::from_timestamp(1_700_000_000, 0)
        );
        assert_eq!(
            numeric_date(&json!(1_700_000_000.5)),
            DateTime::from_timestamp(1_700_000_000, 500_000_000)
        );
        assert_eq!(numeric_date(&json!(u64::MAX)), None);
        assert_eq!(numeric_date(&json!(1e300)), None);
        assert_eq!(numeric_date(&json!("1700000000")), None);
    }

    #[test]
    fn audiences_are_a_string_or_an_array() {
        assert!(has_audience(Some(&json!("d2")), "d2"));
        assert!(has_audience(Some(&json!(["x", "d2"])), "d2"));
        assert!(!has_audience(Some(&json!(["x"])), "d2"));
        assert!(!has_audience(Some(&json!("D2")), "d2"));
        assert!(!has_audience(None, "d2"));
    }
}
