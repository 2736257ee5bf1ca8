//! DPoP proofs' form and signature (RFC 9449 §4.2-4.3 steps 1-7): the header's `typ`,
//! `alg` and public `jwk`, the signature by that key, and the key's JWK SHA-256 thumbprint
//! (RFC 7638) the tokens are bound to. The claims are the domain's to check.
//!
//! Each proof carries its key, and making a verifier of a key (parsing it, checking the
//! point or the modulus) costs more than the signature check itself; an agent proves the
//! same key request after request, so verifiers are kept by thumbprint (the hash of every
//! member that makes the key, so one thumbprint is one key).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use d2_oauth::{DpopProof, DpopVerifier};
use ring::digest::{SHA256, digest};
use serde_json::{Map, Value};

use crate::keys::{Alg, Key, usable_key};
use crate::token;

/// Private key parameters: a proof's `jwk` holding any is refused.
const PRIVATE: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Keys whose verifiers are kept.
const CACHED_KEYS: u64 = 10_000;

/// Checks DPoP proofs with the key each carries.
#[derive(Clone)]
pub struct DpopProofs {
    verifiers: moka::sync::Cache<String, Arc<Key>>,
}

impl std::fmt::Debug for DpopProofs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopProofs")
            .field("cached_keys", &self.verifiers.entry_count())
            .finish()
    }
}

impl Default for DpopProofs {
    fn default() -> Self {
        Self {
            verifiers: moka::sync::Cache::new(CACHED_KEYS),
        }
    }
}

impl DpopVerifier for DpopProofs {
    fn verify(&self, proof: &str) -> Result<DpopProof, &'static str> {
        let compact = token::split(proof).map_err(|_| "malformed proof")?;
        let header = compact.header_map().ok_or("malformed proof header")?;
        if header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
            return Err("the header's `typ` is not dpop+jwt");
        }
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(Alg::from_name)
            .ok_or("the header's `alg` is not ES256, RS256 or EdDSA")?;
        if header.contains_key("crit") {
            return Err("a critical header parameter");
        }
        let Some(Value::Object(jwk)) = header.get("jwk") else {
            return Err("the header carries no `jwk`");
        };
        if PRIVATE.iter().any(|name| jwk.contains_key(*name)) {
            return Err("the `jwk` holds private key parameters");
        }
        let jkt = thumbprint(jwk).ok_or("the `jwk` is not a key of an accepted type")?;
        let key = match self.verifiers.get(&jkt) {
            Some(key) => key,
            None => {
                let key = Arc::new(usable_key(Value::Object(jwk.clone()))?);
                self.verifiers.insert(jkt.clone(), key.clone());
                key
            }
        };
        if key.alg != alg {
            return Err("the `alg` does not fit the key");
        }
        let signature = compact
            .signature()
            .map_err(|_| "malformed proof signature")?;
        if !key.verifies(compact.signing_input.as_bytes(), &signature) {
            return Err("the signature does not verify with the header's key");
        }
        let claims: Map<String, Value> = compact
            .payload()
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or("malformed proof claims")?;
        Ok(DpopProof { jkt, claims })
    }
}

/// RFC 7638: the base64url SHA-256 of the key's required members, in lexicographic order,
/// as JSON without whitespace.
fn thumbprint(jwk: &Map<String, Value>) -> Option<String> {
    let members: &[&str] = match jwk.get("kty")?.as_str()? {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "OKP" => &["crv", "kty", "x"],
        _ => return None,
    };
    let mut canonical = Map::new();
    for name in members {
        canonical.insert(
            (*name).to_owned(),
            Value::String(jwk.get(*name)?.as_str()?.to_owned()),
        );
    }
    // serde_json's map keeps keys sorted: the members come out in lexicographic order.
    let text = serde_json::to_string(&canonical).ok()?;
    Some(URL_SAFE_NO_PAD.encode(digest(&SHA256, text.as_bytes())))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_thumbprint_is_rfc_7638s() {
        // RFC 7638 §3.1.
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        let Value::Object(jwk) = jwk else {
            unreachable!()
        };
        assert_eq!(
            thumbprint(&jwk).as_deref(),
            Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
    }
}
