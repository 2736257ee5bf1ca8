//! Sealing private keys at rest: AES-256-GCM with a random nonce, the AES key's id kept
//! beside the ciphertext, and the row's key id bound as associated data.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

const NONCE_BYTES: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an AES-256 key must be exactly 32 bytes")]
pub struct InvalidAesKey;

/// One AES-256 key and its id (the first 8 bytes of its SHA-256, in hex: stable, and
/// revealing nothing useful about the key).
pub struct AesKey {
    id: String,
    cipher: Aes256Gcm,
}

impl AesKey {
    pub fn new(bytes: &[u8]) -> Result<Self, InvalidAesKey> {
        let cipher = Aes256Gcm::new_from_slice(bytes).map_err(|_| InvalidAesKey)?;
        if bytes.len() != 32 {
            return Err(InvalidAesKey);
        }
        let hash = digest(&SHA256, bytes);
        let id = hash
            .as_ref()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Self { id, cipher })
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AesKey({})", self.id)
    }
}

/// A ciphertext and the id of the AES key that sealed it.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub aes_key_id: String,
    /// `nonce (12 bytes) || ciphertext || tag`.
    pub blob: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Sealed(key {}, {} bytes)",
            self.aes_key_id,
            self.blob.len()
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("no configured AES key has id {0}")]
    UnknownKey(String),
    #[error("the ciphertext does not open with its key (corrupt, or bound to another key id)")]
    Corrupt,
    #[error("the system random number generator failed")]
    Randomness,
}

/// The current AES key, which seals, and previous ones, which only open.
pub struct Keyring {
    current: AesKey,
    previous: Vec<AesKey>,
    random: SystemRandom,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current)
            .field("previous", &self.previous)
            .finish()
    }
}

impl Keyring {
    pub fn new(current: AesKey, previous: Vec<AesKey>) -> Self {
        Self {
            current,
            previous,
            random: SystemRandom::new(),
        }
    }

    pub fn current_id(&self) -> &str {
        self.current.id()
    }

    pub fn seal(&self, plaintext: &[u8], bound_to: &[u8]) -> Result<Sealed, SealError> {
        let mut nonce = [0u8; NONCE_BYTES];
        self.random
            .fill(&mut nonce)
            .map_err(|_| SealError::Randomness)?;
        let ciphertext = self
            .current
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: bound_to,
                },
            )
            .map_err(|_| SealError::Corrupt)?;
        let mut blob = Vec::with_capacity(NONCE_BYTES + ciphertext.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ciphertext);
        Ok(Sealed {
            aes_key_id: self.current.id.clone(),
            blob,
        })
    }

    pub fn open(&self, sealed: &Sealed, bound_to: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|key| key.id == sealed.aes_key_id)
            .ok_or_else(|| SealError::UnknownKey(sealed.aes_key_id.clone()))?;
        let (nonce, ciphertext) = sealed
            .blob
            .split_at_checked(NONCE_BYTES)
            .ok_or(SealError::Corrupt)?;
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| SealError::Corrupt)?;
        key.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: bound_to,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Corrupt)
    }

    /// Re-seals with the current key, checking that the new ciphertext opens to the same
    /// plaintext before returning it.
    pub fn reseal(&self, sealed: &Sealed, bound_to: &[u8]) -> Result<Sealed, SealError> {
        let plaintext = self.open(sealed, bound_to)?;
        let resealed = self.seal(&plaintext, bound_to)?;
        if *self.open(&resealed, bound_to)? != *plaintext {
            return Err(SealError::Corrupt);
        }
        Ok(resealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_32_bytes_and_have_stable_ids() {
        assert!(AesKey::new(&[1; 31]).is_err());
        assert!(AesKey::new(&[1; 33]).is_err());
        assert_eq!(
            AesKey::new(&[1; 32]).unwrap().id(),
            AesKey::new(&[1; 32]).unwrap().id()
        );
        assert_ne!(
            AesKey::new(&[1; 32]).unwrap().id(),
            AesKey::new(&[2; 32]).unwrap().id()
        );
    }

    #[test]
    fn sealing_uses_fresh_nonces_and_detects_tampering() {
        let keyring = Keyring::new(AesKey::new(&[1; 32]).unwrap(), vec![]);
        let a = keyring.seal(b"secret", b"kid").unwrap();
        let b = keyring.seal(b"secret", b"kid").unwrap();
        assert_ne!(a.blob, b.blob);
        let mut tampered = a.clone();
        let last = tampered.blob.len() - 1;
        tampered.blob[last] ^= 1;
        assert_eq!(keyring.open(&tampered, b"kid"), Err(SealError::Corrupt));
        let short = Sealed {
            aes_key_id: a.aes_key_id,
            blob: vec![0; 5],
        };
        assert_eq!(keyring.open(&short, b"kid"), Err(SealError::Corrupt));
    }

    #[test]
    fn rotation_reseals_under_the_new_key_and_old_ciphertexts_still_open() {
        let old = Keyring::new(AesKey::new(&[1; 32]).unwrap(), vec![]);
        let sealed = old.seal(b"private", b"kid").unwrap();
        let rotated = Keyring::new(
            AesKey::new(&[2; 32]).unwrap(),
            vec![AesKey::new(&[1; 32]).unwrap()],
        );
        assert_eq!(
            rotated.open(&sealed, b"kid").unwrap().as_slice(),
            b"private"
        );
        let resealed = rotated.reseal(&sealed, b"kid").unwrap();
        assert_eq!(resealed.aes_key_id, rotated.current_id());
        let only_new = Keyring::new(AesKey::new(&[2; 32]).unwrap(), vec![]);
        assert_eq!(
            only_new.open(&resealed, b"kid").unwrap().as_slice(),
            b"private"
        );
        assert!(matches!(
            only_new.open(&sealed, b"kid"),
            Err(SealError::UnknownKey(_))
        ));
    }
}
