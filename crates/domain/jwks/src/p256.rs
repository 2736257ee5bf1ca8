//! ES256 signatures made by ring.
//!
//! josekit's own ES256 signer goes through OpenSSL 3's generic `EVP` interface, which looks
//! the algorithms up and builds a context on every signature: for an access token that
//! is most of what signing costs (the `sign` benchmark of this crate, docs/benchmarks.md).
//! ring signs the same way (ECDSA on P-256 with SHA-256, `r || s` in 64 bytes, as JWS
//! wants it) from a key parsed once; josekit still assembles the JWS around it.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::JoseError;
use josekit::jwk::Jwk;
use josekit::jws::{ES256, JwsAlgorithm, JwsSigner};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

use crate::key::KeyError;

/// Bytes of a P-256 coordinate or private scalar.
const FIELD_BYTES: usize = 32;

/// An ES256 signer over a private P-256 key held by ring.
#[derive(Clone)]
pub(crate) struct P256Signer {
    key: Arc<EcdsaKeyPair>,
    key_id: Option<String>,
    rng: SystemRandom,
}

impl P256Signer {
    /// The signer of a private EC JWK on P-256 (`d`, `x` and `y`).
    pub(crate) fn from_jwk(jwk: &Jwk) -> Result<Self, KeyError> {
        if jwk.key_type() != "EC" || jwk.curve() != Some("P-256") {
            return Err(KeyError::Corrupt(
                "an ES256 key is not a P-256 EC key".into(),
            ));
        }
        let coordinate = |name: &str| -> Result<Vec<u8>, KeyError> {
            jwk.parameter(name)
                .and_then(serde_json::Value::as_str)
                .and_then(|text| URL_SAFE_NO_PAD.decode(text).ok())
                .filter(|bytes| bytes.len() == FIELD_BYTES)
                .ok_or_else(|| KeyError::Corrupt(format!("the EC JWK's `{name}` is not usable")))
        };
        let private = zeroize::Zeroizing::new(coordinate("d")?);
        let mut public = Vec::with_capacity(1 + 2 * FIELD_BYTES);
        public.push(0x04); // an uncompressed point: x then y
        public.extend(coordinate("x")?);
        public.extend(coordinate("y")?);
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_private_key_and_public_key(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &private,
            &public,
            &rng,
        )
        .map_err(|e| KeyError::Corrupt(format!("the EC key is refused: {e}")))?;
        Ok(Self {
            key: Arc::new(key),
            key_id: jwk.key_id().map(str::to_owned),
            rng,
        })
    }
}

impl fmt::Debug for P256Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("P256Signer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl JwsSigner for P256Signer {
    fn algorithm(&self) -> &dyn JwsAlgorithm {
        &ES256
    }

    fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    fn signature_len(&self) -> usize {
        2 * FIELD_BYTES
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, JoseError> {
        self.key
            .sign(&self.rng, message)
            .map(|signature| signature.as_ref().to_vec())
            .map_err(|_| JoseError::InvalidSignature(anyhow::anyhow!("ECDSA signing failed")))
    }

    fn box_clone(&self) -> Box<dyn JwsSigner> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use josekit::jwk::alg::ec::{EcCurve, EcKeyPair};

    use super::*;

    fn private_jwk() -> Jwk {
        let mut jwk = EcKeyPair::generate(EcCurve::P256)
            .unwrap()
            .to_jwk_key_pair();
        jwk.set_key_id("k1");
        jwk
    }

    #[test]
    fn its_signatures_verify_with_josekit_and_carry_the_key_id() {
        let jwk = private_jwk();
        let signer = P256Signer::from_jwk(&jwk).unwrap();
        let header = josekit::jws::JwsHeader::new();
        let first = josekit::jws::serialize_compact(b"claims", &header, &signer).unwrap();
        let second = josekit::jws::serialize_compact(b"claims", &header, &signer).unwrap();
        assert_ne!(first, second, "each signature draws a fresh nonce");
        let verifier = ES256
            .verifier_from_jwk(&jwk.to_public_key().unwrap())
            .unwrap();
        for jws in [first, second] {
            let (payload, header) = josekit::jws::deserialize_compact(&jws, &verifier).unwrap();
            assert_eq!(payload, b"claims");
            assert_eq!(header.key_id(), Some("k1"));
        }
    }

    #[test]
    fn a_key_whose_point_is_not_its_own_or_not_on_p256_is_refused() {
        let mut mixed = private_jwk();
        let other = private_jwk();
        mixed
            .set_parameter("x", other.parameter("x").cloned())
            .unwrap();
        assert!(matches!(
            P256Signer::from_jwk(&mixed),
            Err(KeyError::Corrupt(_))
        ));
        let p384 = EcKeyPair::generate(EcCurve::P384)
            .unwrap()
            .to_jwk_key_pair();
        assert!(matches!(
            P256Signer::from_jwk(&p384),
            Err(KeyError::Corrupt(_))
        ));
        let mut truncated = private_jwk();
        truncated
            .set_parameter("d", Some(serde_json::Value::String("AAAA".into())))
            .unwrap();
        assert!(matches!(
            P256Signer::from_jwk(&truncated),
            Err(KeyError::Corrupt(_))
        ));
    }
}
