//! The secret of an API token: the kernel's [secret format](d2_kernel::secret) with the
//! prefix `d2_`, and the names this crate's users know it by.

use d2_kernel::secret::{Secret, SecretFormat};

pub use d2_kernel::secret::{
    MalformedSecret as MalformedToken, Pepper, RandomnessUnavailable, SecretDigest as TokenDigest,
    WeakPepper,
};

/// The format of API token secrets: `d2_` + 43 characters of URL-safe base64 + a
/// 6-character checksum. SDKs and secret scanners know it: it never changes.
#[derive(Debug)]
pub enum ApiTokenFormat {}

impl SecretFormat for ApiTokenFormat {
    const NAME: &'static str = "TokenSecret";
    const PREFIX: &'static str = "d2_";
}

/// An API token's secret.
pub type TokenSecret = Secret<ApiTokenFormat>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_tokens_have_the_documented_shape() {
        let secret = TokenSecret::generate().unwrap();
        assert_eq!(TokenSecret::LENGTH, 52);
        assert_eq!(secret.expose().len(), 52);
        assert!(secret.expose().starts_with("d2_"));
        assert!(TokenSecret::check_format(secret.expose()).is_ok());
        assert_eq!(format!("{secret:?}"), "TokenSecret(d2_…redacted)");
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
        assert_eq!(pepper.digest_text(TEXT).as_bytes(), &DIGEST);

        // The last character is the checksum's: one change and the text is refused.
        let typo = TEXT.replace("dQ", "dR");
        assert_eq!(TokenSecret::check_format(&typo), Err(MalformedToken));
    }
}
