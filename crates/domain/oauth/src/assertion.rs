//! Client assertions: `private_key_jwt` (RFC 7523 §2.2, §3). An agent registered with this
//! method authenticates with a short-lived JWT it signs with one of its registered keys;
//! the signature is checked by an [`AssertionVerifier`] (an adapter that holds the keys),
//! the claims here, and each `jti` is spent once in the store.

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};

use crate::agent::Agent;

/// The `client_assertion_type` of a JWT client assertion (RFC 7523 §2.2).
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The bounds of an acceptable assertion.
pub mod assertion_limits {
    /// An assertion expires within this many seconds of its use (its `jti` is kept that
    /// long to refuse a replay).
    pub const LIFETIME_SECONDS: i64 = 3_600;
    /// Clock difference allowed between the agent and the server, for `nbf` and `iat`.
    pub const LEEWAY_SECONDS: i64 = 60;
    /// Characters of a `jti`.
    pub const JTI_CHARS: usize = 256;
    /// Bytes of an assertion.
    pub const BYTES: usize = 16 * 1024;
}

/// Checks the signature of a client assertion against the keys its agent registered.
#[async_trait]
pub trait AssertionVerifier: Send + Sync + 'static {
    /// The claims of `assertion` (a compact JWS) when one of `agent`'s keys (its `jwks`,
    /// or the set at its `jwks_uri`) signed it with an accepted algorithm; else why not,
    /// for the log.
    async fn verified_claims(
        &self,
        agent: &Agent,
        assertion: &str,
    ) -> Result<Map<String, Value>, &'static str>;
}

/// The `sub` of an assertion, read before anything in it is trusted: it names the agent
/// whose keys must have signed it.
pub(crate) fn unverified_subject(assertion: &str) -> Option<String> {
    if assertion.len() > assertion_limits::BYTES {
        return None;
    }
    let mut segments = assertion.split('.');
    let (_header, payload) = (segments.next()?, segments.next()?);
    let claims: Map<String, Value> =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    claims.get("sub")?.as_str().map(str::to_owned)
}

/// What an accepted assertion leaves to spend: its `jti`, until it expires.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Spendable {
    pub jti: String,
    pub expires_at: DateTime<Utc>,
}

/// RFC 7523 §3: `iss` and `sub` are the client id; `aud` names this server (its issuer or
/// the endpoint called: one of `audiences`); `exp` is after `now` and within
/// [`assertion_limits::LIFETIME_SECONDS`]; `nbf` and `iat`, when given, are not in the
/// future; `jti` is given. The bounds in the future allow
/// [`assertion_limits::LEEWAY_SECONDS`] of clock difference.
pub(crate) fn check_claims(
    claims: &Map<String, Value>,
    client_id: &str,
    audiences: &[String],
    now: DateTime<Utc>,
) -> Result<Spendable, &'static str> {
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    let time = |name: &str| {
        claims
            .get(name)
            .map(|value| {
                value
                    .as_i64()
                    .and_then(|seconds| DateTime::from_timestamp(seconds, 0))
                    .ok_or("a time claim is not a number of seconds")
            })
            .transpose()
    };
    if text("iss") != Some(client_id) || text("sub") != Some(client_id) {
        return Err("iss and sub must both be the client id");
    }
    let audience_fits = match claims.get("aud") {
        Some(Value::String(one)) => audiences.contains(one),
        Some(Value::Array(many)) => many
            .iter()
            .filter_map(Value::as_str)
            .any(|one| audiences.iter().any(|fits| fits == one)),
        _ => false,
    };
    if !audience_fits {
        return Err("aud does not name this authorization server");
    }
    let expires_at = time("exp")?.ok_or("exp is missing")?;
    if expires_at <= now {
        return Err("the assertion has expired");
    }
    let leeway = d2_kernel::later(now, Duration::seconds(assertion_limits::LEEWAY_SECONDS));
    if expires_at
        > d2_kernel::later(
            leeway,
            Duration::seconds(assertion_limits::LIFETIME_SECONDS),
        )
    {
        return Err("the assertion lives longer than an hour");
    }
    if time("nbf")?.is_some_and(|nbf| nbf > leeway) {
        return Err("the assertion is not valid yet");
    }
    if time("iat")?.is_some_and(|iat| iat > leeway) {
        return Err("the assertion was issued in the future");
    }
    let jti = text("jti")
        .filter(|jti| !jti.is_empty() && jti.chars().count() <= assertion_limits::JTI_CHARS)
        .ok_or("jti is missing or too long")?;
    Ok(Spendable {
        jti: jti.to_owned(),
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CLIENT: &str = "0b7c1f40-3a3e-4c6b-9f67-2c3f1d1e2a10";

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    fn good(now: DateTime<Utc>) -> Value {
        json!({
            "iss": CLIENT, "sub": CLIENT, "aud": "https://d2.example/oauth/a/token",
            "exp": now.timestamp().saturating_add(300), "iat": now.timestamp(), "jti": "one",
        })
    }

    #[test]
    fn an_assertion_names_its_client_this_server_a_near_expiry_and_a_jti() {
        let now = Utc::now();
        let audiences = vec![
            "https://d2.example/oauth/a".to_owned(),
            "https://d2.example/oauth/a/token".to_owned(),
        ];
        let check = |value: Value| check_claims(&claims(value), CLIENT, &audiences, now);
        let spent = check(good(now)).unwrap();
        assert_eq!(spent.jti, "one");
        assert_eq!(
            spent.expires_at.timestamp(),
            now.timestamp().saturating_add(300)
        );
        let with = |name: &str, value: Value| {
            let mut claims = good(now);
            claims[name] = value;
            claims
        };
        let without = |name: &str| {
            let mut claims = good(now);
            claims.as_object_mut().map(|c| c.remove(name));
            claims
        };
        assert!(check(with("aud", json!(["x", "https://d2.example/oauth/a"]))).is_ok());
        assert!(check(without("iat")).is_ok());
        for (case, refused) in [
            ("another iss", with("iss", json!("someone"))),
            ("another sub", with("sub", json!("someone"))),
            ("no sub", without("sub")),
            (
                "another aud",
                with("aud", json!("https://elsewhere.example/token")),
            ),
            (
                "aud of another account",
                with("aud", json!("https://d2.example/oauth/b/token")),
            ),
            ("no aud", without("aud")),
            ("aud not text", with("aud", json!(7))),
            (
                "expired",
                with("exp", json!(now.timestamp().saturating_sub(1))),
            ),
            (
                "too long",
                with("exp", json!(now.timestamp().saturating_add(3_700))),
            ),
            ("exp as text", with("exp", json!("soon"))),
            ("no exp", without("exp")),
            (
                "not yet",
                with("nbf", json!(now.timestamp().saturating_add(120))),
            ),
            (
                "issued in the future",
                with("iat", json!(now.timestamp().saturating_add(120))),
            ),
            ("no jti", without("jti")),
            ("empty jti", with("jti", json!(""))),
            ("long jti", with("jti", json!("j".repeat(257)))),
        ] {
            assert!(check(refused).is_err(), "{case}");
        }
    }

    #[test]
    fn the_subject_is_read_from_a_well_formed_payload_only() {
        let payload = URL_SAFE_NO_PAD.encode(json!({"sub": CLIENT}).to_string());
        assert_eq!(
            unverified_subject(&format!("e30.{payload}.c2ln")).as_deref(),
            Some(CLIENT)
        );
        let no_sub = URL_SAFE_NO_PAD.encode(b"{}");
        for broken in [
            String::new(),
            "e30".to_owned(),
            "e30.!!!.c2ln".to_owned(),
            format!("e30.{no_sub}.c2ln"),
            format!("e30.{}.c2ln", "a".repeat(assertion_limits::BYTES)),
        ] {
            assert_eq!(unverified_subject(&broken), None, "{broken:.40}");
        }
    }
}
