//! Secrets shown once to their owner and kept only as a keyed digest: API tokens today,
//! and every later bearer secret (refresh tokens, client secrets, authorization codes,
//! invitations), each a [`SecretFormat`] with a prefix of its own.
//!
//! Every kind has the same text: its prefix, 43 characters of URL-safe base64 (256 random
//! bits), then a 6-character checksum, the URL-safe base64 of the first 4 bytes of the
//! SHA-256 of those 43 characters. The checksum refuses a mistyped or truncated secret
//! before any lookup; the prefix tells the kinds apart, to people, to secret scanners and
//! to the authenticator, which dispatches on it.
//!
//! Storage keeps only [`SecretDigest`]: `HMAC-SHA256(pepper, text)` over the whole text,
//! prefix included. The prefix therefore separates the digests of different kinds, and the
//! API tokens issued before other kinds existed keep their digests.
//!
//! ```
//! use d2_kernel::secret::{Pepper, Secret, SecretFormat};
//!
//! #[derive(Debug)]
//! enum Invitation {}
//! impl SecretFormat for Invitation {
//!     const NAME: &'static str = "InvitationSecret";
//!     const PREFIX: &'static str = "d2inv_";
//! }
//!
//! let secret = Secret::<Invitation>::generate().unwrap();
//! assert!(secret.expose().starts_with("d2inv_"));
//! assert_eq!(secret.expose().len(), Secret::<Invitation>::LENGTH);
//! assert!(Secret::<Invitation>::check_format(secret.expose()).is_ok());
//! assert_eq!(format!("{secret:?}"), "InvitationSecret(d2inv_…redacted)");
//!
//! let pepper = Pepper::new(&[7u8; 32]).unwrap();
//! assert_eq!(pepper.digest(&secret), pepper.digest_text(secret.expose()));
//! ```

use std::fmt;
use std::marker::PhantomData;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac};
use zeroize::Zeroizing;

const RANDOM_BYTES: usize = 32;
const BODY_CHARS: usize = 43;
const CHECKSUM_BYTES: usize = 4;
const CHECKSUM_CHARS: usize = 6;

/// A kind of secret, described by its prefix. Implemented by an uninhabited marker type
/// (`enum ApiTokenFormat {}`) in the domain crate that owns the kind.
pub trait SecretFormat: 'static {
    /// How `Debug` names a secret of this kind, e.g. `TokenSecret`.
    const NAME: &'static str;
    /// ASCII letters, digits and `_`, ending in `_` (checked when the kind is first used).
    /// No kind's prefix may begin with another kind's prefix, so that a prefix check alone
    /// tells the kinds apart.
    const PREFIX: &'static str;
}

/// The system's randomness source failed; nothing can be issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomnessUnavailable;

/// The text cannot be a secret of the expected kind: wrong prefix, length, alphabet or
/// checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the secret is malformed")]
pub struct MalformedSecret;

/// A secret of kind `F`. Shown once when issued; its `Debug` output never reveals it and
/// its memory is wiped when dropped.
pub struct Secret<F: SecretFormat> {
    text: Zeroizing<String>,
    format: PhantomData<fn() -> F>,
}

impl<F: SecretFormat> Secret<F> {
    /// Total length of a secret of this kind, in characters.
    pub const LENGTH: usize = F::PREFIX.len() + BODY_CHARS + CHECKSUM_CHARS;

    /// Fails the build of any use of a kind whose prefix breaks the rules of
    /// [`SecretFormat::PREFIX`].
    const VALID_PREFIX: () = assert!(
        is_valid_prefix(F::PREFIX),
        "a secret prefix is ASCII letters, digits and `_`, ending in `_`"
    );

    pub fn generate() -> Result<Self, RandomnessUnavailable> {
        let () = Self::VALID_PREFIX;
        let mut random = Zeroizing::new([0u8; RANDOM_BYTES]);
        SystemRandom::new()
            .fill(random.as_mut())
            .map_err(|_| RandomnessUnavailable)?;
        // Sized once: the text is never reallocated, so no copy of it is left behind.
        let mut text = Zeroizing::new(String::with_capacity(Self::LENGTH));
        text.push_str(F::PREFIX);
        URL_SAFE_NO_PAD.encode_string(random.as_ref(), &mut text);
        let sum = checksum(text.get(F::PREFIX.len()..).unwrap_or_default().as_bytes());
        text.extend(sum.iter().copied().map(char::from));
        Ok(Self::new(text))
    }

    /// Checks the prefix, length, alphabet and checksum, without copying the text or
    /// allocating: all the hot path needs before computing the digest.
    pub fn check_format(text: &str) -> Result<(), MalformedSecret> {
        let () = Self::VALID_PREFIX;
        let rest = text.strip_prefix(F::PREFIX).ok_or(MalformedSecret)?;
        if rest.len() != BODY_CHARS + CHECKSUM_CHARS || !rest.bytes().all(is_url_safe) {
            return Err(MalformedSecret);
        }
        let (body, sum) = rest
            .as_bytes()
            .split_at_checked(BODY_CHARS)
            .ok_or(MalformedSecret)?;
        if checksum(body) == sum {
            Ok(())
        } else {
            Err(MalformedSecret)
        }
    }

    pub fn parse(text: &str) -> Result<Self, MalformedSecret> {
        Self::check_format(text)?;
        Ok(Self::new(Zeroizing::new(text.to_owned())))
    }

    /// The secret text, to show once to its owner.
    pub fn expose(&self) -> &str {
        &self.text
    }

    fn new(text: Zeroizing<String>) -> Self {
        Self {
            text,
            format: PhantomData,
        }
    }
}

impl<F: SecretFormat> fmt::Debug for Secret<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({}…redacted)", F::NAME, F::PREFIX)
    }
}

fn is_url_safe(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'
}

const fn is_valid_prefix(prefix: &str) -> bool {
    let mut rest = prefix.as_bytes();
    if !matches!(rest.last(), Some(b'_')) {
        return false;
    }
    while let Some((first, tail)) = rest.split_first() {
        if !(first.is_ascii_alphanumeric() || *first == b'_') {
            return false;
        }
        rest = tail;
    }
    true
}

/// The URL-safe base64 of the first 4 bytes of `SHA-256(body)`, on the stack.
fn checksum(body: &[u8]) -> [u8; CHECKSUM_CHARS] {
    let hash = digest::digest(&digest::SHA256, body);
    let head = hash
        .as_ref()
        .first_chunk::<CHECKSUM_BYTES>()
        .copied()
        .unwrap_or_default();
    let mut sum = [0u8; CHECKSUM_CHARS];
    // Four bytes are always six characters without padding. Were it to fail, the zeros
    // left would match no text, as every character is checked to be URL-safe first.
    let _ = URL_SAFE_NO_PAD.encode_slice(head, &mut sum);
    sum
}

/// The pepper is too short to key HMAC-SHA256 safely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the pepper must be at least {min} bytes", min = Pepper::MIN_BYTES)]
pub struct WeakPepper;

/// The secret key of secret digests, for every kind. Separate from every other key, so
/// rotating the encryption key of signing keys never invalidates a secret.
pub struct Pepper(hmac::Key);

impl Pepper {
    pub const MIN_BYTES: usize = 32;

    pub fn new(key: &[u8]) -> Result<Self, WeakPepper> {
        if key.len() < Self::MIN_BYTES {
            return Err(WeakPepper);
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, key)))
    }

    pub fn digest<F: SecretFormat>(&self, secret: &Secret<F>) -> SecretDigest {
        self.digest_text(secret.expose())
    }

    /// The digest of presented text, whether or not its format was checked yet (a cache
    /// can be asked first and the format checked on a miss). Equal to
    /// [`digest`](Self::digest) of the parsed secret. Only digests of well-formed text
    /// should ever be stored.
    pub fn digest_text(&self, text: &str) -> SecretDigest {
        let tag = hmac::sign(&self.0, text.as_bytes());
        SecretDigest(
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

/// `HMAC-SHA256(pepper, text)`: what storage keeps and looks secrets up by.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretDigest([u8; 32]);

impl SecretDigest {
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether two digests are equal, in a time that does not tell where they differ: for
    /// digests compared in memory rather than looked up by the store.
    pub fn matches(&self, other: &SecretDigest) -> bool {
        subtle::ConstantTimeEq::ct_eq(&self.0[..], &other.0[..]).into()
    }
}

impl fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretDigest(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug)]
    enum Token {}
    impl SecretFormat for Token {
        const NAME: &'static str = "TokenSecret";
        const PREFIX: &'static str = "d2_";
    }

    #[derive(Debug)]
    enum Refresh {}
    impl SecretFormat for Refresh {
        const NAME: &'static str = "RefreshSecret";
        const PREFIX: &'static str = "d2rt_";
    }

    type TokenSecret = Secret<Token>;

    #[test]
    fn generated_secrets_have_the_documented_shape() {
        let secret = TokenSecret::generate().unwrap();
        let text = secret.expose();
        assert_eq!(TokenSecret::LENGTH, 52);
        assert_eq!(text.len(), TokenSecret::LENGTH);
        assert!(text.starts_with("d2_"));
        assert!(TokenSecret::check_format(text).is_ok());
        assert_ne!(TokenSecret::generate().unwrap().expose(), text);
        assert_eq!(format!("{secret:?}"), "TokenSecret(d2_…redacted)");

        let refresh = Secret::<Refresh>::generate().unwrap();
        assert_eq!(refresh.expose().len(), 54);
        assert_eq!(format!("{refresh:?}"), "RefreshSecret(d2rt_…redacted)");
        assert!(!format!("{refresh:?}").contains(&refresh.expose()[5..]));
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
            &text.replacen("d2_", "D2_", 1),
            &format!(" {text}"),
            &format!("d2_{}", "é".repeat(24)),
            &format!("{}+{}", &text[..10], &text[11..]),
            &format!("{}={}", &text[..10], &text[11..]),
        ] {
            assert_eq!(
                TokenSecret::check_format(bad),
                Err(MalformedSecret),
                "{bad}"
            );
            assert!(TokenSecret::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn two_kinds_do_not_accept_each_others_secrets() {
        let token = TokenSecret::generate().unwrap();
        let refresh = Secret::<Refresh>::generate().unwrap();
        assert_eq!(
            Secret::<Refresh>::check_format(token.expose()),
            Err(MalformedSecret)
        );
        assert!(Secret::<Refresh>::parse(token.expose()).is_err());
        assert_eq!(
            TokenSecret::check_format(refresh.expose()),
            Err(MalformedSecret)
        );
        assert!(TokenSecret::parse(refresh.expose()).is_err());

        // The checksum covers the body only, so a body moved to the other prefix is well
        // formed; its digest differs, so it finds nothing.
        let moved = refresh.expose().replacen("d2rt_", "d2_", 1);
        let moved = TokenSecret::parse(&moved).unwrap();
        let pepper = Pepper::new(&[1; 32]).unwrap();
        assert_ne!(pepper.digest(&moved), pepper.digest(&refresh));
    }

    #[test]
    fn the_digest_is_hmac_sha256_of_the_whole_text() {
        let pepper_bytes = [4u8; 32];
        let pepper = Pepper::new(&pepper_bytes).unwrap();
        let secret = Secret::<Refresh>::generate().unwrap();
        let key = hmac::Key::new(hmac::HMAC_SHA256, &pepper_bytes);
        let expected = hmac::sign(&key, secret.expose().as_bytes());
        assert_eq!(
            pepper.digest(&secret).as_bytes().as_slice(),
            expected.as_ref()
        );
        assert_eq!(pepper.digest(&secret), pepper.digest_text(secret.expose()));
        let digest = pepper.digest(&secret);
        assert_eq!(SecretDigest::from_bytes(digest.as_bytes()), Some(digest));
        assert_eq!(SecretDigest::from_bytes(&[0; 31]), None);
        assert_eq!(format!("{digest:?}"), "SecretDigest(…)");
    }

    #[test]
    fn a_short_pepper_is_refused_and_digests_depend_on_it() {
        assert_eq!(Pepper::new(&[1; 31]).err(), Some(WeakPepper));
        let secret = TokenSecret::generate().unwrap();
        let a = Pepper::new(&[1; 32]).unwrap();
        let b = Pepper::new(&[2; 32]).unwrap();
        assert_ne!(a.digest(&secret), b.digest(&secret));
        assert_eq!(
            a.digest(&secret),
            a.digest(&TokenSecret::parse(secret.expose()).unwrap())
        );
        assert_eq!(format!("{a:?}"), "Pepper(redacted)");
        assert!(a.digest(&secret).matches(&a.digest_text(secret.expose())));
        assert!(!a.digest(&secret).matches(&b.digest(&secret)));
    }

    #[test]
    fn prefixes_are_checked() {
        for good in ["d2_", "d2rt_", "_", "A9_"] {
            assert!(is_valid_prefix(good), "{good}");
        }
        for bad in ["", "d2", "d2-", "d2._", "d 2_", "é_"] {
            assert!(!is_valid_prefix(bad), "{bad}");
        }
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
            let _ = Secret::<Refresh>::check_format(&text);
        }
    }
}
