//! Stable error codes and the storage error every port shares.
//!
//! Every domain error implements [`ErrorCode`]: it names one [`Code`]. The codes are part
//! of the public API (clients match on them); the HTTP edge maps each to exactly one status
//! in a single table. Domain crates never see an HTTP status.

use std::error::Error as StdError;
use std::fmt;

/// What kind of failure a code is. The HTTP edge answers each kind with one status (and
/// the OAuth endpoints with one RFC 6749 error), so a new code never touches the edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request cannot be used as sent.
    BadRequest,
    /// No credential, or one that is not valid.
    Unauthenticated,
    /// A valid credential that may not do this.
    Forbidden,
    NotFound,
    MethodNotAllowed,
    /// The request collides with the current state.
    Conflict,
    /// What the request names existed and is gone for good.
    Gone,
    /// The plan does not allow it.
    PaymentRequired,
    PayloadTooLarge,
    UnsupportedMediaType,
    RateLimited,
    /// A dependency is unavailable; retrying later may succeed.
    Unavailable,
    /// A bug.
    Internal,
}

/// Declares every error code once: the variant, its wire string, its kind and its title.
macro_rules! error_codes {
    ($($(#[$meta:meta])* $variant:ident = $text:literal, $kind:ident, $title:literal;)+) => {
        /// Every machine-readable error code the API can answer with.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code {
            $($(#[$meta])* $variant,)+
        }

        impl Code {
            /// Every code, in declaration order.
            pub const ALL: &'static [Code] = &[$(Code::$variant),+];

            /// The stable string clients match on.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $text,)+
                }
            }

            pub const fn kind(self) -> ErrorKind {
                match self {
                    $(Code::$variant => ErrorKind::$kind,)+
                }
            }

            /// A short summary for people, the same for every occurrence.
            pub const fn title(self) -> &'static str {
                match self {
                    $(Code::$variant => $title,)+
                }
            }
        }
    };
}

error_codes! {
    // Requests the server cannot read.
    MalformedRequest = "malformed_request", BadRequest, "Malformed request";
    InvalidBody = "invalid_body", BadRequest, "Invalid request body";
    InvalidPath = "invalid_path", BadRequest, "Invalid path parameter";
    InvalidQuery = "invalid_query", BadRequest, "Invalid query parameter";
    InvalidCursor = "invalid_cursor", BadRequest, "Invalid cursor";
    PayloadTooLarge = "payload_too_large", PayloadTooLarge, "Request body too large";
    UnsupportedMediaType = "unsupported_media_type", UnsupportedMediaType, "Unsupported media type";
    /// Text holding U+0000, which no store keeps.
    InvalidText = "invalid_text", BadRequest, "NUL character in text";
    RouteNotFound = "route_not_found", NotFound, "No such route";
    MethodNotAllowed = "method_not_allowed", MethodNotAllowed, "Method not allowed";
    // Authentication and authorisation.
    MissingAuthorization = "missing_authorization", Unauthenticated, "Credentials required";
    InvalidToken = "invalid_token", Unauthenticated, "Invalid token";
    TokenExpired = "token_expired", Unauthenticated, "Token expired";
    TokenRevoked = "token_revoked", Unauthenticated, "Token revoked";
    InsufficientScope = "insufficient_scope", Forbidden, "Insufficient scope";
    AccountMismatch = "account_mismatch", Forbidden, "Another account's resource";
    InvalidControlPlaneToken = "invalid_control_plane_token", Unauthenticated, "Invalid control-plane token";
    BootstrapDisabled = "bootstrap_disabled", NotFound, "Bootstrap disabled";
    // Accounts.
    AccountNotFound = "account_not_found", NotFound, "Account not found";
    InvalidAccountName = "invalid_account_name", BadRequest, "Invalid account name";
    InvalidSampleRate = "invalid_sample_rate", BadRequest, "Invalid sampling rate";
    // Members and roles.
    /// A signed-in person naming an account they are not a member of.
    NotAMember = "not_a_member", Forbidden, "Not a member of this account";
    MemberNotFound = "member_not_found", NotFound, "Member not found";
    InvalidRole = "invalid_role", BadRequest, "Invalid role";
    /// Changing or removing an owner, or making one, without being an owner.
    OwnerRequired = "owner_required", Forbidden, "Only an owner may do this";
    /// The change would leave the account without an owner.
    LastOwner = "last_owner", Conflict, "An account keeps at least one owner";
    MemberLimit = "member_limit", PaymentRequired, "Member limit reached";
    InvalidEmail = "invalid_email", BadRequest, "Invalid email";
    AlreadyMember = "already_member", Conflict, "Already a member";
    AlreadyInvited = "already_invited", Conflict, "Already invited";
    InvitationNotFound = "invitation_not_found", NotFound, "Invitation not found";
    InvitationUsed = "invitation_used", Gone, "Invitation already used";
    InvitationExpired = "invitation_expired", Gone, "Invitation expired";
    /// Accepting with another email than the invited one, or one the provider did not verify.
    InvitationEmailMismatch = "invitation_email_mismatch", Forbidden, "Invitation for another email";
    /// A route for signed-in people, called with an API token.
    UserSessionRequired = "user_session_required", Forbidden, "Sign-in required";
    // Tokens.
    TokenNotFound = "token_not_found", NotFound, "Token not found";
    TokenAlreadyRevoked = "token_already_revoked", Gone, "Token already revoked";
    TokenAlreadyRotated = "token_already_rotated", Conflict, "Token already rotated";
    TokenAlreadyExpired = "token_already_expired", Gone, "Token already expired";
    SelfRotationRefused = "self_rotation_refused", Forbidden, "Self-rotation refused";
    InvalidTokenRequest = "invalid_token_request", BadRequest, "Invalid token request";
    InvalidExpiry = "invalid_expiry", BadRequest, "Invalid expiry";
    /// `assigned_user_id` names nobody who is a member of the account.
    InvalidAssignee = "invalid_assignee", BadRequest, "Invalid assignee";
    // Publisher keys and signatures.
    InvalidPublicKey = "invalid_public_key", BadRequest, "Invalid public key";
    KeyIdMismatch = "key_id_mismatch", BadRequest, "Key id does not match the key";
    PublisherKeyRevoked = "key_revoked", Forbidden, "Publisher key revoked";
    /// Registered while the account requires approval, and not approved yet.
    PublisherKeyPending = "key_pending", Forbidden, "Publisher key awaits approval";
    PublisherKeyNotFound = "key_not_found", NotFound, "Publisher key not found";
    /// Revoking a key another credential registered, without the `admin` scope.
    KeyOwnerOrAdminRequired = "key_owner_or_admin_required", Forbidden, "Only its registrant or an admin may revoke this key";
    SignatureRequired = "signature_required", Unauthenticated, "Signature required";
    UnknownPublisherKey = "unknown_key", Forbidden, "Unknown publisher key";
    InvalidSignature = "invalid_signature", Forbidden, "Invalid signature";
    // Policies.
    PolicyInvalid = "policy_validation_failed", BadRequest, "Invalid policy";
    PolicyNotFound = "policy_not_found", NotFound, "Policy not found";
    PolicyRevoked = "policy_revoked", Gone, "Policy revoked";
    PolicyAlreadyActive = "policy_already_active", Conflict, "Policy already active";
    AppRequired = "app_name_required", NotFound, "App name required";
    AppMismatch = "app_name_mismatch", BadRequest, "App name mismatch";
    EtagMismatch = "etag_mismatch", Conflict, "ETag mismatch";
    VersionRollback = "version_rollback", Conflict, "Version rollback";
    VersionOutOfRange = "version_out_of_range", BadRequest, "Version out of range";
    /// Publishing the content of an earlier version (going back is a revert).
    IdenticalToVersion = "identical_to_version", Conflict, "Identical to an earlier version";
    NoDenyRules = "no_deny_rules", BadRequest, "Deny rules dropped";
    BundleTooLarge = "bundle_too_large", PayloadTooLarge, "Bundle too large for the plan";
    // Plan limits (402: the SDK reads `tool_limit` and `locked`).
    ToolLimit = "tool_limit", PaymentRequired, "Tool limit reached";
    AppLimit = "app_limit", PaymentRequired, "App limit reached";
    TokenLimit = "token_limit", PaymentRequired, "Token limit reached";
    Locked = "locked", PaymentRequired, "Account locked";
    // JWKS.
    AccountRequired = "account_required", BadRequest, "Account required";
    // Events and metrics.
    EventBatchTooLarge = "event_batch_too_large", PayloadTooLarge, "Event batch too large";
    TooManyEvents = "too_many_events", PayloadTooLarge, "Too many events in one batch";
    InvalidEvent = "invalid_event", BadRequest, "Invalid event";
    // Billing.
    /// Webhooks arrive while no signing secret is configured (`billing.webhook_secrets`).
    BillingNotConfigured = "billing_not_configured", NotFound, "Billing webhooks not configured";
    InvalidWebhookSignature = "invalid_webhook_signature", BadRequest, "Invalid webhook signature";
    /// A signed payload that is no event of the payment provider.
    InvalidWebhookEvent = "invalid_webhook_event", BadRequest, "Invalid webhook event";
    /// Not a checkout session id (`cs_...`).
    InvalidCheckout = "invalid_checkout", BadRequest, "Invalid checkout session";
    /// Unknown to the payment provider, or another account's.
    CheckoutNotFound = "checkout_not_found", NotFound, "Checkout not found";
    /// A checkout session not complete and paid (or paid nothing).
    CheckoutIncomplete = "checkout_incomplete", Conflict, "Checkout not paid";
    /// A checkout of credits paid in another currency than credits are sold in.
    CurrencyMismatch = "currency_mismatch", BadRequest, "Currency mismatch";
    /// The payment provider's API did not answer, or not in time.
    PaymentProviderUnavailable = "payment_provider_unavailable", Unavailable, "Payment provider unavailable";
    /// A grant or spend of credits that cannot be (zero, out of range, a bad reason or key).
    InvalidCredits = "invalid_credits", BadRequest, "Invalid credits request";
    InsufficientCredits = "insufficient_credits", PaymentRequired, "Insufficient credits";
    /// A usage report that cannot be recorded (a bad quantity, name, key or batch).
    InvalidUsage = "invalid_usage", BadRequest, "Invalid usage report";
    /// A model with no price in force.
    UnknownModel = "unknown_model", BadRequest, "Unknown model";
    /// An agent operation with no price in force.
    UnknownOperation = "unknown_operation", BadRequest, "Unknown operation";
    ReservationNotFound = "reservation_not_found", NotFound, "Reservation not found";
    /// Work the account may not do now: the problem names the limit, what is used of it,
    /// what was asked and the plans that would allow it.
    NotEligible = "not_eligible", PaymentRequired, "Not eligible";
    /// A budget that cannot be: an amount of 0 or above 10^12, an unknown kind.
    InvalidBudget = "invalid_budget", BadRequest, "Invalid budget";
    BudgetNotFound = "budget_not_found", NotFound, "Budget not found";
    /// A notice endpoint that cannot be: not an absolute `https` URL (`http` only to a
    /// loopback host), with credentials or a fragment, or longer than 2048 bytes.
    InvalidNoticeEndpoint = "invalid_notice_endpoint", BadRequest, "Invalid notice endpoint";
    NoticeEndpointNotFound = "notice_endpoint_not_found", NotFound, "Notice endpoint not found";
    /// A reservation released at its expiry: settling it is too late.
    ReservationExpired = "reservation_expired", Conflict, "Reservation expired";
    /// A reservation settled before, for another amount.
    ReservationSettled = "reservation_settled", Conflict, "Reservation already settled";
    /// An idempotency key used before for a different request.
    IdempotencyKeyReused = "idempotency_key_reused", Conflict, "Idempotency key reused";
    MetricsDisabled = "metrics_disabled", Forbidden, "Metrics disabled";
    InvalidTimeRange = "invalid_time_range", BadRequest, "Invalid time range";
    // Agents (OAuth clients).
    AgentNotFound = "agent_not_found", NotFound, "Agent not found";
    InvalidAgent = "invalid_agent", BadRequest, "Invalid agent";
    /// Unknown, used or expired: one answer.
    RegistrationNotFound = "registration_not_found", NotFound, "Registration not found";
    AgentNotActive = "agent_not_active", Conflict, "Agent not active";
    /// RFC 6749 `invalid_client`: every reason a client is not authenticated.
    InvalidClient = "invalid_client", Unauthenticated, "Client authentication failed";
    // OAuth protocol endpoints: the codes are RFC 6749's `error` values.
    /// A request the endpoint cannot read: a missing or repeated parameter, two client
    /// authentication methods at once (RFC 6749 `invalid_request`).
    InvalidOAuthRequest = "invalid_request", BadRequest, "Invalid OAuth request";
    /// A refresh token (or other grant) that is unknown, expired, revoked, spent or not
    /// the client's.
    InvalidGrant = "invalid_grant", BadRequest, "Invalid grant";
    /// The client may not use this grant type.
    UnauthorizedClient = "unauthorized_client", BadRequest, "Unauthorized client";
    UnsupportedGrantType = "unsupported_grant_type", BadRequest, "Unsupported grant type";
    /// A scope the agent may not have, or one the access rules refused.
    InvalidScope = "invalid_scope", BadRequest, "Invalid scope";
    /// A `resource` (RFC 8707) the agent's tokens may not target.
    InvalidTarget = "invalid_target", BadRequest, "Invalid target";
    /// A DPoP proof (RFC 9449) that is malformed, badly signed, for another request,
    /// replayed, or of another key than the refresh token's.
    InvalidDpopProof = "invalid_dpop_proof", BadRequest, "Invalid DPoP proof";
    /// RFC 7591 §3.2.2: a redirect URI a client registering itself may not have.
    InvalidRedirectUri = "invalid_redirect_uri", BadRequest, "Invalid redirect URI";
    /// RFC 7591 §3.2.2: other client metadata it may not have.
    InvalidClientMetadata = "invalid_client_metadata", BadRequest, "Invalid client metadata";
    /// The account does not let clients register themselves (its client policy).
    RegistrationDisabled = "registration_disabled", Forbidden, "Registration disabled";
    OAuthTokenNotFound = "oauth_token_not_found", NotFound, "OAuth token not found";
    // Principals (the account's end users) and access rules.
    PrincipalNotFound = "principal_not_found", NotFound, "Principal not found";
    InvalidPrincipal = "invalid_principal", BadRequest, "Invalid principal";
    UsernameTaken = "username_taken", Conflict, "Username taken";
    AccessRuleNotFound = "access_rule_not_found", NotFound, "Access rule not found";
    /// The rule does not parse, or breaks a rule of the language; the detail points at the
    /// offending node.
    InvalidAccessRule = "invalid_access_rule", BadRequest, "Invalid access rule";
    AccessRuleNameTaken = "access_rule_name_taken", Conflict, "Access rule name taken";
    AccessRuleLimit = "access_rule_limit", Conflict, "Too many access rules";
    InvalidAccessRequest = "invalid_access_request", BadRequest, "Invalid access request";
    // Delegation grants.
    DelegationNotFound = "delegation_not_found", NotFound, "Delegation grant not found";
    InvalidDelegation = "invalid_delegation", BadRequest, "Invalid delegation grant";
    /// A grant wider than what its grantor holds (or its grantee may have).
    DelegationExceedsGrantor = "delegation_exceeds_grantor", BadRequest, "Delegation grant exceeds what its grantor holds";
    // The OAuth catalog: tools, scopes, the tools bound to agents.
    ToolNotFound = "tool_not_found", NotFound, "Tool not found";
    InvalidTool = "invalid_tool", BadRequest, "Invalid tool";
    /// A tool's `parameters` that is not a JSON Schema (or not one the server can use).
    InvalidToolSchema = "invalid_tool_schema", BadRequest, "Invalid tool parameters schema";
    ToolSchemaTooLarge = "tool_schema_too_large", PayloadTooLarge, "Tool parameters schema too large";
    ToolNameTaken = "tool_name_taken", Conflict, "Tool name already used";
    /// Unbinding a tool the agent is not bound to.
    ToolNotBound = "tool_not_bound", NotFound, "Tool not bound to the agent";
    ScopeNotFound = "scope_not_found", NotFound, "Scope not found";
    InvalidScopeDefinition = "invalid_scope_definition", BadRequest, "Invalid scope definition";
    ScopeNameTaken = "scope_name_taken", Conflict, "Scope name already used";
    /// Scope names the account's catalog does not hold (expanded, implied or required).
    UnknownScopes = "unknown_scopes", BadRequest, "Unknown scopes";
    /// Implied scopes that would lead back to where they start.
    ScopeCycle = "scope_cycle", Conflict, "Implied scopes would form a cycle";
    /// Deleting a scope other scopes imply.
    ScopeImplied = "scope_implied", Conflict, "Scope implied by other scopes";
    ScopeLimit = "scope_limit", Conflict, "Scope catalog full";
    // Generic.
    Conflict = "conflict", Conflict, "Conflict";
    RateLimited = "rate_limited", RateLimited, "Too many requests";
    ServiceUnavailable = "service_unavailable", Unavailable, "Service unavailable";
    Internal = "internal_error", Internal, "Internal error";
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

    /// Members the problem document carries beside its standard ones (RFC 9457
    /// extensions), for a caller to act on: the limit an eligibility refusal names, say.
    fn details(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        None
    }
}

pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// An error and its causes, `: `-separated, for logs and for messages that must carry
/// the whole cause (`format!("{}", ErrorChain(&error))`).
#[derive(Debug)]
pub struct ErrorChain<'a>(pub &'a (dyn StdError + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

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
