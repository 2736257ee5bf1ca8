//! The names of the headers the API reads and writes beyond the standard ones, as
//! constants: a name given as text is parsed again on every use.

use actix_web::http::header::{HeaderName, HeaderValue};

pub const API_KEY: HeaderName = HeaderName::from_static("x-api-key");
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const POLL_SECONDS: HeaderName = HeaderName::from_static("x-d2-poll-seconds");
pub const KEY_ID: HeaderName = HeaderName::from_static("x-d2-key-id");
pub const SIGNATURE: HeaderName = HeaderName::from_static("x-d2-signature");
pub const NEXT_CURSOR: HeaderName = HeaderName::from_static("x-next-cursor");
pub const RATE_LIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub const RATE_LIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub const RATE_LIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
/// The agent runtime's credential header (the same tokens as `Authorization`).
pub const AGENT_TOKEN: HeaderName = HeaderName::from_static("x-agent-token");
/// The account a signed-in person acts in, on routes without one in the path.
pub const ORG_ID: HeaderName = HeaderName::from_static("x-org-id");

/// A header's value as text, when it is ASCII: what `HeaderValue::to_str` answers for a
/// value read from the wire (which holds no control characters), checked a word at a time
/// where `to_str` looks at each byte in turn (a tenth of the instructions on a credential or
/// an `ETag`, read on every authenticated request and every poll).
pub fn text(value: &HeaderValue) -> Option<&str> {
    let bytes = value.as_bytes();
    if bytes.is_ascii() {
        std::str::from_utf8(bytes).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_answers_what_to_str_answers() {
        let values = [
            HeaderValue::from_static("Bearer d2_abc"),
            HeaderValue::from_static("\"sha256:0f\"\t, W/\"x\""),
            HeaderValue::from_static(""),
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
            HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
            HeaderValue::from_bytes(&[b'a'; 300]).unwrap(),
        ];
        for value in &values {
            assert_eq!(text(value), value.to_str().ok(), "{value:?}");
        }
    }
}
