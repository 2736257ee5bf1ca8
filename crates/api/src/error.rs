//! Errors at the HTTP edge.
//!
//! Policy: domain crates return typed `thiserror` enums that each name a stable
//! [`Code`], declared once in the kernel with its string, kind and title; this module owns
//! the one table that maps a kind to an HTTP status, and answers every error as an RFC 9457
//! `application/problem+json` body carrying the code, or, on OAuth endpoints
//! ([`ApiError::for_oauth`]), as RFC 6749 §5.2 error JSON, whose `error` follows from the
//! kind too ([`oauth_error_of`]).
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
use d2_kernel::{Code, ErrorChain, ErrorCode, ErrorKind};
use serde::Serialize;
use utoipa::ToSchema;

/// The one table: each kind of error answers one status. Codes carry their kind and
/// title (`d2_kernel::Code`), so a new code needs nothing here.
pub const fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Gone => StatusCode::GONE,
        ErrorKind::PaymentRequired => StatusCode::PAYMENT_REQUIRED,
        ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The RFC 6749 `error` of each kind, for OAuth endpoints: the registered values clients
/// switch on. Codes that need a more precise one (`invalid_grant`, `unsupported_grant_type`)
/// are answered with it by the endpoint that knows.
pub const fn oauth_error_of(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Unauthenticated => "invalid_client",
        ErrorKind::Forbidden => "unauthorized_client",
        ErrorKind::RateLimited | ErrorKind::Unavailable => "temporarily_unavailable",
        ErrorKind::Internal => "server_error",
        ErrorKind::BadRequest
        | ErrorKind::NotFound
        | ErrorKind::MethodNotAllowed
        | ErrorKind::Conflict
        | ErrorKind::Gone
        | ErrorKind::PaymentRequired
        | ErrorKind::PayloadTooLarge
        | ErrorKind::UnsupportedMediaType => "invalid_request",
    }
}

/// How an error is written: a problem document, or RFC 6749 error JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ErrorFormat {
    Problem,
    OAuth,
}

/// An RFC 6749 §5.2 error response, with the D2 code beside the registered one.
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthError {
    pub error: &'static str,
    pub error_description: String,
    /// The D2 code, as in problem documents.
    pub code: &'static str,
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
    /// What some codes add for the caller to act on (`not_eligible`: `limit`, `allowed`,
    /// `used`, `requested`, `upgrades`).
    #[serde(flatten)]
    #[schema(inline)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

pub struct ApiError {
    code: Code,
    detail: String,
    details: Option<Box<serde_json::Map<String, serde_json::Value>>>,
    source: Option<Box<dyn StdError + Send + Sync>>,
    rate_limit: Option<RateLimit>,
    format: ErrorFormat,
}

impl ApiError {
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            details: None,
            source: None,
            rate_limit: None,
            format: ErrorFormat::Problem,
        }
    }

    /// The same error, answered as RFC 6749 error JSON (OAuth endpoints).
    #[must_use]
    pub fn for_oauth(self) -> Self {
        Self {
            format: ErrorFormat::OAuth,
            ..self
        }
    }

    /// The RFC 6749 `error` this error answers on an OAuth endpoint: the code itself for
    /// the codes that are RFC 6749 errors, else the one its kind answers.
    pub fn oauth_error(&self) -> &'static str {
        match self.code {
            Code::InvalidOAuthRequest
            | Code::InvalidClient
            | Code::InvalidGrant
            | Code::UnauthorizedClient
            | Code::UnsupportedGrantType
            | Code::InvalidScope
            | Code::InvalidTarget
            | Code::InvalidDpopProof
            | Code::InvalidToken
            | Code::InvalidRedirectUri
            | Code::InvalidClientMetadata
            | Code::RegistrationDisabled => self.code.as_str(),
            _ => oauth_error_of(self.code.kind()),
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
        status_of(self.code.kind())
    }
}

impl<E: ErrorCode + Send + Sync + 'static> From<E> for ApiError {
    fn from(error: E) -> Self {
        Self {
            code: error.code(),
            detail: error.to_string(),
            details: error.details().map(Box::new),
            rate_limit: error.rate_limit(),
            source: Some(Box::new(error)),
            format: ErrorFormat::Problem,
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

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        let (status, title) = (status_of(self.code.kind()), self.code.title());
        let detail = if status.is_server_error() {
            let cause = self
                .source
                .as_deref()
                .map_or_else(|| self.detail.clone(), |s| ErrorChain(s).to_string());
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
        let mut response = HttpResponse::build(status);
        if status == StatusCode::UNAUTHORIZED {
            let challenge = match self.code {
                // RFC 6749 §5.2: the scheme clients authenticate with at OAuth endpoints.
                Code::InvalidClient => "Basic realm=\"d2\"",
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
        match self.format {
            ErrorFormat::Problem => {
                response
                    .content_type("application/problem+json")
                    .json(Problem {
                        kind: format!("urn:d2:problem:{}", self.code.as_str()),
                        title,
                        status: status.as_u16(),
                        detail,
                        code: self.code.as_str(),
                        extensions: self.details.as_deref().cloned().unwrap_or_default(),
                    })
            }
            // RFC 6749 §5.1: responses carrying credentials or their errors are not stored.
            ErrorFormat::OAuth => response
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .insert_header((header::PRAGMA, "no-cache"))
                .json(OAuthError {
                    error: self.oauth_error(),
                    error_description: detail,
                    code: self.code.as_str(),
                }),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(response: HttpResponse) -> serde_json::Value {
        let bytes = actix_web::body::to_bytes(response.into_body())
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[actix_web::test]
    async fn an_error_answers_a_problem_or_on_oauth_endpoints_rfc_6749_json() {
        let problem = ApiError::new(Code::InvalidToken, "the token is malformed").error_response();
        assert_eq!(problem.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            problem.headers().get(header::CONTENT_TYPE).unwrap(),
            "application/problem+json"
        );
        assert_eq!(body_of(problem).await["code"], "invalid_token");

        let oauth = ApiError::new(Code::InvalidToken, "the token is malformed")
            .for_oauth()
            .error_response();
        assert_eq!(oauth.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            oauth.headers().get(header::CACHE_CONTROL).unwrap(),
            "no-store"
        );
        assert!(oauth.headers().contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(
            body_of(oauth).await,
            serde_json::json!({
                "error": "invalid_token",
                "error_description": "the token is malformed",
                "code": "invalid_token",
            })
        );
        let internal = ApiError::new(Code::Internal, "pool exhausted: secret detail")
            .for_oauth()
            .error_response();
        let body = body_of(internal).await;
        assert_eq!(body["error"], "server_error");
        assert!(
            !body.to_string().contains("secret detail"),
            "causes are logged, never sent: {body}"
        );
    }

    #[test]
    fn every_code_has_a_distinct_string_and_a_title() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            assert!(seen.insert(code.as_str()), "{} twice", code.as_str());
            assert!(!code.title().is_empty());
        }
    }
}

/// The lists of `docs/api.md` that mirror a declaration in code.
#[cfg(test)]
mod reference {
    use super::*;

    const API_MD: &str = include_str!("../../../docs/api.md");

    /// The text of the section of `docs/api.md` under `## {title}`.
    fn section(title: &str) -> &'static str {
        let start = API_MD
            .split_once(&format!("\n## {title}\n"))
            .unwrap_or_else(|| panic!("docs/api.md has no section {title}"))
            .1;
        start.split("\n## ").next().unwrap_or(start)
    }

    /// The first cell of each table row whose first cell is code: `| `x` | ...`.
    fn first_cells(text: &str) -> Vec<&str> {
        text.lines()
            .filter_map(|line| line.strip_prefix("| `")?.split_once('`'))
            .map(|(name, _)| name)
            .collect()
    }

    /// Every code with the status it answers, and nothing else.
    #[test]
    fn every_code_is_listed_with_its_status() {
        let rows: Vec<(&str, &str)> = section("Errors")
            .lines()
            .filter_map(|line| {
                let (code, rest) = line.strip_prefix("| `")?.split_once('`')?;
                Some((code, rest.strip_prefix(" | ")?.split(" | ").next()?))
            })
            .collect();
        let declared: Vec<(&str, String)> = Code::ALL
            .iter()
            .map(|code| (code.as_str(), status_of(code.kind()).as_u16().to_string()))
            .collect();
        for (code, status) in &declared {
            assert!(
                rows.contains(&(code, status.as_str())),
                "docs/api.md, Errors: no row `{code}` | {status}"
            );
        }
        for (code, _) in &rows {
            assert!(
                declared.iter().any(|(known, _)| known == code),
                "docs/api.md lists `{code}`, which no error has"
            );
        }
    }

    #[test]
    fn every_audit_action_is_listed_and_nothing_else() {
        let listed = first_cells(section("Audit actions"));
        let declared: Vec<&str> = d2_audit::AuditAction::ALL
            .iter()
            .map(|action| action.as_str())
            .collect();
        assert_eq!(listed, declared);
    }

    #[test]
    fn every_scope_is_named_in_the_scopes_section() {
        let text = section("Scopes");
        for scope in d2_kernel::Scope::ALL {
            assert!(
                text.contains(&format!("`{scope}`")),
                "docs/api.md, Scopes: `{scope}` missing"
            );
        }
    }
}
