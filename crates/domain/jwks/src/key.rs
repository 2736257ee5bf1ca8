use chrono::{DateTime, Duration, Utc};
use d2_kernel::AccountId;
use josekit::jwk::Jwk;
use josekit::jwk::alg::rsa::RsaKeyPair;
use josekit::jws::RS256;
use josekit::jws::alg::rsassa::RsassaJwsSigner;
use serde::Serialize;

use crate::seal::{Keyring, SealError, SealOwner, Sealed};

const RSA_BITS: u32 = 2048;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("RSA key generation failed: {0}")]
    Generation(String),
    #[error("a stored signing key is not usable: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// The public half of a signing key, as published in the JWKS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PublishedKey {
    pub kty: &'static str,
    pub kid: String,
    pub alg: &'static str,
    #[serde(rename = "use")]
    pub usage: &'static str,
    pub n: String,
    pub e: String,
}

impl PublishedKey {
    pub fn rsa(kid: &str, n: &str, e: &str) -> Self {
        Self {
            kty: "RSA",
            kid: kid.to_owned(),
            alg: "RS256",
            usage: "sig",
            n: n.to_owned(),
            e: e.to_owned(),
        }
    }
}

/// An account's RSA signing key. The private half is only ever held sealed.
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
    /// A new RSA-2048 key for `account_id`, sealed under the keyring's current AES key.
    /// This takes tens of milliseconds of CPU.
    pub fn generate(
        account_id: AccountId,
        keyring: &Keyring,
        now: DateTime<Utc>,
    ) -> Result<Self, KeyError> {
        let kid = uuid::Uuid::new_v4().to_string();
        let pair =
            RsaKeyPair::generate(RSA_BITS).map_err(|e| KeyError::Generation(e.to_string()))?;
        let mut private = pair.to_jwk_private_key();
        private.set_key_id(kid.clone());
        let public =
            PublishedKey::rsa(&kid, &parameter(&private, "n")?, &parameter(&private, "e")?);
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
    pub fn signer(&self, keyring: &Keyring) -> Result<RsassaJwsSigner, KeyError> {
        let plaintext = keyring.open(&self.sealed_private, self.owner())?;
        let jwk =
            Jwk::from_bytes(plaintext.as_slice()).map_err(|e| KeyError::Corrupt(e.to_string()))?;
        let own = PublishedKey::rsa(&self.kid, &parameter(&jwk, "n")?, &parameter(&jwk, "e")?);
        if own != self.public {
            return Err(KeyError::Corrupt(format!(
                "the published key {} is not the sealed key's public half",
                self.kid
            )));
        }
        RS256
            .signer_from_jwk(&jwk)
            .map_err(|e| KeyError::Corrupt(e.to_string()))
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
        let key = SigningKey::generate(AccountId::random(), &keyring, now).unwrap();
        assert!(key.signer(&keyring).is_ok());
        let other = SigningKey::generate(AccountId::random(), &keyring, now).unwrap();
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
    fn a_key_moved_to_another_account_does_not_open() {
        let keyring = Keyring::new(AesKey::new(&[5; 32]).unwrap(), vec![]);
        let key = SigningKey::generate(AccountId::random(), &keyring, Utc::now()).unwrap();
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
