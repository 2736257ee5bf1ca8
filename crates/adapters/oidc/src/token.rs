//! The compact JWS form of a token, taken apart before anything in it is trusted.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use d2_members::IdentityError;
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::keys::Alg;

/// Longer tokens are refused unread. Provider tokens are a few KiB at most.
pub(crate) const MAX_TOKEN_LEN: usize = 16 * 1024;

/// A token's three segments, still encoded.
#[derive(Debug)]
pub(crate) struct Compact<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
    /// `header.payload`: what the signature signs.
    pub(crate) signing_input: &'a str,
}

/// The header parameters that decide how a token is checked. Anything else in the header
/// (`jwk`, `jku`, `x5u`, `x5c`, `typ`, ...) is ignored: keys come only from the provider's
/// published set.
#[derive(Debug)]
pub(crate) struct Header {
    pub(crate) alg: Alg,
    pub(crate) kid: Option<String>,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

const fn invalid(reason: &'static str) -> IdentityError {
    IdentityError::Invalid(reason)
}

fn is_base64url(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'
}

/// Splits a compact JWS: three non-empty base64url segments, `MAX_TOKEN_LEN` bytes at most.
/// One pass over the bytes, no allocation.
pub(crate) fn split(token: &str) -> Result<Compact<'_>, IdentityError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(invalid("token too long"));
    }
    let mut dots = [0_usize; 2];
    let mut count = 0_usize;
    for (position, &byte) in token.as_bytes().iter().enumerate() {
        if byte == b'.' {
            let Some(slot) = dots.get_mut(count) else {
                return Err(invalid("malformed token"));
            };
            *slot = position;
            count = count.saturating_add(1);
        } else if !is_base64url(byte) {
            return Err(invalid("malformed token"));
        }
    }
    let [first, second] = dots;
    if count != 2 {
        return Err(invalid("malformed token"));
    }
    // The dots are ASCII, so every bound is a character boundary.
    let header = token.get(..first).unwrap_or_default();
    let payload = token
        .get(first.saturating_add(1)..second)
        .unwrap_or_default();
    let signature = token.get(second.saturating_add(1)..).unwrap_or_default();
    let signing_input = token.get(..second).unwrap_or_default();
    if header.is_empty() || payload.is_empty() || signature.is_empty() {
        return Err(invalid("malformed token"));
    }
    Ok(Compact {
        header,
        payload,
        signature,
        signing_input,
    })
}

/// base64url without padding, canonical (no stray bits).
fn decode(segment: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(segment).ok()
}

impl Compact<'_> {
    /// The header, and whether its algorithm is one accepted.
    pub(crate) fn header(&self) -> Result<Header, IdentityError> {
        let bytes = decode(self.header).ok_or(invalid("malformed token header"))?;
        // serde reads a struct from an array too (`["RS256"]`); a header is an object.
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            return Err(invalid("malformed token header"));
        }
        let raw: RawHeader =
            serde_json::from_slice(&bytes).map_err(|_| invalid("malformed token header"))?;
        let alg = Alg::from_name(&raw.alg).ok_or(invalid("unsupported algorithm"))?;
        if raw.crit.is_some() {
            // No extension is understood, so none may be critical (RFC 7515, 4.1.11).
            return Err(invalid("unsupported critical header parameter"));
        }
        Ok(Header { alg, kid: raw.kid })
    }

    /// The header as a JSON object, read as it is (a DPoP proof's: its `jwk` is the key).
    pub(crate) fn header_map(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        serde_json::from_slice(&decode(self.header)?).ok()
    }

    pub(crate) fn signature(&self) -> Result<Vec<u8>, IdentityError> {
        decode(self.signature).ok_or(invalid("malformed token signature"))
    }

    pub(crate) fn payload(&self) -> Result<Vec<u8>, IdentityError> {
        decode(self.payload).ok_or(invalid("malformed token claims"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[expect(clippy::panic, reason = "a test helper")]
    fn reason(token: &str) -> &'static str {
        match split(token).and_then(|compact| compact.header()) {
            Err(IdentityError::Invalid(reason)) => reason,
            other => panic!("{other:?}"),
        }
    }

    fn encoded(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn only_three_nonempty_base64url_segments_pass() {
        for token in [
            "", "a", "a.b", "a.b.c.d", ".b.c", "a..c", "a.b.", "a.b.c=", "a.b+.c", "a.b.c ",
            "a.b/c.d", "é.b.c",
        ] {
            assert_eq!(reason(token), "malformed token", "{token:?}");
        }
        let compact = split("aaa.bb.c").unwrap();
        assert_eq!(
            (compact.header, compact.payload, compact.signature),
            ("aaa", "bb", "c")
        );
        assert_eq!(compact.signing_input, "aaa.bb");
        assert_eq!(reason(&"a".repeat(MAX_TOKEN_LEN + 1)), "token too long");
    }

    #[test]
    fn headers_name_an_accepted_algorithm_and_nothing_critical() {
        let token = |header: &str| format!("{}.e30.c2ln", encoded(header));
        for header in [
            r#"{"alg":"none"}"#,
            r#"{"alg":"HS256"}"#,
            r#"{"alg":"rs256"}"#,
            r#"{"alg":"PS256"}"#,
            r#"{"alg":"ES384"}"#,
        ] {
            assert_eq!(reason(&token(header)), "unsupported algorithm", "{header}");
        }
        for header in [
            r#"{}"#,
            r#"[]"#,
            r#"["RS256"]"#,
            r#" ["RS256", "kid"]"#,
            r#"{"alg":1}"#,
            r#"{"alg":"RS256","kid":1}"#,
            r#"{"alg":"RS256","alg":"none"}"#,
            "not json",
        ] {
            assert_eq!(reason(&token(header)), "malformed token header", "{header}");
        }
        assert_eq!(
            reason(&token(r#"{"alg":"RS256","crit":["b64"],"b64":false}"#)),
            "unsupported critical header parameter"
        );
        let header = split(&token(r#"{"alg":"EdDSA","kid":"k","typ":"JWT","jku":"x"}"#))
            .unwrap()
            .header()
            .unwrap();
        assert_eq!(header.alg, Alg::EdDsa);
        assert_eq!(header.kid.as_deref(), Some("k"));
    }
}
