//! Request-body and parameter extraction that answers every mistake as a problem.

use actix_web::dev::Payload;
use actix_web::error::{PathError, PayloadError, QueryPayloadError};
use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{FromRequest, HttpRequest};
use d2_kernel::Code;
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub fn is_json(req: &HttpRequest) -> bool {
    match req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(crate::headers::text)
    {
        // No declared type: read the body as JSON anyway.
        None => true,
        Some(value) => {
            let essence = value
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            essence == "application/json" || essence.ends_with("+json")
        }
    }
}

fn payload_error(error: &actix_web::Error) -> ApiError {
    match error.as_error::<PayloadError>() {
        Some(PayloadError::Overflow) => ApiError::new(
            Code::PayloadTooLarge,
            "the request body is larger than this route accepts",
        ),
        _ => ApiError::new(Code::MalformedRequest, "the request body could not be read"),
    }
}

/// Reads the body as a JSON object; `None` when it is empty.
fn read<T: DeserializeOwned + 'static>(
    req: &HttpRequest,
    payload: &mut Payload,
) -> LocalBoxFuture<'static, Result<Option<T>, ApiError>> {
    let json = is_json(req);
    let bytes = Bytes::from_request(req, payload);
    Box::pin(async move {
        let bytes = bytes.await.map_err(|e| payload_error(&e))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        if !json {
            return Err(ApiError::new(
                Code::UnsupportedMediaType,
                "send the body as JSON (Content-Type: application/json)",
            ));
        }
        // Every body read here is an object: serde also reads a struct from an array of its
        // fields in order, which no schema admits (`[null, null]` would clear both fields of
        // a token's change).
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::new(
                Code::InvalidBody,
                "the JSON body must be an object",
            ));
        }
        let body = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(Code::InvalidBody, format!("the JSON body is invalid: {e}"))
        })?;
        refuse_nul(&bytes)?;
        Ok(Some(body))
    })
}

/// A required JSON body.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = read::<T>(req, payload);
        Box::pin(async move {
            body.await?
                .map(Json)
                .ok_or_else(|| ApiError::new(Code::InvalidBody, "a JSON body is required"))
        })
    }
}

/// A JSON body that may be absent (or empty).
#[derive(Debug)]
pub struct OptionalJson<T>(pub Option<T>);

impl<T: DeserializeOwned + 'static> FromRequest for OptionalJson<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = read::<T>(req, payload);
        Box::pin(async move { body.await.map(OptionalJson) })
    }
}

/// Reads a raw body of at most `limit` bytes; a larger one is refused with `code` as soon
/// as it passes the limit, unread beyond it.
pub async fn read_capped(
    mut payload: actix_web::web::Payload,
    limit: usize,
    code: Code,
) -> Result<Bytes, ApiError> {
    use futures_util::StreamExt as _;
    let mut body = actix_web::web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| {
            ApiError::new(Code::MalformedRequest, "the request body could not be read")
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::new(
                code,
                format!("the request body is larger than this route accepts ({limit} bytes)"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    refuse_nul(&body)?;
    Ok(body.freeze())
}

/// Refuses a body holding U+0000, raw or as the JSON escape `\u0000`, with 400
/// `invalid_text`.
///
/// No store keeps NUL in text (PostgreSQL refuses it in `text` and `jsonb`, so it used to
/// surface as a 500 after part of a request's work), and no name, policy or event needs
/// it. Every request body is read by [`read`] (typed JSON bodies) or [`read_capped`] (raw
/// bodies: events, policies), so checking the bytes here covers every route and every
/// field, including free-form payloads, at one place and before anything is parsed or
/// stored; checking in each domain type would miss the free-form ones. The scan steps over
/// escape pairs, so an escaped backslash followed by `u0000` (the text `\u0000`) passes.
/// YAML policies can also spell NUL as `\0`, `\x00` or `\U00000000`, escapes only inside
/// double quotes: the policy parser refuses those after parsing, with the same code.
fn refuse_nul(bytes: &[u8]) -> Result<(), ApiError> {
    if has_nul(bytes) {
        return Err(ApiError::new(
            Code::InvalidText,
            "the body contains a NUL character (U+0000, or the escape \\u0000), which no text may contain",
        ));
    }
    Ok(())
}

fn has_nul(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    while let Some(at) = rest.iter().position(|b| *b == b'\\' || *b == 0) {
        let (Some(found), Some(after)) = (rest.get(at), rest.get(at + 1..)) else {
            return false;
        };
        if *found == 0 {
            return true;
        }
        // A backslash: `\u0000` is NUL; any other escape is stepped over whole.
        if after.starts_with(b"u0000") {
            return true;
        }
        rest = after.get(1..).unwrap_or_default();
    }
    false
}

/// The request's `Content-Length`, when it is a number.
pub fn content_length(req: &HttpRequest) -> Option<usize> {
    req.headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(crate::headers::text)
        .and_then(|v| v.parse().ok())
}

/// A field of a change (`PATCH`) where `null` clears the value: absent is `None`, `null`
/// is `Some(None)`. Use with `#[serde(default, deserialize_with = "present")]`.
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(deserializer).map(Some)
}

/// Parses a JSON body read with [`read_capped`].
pub fn json_of<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(Code::InvalidBody, "a JSON body is required"));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(Code::InvalidBody, format!("the JSON body is invalid: {e}")))
}

/// Handlers for actix's own `Path` and `Query` extractors.
pub fn path_error(error: PathError, req: &HttpRequest) -> actix_web::Error {
    if let Some(response) = crate::methods::shadowed(req) {
        return actix_web::error::InternalError::from_response(error, response).into();
    }
    ApiError::new(
        Code::InvalidPath,
        format!("a path parameter is invalid: {error}"),
    )
    .into()
}

pub fn query_error(error: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::new(
        Code::InvalidQuery,
        format!("the query string is invalid: {error}"),
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::has_nul;

    #[test]
    fn nul_is_found_raw_and_escaped_but_not_in_escaped_backslashes() {
        assert!(has_nul(br#"{"name": "a\u0000b"}"#));
        assert!(has_nul(b"{\"name\": \"a\0b\"}"));
        assert!(has_nul(br#"{"name": "a\\\u0000b"}"#));
        assert!(has_nul(br#"{"\u0000": 1}"#));
        assert!(!has_nul(br#"{"name": "a\\u0000b"}"#));
        assert!(!has_nul(br#"{"name": "a\u0001b \\ \" \n"}"#));
        assert!(!has_nul(br#"{"name": "trailing\"#));
        assert!(!has_nul(b""));
    }
}
