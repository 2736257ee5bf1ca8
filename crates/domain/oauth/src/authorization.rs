//! The authorization code flow (RFC 6749 §4.1 as OAuth 2.1 keeps it): a person signed in
//! through the identity provider approves, on a consent page, what an agent asks to do for
//! them; the agent redeems the code it is sent back with, proving with PKCE (RFC 7636,
//! `S256` only) that it is the one that asked.
//!
//! An approval is a delegation grant from the person's principal to the agent (made by the
//! person, audited as theirs): the tokens the code brings act for the principal under it,
//! exactly as `client_credentials` with a `delegation_id` does, so everything delegation
//! does (a narrowed scope, tools, resources, depth, expiry, revocation reaching every
//! derived token) holds for them. A grant in force that covers a later request is the
//! remembered consent: no page is shown again until it expires or the person withdraws it.

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use d2_kernel::{AccountId, Secret, SecretDigest, SecretFormat};
use ring::digest::{SHA256, digest};
use serde::{Deserialize, Serialize};

use crate::agent::{AgentId, is_scope_token};
use crate::delegation::DelegationId;
use crate::principal::PrincipalId;
use crate::token::OAuthTokenId;

/// The format of authorization codes.
#[derive(Debug)]
pub enum AuthorizationCodeFormat {}

impl SecretFormat for AuthorizationCodeFormat {
    const NAME: &'static str = "AuthorizationCode";
    const PREFIX: &'static str = "d2ac_";
}

pub type AuthorizationCodeSecret = Secret<AuthorizationCodeFormat>;

/// How long a code may be redeemed: a client redeems it at once (RFC 6749 §4.1.2
/// recommends at most ten minutes).
pub const CODE_SECONDS: i64 = 60;

/// How long a consent lasts unless withdrawn: the grant an approval makes.
pub const CONSENT_SECONDS: u32 = 7_776_000;

/// The scope that asks for an ID token (OpenID Connect Core §3.1.2.1): answered by the ID
/// token, never carried by the access token, and asked of no one on the consent page.
pub const OPENID: &str = "openid";

/// The bounds of an authorization request.
pub mod authorize_limits {
    /// Characters of `state` and `nonce`.
    pub const STATE_CHARS: usize = 512;
    /// Characters of a PKCE verifier (RFC 7636 §4.1).
    pub const VERIFIER_CHARS: std::ops::RangeInclusive<usize> = 43..=128;
}

/// `GET /authorize`'s parameters, as sent.
#[derive(Clone, Debug, Default)]
pub struct AuthorizeParams {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub nonce: Option<String>,
    pub resources: Vec<String>,
    /// OpenID Connect's `prompt`: `consent` shows the consent page even when a consent is
    /// remembered, `login` asks the person to sign in again, `none` shows nothing.
    pub prompt: Option<String>,
}

/// What the person is asked: a checked request, carried through sign-in and the consent
/// page (sealed) until it is answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    pub account_id: AccountId,
    pub agent_id: AgentId,
    pub redirect_uri: String,
    /// The scopes asked, `openid` apart; sorted, unique.
    pub scopes: Vec<String>,
    /// Whether `openid` was asked: the code then brings an ID token too.
    pub openid: bool,
    pub resources: Vec<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: String,
    pub prompt: Prompt,
}

/// Where an authorization request is answered: the client's redirect URI, with its
/// `state`, for the account's issuer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReturnTo {
    pub account_id: AccountId,
    pub redirect_uri: String,
    pub state: Option<String>,
}

impl AuthorizationRequest {
    pub fn return_to(&self) -> ReturnTo {
        ReturnTo {
            account_id: self.account_id,
            redirect_uri: self.redirect_uri.clone(),
            state: self.state.clone(),
        }
    }
}

/// What `prompt` asks of the consent step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Prompt {
    /// The page when no consent is remembered.
    #[default]
    Auto,
    /// The page, always.
    Consent,
    /// Sign in again, then as `Auto`.
    Login,
    /// Never a page: a remembered consent answers, or `consent_required`/`login_required`.
    None,
}

/// The RFC 6749 §4.1.2.1 error codes an authorization request is answered with.
pub mod authorize_errors {
    pub const INVALID_REQUEST: &str = "invalid_request";
    pub const UNSUPPORTED_RESPONSE_TYPE: &str = "unsupported_response_type";
    pub const INVALID_SCOPE: &str = "invalid_scope";
    pub const INVALID_TARGET: &str = "invalid_target";
    pub const ACCESS_DENIED: &str = "access_denied";
    pub const UNAUTHORIZED_CLIENT: &str = "unauthorized_client";
    pub const SERVER_ERROR: &str = "server_error";
    /// OpenID Connect Core §3.1.2.6, for `prompt=none`.
    pub const CONSENT_REQUIRED: &str = "consent_required";
    pub const LOGIN_REQUIRED: &str = "login_required";
}

/// Why an authorization request is refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    /// Nothing proves where to send the answer (no such client, a redirect URI it did not
    /// register): RFC 6749 §4.1.2.1 forbids redirecting, the person is shown why.
    #[error("{description}")]
    Unredirectable {
        code: &'static str,
        description: String,
    },
    /// Sent back to the client's redirect URI.
    #[error("{description}")]
    Redirect {
        error: &'static str,
        description: String,
    },
    #[error(transparent)]
    Store(#[from] d2_kernel::StoreError),
}

impl AuthorizeError {
    pub(crate) fn redirect(error: &'static str, description: impl Into<String>) -> Self {
        Self::Redirect {
            error,
            description: description.into(),
        }
    }
}

/// The scope text of an authorization request: its tokens, `openid` apart, sorted and
/// unique, and whether `openid` was among them.
pub(crate) fn requested_scopes(scope: Option<&str>) -> Result<(Vec<String>, bool), AuthorizeError> {
    let mut scopes = BTreeSet::new();
    let mut openid = false;
    for token in scope
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
    {
        if !is_scope_token(token) {
            return Err(AuthorizeError::redirect(
                authorize_errors::INVALID_SCOPE,
                format!("`{}` is not a scope token", token.escape_debug()),
            ));
        }
        if token == OPENID {
            openid = true;
        } else {
            scopes.insert(token.to_owned());
        }
    }
    Ok((scopes.into_iter().collect(), openid))
}

/// A `code_challenge` of the `S256` method: the base64url SHA-256 of a verifier, 43
/// characters.
pub(crate) fn checked_challenge(
    challenge: Option<&str>,
    method: Option<&str>,
) -> Result<String, AuthorizeError> {
    let Some(challenge) = challenge else {
        return Err(AuthorizeError::redirect(
            authorize_errors::INVALID_REQUEST,
            "`code_challenge` is required: PKCE with S256 (RFC 7636)",
        ));
    };
    match method {
        Some("S256") => {}
        Some("plain") | None => {
            return Err(AuthorizeError::redirect(
                authorize_errors::INVALID_REQUEST,
                "`code_challenge_method` must be S256: plain is not accepted",
            ));
        }
        Some(_) => {
            return Err(AuthorizeError::redirect(
                authorize_errors::INVALID_REQUEST,
                "`code_challenge_method` must be S256",
            ));
        }
    }
    let decoded = URL_SAFE_NO_PAD.decode(challenge).ok();
    if challenge.len() != 43 || decoded.is_none_or(|bytes| bytes.len() != 32) {
        return Err(AuthorizeError::redirect(
            authorize_errors::INVALID_REQUEST,
            "`code_challenge` must be the base64url SHA-256 of the verifier (43 characters)",
        ));
    }
    Ok(challenge.to_owned())
}

/// Whether `verifier` (RFC 7636 §4.1: 43 to 128 unreserved characters) hashes to
/// `challenge`, compared in constant time.
pub(crate) fn verifier_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = authorize_limits::VERIFIER_CHARS.contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    let Some(expected) = URL_SAFE_NO_PAD
        .decode(challenge)
        .ok()
        .and_then(|bytes| SecretDigest::from_bytes(&bytes))
    else {
        return false;
    };
    let hashed = digest(&SHA256, verifier.as_bytes());
    let matches = SecretDigest::from_bytes(hashed.as_ref()).is_some_and(|h| h.matches(&expected));
    well_formed && matches
}

/// An issued authorization code, stored by its keyed digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizationCode {
    pub account_id: AccountId,
    pub agent_id: AgentId,
    pub principal_id: PrincipalId,
    /// The grant the approval made or found: what the tokens act under.
    pub delegation_id: DelegationId,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub scopes: Vec<String>,
    pub openid: bool,
    pub resources: Vec<String>,
    pub nonce: Option<String>,
    /// When the person signed in at their identity provider (the ID token's `auth_time`).
    pub auth_time: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Once redeemed: when, and the family of the tokens it brought (what a second use
    /// revokes).
    pub spent_at: Option<DateTime<Utc>>,
    pub family_id: Option<OAuthTokenId>,
}

impl AuthorizationCode {
    pub fn new(
        request: &AuthorizationRequest,
        principal_id: PrincipalId,
        delegation_id: DelegationId,
        auth_time: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            account_id: request.account_id,
            agent_id: request.agent_id,
            principal_id,
            delegation_id,
            redirect_uri: request.redirect_uri.clone(),
            code_challenge: request.code_challenge.clone(),
            scopes: request.scopes.clone(),
            openid: request.openid,
            resources: request.resources.clone(),
            nonce: request.nonce.clone(),
            auth_time,
            created_at: now,
            expires_at: d2_kernel::later(now, Duration::seconds(CODE_SECONDS)),
            spent_at: None,
            family_id: None,
        }
    }
}

/// What redeeming a code did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redemption {
    /// Spent now: the tokens are stored.
    Redeemed,
    /// It was spent before (a replay): nothing stored. The family is what its first use
    /// brought.
    Spent { family_id: Option<OAuthTokenId> },
    /// No such code, or its agent is gone: nothing stored.
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_matches_its_s256_challenge_only() {
        // RFC 7636 Appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(verifier_matches(verifier, challenge));
        assert!(!verifier_matches(&verifier.replace('d', "e"), challenge));
        assert!(!verifier_matches("short", challenge));
        assert!(!verifier_matches(verifier, "not base64!"));
        assert_eq!(
            checked_challenge(Some(challenge), Some("S256"))
                .ok()
                .as_deref(),
            Some(challenge)
        );
        for (challenge, method) in [
            (Some(challenge), Some("plain")),
            (Some(challenge), None),
            (Some(challenge), Some("S512")),
            (None, Some("S256")),
            (Some("abc"), Some("S256")),
        ] {
            assert!(checked_challenge(challenge, method).is_err(), "{method:?}");
        }
    }

    #[test]
    fn openid_is_told_apart_from_the_catalog_scopes() {
        let (scopes, openid) = requested_scopes(Some("tools:read openid  tools:read a"))
            .ok()
            .unwrap_or_default();
        assert_eq!(scopes, vec!["a".to_owned(), "tools:read".to_owned()]);
        assert!(openid);
        assert!(requested_scopes(Some("bad\"scope")).is_err());
    }
}
