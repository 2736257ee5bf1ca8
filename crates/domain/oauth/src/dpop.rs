//! DPoP (RFC 9449): an agent proves, with each token request, that it holds a private key,
//! and its tokens are bound to that key (`cnf.jkt`, the JWK SHA-256 thumbprint of RFC
//! 7638): a token stolen without the key is of no use to a resource server that checks
//! proofs, and a bound refresh token is spent only with a proof of the same key. The
//! signature is checked by a [`DpopVerifier`] (an adapter), the claims here, and each
//! proof's `jti` is spent once in the store, as client assertions' are.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};

/// The signature algorithms a proof may use.
pub const DPOP_ALGORITHMS: [&str; 3] = ["ES256", "RS256", "EdDSA"];

/// The bounds of an acceptable proof.
pub mod dpop_limits {
    /// A proof's `iat` may be this far from the server's clock, either way; its `jti` is
    /// kept twice as long to refuse a replay.
    pub const WINDOW_SECONDS: i64 = 60;
    /// Characters of a `jti`.
    pub const JTI_CHARS: usize = 256;
    /// Bytes of a proof.
    pub const BYTES: usize = 8 * 1024;
}

/// A proof whose signature verified with the public key its header carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpopProof {
    /// The key's JWK SHA-256 thumbprint, base64url.
    pub jkt: String,
    pub claims: Map<String, Value>,
}

/// Checks a proof's form and signature: `typ: dpop+jwt`, an accepted `alg`, a public
/// `jwk` (no private parameters) that verifies the signature.
pub trait DpopVerifier: Send + Sync + 'static {
    /// The proof, or why not (for the answer and the log).
    fn verify(&self, proof: &str) -> Result<DpopProof, &'static str>;
}

/// What a proof's claims leave to spend: its `jti`, until when a replay could still pass.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ProofUse {
    pub jti: String,
    pub remember_until: DateTime<Utc>,
}

/// The claims of a proof for `method` at `url` (RFC 9449 §4.3): `htm`, `htu` (without
/// query and fragment), `iat` within the window of `now`, a `jti`.
pub(crate) fn check_claims(
    claims: &Map<String, Value>,
    method: &str,
    url: &str,
    now: DateTime<Utc>,
) -> Result<ProofUse, String> {
    if claims.get("htm").and_then(Value::as_str) != Some(method) {
        return Err(format!("the proof's `htm` is not {method}"));
    }
    let htu = claims
        .get("htu")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let htu = htu.split(['?', '#']).next().unwrap_or_default();
    if htu != url {
        return Err(format!("the proof's `htu` is not {url}"));
    }
    let window = Duration::seconds(dpop_limits::WINDOW_SECONDS);
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .and_then(|seconds| DateTime::from_timestamp(seconds, 0))
        .ok_or("the proof has no `iat`")?;
    if iat > d2_kernel::later(now, window) || iat < d2_kernel::earlier(now, window) {
        return Err("the proof's `iat` is not within a minute of the server's clock".into());
    }
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|jti| !jti.is_empty() && jti.chars().count() <= dpop_limits::JTI_CHARS)
        .ok_or("the proof has no `jti` (1 to 256 characters)")?;
    Ok(ProofUse {
        jti: jti.to_owned(),
        remember_until: d2_kernel::later(iat, window),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const URL: &str = "https://d2.example/oauth/a/token";

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn a_proof_names_the_method_the_url_a_recent_time_and_a_jti() {
        let now = Utc::now();
        let good = json!({"htm": "POST", "htu": format!("{URL}?x=1"), "iat": now.timestamp(), "jti": "j1"});
        let used = check_claims(&claims(good.clone()), "POST", URL, now);
        assert_eq!(used.map(|u| u.jti), Ok("j1".to_owned()));
        let mut cases = Vec::new();
        for (name, value) in [
            ("htm", json!("GET")),
            ("htu", json!("https://d2.example/oauth/b/token")),
            ("iat", json!(now.timestamp() - 120)),
            ("iat", json!(now.timestamp() + 120)),
            ("iat", json!("soon")),
            ("jti", json!("")),
            ("jti", json!(null)),
        ] {
            let mut bad = claims(good.clone());
            bad.insert(name.to_owned(), value.clone());
            cases.push((name, value, check_claims(&bad, "POST", URL, now).is_err()));
        }
        assert!(cases.iter().all(|(_, _, refused)| *refused), "{cases:?}");
    }
}
