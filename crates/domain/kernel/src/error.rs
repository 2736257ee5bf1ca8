//! Stable error codes and the storage error every port shares.
//!
//! Every domain error implements [`ErrorCode`]: it names one [`Code`]. The codes are part
//! of the public API (clients match on them); the HTTP edge maps each to exactly one status
//! in a single table. Domain crates never see an HTTP status.

use std::error::Error as StdError;
use std::fmt;

/// Every machine-readable error code the API can answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    // Requests the server cannot read.
    MalformedRequest,
    InvalidBody,
    InvalidPath,
    InvalidQuery,
    InvalidCursor,
    PayloadTooLarge,
    UnsupportedMediaType,
    /// Text holding U+0000, which no store keeps.
    InvalidText,
    RouteNotFound,
    MethodNotAllowed,
    // Authentication and authorisation.
    MissingAuthorization,
    InvalidToken,
    TokenExpired,
    TokenRevoked,
    InsufficientScope,
    AccountMismatch,
    InvalidControlPlaneToken,
    BootstrapDisabled,
    // Accounts.
    AccountNotFound,
    InvalidAccountName,
    InvalidSampleRate,
    // Tokens.
    TokenNotFound,
    TokenAlreadyRevoked,
    TokenAlreadyRotated,
    TokenAlreadyExpired,
    SelfRotationRefused,
    InvalidTokenRequest,
    InvalidExpiry,
    // Publisher keys and signatures.
    InvalidPublicKey,
    KeyIdMismatch,
    PublisherKeyRevoked,
    /// Registered while the account requires approval, and not approved yet.
    PublisherKeyPending,
    PublisherKeyNotFound,
    /// Revoking a key another credential registered, without the `admin` scope.
    KeyOwnerOrAdminRequired,
    SignatureRequired,
    UnknownPublisherKey,
    InvalidSignature,
    // Policies.
    PolicyInvalid,
    PolicyNotFound,
    PolicyRevoked,
    PolicyAlreadyActive,
    AppRequired,
    AppMismatch,
    EtagMismatch,
    VersionRollback,
    VersionOutOfRange,
    /// Publishing the content of an earlier version (going back is a revert).
    IdenticalToVersion,
    NoDenyRules,
    BundleTooLarge,
    // Plan limits (402: the SDK reads `tool_limit` and `locked`).
    ToolLimit,
    AppLimit,
    Locked,
    // JWKS.
    AccountRequired,
    // Events and metrics.
    EventBatchTooLarge,
    TooManyEvents,
    InvalidEvent,
    MetricsDisabled,
    InvalidTimeRange,
    // Generic.
    Conflict,
    RateLimited,
    ServiceUnavailable,
    Internal,
}

impl Code {
    pub const fn as_str(self) -> &'static str {
        match self {
            Code::MalformedRequest => "malformed_request",
            Code::InvalidBody => "invalid_body",
            Code::InvalidPath => "invalid_path",
            Code::InvalidQuery => "invalid_query",
            Code::InvalidCursor => "invalid_cursor",
            Code::PayloadTooLarge => "payload_too_large",
            Code::UnsupportedMediaType => "unsupported_media_type",
            Code::InvalidText => "invalid_text",
            Code::RouteNotFound => "route_not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::MissingAuthorization => "missing_authorization",
            Code::InvalidToken => "invalid_token",
            Code::TokenExpired => "token_expired",
            Code::TokenRevoked => "token_revoked",
            Code::InsufficientScope => "insufficient_scope",
            Code::AccountMismatch => "account_mismatch",
            Code::InvalidControlPlaneToken => "invalid_control_plane_token",
            Code::BootstrapDisabled => "bootstrap_disabled",
            Code::AccountNotFound => "account_not_found",
            Code::InvalidAccountName => "invalid_account_name",
            Code::InvalidSampleRate => "invalid_sample_rate",
            Code::TokenNotFound => "token_not_found",
            Code::TokenAlreadyRevoked => "token_already_revoked",
            Code::TokenAlreadyRotated => "token_already_rotated",
            Code::TokenAlreadyExpired => "token_already_expired",
            Code::SelfRotationRefused => "self_rotation_refused",
            Code::InvalidTokenRequest => "invalid_token_request",
            Code::InvalidExpiry => "invalid_expiry",
            Code::InvalidPublicKey => "invalid_public_key",
            Code::KeyIdMismatch => "key_id_mismatch",
            Code::PublisherKeyRevoked => "key_revoked",
            Code::PublisherKeyPending => "key_pending",
            Code::PublisherKeyNotFound => "key_not_found",
            Code::KeyOwnerOrAdminRequired => "key_owner_or_admin_required",
            Code::SignatureRequired => "signature_required",
            Code::UnknownPublisherKey => "unknown_key",
            Code::InvalidSignature => "invalid_signature",
            Code::PolicyInvalid => "policy_validation_failed",
            Code::PolicyNotFound => "policy_not_found",
            Code::PolicyRevoked => "policy_revoked",
            Code::PolicyAlreadyActive => "policy_already_active",
            Code::AppRequired => "app_name_required",
            Code::AppMismatch => "app_name_mismatch",
            Code::EtagMismatch => "etag_mismatch",
            Code::VersionRollback => "version_rollback",
            Code::VersionOutOfRange => "version_out_of_range",
            Code::IdenticalToVersion => "identical_to_version",
            Code::NoDenyRules => "no_deny_rules",
            Code::BundleTooLarge => "bundle_too_large",
            Code::ToolLimit => "tool_limit",
            Code::AppLimit => "app_limit",
            Code::Locked => "locked",
            Code::AccountRequired => "account_required",
            Code::EventBatchTooLarge => "event_batch_too_large",
            Code::TooManyEvents => "too_many_events",
            Code::InvalidEvent => "invalid_event",
            Code::MetricsDisabled => "metrics_disabled",
            Code::InvalidTimeRange => "invalid_time_range",
            Code::Conflict => "conflict",
            Code::RateLimited => "rate_limited",
            Code::ServiceUnavailable => "service_unavailable",
            Code::Internal => "internal_error",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error that carries a stable code. Its `Display` text is shown to clients for 4xx
/// codes, so it must describe the caller's mistake and never include internals.
pub trait ErrorCode: StdError {
    fn code(&self) -> Code;

    /// For `RateLimited`: where the caller's bucket stands.
    fn rate_limit(&self) -> Option<crate::limit::RateLimit> {
        None
    }
}

pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A failure of a storage adapter. Port methods return it for everything that is not a
/// domain outcome (not found, conflict, ...): those are values, not errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached right now (pool exhausted, connection lost, timeout).
    /// Retrying later may succeed.
    #[error("the store is unavailable")]
    Unavailable(#[source] BoxError),
    /// A unique constraint was violated.
    #[error("a conflicting record exists")]
    Conflict(#[source] BoxError),
    /// Anything else: a bug or a corrupt record.
    #[error("the store failed")]
    Internal(#[source] BoxError),
}

impl StoreError {
    pub fn internal(error: impl Into<BoxError>) -> Self {
        Self::Internal(error.into())
    }

    pub fn corrupt(what: impl Into<String>) -> Self {
        Self::Internal(what.into().into())
    }
}

impl ErrorCode for StoreError {
    fn code(&self) -> Code {
        match self {
            StoreError::Unavailable(_) => Code::ServiceUnavailable,
            StoreError::Conflict(_) => Code::Conflict,
            StoreError::Internal(_) => Code::Internal,
        }
    }
}

impl ErrorCode for crate::page::PageError {
    fn code(&self) -> Code {
        match self {
            crate::page::PageError::InvalidCursor => Code::InvalidCursor,
            crate::page::PageError::InvalidLimit { .. } => Code::InvalidQuery,
        }
    }
}
