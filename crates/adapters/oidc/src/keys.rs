//! The provider's signing keys: a JWK set parsed into ready verifiers, and the choice of
//! the key a token names.

use josekit::jwk::Jwk;
use josekit::jws::{ES256, EdDSA, JwsVerifier, RS256};
use serde_json::{Map, Value};

use crate::token::{Compact, Header};

/// The signature algorithms accepted. Everything else, `none` and the HMAC family
/// included, is refused before any key is looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alg {
    Rs256,
    Es256,
    EdDsa,
}

impl Alg {
    /// The algorithm a JWS header's `alg` names, if accepted (names are case-sensitive).
    pub(crate) fn from_name(name: &str) -> Option<Alg> {
        match name {
            "RS256" => Some(Alg::Rs256),
            "ES256" => Some(Alg::Es256),
            "EdDSA" => Some(Alg::EdDsa),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
        }
    }

    /// The algorithm a key of this `kty` (and `crv`) serves: RSA for RS256, EC P-256 for
    /// ES256, OKP Ed25519 for EdDSA.
    fn of_key(kty: &str, crv: Option<&str>) -> Option<Alg> {
        match (kty, crv) {
            ("RSA", _) => Some(Alg::Rs256),
            ("EC", Some("P-256")) => Some(Alg::Es256),
            ("OKP", Some("Ed25519")) => Some(Alg::EdDsa),
            _ => None,
        }
    }
}

/// One usable signing key.
#[derive(Debug)]
pub(crate) struct Key {
    pub(crate) kid: Option<String>,
    pub(crate) alg: Alg,
    verifier: Box<dyn JwsVerifier>,
}

impl Key {
    /// Does `signature` sign `message` with this key?
    pub(crate) fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        self.verifier.verify(message, signature).is_ok()
    }
}

/// The keys of one fetch of the provider's JWK set that can verify an accepted algorithm.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    keys: Vec<Key>,
}

/// Why a JWK set document was refused as a whole.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JwksError {
    #[error("the JWK set is not JSON")]
    Json(#[source] serde_json::Error),
    #[error("the JWK set has no `keys` array")]
    NoKeys,
}

/// Which keys may have signed a token.
#[derive(Debug)]
pub(crate) enum Choice<'a> {
    /// These (one, unless the provider reuses a kid).
    Keys(Vec<&'a Key>),
    /// The token's `kid` is not in the set.
    UnknownKid,
    /// The token's `kid` names a key of another type than its `alg` needs.
    WrongKeyType,
    /// The token names no key and no key fits its `alg`.
    NoKeyForAlg,
    /// The token names no key and several fit its `alg`.
    Ambiguous,
}

impl KeySet {
    /// At most this many keys are kept from one document (providers publish a handful).
    pub(crate) const MAX_KEYS: usize = 64;

    /// Parses a JWK set. Keys that cannot verify RS256, ES256 or EdDSA signatures are left
    /// out (`use` other than `sig`, `key_ops` without `verify`, another `kty`/`crv`, an `alg`
    /// that disagrees, RSA under 2048 bits, malformed parameters); the document itself must
    /// be an object with a `keys` array.
    pub(crate) fn parse(document: &[u8]) -> Result<KeySet, JwksError> {
        let mut document: Map<String, Value> =
            serde_json::from_slice(document).map_err(JwksError::Json)?;
        let Some(Value::Array(entries)) = document.remove("keys") else {
            return Err(JwksError::NoKeys);
        };
        let mut keys = Vec::new();
        for entry in entries {
            if keys.len() == Self::MAX_KEYS {
                tracing::warn!(
                    idp.keys_max = Self::MAX_KEYS,
                    "the identity provider's JWK set has too many keys; the rest are ignored"
                );
                break;
            }
            match usable_key(entry) {
                Ok(key) => keys.push(key),
                Err(reason) => {
                    tracing::debug!(
                        reason,
                        "a key of the identity provider's JWK set is ignored"
                    );
                }
            }
        }
        Ok(KeySet { keys })
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The kids, in order (for logs).
    pub(crate) fn kids(&self) -> Vec<&str> {
        self.keys
            .iter()
            .map(|key| key.kid.as_deref().unwrap_or("-"))
            .collect()
    }

    /// The keys that may have signed a token with this header: by `kid` when it names one
    /// (of the type `alg` needs), else the only key that fits `alg`.
    pub(crate) fn choose(&self, alg: Alg, kid: Option<&str>) -> Choice<'_> {
        match kid {
            Some(kid) => {
                let mut named = self
                    .keys
                    .iter()
                    .filter(|key| key.kid.as_deref() == Some(kid))
                    .peekable();
                if named.peek().is_none() {
                    return Choice::UnknownKid;
                }
                let fitting: Vec<&Key> = named.filter(|key| key.alg == alg).collect();
                if fitting.is_empty() {
                    Choice::WrongKeyType
                } else {
                    Choice::Keys(fitting)
                }
            }
            None => {
                let mut fitting = self.keys.iter().filter(|key| key.alg == alg);
                match (fitting.next(), fitting.next()) {
                    (None, _) => Choice::NoKeyForAlg,
                    (Some(key), None) => Choice::Keys(vec![key]),
                    (Some(_), Some(_)) => Choice::Ambiguous,
                }
            }
        }
    }
}

impl KeySet {
    /// Whether one of these keys made `signature` over `compact` as its `header` says, or
    /// why not.
    pub(crate) fn verify_signature(
        &self,
        compact: &Compact<'_>,
        header: &Header,
        signature: &[u8],
    ) -> Result<(), &'static str> {
        let candidates = match self.choose(header.alg, header.kid.as_deref()) {
            Choice::Keys(candidates) => candidates,
            Choice::UnknownKid => return Err("unknown signing key"),
            Choice::WrongKeyType => return Err("the signing key does not fit the algorithm"),
            Choice::NoKeyForAlg => return Err("no signing key for the algorithm"),
            Choice::Ambiguous => return Err("the token names no key and several fit"),
        };
        let message = compact.signing_input.as_bytes();
        if candidates
            .iter()
            .any(|key| key.verifies(message, signature))
        {
            Ok(())
        } else {
            Err("bad signature")
        }
    }
}

/// The verifier of one JWK, or why it cannot verify an accepted algorithm.
pub(crate) fn usable_key(entry: Value) -> Result<Key, &'static str> {
    let Value::Object(map) = entry else {
        return Err("not a JSON object");
    };
    let text = |name: &str| map.get(name).and_then(Value::as_str);
    if let Some(usage) = map.get("use")
        && usage.as_str() != Some("sig")
    {
        return Err("`use` is not `sig`");
    }
    let kty = text("kty").ok_or("no `kty`")?;
    let alg = Alg::of_key(kty, text("crv")).ok_or("a key type of no accepted algorithm")?;
    if let Some(declared) = map.get("alg")
        && declared.as_str() != Some(alg.name())
    {
        return Err("`alg` disagrees with the key type");
    }
    let kid = match map.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err("`kid` is not a string"),
    };
    let jwk = Jwk::from_map(map).map_err(|_| "malformed JWK")?;
    // The verifiers check `kty`, `use`, `key_ops`, `alg`, `crv`, the parameters and, for
    // RSA, a modulus of at least 2048 bits.
    let verifier: Box<dyn JwsVerifier> = match alg {
        Alg::Rs256 => Box::new(
            RS256
                .verifier_from_jwk(&jwk)
                .map_err(|_| "unusable RSA key")?,
        ),
        Alg::Es256 => Box::new(
            ES256
                .verifier_from_jwk(&jwk)
                .map_err(|_| "unusable EC key")?,
        ),
        Alg::EdDsa => Box::new(
            EdDSA
                .verifier_from_jwk(&jwk)
                .map_err(|_| "unusable OKP key")?,
        ),
    };
    Ok(Key { kid, alg, verifier })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::support::TestKey;

    fn set(keys: Vec<Value>) -> KeySet {
        KeySet::parse(&serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap()).unwrap()
    }

    #[test]
    fn keys_that_cannot_verify_an_accepted_algorithm_are_left_out() {
        let rsa = TestKey::rsa("rsa-1");
        let ec = TestKey::ec("ec-1");
        let ed = TestKey::ed("ed-1");
        let with = |key: &TestKey, name: &str, value: Value| {
            let mut jwk = key.public_jwk();
            jwk[name] = value;
            jwk
        };
        let mut hmac = serde_json::json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hs"});
        hmac["alg"] = "HS256".into();
        let set = set(vec![
            rsa.public_jwk(),
            ec.public_jwk(),
            ed.public_jwk(),
            with(&rsa, "use", "enc".into()),
            with(&rsa, "alg", "PS256".into()),
            with(&ec, "crv", "P-384".into()),
            with(&ec, "key_ops", serde_json::json!(["encrypt"])),
            with(&ed, "crv", "X25519".into()),
            with(&rsa, "n", "AQAB".into()),
            with(&rsa, "kid", 7.into()),
            hmac,
            "not an object".into(),
        ]);
        assert_eq!(set.kids(), ["rsa-1", "ec-1", "ed-1"]);
    }

    #[test]
    fn a_document_without_keys_is_refused() {
        assert!(matches!(KeySet::parse(b"{}"), Err(JwksError::NoKeys)));
        assert!(matches!(KeySet::parse(b"<html>"), Err(JwksError::Json(_))));
        assert_eq!(KeySet::parse(br#"{"keys": []}"#).unwrap().len(), 0);
    }

    #[test]
    fn keys_are_chosen_by_kid_and_type() {
        let mut anonymous = TestKey::ec("").public_jwk();
        anonymous.as_object_mut().unwrap().remove("kid");
        let set = set(vec![
            TestKey::rsa("a").public_jwk(),
            TestKey::rsa("b").public_jwk(),
            anonymous,
        ]);
        assert!(matches!(set.choose(Alg::Rs256, Some("a")), Choice::Keys(keys) if keys.len() == 1));
        assert!(matches!(
            set.choose(Alg::Rs256, Some("c")),
            Choice::UnknownKid
        ));
        assert!(matches!(
            set.choose(Alg::Es256, Some("a")),
            Choice::WrongKeyType
        ));
        assert!(matches!(set.choose(Alg::Rs256, None), Choice::Ambiguous));
        assert!(matches!(set.choose(Alg::Es256, None), Choice::Keys(keys) if keys.len() == 1));
        assert!(matches!(set.choose(Alg::EdDsa, None), Choice::NoKeyForAlg));
    }
}
