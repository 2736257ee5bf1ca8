use chrono::{DateTime, Duration, Utc};
use d2_kernel::AccountId;
use josekit::jwk::Jwk;
use josekit::jwk::alg::ec::{EcCurve, EcKeyPair};
use josekit::jwk::alg::rsa::RsaKeyPair;
use josekit::jws::{JwsSigner, RS256};
use serde::Serialize;

use crate::p256::P256Signer;
use crate::seal::{Keyring, SealError, SealOwner, Sealed};

const RSA_BITS: u32 = 2048;

d2_kernel::named_values! {
    /// What a key signs with: RSA-2048 with SHA-256 (bundles, and access tokens by
    /// default), or ECDSA on P-256 with SHA-256 (access tokens by configuration).
    pub enum KeyAlgorithm (unknown: UnknownKeyAlgorithm) {
        Rs256 = "RS256",
        Es256 = "ES256",
    }
}

/// An algorithm that is neither.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown signing algorithm `{0}`: use RS256 or ES256")]
pub struct UnknownKeyAlgorithm(pub String);

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key generation failed: {0}")]
    Generation(String),
    #[error("a stored signing key is not usable: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// The public half of a signing key, as published in the JWKS: `n` and `e` of an RSA
/// key, `crv`, `x` and `y` of an EC key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PublishedKey {
    pub kty: &'static str,
    pub kid: String,
    pub alg: &'static str,
    #[serde(rename = "use")]
    pub usage: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

impl PublishedKey {
    pub fn rsa(kid: &str, n: &str, e: &str) -> Self {
        Self {
            kty: "RSA",
            kid: kid.to_owned(),
            alg: KeyAlgorithm::Rs256.as_str(),
            usage: "sig",
            n: Some(n.to_owned()),
            e: Some(e.to_owned()),
            crv: None,
            x: None,
            y: None,
        }
    }

    /// A P-256 key's public point.
    pub fn ec(kid: &str, x: &str, y: &str) -> Self {
        Self {
            kty: "EC",
            kid: kid.to_owned(),
            alg: KeyAlgorithm::Es256.as_str(),
            usage: "sig",
            n: None,
            e: None,
            crv: Some("P-256"),
            x: Some(x.to_owned()),
            y: Some(y.to_owned()),
        }
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        if self.kty == "EC" {
            KeyAlgorithm::Es256
        } else {
            KeyAlgorithm::Rs256
        }
    }

    /// The public half of the private `jwk` of `algorithm`, named `kid`.
    fn of(algorithm: KeyAlgorithm, kid: &str, jwk: &Jwk) -> Result<Self, KeyError> {
        Ok(match algorithm {
            KeyAlgorithm::Rs256 => Self::rsa(kid, &parameter(jwk, "n")?, &parameter(jwk, "e")?),
            KeyAlgorithm::Es256 => Self::ec(kid, &parameter(jwk, "x")?, &parameter(jwk, "y")?),
        })
    }
}

/// An account's signing key. The private half is only ever held sealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningKey {
    pub kid: String,
    pub account_id: AccountId,
    pub public: PublishedKey,
    pub sealed_private: Sealed,
    pub created_at: DateTime<Utc>,
    /// When a newer key replaced it. It stays published for the grace period after.
    pub retired_at: Option<DateTime<Utc>>,
}

fn parameter(jwk: &Jwk, name: &str) -> Result<String, KeyError> {
    jwk.parameter(name)
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| KeyError::Corrupt(format!("the JWK has no `{name}`")))
}

impl SigningKey {
    /// A new key of `algorithm` for `account_id` (RSA-2048 or P-256), sealed under the
    /// keyring's current AES key. An RSA key takes tens of milliseconds of CPU.
    pub fn generate(
        account_id: AccountId,
        algorithm: KeyAlgorithm,
        keyring: &Keyring,
        now: DateTime<Utc>,
    ) -> Result<Self, KeyError> {
        let kid = uuid::Uuid::new_v4().to_string();
        let failed = |e: josekit::JoseError| KeyError::Generation(e.to_string());
        let mut private = match algorithm {
            KeyAlgorithm::Rs256 => RsaKeyPair::generate(RSA_BITS)
                .map_err(failed)?
                .to_jwk_key_pair(),
            KeyAlgorithm::Es256 => EcKeyPair::generate(EcCurve::P256)
                .map_err(failed)?
                .to_jwk_key_pair(),
        };
        private.set_key_id(kid.clone());
        let public = PublishedKey::of(algorithm, &kid, &private)?;
        let plaintext = zeroize::Zeroizing::new(private.to_string().into_bytes());
        let sealed_private = keyring.seal(
            &plaintext,
            SealOwner {
                account_id,
                kid: &kid,
            },
        )?;
        Ok(Self {
            kid,
            account_id,
            public,
            sealed_private,
            created_at: now,
            retired_at: None,
        })
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        self.public.algorithm()
    }

    /// What the sealed private key is bound to: this row's account and key id.
    pub fn owner(&self) -> SealOwner<'_> {
        SealOwner {
            account_id: self.account_id,
            kid: &self.kid,
        }
    }

    /// Opens the private key and builds a signer. The caller caches it. The sealed key
    /// opens only in the row of the account and key id it was sealed for. The public key
    /// served in the JWKS must be the sealed key's own: a stored public half that does
    /// not match (a row edited or mixed up) is refused rather than signing bundles that
    /// no SDK could verify, or that another key would verify.
    pub fn signer(&self, keyring: &Keyring) -> Result<Box<dyn JwsSigner>, KeyError> {
        let plaintext = keyring.open(&self.sealed_private, self.owner())?;
        let jwk =
            Jwk::from_bytes(plaintext.as_slice()).map_err(|e| KeyError::Corrupt(e.to_string()))?;
        let algorithm = self.algorithm();
        if PublishedKey::of(algorithm, &self.kid, &jwk)? != self.public {
            return Err(KeyError::Corrupt(format!(
                "the published key {} is not the sealed key's public half",
                self.kid
            )));
        }
        let corrupt = |e: josekit::JoseError| KeyError::Corrupt(e.to_string());
        Ok(match algorithm {
            KeyAlgorithm::Rs256 => Box::new(RS256.signer_from_jwk(&jwk).map_err(corrupt)?),
            KeyAlgorithm::Es256 => Box::new(P256Signer::from_jwk(&jwk)?),
        })
    }

    pub fn is_active(&self) -> bool {
        self.retired_at.is_none()
    }

    /// Published in the JWKS at `now`: active, or retired less than `grace` ago.
    pub fn is_published(&self, now: DateTime<Utc>, grace: Duration) -> bool {
        self.retired_at
            .is_none_or(|retired| now < d2_kernel::later(retired, grace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::AesKey;

    #[test]
    fn a_published_key_that_is_not_the_sealed_keys_own_is_refused() {
        let keyring = Keyring::new(AesKey::new(&[5; 32]).unwrap(), vec![]);
        let now = Utc::now();
        let key =
            SigningKey::generate(AccountId::random(), KeyAlgorithm::Rs256, &keyring, now).unwrap();
        assert!(key.signer(&keyring).is_ok());
        let other =
            SigningKey::generate(AccountId::random(), KeyAlgorithm::Rs256, &keyring, now).unwrap();
        let swapped = SigningKey {
            public: PublishedKey {
                kid: key.kid.clone(),
                ..other.public
            },
            ..key
        };
        assert!(matches!(
            swapped.signer(&keyring),
            Err(KeyError::Corrupt(reason)) if reason.contains("public half")
        ));
    }

    #[test]
    fn an_ec_key_signs_es256_and_publishes_its_point() {
        let keyring = Keyring::new(AesKey::new(&[5; 32]).unwrap(), vec![]);
        let key = SigningKey::generate(
            AccountId::random(),
            KeyAlgorithm::Es256,
            &keyring,
            Utc::now(),
        )
        .unwrap();
        assert_eq!(key.algorithm(), KeyAlgorithm::Es256);
        let published = serde_json::to_value(&key.public).unwrap();
        assert_eq!(published["kty"], "EC");
        assert_eq!(published["crv"], "P-256");
        assert_eq!(published["alg"], "ES256");
        assert!(published.get("n").is_none() && published.get("d").is_none());
        let signer = key.signer(&keyring).unwrap();
        let mut header = josekit::jws::JwsHeader::new();
        header.set_key_id(key.kid.clone());
        let jws = josekit::jws::serialize_compact(b"hello", &header, signer.as_ref()).unwrap();
        let jwk = Jwk::from_bytes(serde_json::to_vec(&published).unwrap()).unwrap();
        let verifier = josekit::jws::ES256.verifier_from_jwk(&jwk).unwrap();
        let (payload, header) = josekit::jws::deserialize_compact(&jws, &verifier).unwrap();
        assert_eq!(payload, b"hello");
        assert_eq!(header.algorithm(), Some("ES256"));
    }

    #[test]
    fn a_key_moved_to_another_account_does_not_open() {
        let keyring = Keyring::new(AesKey::new(&[5; 32]).unwrap(), vec![]);
        let key = SigningKey::generate(
            AccountId::random(),
            KeyAlgorithm::Rs256,
            &keyring,
            Utc::now(),
        )
        .unwrap();
        let moved = SigningKey {
            account_id: AccountId::random(),
            ..key
        };
        assert!(matches!(
            moved.signer(&keyring),
            Err(KeyError::Seal(SealError::Corrupt))
        ));
    }
}
