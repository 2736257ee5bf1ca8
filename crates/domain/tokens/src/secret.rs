//! Token secrets, their format and their keyed digests.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac};
use zeroize::Zeroizing;

const PREFIX: &str = "d2_";
const RANDOM_BYTES: usize = 32;
const BODY_CHARS: usize = 43;
const CHECKSUM_BYTES: usize = 4;
const CHECKSUM_CHARS: usize = 6;

/// The system's randomness source failed; nothing can be issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomnessUnavailable;

/// The text cannot be a D2 token: wrong prefix, length, alphabet or checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the token is malformed")]
pub struct MalformedToken;

/// A token secret. Shown once when issued; its `Debug` output never reveals it and its
/// memory is wiped when dropped.
pub struct TokenSecret(Zeroizing<String>);

impl TokenSecret {
    /// Total length of a token in characters.
    pub const LENGTH: usize = PREFIX.len() + BODY_CHARS + CHECKSUM_CHARS;

    pub fn generate() -> Result<Self, RandomnessUnavailable> {
        let mut random = Zeroizing::new([0u8; RANDOM_BYTES]);
        SystemRandom::new()
            .fill(random.as_mut())
            .map_err(|_| RandomnessUnavailable)?;
        let mut text = Zeroizing::new(String::with_capacity(Self::LENGTH));
        text.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_string(random.as_ref(), &mut text);
        let checksum = checksum(text.get(PREFIX.len()..).unwrap_or_default());
        text.push_str(&checksum);
        Ok(Self(text))
    }

    /// Checks the format and checksum without copying the text. This is all the hot path
    /// needs before computing the digest.
    pub fn check_format(text: &str) -> Result<(), MalformedToken> {
        let rest = text.strip_prefix(PREFIX).ok_or(MalformedToken)?;
        if rest.len() != BODY_CHARS + CHECKSUM_CHARS
            || !rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(MalformedToken);
        }
        let (body, sum) = rest.split_at(BODY_CHARS);
        if checksum(body) == sum {
            Ok(())
        } else {
            Err(MalformedToken)
        }
    }

    pub fn parse(text: &str) -> Result<Self, MalformedToken> {
        Self::check_format(text)?;
        Ok(Self(Zeroizing::new(text.to_owned())))
    }

    /// The secret text, to show once to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(d2_…redacted)")
    }
}

fn checksum(body: &str) -> String {
    let hash = digest::digest(&digest::SHA256, body.as_bytes());
    let head = hash
        .as_ref()
        .first_chunk::<CHECKSUM_BYTES>()
        .copied()
        .unwrap_or_default();
    URL_SAFE_NO_PAD.encode(head)
}

/// The pepper is too short to key HMAC-SHA256 safely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the token pepper must be at least {min} bytes", min = Pepper::MIN_BYTES)]
pub struct WeakPepper;

/// The secret key of token digests. Separate from every other key, so rotating the
/// encryption key of signing keys never invalidates tokens.
pub struct Pepper(hmac::Key);

impl Pepper {
    pub const MIN_BYTES: usize = 32;

    pub fn new(key: &[u8]) -> Result<Self, WeakPepper> {
        if key.len() < Self::MIN_BYTES {
            return Err(WeakPepper);
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, key)))
    }

    pub fn digest(&self, secret: &TokenSecret) -> TokenDigest {
        self.digest_text(secret.expose())
    }

    /// The digest of text already checked with [`TokenSecret::check_format`].
    pub(crate) fn digest_text(&self, text: &str) -> TokenDigest {
        let tag = hmac::sign(&self.0, text.as_bytes());
        TokenDigest(
            tag.as_ref()
                .first_chunk::<32>()
                .copied()
                .unwrap_or_default(),
        )
    }
}

impl fmt::Debug for Pepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pepper(redacted)")
    }
}

/// `HMAC-SHA256(pepper, token)`: what storage keeps and looks tokens up by.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenDigest(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_tokens_have_the_documented_shape() {
        let secret = TokenSecret::generate().unwrap();
        let text = secret.expose();
        assert_eq!(text.len(), TokenSecret::LENGTH);
        assert!(text.starts_with("d2_"));
        assert!(TokenSecret::check_format(text).is_ok());
        assert_ne!(TokenSecret::generate().unwrap().expose(), text);
        assert_eq!(format!("{secret:?}"), "TokenSecret(d2_…redacted)");
    }

    #[test]
    fn rejects_wrong_prefix_length_and_alphabet() {
        let good = TokenSecret::generate().unwrap();
        let text = good.expose();
        for bad in [
            "",
            "d2_",
            "Bearer",
            &text[..text.len() - 1],
            &format!("{text}A"),
            &text.replacen("d2_", "d3_", 1),
            &format!("d2_{}", "é".repeat(24)),
        ] {
            assert_eq!(TokenSecret::check_format(bad), Err(MalformedToken), "{bad}");
        }
    }

    #[test]
    fn a_short_pepper_is_refused_and_digests_depend_on_it() {
        assert!(Pepper::new(&[1; 31]).is_err());
        let secret = TokenSecret::generate().unwrap();
        let a = Pepper::new(&[1; 32]).unwrap();
        let b = Pepper::new(&[2; 32]).unwrap();
        assert_ne!(a.digest(&secret), b.digest(&secret));
        assert_eq!(
            a.digest(&secret),
            a.digest(&TokenSecret::parse(secret.expose()).unwrap())
        );
    }

    /// A token built from the bytes 0..32, its checksum and its digest under the pepper
    /// `[7; 32]`, computed independently of this code. Issued tokens and stored digests must
    /// keep verifying, so neither may ever change.
    #[test]
    fn the_wire_format_and_the_digest_never_change() {
        const TEXT: &str = "d2_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh86oZqdQ";
        const DIGEST: [u8; 32] = [
            0xaf, 0x9f, 0xfb, 0xc5, 0x0b, 0x55, 0x7a, 0xfd, 0x41, 0xd0, 0xba, 0x00, 0xb3, 0xf5,
            0xca, 0xee, 0x6d, 0x47, 0x92, 0xa4, 0x0c, 0xc9, 0x0c, 0x36, 0xeb, 0x93, 0x4a, 0x70,
            0xda, 0xef, 0x12, 0x5b,
        ];
        let secret = TokenSecret::parse(TEXT).unwrap();
        assert_eq!(secret.expose(), TEXT);
        let pepper = Pepper::new(&[7; 32]).unwrap();
        assert_eq!(pepper.digest(&secret).as_bytes(), &DIGEST);
    }

    proptest! {
        #[test]
        fn any_single_character_change_is_caught(position in 3usize..TokenSecret::LENGTH, replacement in "[A-Za-z0-9_-]") {
            let secret = TokenSecret::generate().unwrap();
            let mut chars: Vec<char> = secret.expose().chars().collect();
            let new = replacement.chars().next().unwrap();
            prop_assume!(chars[position] != new);
            chars[position] = new;
            let typo: String = chars.into_iter().collect();
            // A 32-bit checksum misses one change in 2^32; the test would flag such a
            // collision, which is astronomically unlikely.
            prop_assert!(TokenSecret::check_format(&typo).is_err());
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,80}") {
            let _ = TokenSecret::check_format(&text);
        }
    }
}
