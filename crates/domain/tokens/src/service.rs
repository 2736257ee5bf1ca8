use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::text::optional_label;
use d2_kernel::{
    AccessError, AccountId, AuthContext, Clock, Code, EntitlementError, Entitlements, ErrorCode,
    Page, PageError, PageRequest, Scope, StoreError, TokenId, UserId,
};
use serde_json::json;

use crate::ports::{IssueOutcome, RevokeOutcome, RotateOutcome, TokenRepo, UpdateOutcome};
use crate::secret::{Pepper, RandomnessUnavailable, TokenSecret};
use crate::token::{
    ApiToken, IssuedToken, ListedToken, NewToken, TokenGrant, TokenKind, TokenPatch, TokenRequest,
};
use crate::verifier::TokenVerifier;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("no such token in this account")]
    NotFound,
    #[error("the token is revoked")]
    AlreadyRevoked,
    #[error("the token has already been rotated; rotate its replacement")]
    AlreadyRotated,
    #[error("the token has expired")]
    Expired,
    #[error(
        "a {0} token cannot rotate itself (it is shared, or held by a service): an admin rotates it with POST /v1/accounts/{{account_id}}/tokens/{{token_id}}/rotate"
    )]
    SelfRotationRefused(TokenKind),
    #[error("{0}")]
    InvalidRequest(&'static str),
    #[error("`expires_at` must be in the future")]
    InvalidExpiry,
    #[error("`assigned_user_id` must name a member of the account")]
    InvalidAssignee,
    #[error(
        "the account holds {max} active tokens, the most its plan allows; revoke one (or let one expire) first"
    )]
    Limit { max: u32 },
    #[error("the request changes nothing: give `token_name` or `expires_at`")]
    EmptyPatch,
    #[error(transparent)]
    Entitlement(#[from] EntitlementError),
    #[error(transparent)]
    Page(#[from] PageError),
    #[error(transparent)]
    Randomness(#[from] RandomnessUnavailable),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for TokenError {
    fn code(&self) -> Code {
        match self {
            TokenError::Access(error) => error.code(),
            TokenError::NotFound => Code::TokenNotFound,
            TokenError::AlreadyRevoked => Code::TokenAlreadyRevoked,
            TokenError::AlreadyRotated => Code::TokenAlreadyRotated,
            TokenError::Expired => Code::TokenAlreadyExpired,
            TokenError::SelfRotationRefused(_) => Code::SelfRotationRefused,
            TokenError::InvalidRequest(_) => Code::InvalidTokenRequest,
            TokenError::InvalidExpiry => Code::InvalidExpiry,
            TokenError::InvalidAssignee => Code::InvalidAssignee,
            TokenError::Limit { .. } => Code::TokenLimit,
            TokenError::EmptyPatch => Code::InvalidBody,
            TokenError::Entitlement(error) => error.code(),
            TokenError::Page(error) => error.code(),
            TokenError::Randomness(_) => Code::Internal,
            TokenError::Store(error) => error.code(),
        }
    }
}

/// The result of a rotation: the new token (secret shown once) and until when the old one
/// keeps working.
#[derive(Debug)]
pub struct Rotation {
    pub issued: IssuedToken,
    pub previous: ApiToken,
}

impl Rotation {
    /// The moment the old token stops working.
    pub fn previous_valid_until(&self) -> Option<DateTime<Utc>> {
        self.previous.expires_at
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revocation {
    Revoked,
    /// Revoking twice is not an error; the second call changes nothing.
    WasAlreadyRevoked,
}

const MAX_NAME_CHARS: usize = 100;

/// At most this many tokens change in one transaction of the expiry job.
const JOB_BATCH: u32 = 500;

/// Creates the stored form of a new token and its secret, as the service issues one.
pub fn mint(
    pepper: &Pepper,
    account_id: AccountId,
    request: &TokenRequest,
    created_by: Option<UserId>,
    now: DateTime<Utc>,
) -> Result<(NewToken, TokenSecret), RandomnessUnavailable> {
    let secret = TokenSecret::generate()?;
    let token = ApiToken {
        id: TokenId::random(),
        account_id,
        kind: request.grant.kind(),
        scopes: request.grant.scopes(),
        name: request.name.clone(),
        app_name: request.app_name.clone(),
        created_by,
        assigned_to: request.assigned_to,
        created_at: now,
        expires_at: request.expires_at,
        revoked_at: None,
        replaced_by: None,
        last_used_at: None,
    };
    let digest = pepper.digest(&secret);
    Ok((NewToken { token, digest }, secret))
}

/// Management of an account's tokens.
#[derive(Clone)]
pub struct TokenService {
    repo: Arc<dyn TokenRepo>,
    verifier: Arc<TokenVerifier>,
    pepper: Arc<Pepper>,
    clock: Arc<dyn Clock>,
    /// The plan rules: how many tokens an account may hold.
    entitlements: Arc<dyn Entitlements>,
    rotation_grace: Duration,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("rotation_grace", &self.rotation_grace)
            .finish_non_exhaustive()
    }
}

impl TokenService {
    pub fn new(
        repo: Arc<dyn TokenRepo>,
        verifier: Arc<TokenVerifier>,
        pepper: Arc<Pepper>,
        clock: Arc<dyn Clock>,
        entitlements: Arc<dyn Entitlements>,
        rotation_grace: Duration,
    ) -> Self {
        Self {
            repo,
            verifier,
            pepper,
            clock,
            entitlements,
            rotation_grace,
        }
    }

    pub fn verifier(&self) -> &Arc<TokenVerifier> {
        &self.verifier
    }

    /// Issues a token in `account_id` (admin of that account only), for a member of it
    /// when `request.assigned_to` names one, while the account holds fewer tokens that
    /// work than its plan's `max_tokens`.
    pub async fn create(
        &self,
        ctx: &AuthContext,
        account_id: AccountId,
        request: TokenRequest,
    ) -> Result<IssuedToken, TokenError> {
        ctx.require_account(account_id)?;
        ctx.require(Scope::Admin)?;
        let now = self.clock.now();
        let request = validate(request, now)?;
        let max = self
            .entitlements
            .entitlement(account_id)
            .await?
            .quotas
            .max_tokens;
        let (new, secret) = mint(&self.pepper, account_id, &request, ctx.user_id, now)?;
        let audit = AuditEntry::by(ctx, AuditAction::TokenCreate, now)
            .target("token", new.token.id)
            .metadata(describe(&new.token));
        match self.repo.issue(&new, max, &audit).await? {
            IssueOutcome::Issued => {}
            IssueOutcome::LimitReached => return Err(TokenError::Limit { max }),
            IssueOutcome::NotAMember => return Err(TokenError::InvalidAssignee),
        }
        tracing::info!(token.id = %new.token.id, account.id = %account_id, token.kind = %new.token.kind, "token issued");
        Ok(IssuedToken {
            token: new.token,
            secret,
        })
    }

    pub async fn list(
        &self,
        ctx: &AuthContext,
        account_id: AccountId,
        page: &PageRequest,
    ) -> Result<Page<ListedToken>, TokenError> {
        ctx.require_account(account_id)?;
        ctx.require(Scope::Admin)?;
        if let Some(cursor) = page.after() {
            cursor.id_as::<TokenId>()?;
        }
        Ok(self.repo.list_tokens(account_id, page).await?)
    }

    /// One token of `account_id`, as the list shows it (admin of that account).
    pub async fn get(
        &self,
        ctx: &AuthContext,
        account_id: AccountId,
        token_id: TokenId,
    ) -> Result<ListedToken, TokenError> {
        ctx.require_account(account_id)?;
        ctx.require(Scope::Admin)?;
        self.repo
            .listed_token(account_id, token_id)
            .await?
            .ok_or(TokenError::NotFound)
    }

    /// Renames a token or moves its expiry (admin of that account): a new expiry is in the
    /// future, or none. A revoked or expired token is finished, and a rotated one keeps
    /// the end of its grace period. Audited `token.update` with what changed; every
    /// replica applies a new expiry at once.
    pub async fn update(
        &self,
        ctx: &AuthContext,
        account_id: AccountId,
        token_id: TokenId,
        mut patch: TokenPatch,
    ) -> Result<ListedToken, TokenError> {
        ctx.require_account(account_id)?;
        ctx.require(Scope::Admin)?;
        if patch.is_empty() {
            return Err(TokenError::EmptyPatch);
        }
        let now = self.clock.now();
        if let Some(name) = &patch.name {
            patch.name = Some(valid_name(name.as_deref())?);
        }
        if patch
            .expires_at
            .flatten()
            .is_some_and(|expires| expires <= now)
        {
            return Err(TokenError::InvalidExpiry);
        }
        let audit_of = |before: &ApiToken, after: &ApiToken| {
            AuditEntry::by(ctx, AuditAction::TokenUpdate, now)
                .target("token", token_id)
                .metadata(changes(before, after))
        };
        let outcome = self
            .repo
            .update_token(account_id, token_id, &patch, now, &audit_of)
            .await?;
        match outcome {
            UpdateOutcome::Updated(_) => {
                self.verifier.invalidate(token_id);
                tracing::info!(token.id = %token_id, account.id = %account_id, "token updated");
            }
            UpdateOutcome::AlreadyRevoked => return Err(TokenError::AlreadyRevoked),
            UpdateOutcome::Expired => return Err(TokenError::Expired),
            UpdateOutcome::AlreadyRotated => return Err(TokenError::AlreadyRotated),
            UpdateOutcome::NotFound => return Err(TokenError::NotFound),
        }
        self.get(ctx, account_id, token_id).await
    }

    /// Writes the token uses the verifier noted since the last flush (see
    /// [`TokenVerifier::flush_usage`]); returns how many tokens it wrote.
    pub async fn flush_usage(&self) -> Result<usize, TokenError> {
        Ok(self.verifier.flush_usage().await?)
    }

    pub async fn revoke(
        &self,
        ctx: &AuthContext,
        account_id: AccountId,
        token_id: TokenId,
    ) -> Result<Revocation, TokenError> {
        ctx.require_account(account_id)?;
        ctx.require(Scope::Admin)?;
        self.revoke_unchecked(ctx, token_id).await
    }

    /// Revokes the token and every token it was rotated into, so a leaked token cannot
    /// keep itself alive by rotating (admin). Each revocation is audited `token.revoke`
    /// with the chain's first token; revoking again finishes a chain left half done.
    /// Returns the tokens this call revoked, in chain order.
    pub async fn revoke_chain(
        &self,
        ctx: &AuthContext,
        account_id: AccountId,
        token_id: TokenId,
    ) -> Result<Vec<TokenId>, TokenError> {
        ctx.require_account(account_id)?;
        ctx.require(Scope::Admin)?;
        let mut revoked = Vec::new();
        let mut next = Some(token_id);
        while let Some(id) = next {
            let now = self.clock.now();
            let audit = AuditEntry::by(ctx, AuditAction::TokenRevoke, now)
                .target("token", id)
                .metadata(json!({ "chain_of": token_id.to_string() }));
            match self.repo.revoke(account_id, id, now, &audit).await? {
                RevokeOutcome::Revoked => {
                    self.verifier.invalidate(id);
                    revoked.push(id);
                }
                RevokeOutcome::AlreadyRevoked => {}
                RevokeOutcome::NotFound => return Err(TokenError::NotFound),
            }
            // Read after the revoke: a rotation racing it either linked its replacement
            // first (followed here) or found the token revoked and did nothing.
            next = self
                .repo
                .find_token(account_id, id)
                .await?
                .and_then(|token| token.replaced_by)
                .filter(|successor| !revoked.contains(successor) && *successor != token_id);
        }
        tracing::info!(token.id = %token_id, account.id = %account_id, revoked = revoked.len(), "token chain revoked");
        Ok(revoked)
    }

    /// Revokes the caller's own token: any token may give itself up.
    pub async fn revoke_own(&self, ctx: &AuthContext) -> Result<Revocation, TokenError> {
        let token_id = ctx.token_id().ok_or(TokenError::NotFound)?;
        self.revoke_unchecked(ctx, token_id).await
    }

    async fn revoke_unchecked(
        &self,
        ctx: &AuthContext,
        token_id: TokenId,
    ) -> Result<Revocation, TokenError> {
        let now = self.clock.now();
        let audit = AuditEntry::by(ctx, AuditAction::TokenRevoke, now).target("token", token_id);
        let outcome = self
            .repo
            .revoke(ctx.account_id, token_id, now, &audit)
            .await?;
        match outcome {
            RevokeOutcome::Revoked => {
                self.verifier.invalidate(token_id);
                tracing::info!(token.id = %token_id, account.id = %ctx.account_id, "token revoked");
                Ok(Revocation::Revoked)
            }
            RevokeOutcome::AlreadyRevoked => Ok(Revocation::WasAlreadyRevoked),
            RevokeOutcome::NotFound => Err(TokenError::NotFound),
        }
    }

    /// Replaces a token; the old one keeps working for the grace period.
    pub async fn rotate(
        &self,
        ctx: &AuthContext,
        account_id: AccountId,
        token_id: TokenId,
    ) -> Result<Rotation, TokenError> {
        ctx.require_account(account_id)?;
        ctx.require(Scope::Admin)?;
        self.rotate_unchecked(ctx, token_id).await
    }

    /// Rotates the caller's own token: only admin and dev tokens, whose holders manage
    /// their own credential. Server and custom tokens are deployed to services (often a
    /// whole fleet), so a leaked one must not mint its own successor; an admin rotates them.
    pub async fn rotate_own(&self, ctx: &AuthContext) -> Result<Rotation, TokenError> {
        let token_id = ctx.token_id().ok_or(TokenError::NotFound)?;
        let own = self
            .repo
            .find_token(ctx.account_id, token_id)
            .await?
            .ok_or(TokenError::NotFound)?;
        let kind = own.kind;
        if !matches!(kind, TokenKind::Admin | TokenKind::Dev) {
            return Err(TokenError::SelfRotationRefused(kind));
        }
        self.rotate_unchecked(ctx, token_id).await
    }

    async fn rotate_unchecked(
        &self,
        ctx: &AuthContext,
        token_id: TokenId,
    ) -> Result<Rotation, TokenError> {
        let old = self
            .repo
            .find_token(ctx.account_id, token_id)
            .await?
            .ok_or(TokenError::NotFound)?;
        let now = self.clock.now();
        // The replacement keeps what the old token was for, and on whose behalf.
        let request = TokenRequest {
            name: old.name.clone(),
            grant: grant_of(&old),
            app_name: old.app_name.clone(),
            expires_at: old.expires_at.filter(|expires| *expires > now),
            assigned_to: old.assigned_to,
        };
        let (new, secret) = mint(&self.pepper, ctx.account_id, &request, old.created_by, now)?;
        let grace_until = d2_kernel::later(now, self.rotation_grace);
        let audit = AuditEntry::by(ctx, AuditAction::TokenRotate, now)
            .target("token", token_id)
            .metadata(json!({
                "old_token_id": token_id.to_string(),
                "new_token_id": new.token.id.to_string(),
                "token_name": old.name,
                "old_token_valid_until": old.expires_at.map_or(grace_until, |e| e.min(grace_until)),
            }));
        let outcome = self
            .repo
            .rotate(ctx.account_id, token_id, &new, now, grace_until, &audit)
            .await?;
        match outcome {
            RotateOutcome::Rotated { previous } => {
                self.verifier.invalidate(token_id);
                tracing::info!(token.id = %token_id, token.replacement_id = %new.token.id, account.id = %ctx.account_id, "token rotated");
                Ok(Rotation {
                    issued: IssuedToken {
                        token: new.token,
                        secret,
                    },
                    previous: *previous,
                })
            }
            RotateOutcome::AlreadyRevoked => Err(TokenError::AlreadyRevoked),
            RotateOutcome::AlreadyRotated => Err(TokenError::AlreadyRotated),
            RotateOutcome::Expired => Err(TokenError::Expired),
            RotateOutcome::NotFound => Err(TokenError::NotFound),
        }
    }

    /// A scheduled job: marks every token that has passed its expiry (or, once rotated, its
    /// grace period) as revoked at its `expires_at`, each with a `token.expire` audit
    /// record by `system`, in transactions of bounded size, and drops them from the
    /// verification cache. Returns how many tokens it changed.
    ///
    /// Such tokens are refused as expired already; this makes the stored row say they
    /// are finished. Running it again, or on several workers at once, changes nothing
    /// twice.
    pub async fn enforce_expiry(&self) -> Result<u64, TokenError> {
        self.enforce_expiry_in_batches(JOB_BATCH).await
    }

    pub(crate) async fn enforce_expiry_in_batches(&self, batch: u32) -> Result<u64, TokenError> {
        let batch = batch.max(1);
        let full = usize::try_from(batch).unwrap_or(usize::MAX);
        // One instant for the whole run, so it ends even while tokens keep expiring.
        let now = self.clock.now();
        let audit_of = |token: &ApiToken| {
            AuditEntry::system(token.account_id, AuditAction::TokenExpire, now)
                .target("token", token.id)
                .metadata(json!({
                    "reason": "expired",
                    "expired_at": token.expires_at,
                    "token_name": token.name,
                    "replaced_by": token.replaced_by.map(|id| id.to_string()),
                }))
        };
        let mut expired: u64 = 0;
        loop {
            let ids = self.repo.revoke_expired(now, batch, &audit_of).await?;
            self.verifier.invalidate_many(&ids);
            expired = expired.saturating_add(u64::try_from(ids.len()).unwrap_or(u64::MAX));
            if ids.len() < full {
                break;
            }
        }
        if expired > 0 {
            tracing::info!(tokens.expired = expired, "expired tokens marked revoked");
        }
        Ok(expired)
    }
}

fn grant_of(token: &ApiToken) -> TokenGrant {
    match token.kind {
        TokenKind::Dev => TokenGrant::Dev,
        TokenKind::Server => TokenGrant::Server,
        TokenKind::Admin => TokenGrant::Admin,
        TokenKind::Custom => TokenGrant::Scopes(
            token
                .scopes
                .grants()
                .iter()
                .filter_map(|grant| match grant {
                    d2_kernel::Grant::Scope(scope) => Some(*scope),
                    _ => None,
                })
                .collect(),
        ),
    }
}

/// What the audit trail keeps about a new token (never its secret).
pub(crate) fn describe(token: &ApiToken) -> serde_json::Value {
    json!({
        "token_name": token.name,
        "kind": token.kind.as_str(),
        "scopes": token.scopes.names(),
        "app_name": token.app_name.as_ref().map(|a| a.as_str()),
        "expires_at": token.expires_at,
        "assigned_user_id": token.assigned_to.map(|id| id.to_string()),
    })
}

/// What the audit trail keeps about a token's change: each changed field, before and after.
fn changes(before: &ApiToken, after: &ApiToken) -> serde_json::Value {
    let mut changed = serde_json::Map::new();
    if before.name != after.name {
        changed.insert(
            "token_name".to_owned(),
            json!({ "from": before.name, "to": after.name }),
        );
    }
    if before.expires_at != after.expires_at {
        changed.insert(
            "expires_at".to_owned(),
            json!({ "from": before.expires_at, "to": after.expires_at }),
        );
    }
    json!({ "token_name": after.name, "changes": changed })
}

fn valid_name(name: Option<&str>) -> Result<Option<String>, TokenError> {
    optional_label(name, MAX_NAME_CHARS).map_err(|_| {
        TokenError::InvalidRequest(
            "`token_name` must be at most 100 characters without control characters",
        )
    })
}

/// Checks a request against the rules every issued token follows.
pub(crate) fn validate(
    mut request: TokenRequest,
    now: DateTime<Utc>,
) -> Result<TokenRequest, TokenError> {
    request.name = valid_name(request.name.as_deref())?;
    if let TokenGrant::Scopes(scopes) = &request.grant
        && scopes.is_empty()
    {
        return Err(TokenError::InvalidRequest(
            "`scopes` must name at least one scope",
        ));
    }
    if request.app_name.is_some() && request.grant != TokenGrant::Server {
        return Err(TokenError::InvalidRequest(
            "`app_name` binds a server token to its app; other kinds take none",
        ));
    }
    if request.expires_at.is_some_and(|expires| expires <= now) {
        return Err(TokenError::InvalidExpiry);
    }
    Ok(request)
}
