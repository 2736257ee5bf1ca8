//! Sealing private keys at rest: AES-256-GCM with a random nonce, the AES key's id kept
//! beside the ciphertext, and the key's owner (its account and its key id) bound as
//! associated data, so a ciphertext copied into another row (another account, or another
//! key id) does not open.
//!
//! ## The associated data
//!
//! Version 2, what [`Keyring::seal`] writes, binds both the account and the key id:
//!
//! ```text
//! "d2-seal-v2" 0x00 <account id: 36 characters, hyphenated lower-case UUID> 0x00 <kid, UTF-8>
//! ```
//!
//! The constant prefix names the format and its version, so these bytes can never be
//! mistaken for the associated data of another rule (version 1's is a bare UUID, which no
//! version 2 value is). The account is a fixed-width field and the key id comes last, so
//! two different (account, kid) pairs never give the same bytes, whatever a kid holds:
//! the encoding is as unambiguous as length prefixes and still readable in a hex dump.
//!
//! Version 1, written before accounts were bound, binds the key id alone. Rows sealed that
//! way still open during the transition (see [`Keyring::accepting_legacy`]) and are
//! re-sealed to version 2 by `d2ctl rotate-aes-key`.
//!
//! ## Telling the versions apart
//!
//! The version is stored beside the ciphertext ([`Sealed::binding`], the `seal_version`
//! column), never guessed from the bytes. A prefix byte could not be told from the first
//! byte of a version 1 ciphertext (a random nonce: one in 256 would look like version 2),
//! and trying version 2 then version 1 would let anyone who can write a row choose the
//! weaker rule. The stored version chooses the rule without weakening version 2: a version 2
//! ciphertext marked as version 1 is checked against the key id alone and fails, since its
//! tag covers the version 2 associated data. The key id is as writable as the marker, so
//! the version 1 rule only accepts key ids that are hyphenated UUIDs (every key id D2 has
//! generated), which no version 2 associated data is: a crafted key id cannot turn a
//! version 2 ciphertext into a version 1 one.
//!
//! What remains is the version 1 rule itself: it opens a ciphertext moved to another
//! account, and whoever can write rows can put back a version 1 ciphertext from an old
//! backup. So it is accepted only while the keyring says so (`crypto.accept_legacy_seals`),
//! which the operator turns off once every key is re-sealed.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use d2_kernel::AccountId;
use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

const NONCE_BYTES: usize = 12;

/// The first bytes of version 2 associated data.
const V2_CONTEXT: &[u8] = b"d2-seal-v2\0";

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

/// Whose key a ciphertext holds: what it is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealOwner<'a> {
    pub account_id: AccountId,
    pub kid: &'a str,
}

/// Which associated data a ciphertext was sealed with (stored as its version number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// Version 1, before accounts were bound: the key id alone.
    KidOnly,
    /// Version 2: the account and the key id.
    AccountAndKid,
    /// A version this release does not know (written by a newer one); never opened.
    Unsupported(i16),
}

impl Binding {
    /// What [`Keyring::seal`] writes.
    pub const CURRENT: Binding = Binding::AccountAndKid;

    pub fn version(self) -> i16 {
        match self {
            Binding::KidOnly => 1,
            Binding::AccountAndKid => 2,
            Binding::Unsupported(version) => version,
        }
    }

    pub fn from_version(version: i16) -> Self {
        match version {
            1 => Binding::KidOnly,
            2 => Binding::AccountAndKid,
            other => Binding::Unsupported(other),
        }
    }

    /// The associated data of `owner` under this binding.
    fn associated_data(self, owner: SealOwner<'_>) -> Result<Vec<u8>, SealError> {
        match self {
            Binding::KidOnly => {
                // Only key ids D2 generated (see the module documentation).
                let generated = uuid::Uuid::try_parse(owner.kid)
                    .is_ok_and(|uuid| uuid.hyphenated().to_string() == owner.kid);
                if !generated {
                    return Err(SealError::Corrupt);
                }
                Ok(owner.kid.as_bytes().to_vec())
            }
            Binding::AccountAndKid => {
                let account = owner.account_id.as_uuid().hyphenated().to_string();
                let mut data = Vec::with_capacity(
                    V2_CONTEXT
                        .len()
                        .saturating_add(account.len())
                        .saturating_add(owner.kid.len().saturating_add(1)),
                );
                data.extend_from_slice(V2_CONTEXT);
                data.extend_from_slice(account.as_bytes());
                data.push(0);
                data.extend_from_slice(owner.kid.as_bytes());
                Ok(data)
            }
            Binding::Unsupported(version) => Err(SealError::UnsupportedBinding(version)),
        }
    }
}

/// A ciphertext, the id of the AES key that sealed it and the binding it was sealed with.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub aes_key_id: String,
    pub binding: Binding,
    /// `nonce (12 bytes) || ciphertext || tag`.
    pub blob: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Sealed(key {}, version {}, {} bytes)",
            self.aes_key_id,
            self.binding.version(),
            self.blob.len()
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("no configured AES key has id {0}")]
    UnknownKey(String),
    #[error(
        "the ciphertext does not open with its key (corrupt, or bound to another account or key id)"
    )]
    Corrupt,
    #[error(
        "the ciphertext is bound to its key id only (sealed before accounts were bound), and such ciphertexts are refused"
    )]
    LegacyRefused,
    #[error("the ciphertext has seal version {0}, which this release cannot open")]
    UnsupportedBinding(i16),
    #[error("the system random number generator failed")]
    Randomness,
}

/// The current AES key, which seals, and previous ones, which only open.
pub struct Keyring {
    current: AesKey,
    previous: Vec<AesKey>,
    /// Whether version 1 ciphertexts (bound to the key id only) still open.
    accept_legacy: bool,
    random: SystemRandom,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current)
            .field("previous", &self.previous)
            .field("accept_legacy", &self.accept_legacy)
            .finish()
    }
}

impl Keyring {
    /// A keyring that opens only ciphertexts bound to their account; see
    /// [`Keyring::accepting_legacy`].
    pub fn new(current: AesKey, previous: Vec<AesKey>) -> Self {
        Self {
            current,
            previous,
            accept_legacy: false,
            random: SystemRandom::new(),
        }
    }

    /// Whether ciphertexts sealed before accounts were bound (version 1) still open, during
    /// the transition to version 2.
    #[must_use]
    pub fn accepting_legacy(self, accept: bool) -> Self {
        Self {
            accept_legacy: accept,
            ..self
        }
    }

    pub fn current_id(&self) -> &str {
        self.current.id()
    }

    /// Whether `sealed` is sealed the way [`Keyring::seal`] would seal it now: with the
    /// current AES key and the current binding.
    pub fn is_current(&self, sealed: &Sealed) -> bool {
        sealed.aes_key_id == self.current.id && sealed.binding == Binding::CURRENT
    }

    pub fn seal(&self, plaintext: &[u8], owner: SealOwner<'_>) -> Result<Sealed, SealError> {
        self.seal_as(Binding::CURRENT, plaintext, owner)
    }

    fn seal_as(
        &self,
        binding: Binding,
        plaintext: &[u8],
        owner: SealOwner<'_>,
    ) -> Result<Sealed, SealError> {
        let aad = binding.associated_data(owner)?;
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
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Corrupt)?;
        let mut blob = Vec::with_capacity(ciphertext.len().saturating_add(NONCE_BYTES));
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ciphertext);
        Ok(Sealed {
            aes_key_id: self.current.id.clone(),
            binding,
            blob,
        })
    }

    /// Seals the way releases before account binding did (version 1: the key id only), to
    /// test the transition.
    #[cfg(any(test, feature = "testing"))]
    pub fn seal_kid_only(
        &self,
        plaintext: &[u8],
        owner: SealOwner<'_>,
    ) -> Result<Sealed, SealError> {
        self.seal_as(Binding::KidOnly, plaintext, owner)
    }

    /// Opens `sealed` under the rule its binding names, as the key of `owner`.
    pub fn open(
        &self,
        sealed: &Sealed,
        owner: SealOwner<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.binding == Binding::KidOnly && !self.accept_legacy {
            return Err(SealError::LegacyRefused);
        }
        let aad = sealed.binding.associated_data(owner)?;
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
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Corrupt)
    }

    /// Re-seals with the current key and the current binding, checking that the new
    /// ciphertext opens to the same plaintext before returning it.
    pub fn reseal(&self, sealed: &Sealed, owner: SealOwner<'_>) -> Result<Sealed, SealError> {
        let plaintext = self.open(sealed, owner)?;
        let resealed = self.seal(&plaintext, owner)?;
        if *self.open(&resealed, owner)? != *plaintext {
            return Err(SealError::Corrupt);
        }
        Ok(resealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KID: &str = "0b6f3c52-6d0e-4a43-9f55-2f7b1a8f0c11";

    fn keyring(byte: u8) -> Keyring {
        Keyring::new(AesKey::new(&[byte; 32]).unwrap(), vec![])
    }

    fn owner(account_id: AccountId) -> SealOwner<'static> {
        SealOwner {
            account_id,
            kid: KID,
        }
    }

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
    fn the_associated_data_format_is_fixed() {
        // Every stored key depends on these bytes: changing them is a new version.
        let account: AccountId = "8d7a1f0e-3c2b-4a59-8e6d-1f2a3b4c5d6e".parse().unwrap();
        assert_eq!(
            Binding::AccountAndKid
                .associated_data(owner(account))
                .unwrap(),
            format!("d2-seal-v2\u{0}8d7a1f0e-3c2b-4a59-8e6d-1f2a3b4c5d6e\u{0}{KID}").as_bytes()
        );
        assert_eq!(
            Binding::KidOnly.associated_data(owner(account)).unwrap(),
            KID.as_bytes()
        );
        for binding in [
            Binding::KidOnly,
            Binding::AccountAndKid,
            Binding::Unsupported(7),
        ] {
            assert_eq!(Binding::from_version(binding.version()), binding);
        }
    }

    #[test]
    fn a_sealed_key_opens_only_for_its_own_account_and_kid() {
        let keyring = keyring(1).accepting_legacy(true);
        let account = AccountId::random();
        let sealed = keyring.seal(b"secret", owner(account)).unwrap();
        assert_eq!(sealed.binding, Binding::AccountAndKid);
        assert!(keyring.is_current(&sealed));
        assert_eq!(
            keyring.open(&sealed, owner(account)).unwrap().as_slice(),
            b"secret"
        );
        assert_eq!(
            keyring.open(&sealed, owner(AccountId::random())),
            Err(SealError::Corrupt),
            "moved to another account"
        );
        let other_kid = SealOwner {
            account_id: account,
            kid: "5c1e9a4d-0f3b-4d8e-a2c7-9b6e4f1d3a20",
        };
        assert_eq!(
            keyring.open(&sealed, other_kid),
            Err(SealError::Corrupt),
            "moved to another key id"
        );
    }

    #[test]
    fn sealing_uses_fresh_nonces_and_detects_tampering() {
        let keyring = keyring(1).accepting_legacy(true);
        let account = AccountId::random();
        let a = keyring.seal(b"secret", owner(account)).unwrap();
        let b = keyring.seal(b"secret", owner(account)).unwrap();
        assert_ne!(a.blob, b.blob);
        for position in [0, NONCE_BYTES, a.blob.len() - 1] {
            let mut tampered = a.clone();
            tampered.blob[position] ^= 1;
            assert_eq!(
                keyring.open(&tampered, owner(account)),
                Err(SealError::Corrupt)
            );
        }
        let short = Sealed {
            blob: vec![0; 5],
            ..a.clone()
        };
        assert_eq!(
            keyring.open(&short, owner(account)),
            Err(SealError::Corrupt)
        );
        let other_key = Sealed {
            aes_key_id: "0000000000000000".into(),
            ..a.clone()
        };
        assert_eq!(
            keyring.open(&other_key, owner(account)),
            Err(SealError::UnknownKey("0000000000000000".into()))
        );
        let unknown_version = Sealed {
            binding: Binding::Unsupported(3),
            ..a
        };
        assert_eq!(
            keyring.open(&unknown_version, owner(account)),
            Err(SealError::UnsupportedBinding(3))
        );
    }

    #[test]
    fn a_bound_ciphertext_never_opens_under_the_legacy_rule() {
        let keyring = keyring(1).accepting_legacy(true);
        let account = AccountId::random();
        let sealed = keyring.seal(b"secret", owner(account)).unwrap();
        // Relabelled as version 1: its tag covers the version 2 associated data.
        let relabelled = Sealed {
            binding: Binding::KidOnly,
            ..sealed
        };
        assert_eq!(
            keyring.open(&relabelled, owner(account)),
            Err(SealError::Corrupt)
        );
        // Nor with a key id crafted to equal that associated data.
        let aad = Binding::AccountAndKid
            .associated_data(owner(account))
            .unwrap();
        let crafted = String::from_utf8(aad).unwrap();
        let crafted_owner = SealOwner {
            account_id: AccountId::random(),
            kid: &crafted,
        };
        assert_eq!(
            keyring.open(&relabelled, crafted_owner),
            Err(SealError::Corrupt)
        );
    }

    #[test]
    fn legacy_ciphertexts_open_only_while_accepted_and_reseal_bound_to_their_account() {
        let refusing = keyring(1);
        let accepting = keyring(1).accepting_legacy(true);
        let account = AccountId::random();
        let legacy = accepting.seal_kid_only(b"private", owner(account)).unwrap();
        assert_eq!(legacy.binding, Binding::KidOnly);
        assert!(!accepting.is_current(&legacy), "needs a re-seal");
        assert_eq!(
            refusing.open(&legacy, owner(account)),
            Err(SealError::LegacyRefused)
        );
        assert_eq!(
            refusing.reseal(&legacy, owner(account)),
            Err(SealError::LegacyRefused)
        );
        // The weakness being closed: bound to the key id only, it opens for any account.
        assert_eq!(
            accepting
                .open(&legacy, owner(AccountId::random()))
                .unwrap()
                .as_slice(),
            b"private"
        );

        let resealed = accepting.reseal(&legacy, owner(account)).unwrap();
        assert_eq!(resealed.binding, Binding::AccountAndKid);
        assert!(accepting.is_current(&resealed));
        assert_eq!(
            refusing.open(&resealed, owner(account)).unwrap().as_slice(),
            b"private"
        );
        assert_eq!(
            accepting.open(&resealed, owner(AccountId::random())),
            Err(SealError::Corrupt)
        );
    }

    #[test]
    fn rotation_reseals_under_the_new_key_and_old_ciphertexts_still_open() {
        let account = AccountId::random();
        let old = keyring(1);
        let sealed = old.seal(b"private", owner(account)).unwrap();
        let rotated = Keyring::new(
            AesKey::new(&[2; 32]).unwrap(),
            vec![AesKey::new(&[1; 32]).unwrap()],
        );
        assert!(!rotated.is_current(&sealed));
        assert_eq!(
            rotated.open(&sealed, owner(account)).unwrap().as_slice(),
            b"private"
        );
        let resealed = rotated.reseal(&sealed, owner(account)).unwrap();
        assert_eq!(resealed.aes_key_id, rotated.current_id());
        let only_new = keyring(2);
        assert_eq!(
            only_new.open(&resealed, owner(account)).unwrap().as_slice(),
            b"private"
        );
        assert!(matches!(
            only_new.open(&sealed, owner(account)),
            Err(SealError::UnknownKey(_))
        ));
    }
}
