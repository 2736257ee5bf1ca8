#![doc = include_str!("../README.md")]
#![deny(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

mod access;
#[cfg(test)]
mod access_tests;
pub mod admin;
mod agent;
mod assertion;
mod authorization;
mod authorizations;
pub mod catalog;
pub mod client_documents;
#[cfg(test)]
mod client_documents_tests;
mod delegation;
mod delegations;
#[cfg(test)]
mod delegations_tests;
mod dpop;
mod entitlement;
mod error;
mod issuer;
pub mod jobs;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
mod ports;
mod principal;
mod principals;
pub mod registration;
#[cfg(test)]
mod registration_tests;
mod revocations;
pub mod rules;
mod service;
#[cfg(test)]
mod tests;
mod token;

pub use access::AccessRules;
pub use admin::{AdminError, Dashboard, OAuthAdmin, TaskLink, TaskView};
pub use agent::{
    Agent, AgentId, AgentSpec, AgentState, AuthMethod, ClientSecret, ClientSecretFormat,
    ClientSecrets, PendingRegistration, REGISTRATION_LIFETIME_HOURS, RegistrationFormat,
    RegistrationToken, UnknownAgentState, UnknownAuthMethod, limits,
};
pub use assertion::{AssertionVerifier, CLIENT_ASSERTION_TYPE, assertion_limits};
pub use authorization::{
    AuthorizationCode, AuthorizationCodeFormat, AuthorizationCodeSecret, AuthorizationRequest,
    AuthorizeError, AuthorizeParams, CODE_SECONDS, CONSENT_SECONDS, OPENID, Prompt, Redemption,
    ReturnTo, authorize_errors, authorize_limits,
};
pub use authorizations::{
    Authorizations, CONSENTS_LISTED, ConsentView, PrincipalRefusal, SignedInPerson,
};
pub use catalog::defaults::{DefaultScopes, InvalidDefaultScopes};
pub use catalog::error::CatalogError;
pub use catalog::ports::{
    BindOutcome, ScopePlan, ScopeRepo, ToolAuditOf, ToolRepo, ToolWrite, UnbindOutcome,
};
pub use catalog::scope::{KnownScope, KnownScopes, OAuthScope, ScopeChange, ScopePatch, ScopeSpec};
pub use catalog::scopes::ScopeCatalog;
pub use catalog::tool::{Tool, ToolFilter, ToolId, ToolSpec};
pub use catalog::tools::ToolService;
pub use client_documents::{
    ClientDocument, ClientDocumentError, ClientDocuments, ClientPolicies, ClientPolicy,
    FetchRefusal, MetadataClients, client_id_url, document_limits,
};
pub use delegation::{
    Delegation, DelegationFilter, DelegationId, DelegationRevocation, DelegationSpec,
    DelegationStatus, Grantor, limits as delegation_limits,
};
pub use delegations::{DelegationService, delegation_revocation_reasons};
pub use dpop::{DPOP_ALGORITHMS, DpopProof, DpopVerifier, dpop_limits};
pub use entitlement::{ConsentItems, Described, Entitlements, ToolAccess, ToolAccessReason};
pub use error::{
    AccessRuleError, AgentError, ClientAuthError, ClientRefusal, DelegationError, GrantError,
    PrincipalError,
};
pub use issuer::{
    ACCESS_TOKEN_TYPE, DEFAULT_REFRESH_REPLAY_SECONDS, Introspected, Introspection, JWT_TOKEN_TYPE,
    LineageProblem, TokenIssuer, TokenRecords, TokenRequest, TokenResponse, ToolCheck,
    Verification, actor_claim, issuer_url,
};
pub use ports::{
    AccessRuleRepo, AgentAuditOf, AgentRepo, AuthorizationCodeRepo, BrowserSignIn,
    ClientPolicyRepo, DelegationAuditOf, DelegationRepo, DelegationRevoke, MetadataAuditOf,
    OAuthTokenRepo, PersonTokens, PrincipalAuditOf, PrincipalRepo, PrincipalWrite, RefreshAuditOf,
    RevokeAuditOf, RuleAuditOf, RuleWrite, SignInError, SignInRequest,
};
pub use principal::{Principal, PrincipalId, PrincipalSpec, limits as principal_limits};
pub use principals::PrincipalService;
pub use registration::{
    ClientMetadata, DynamicClients, InitialAccessFormat, InitialAccessToken, Registered,
    RegistrationError,
};
pub use revocations::{REVOCATION_LIST_TYPE, RevocationLists, SignedRevocations};
pub use rules::RuleError;
pub use rules::condition::{Attr, Condition, Op};
pub use rules::decision::{
    AccessRequest, AgentFacts, Decision, PrincipalFacts, Reason, RuleRef, RuleSet, RuleTrace, Step,
};
pub use rules::rule::{AccessRule, Effect, Format, RuleId, RuleSpec};
pub use service::{
    AgentCache, AgentService, ClientAuthenticator, DEFAULT_SECRET_GRACE_SECONDS, RotatedSecret,
};
pub use token::{
    AgentCounts, GrantType, Hop, Issuance, OAuthTokenId, RefreshIssuance, RefreshOutcome,
    RefreshRefusal, RefreshToken, RefreshTokenFormat, RevokeScope, TokenCounts, TokenFilter,
    TokenKind, TokenRecord, UnknownGrantType, UnknownTokenKind, is_task_id, revocation_reasons,
    token_limits,
};
