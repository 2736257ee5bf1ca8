//! Each account's signed revocation list: the access tokens and delegation grants revoked
//! before their expiry, as a JWS signed with the key that signs the account's access
//! tokens, so an SDK or a resource server that verifies tokens offline refuses revoked
//! ones (by `jti`, or by the `delegation_id` a token acts under) without calling the
//! server on every request. Lists are built once and served from memory: a revocation in
//! the account drops its list at once in the process that made it and, through the change
//! feed, on every other replica; an entry leaves the list when what it names expires.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use d2_audit::{AuditAction, AuditEntry};
use d2_jwks::{Jwks, JwsHeaderExtras};
use d2_kernel::{AccountId, Clock};
use ring::digest::{SHA256, digest};
use serde::Serialize;
use serde_json::json;

use crate::delegation::DelegationId;
use crate::error::GrantError;
use crate::issuer::TokenRecords;
use crate::ports::{DelegationRepo, OAuthTokenRepo};
use crate::token::OAuthTokenId;

/// The JWS header's `typ`: neither an access token (`at+jwt`) nor a policy bundle.
pub const REVOCATION_LIST_TYPE: &str = "revocations+jwt";

/// An account's revocation list, signed, with the entity tag of its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRevocations {
    /// Compact JWS of [`RevocationClaims`].
    pub jws: String,
    /// A digest of the entries (not of the signature or `iat`): unchanged while nothing
    /// is revoked or expires, so a poll with `If-None-Match` answers 304.
    pub etag: String,
}

#[derive(Serialize)]
struct RevocationClaims<'a> {
    iss: &'a str,
    iat: i64,
    #[serde(flatten)]
    entries: &'a Entries,
}

/// What the list names, oldest expiry first.
#[derive(Serialize)]
struct Entries {
    revoked_tokens: Vec<RevokedToken>,
    revoked_delegations: Vec<RevokedDelegation>,
}

#[derive(Serialize)]
struct RevokedToken {
    jti: OAuthTokenId,
    exp: i64,
}

#[derive(Serialize)]
struct RevokedDelegation {
    delegation_id: DelegationId,
    exp: i64,
}

pub struct RevocationLists {
    tokens: Arc<dyn OAuthTokenRepo>,
    delegations: Arc<dyn DelegationRepo>,
    keys: Arc<Jwks>,
    clock: Arc<dyn Clock>,
    /// Where the lists are kept: every revocation forgets the account's.
    memory: Arc<TokenRecords>,
}

impl std::fmt::Debug for RevocationLists {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationLists").finish_non_exhaustive()
    }
}

impl RevocationLists {
    /// `keys`: the key set that signs the accounts' access tokens.
    pub fn new(
        tokens: Arc<dyn OAuthTokenRepo>,
        delegations: Arc<dyn DelegationRepo>,
        keys: Arc<Jwks>,
        clock: Arc<dyn Clock>,
        memory: Arc<TokenRecords>,
    ) -> Self {
        Self {
            tokens,
            delegations,
            keys,
            clock,
            memory,
        }
    }

    /// The account's list, signed for the issuer `issuer`, from memory when it is there.
    pub async fn list(
        &self,
        account: AccountId,
        issuer: &str,
    ) -> Result<Arc<SignedRevocations>, GrantError> {
        self.memory
            .lists
            .get_or_load(&account, || async {
                self.build(account, issuer).await.map(Arc::new)
            })
            .await
    }

    async fn build(
        &self,
        account: AccountId,
        issuer: &str,
    ) -> Result<SignedRevocations, GrantError> {
        let now = self.clock.now();
        let seconds = |at: DateTime<Utc>| at.timestamp();
        let entries = Entries {
            revoked_tokens: self
                .tokens
                .revoked_access_tokens(account, now)
                .await?
                .into_iter()
                .map(|(jti, at)| RevokedToken {
                    jti,
                    exp: seconds(at),
                })
                .collect(),
            revoked_delegations: self
                .delegations
                .revoked_delegations(account, now)
                .await?
                .into_iter()
                .map(|(delegation_id, at)| RevokedDelegation {
                    delegation_id,
                    exp: seconds(at),
                })
                .collect(),
        };
        let failed = |e: serde_json::Error| GrantError::Signing(e.to_string());
        let content = serde_json::to_vec(&entries).map_err(failed)?;
        let etag = digest(&SHA256, &content)
            .as_ref()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
        let claims = RevocationClaims {
            iss: issuer,
            iat: now.timestamp(),
            entries: &entries,
        };
        let payload = serde_json::to_vec(&claims).map_err(failed)?;
        let key = self
            .keys
            .active_key(account, |key| {
                AuditEntry::system(account, AuditAction::KeyCreate, now)
                    .target("signing_key", &key.kid)
                    .metadata(json!({ "reason": "first revocation list" }))
            })
            .await?;
        let extras = JwsHeaderExtras {
            token_type: Some(REVOCATION_LIST_TYPE),
            ..JwsHeaderExtras::default()
        };
        let jws = self.keys.sign(&key, &extras, &payload)?;
        Ok(SignedRevocations { jws, etag })
    }
}
