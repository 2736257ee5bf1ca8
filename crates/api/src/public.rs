//! `/public/*`: routes any web page may call (the acceptance page of invitations, the API
//! description), as in seeds 000 and 001. Their CORS allows every origin without
//! credentials (`Access-Control-Allow-Origin: *`), whatever `http.cors.allowed_origins`
//! says for the rest of the API: a browser never sends cookies or reads a credentialed
//! answer through them. [`crate::observe::Observe`] applies it, inside the request's scope.

use actix_web::HttpResponse;
use actix_web::dev::ServiceRequest;
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderMap, HeaderValue};

/// The prefix of the public routes.
pub const PREFIX: &str = "/public/";

const ALLOWED_METHODS: HeaderValue = HeaderValue::from_static("GET, POST, OPTIONS");
const ALLOWED_HEADERS: HeaderValue =
    HeaderValue::from_static("authorization, content-type, x-request-id");
const EXPOSED: HeaderValue = HeaderValue::from_static("Retry-After, X-Request-Id");
const MAX_AGE: HeaderValue = HeaderValue::from_static("3600");

/// What the CORS of `/public/*` does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicCors {
    /// Not a cross-origin call of `/public/*`: passed through untouched.
    None,
    /// A preflight of `/public/*`: answered here, by [`preflight`].
    Preflight,
    /// A cross-origin call of `/public/*`: its answer is marked readable by
    /// [`mark_readable`].
    Readable,
}

impl PublicCors {
    pub fn of(req: &ServiceRequest) -> Self {
        if !req.path().starts_with(PREFIX) || !req.headers().contains_key(header::ORIGIN) {
            return Self::None;
        }
        let preflight = req.method() == Method::OPTIONS
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if preflight {
            Self::Preflight
        } else {
            Self::Readable
        }
    }
}

/// The answer to a preflight of `/public/*`.
pub fn preflight() -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, ALLOWED_METHODS))
        .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOWED_HEADERS))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, MAX_AGE))
        .finish()
}

/// Marks an answer of `/public/*` readable by any origin, without credentials.
pub fn mark_readable(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED);
    headers.remove(header::ACCESS_CONTROL_ALLOW_CREDENTIALS);
}
