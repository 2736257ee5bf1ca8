//! Errors at the HTTP edge.
//!
//! Policy: domain crates return typed `thiserror` enums that each name a stable
//! [`Code`]; this module owns the one table that maps a code to an HTTP status and a title,
//! and answers every error as an RFC 9457 `application/problem+json` body carrying the code.
//! Client errors (4xx) show the domain error's message, which describes the caller's
//! mistake. Server errors (5xx) show a generic message; their cause chain is logged once,
//! here, and never sent. Store outages are 503 with `Retry-After`; every 401 carries
//! `WWW-Authenticate: Bearer`.

use std::error::Error as StdError;
use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, HttpResponseBuilder, ResponseError};
use d2_kernel::limit::RateLimit;
use d2_kernel::{Code, ErrorCode};
use serde::Serialize;
use utoipa::ToSchema;

/// The one table: code -> (status, title).
pub fn status_of(code: Code) -> (StatusCode, &'static str) {
    match code {
        Code::MalformedRequest => (StatusCode::BAD_REQUEST, "Malformed request"),
        Code::InvalidBody => (StatusCode::BAD_REQUEST, "Invalid request body"),
        Code::InvalidPath => (StatusCode::BAD_REQUEST, "Invalid path parameter"),
        Code::InvalidQuery => (StatusCode::BAD_REQUEST, "Invalid query parameter"),
        Code::InvalidCursor => (StatusCode::BAD_REQUEST, "Invalid cursor"),
        Code::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "Request body too large"),
        Code::UnsupportedMediaType => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported media type")
        }
        Code::InvalidText => (StatusCode::BAD_REQUEST, "NUL character in text"),
        Code::RouteNotFound => (StatusCode::NOT_FOUND, "No such route"),
        Code::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
        Code::MissingAuthorization => (StatusCode::UNAUTHORIZED, "Credentials required"),
        Code::InvalidToken => (StatusCode::UNAUTHORIZED, "Invalid token"),
        Code::TokenExpired => (StatusCode::UNAUTHORIZED, "Token expired"),
        Code::TokenRevoked => (StatusCode::UNAUTHORIZED, "Token revoked"),
        Code::InsufficientScope => (StatusCode::FORBIDDEN, "Insufficient scope"),
        Code::AccountMismatch => (StatusCode::FORBIDDEN, "Another account's resource"),
        Code::InvalidControlPlaneToken => (StatusCode::UNAUTHORIZED, "Invalid control-plane token"),
        Code::BootstrapDisabled => (StatusCode::NOT_FOUND, "Bootstrap disabled"),
        Code::AccountNotFound => (StatusCode::NOT_FOUND, "Account not found"),
        Code::InvalidAccountName => (StatusCode::BAD_REQUEST, "Invalid account name"),
        Code::InvalidSampleRate => (StatusCode::BAD_REQUEST, "Invalid sampling rate"),
        Code::TokenNotFound => (StatusCode::NOT_FOUND, "Token not found"),
        Code::TokenAlreadyRevoked => (StatusCode::GONE, "Token already revoked"),
        Code::TokenAlreadyRotated => (StatusCode::CONFLICT, "Token already rotated"),
        Code::TokenAlreadyExpired => (StatusCode::GONE, "Token already expired"),
        Code::SelfRotationRefused => (StatusCode::FORBIDDEN, "Self-rotation refused"),
        Code::InvalidTokenRequest => (StatusCode::BAD_REQUEST, "Invalid token request"),
        Code::InvalidExpiry => (StatusCode::BAD_REQUEST, "Invalid expiry"),
        Code::InvalidPublicKey => (StatusCode::BAD_REQUEST, "Invalid public key"),
        Code::KeyIdMismatch => (StatusCode::BAD_REQUEST, "Key id does not match the key"),
        Code::PublisherKeyRevoked => (StatusCode::FORBIDDEN, "Publisher key revoked"),
        Code::PublisherKeyPending => (StatusCode::FORBIDDEN, "Publisher key awaits approval"),
        Code::PublisherKeyNotFound => (StatusCode::NOT_FOUND, "Publisher key not found"),
        Code::KeyOwnerOrAdminRequired => (
            StatusCode::FORBIDDEN,
            "Only its registrant or an admin may revoke this key",
        ),
        Code::SignatureRequired => (StatusCode::UNAUTHORIZED, "Signature required"),
        Code::UnknownPublisherKey => (StatusCode::FORBIDDEN, "Unknown publisher key"),
        Code::InvalidSignature => (StatusCode::FORBIDDEN, "Invalid signature"),
        Code::PolicyInvalid => (StatusCode::BAD_REQUEST, "Invalid policy"),
        Code::PolicyNotFound => (StatusCode::NOT_FOUND, "Policy not found"),
        Code::PolicyRevoked => (StatusCode::GONE, "Policy revoked"),
        Code::PolicyAlreadyActive => (StatusCode::CONFLICT, "Policy already active"),
        Code::AppRequired => (StatusCode::NOT_FOUND, "App name required"),
        Code::AppMismatch => (StatusCode::BAD_REQUEST, "App name mismatch"),
        Code::EtagMismatch => (StatusCode::CONFLICT, "ETag mismatch"),
        Code::VersionRollback => (StatusCode::CONFLICT, "Version rollback"),
        Code::VersionOutOfRange => (StatusCode::BAD_REQUEST, "Version out of range"),
        Code::IdenticalToVersion => (StatusCode::CONFLICT, "Identical to an earlier version"),
        Code::NoDenyRules => (StatusCode::BAD_REQUEST, "Deny rules dropped"),
        Code::BundleTooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "Bundle too large for the plan",
        ),
        Code::ToolLimit => (StatusCode::PAYMENT_REQUIRED, "Tool limit reached"),
        Code::AppLimit => (StatusCode::PAYMENT_REQUIRED, "App limit reached"),
        Code::Locked => (StatusCode::PAYMENT_REQUIRED, "Account locked"),
        Code::AccountRequired => (StatusCode::BAD_REQUEST, "Account required"),
        Code::EventBatchTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "Event batch too large"),
        Code::TooManyEvents => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "Too many events in one batch",
        ),
        Code::InvalidEvent => (StatusCode::BAD_REQUEST, "Invalid event"),
        Code::MetricsDisabled => (StatusCode::FORBIDDEN, "Metrics disabled"),
        Code::InvalidTimeRange => (StatusCode::BAD_REQUEST, "Invalid time range"),
        Code::Conflict => (StatusCode::CONFLICT, "Conflict"),
        Code::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "Too many requests"),
        Code::ServiceUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "Service unavailable"),
        Code::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "Internal error"),
    }
}

/// Seconds a client should wait after a 503 caused by the store.
const UNAVAILABLE_RETRY_SECONDS: u64 = 5;

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// `urn:d2:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    /// What went wrong, for people. Always a string.
    pub detail: String,
    /// Stable, machine-readable: match on this.
    pub code: &'static str,
}

pub struct ApiError {
    code: Code,
    detail: String,
    source: Option<Box<dyn StdError + Send + Sync>>,
    rate_limit: Option<RateLimit>,
}

impl ApiError {
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            source: None,
            rate_limit: None,
        }
    }

    pub fn rate_limited(info: RateLimit) -> Self {
        Self {
            rate_limit: Some(info),
            ..Self::new(
                Code::RateLimited,
                "too many requests; retry after the time in Retry-After",
            )
        }
    }

    pub fn code(&self) -> Code {
        self.code
    }

    fn status(&self) -> StatusCode {
        status_of(self.code).0
    }
}

impl<E: ErrorCode + Send + Sync + 'static> From<E> for ApiError {
    fn from(error: E) -> Self {
        Self {
            code: error.code(),
            detail: error.to_string(),
            rate_limit: error.rate_limit(),
            source: Some(Box::new(error)),
        }
    }
}

impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiError")
            .field("code", &self.code)
            .field("detail", &self.detail)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

/// The whole cause chain, for the log.
pub(crate) fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        let (status, title) = status_of(self.code);
        let detail = if status.is_server_error() {
            let cause = self
                .source
                .as_deref()
                .map_or_else(|| self.detail.clone(), |s| chain(s));
            if status == StatusCode::SERVICE_UNAVAILABLE {
                tracing::warn!(error.code = self.code.as_str(), error.cause = %cause, "request failed: dependency unavailable");
                "the service is temporarily unavailable; retry later".to_owned()
            } else {
                tracing::error!(error.code = self.code.as_str(), error.cause = %cause, "request failed");
                "the server failed to handle this request".to_owned()
            }
        } else {
            self.detail.clone()
        };
        let problem = Problem {
            kind: format!("urn:d2:problem:{}", self.code.as_str()),
            title,
            status: status.as_u16(),
            detail,
            code: self.code.as_str(),
        };
        let mut response = HttpResponse::build(status);
        response.content_type("application/problem+json");
        if status == StatusCode::UNAUTHORIZED {
            let challenge = match self.code {
                Code::InvalidToken | Code::TokenExpired | Code::TokenRevoked => {
                    "Bearer realm=\"d2\", error=\"invalid_token\""
                }
                _ => "Bearer realm=\"d2\"",
            };
            response.insert_header((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            ));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((header::RETRY_AFTER, UNAVAILABLE_RETRY_SECONDS));
        }
        if let Some(limit) = &self.rate_limit {
            with_rate_limit(&mut response, limit);
        }
        response.json(problem)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// `X-RateLimit-Limit`, `-Remaining` and `-Reset` (seconds until the bucket is full), and
/// `Retry-After` on a refusal: on every answer of a limited route.
pub fn with_rate_limit(response: &mut HttpResponseBuilder, limit: &RateLimit) {
    response.insert_header((crate::headers::RATE_LIMIT_LIMIT, limit.limit));
    response.insert_header((crate::headers::RATE_LIMIT_REMAINING, limit.remaining));
    response.insert_header((crate::headers::RATE_LIMIT_RESET, limit.reset_seconds));
    if !limit.is_allowed() {
        response.insert_header((header::RETRY_AFTER, limit.retry_after_seconds));
    }
}
