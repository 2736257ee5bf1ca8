//! Sealed values for the consent pages: what a browser carries between requests (the
//! signed-in person's cookie, a sign-in in progress, a consent form) encrypted and
//! authenticated with AES-256-GCM under a key derived from the token pepper, each bound to
//! its purpose and an expiry. A browser can neither read nor forge them, a value sealed for
//! one purpose never opens as another, and every replica opens what another sealed.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What a sealed value is for: its associated data.
#[derive(Clone, Copy, Debug)]
pub enum Purpose {
    /// The signed-in person (a cookie).
    SignedIn,
    /// A sign-in at the identity provider in progress (a cookie).
    SignInFlow,
    /// A checked authorization request, between sign-in and the consent page.
    Request,
    /// A consent page's form: the request, whose page it is.
    ConsentForm,
    /// A form of the consents page.
    ConsentsForm,
}

impl Purpose {
    fn aad(self) -> &'static [u8] {
        match self {
            Purpose::SignedIn => b"d2 page seal v1: signed in",
            Purpose::SignInFlow => b"d2 page seal v1: sign-in flow",
            Purpose::Request => b"d2 page seal v1: authorization request",
            Purpose::ConsentForm => b"d2 page seal v1: consent form",
            Purpose::ConsentsForm => b"d2 page seal v1: consents form",
        }
    }
}

#[derive(serde::Deserialize, Serialize)]
struct Envelope<T> {
    exp: i64,
    value: T,
}

pub struct Sealer {
    key: LessSafeKey,
    random: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer")
    }
}

impl Sealer {
    /// A sealer with the 32-byte `key`.
    pub fn new(key: &[u8; 32]) -> Option<Self> {
        let key = UnboundKey::new(&AES_256_GCM, key).ok()?;
        Some(Self {
            key: LessSafeKey::new(key),
            random: SystemRandom::new(),
        })
    }

    /// `value` sealed for `purpose` until `expires_at`, as base64url text.
    pub fn seal<T: Serialize>(
        &self,
        purpose: Purpose,
        value: &T,
        expires_at: DateTime<Utc>,
    ) -> Option<String> {
        let mut nonce = [0_u8; NONCE_LEN];
        self.random.fill(&mut nonce).ok()?;
        let mut sealed = serde_json::to_vec(&Envelope {
            exp: expires_at.timestamp(),
            value,
        })
        .ok()?;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose.aad()),
                &mut sealed,
            )
            .ok()?;
        let mut out = nonce.to_vec();
        out.append(&mut sealed);
        Some(URL_SAFE_NO_PAD.encode(out))
    }

    /// What `text` holds if it was sealed for `purpose` and has not expired at `now`.
    pub fn open<T: DeserializeOwned>(
        &self,
        purpose: Purpose,
        text: &str,
        now: DateTime<Utc>,
    ) -> Option<T> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let (nonce, body) = bytes.split_at_checked(NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(purpose.aad()), &mut body)
            .ok()?;
        let envelope: Envelope<T> = serde_json::from_slice(plain).ok()?;
        (envelope.exp > now.timestamp()).then_some(envelope.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_for_its_purpose_until_it_expires() {
        let sealer = Sealer::new(&[7; 32]).unwrap();
        let now = Utc::now();
        let later = now + chrono::Duration::minutes(10);
        let text = sealer.seal(Purpose::Request, &"hello", later).unwrap();
        assert_eq!(
            sealer
                .open::<String>(Purpose::Request, &text, now)
                .as_deref(),
            Some("hello")
        );
        assert_eq!(
            sealer.open::<String>(Purpose::ConsentForm, &text, now),
            None
        );
        assert_eq!(sealer.open::<String>(Purpose::Request, &text, later), None);
        let other = Sealer::new(&[8; 32]).unwrap();
        assert_eq!(other.open::<String>(Purpose::Request, &text, now), None);
        let mut tampered = text.into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(
            sealer.open::<String>(Purpose::Request, &tampered, now),
            None
        );
    }
}
