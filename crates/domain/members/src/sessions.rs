//! Signed-in sessions: an identity provider's token, verified once and then answered from
//! memory until it expires or the person's membership changes.
//!
//! Two caches: the token's keyed digest to the person it signed in (filled by the first
//! verification, which also records the sign-in), and (account, person) to their role there.
//! A cached token costs one digest and two lookups; a membership change (here or, through
//! the change feed, on any replica) drops the role, so a removed member's next request is
//! refused.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use d2_kernel::{
    AccountId, AuthContext, CacheSettings, CacheStats, Change, ChangeSubscriber, Clock,
    CoherentCache, Credential, Pepper, Role, SecretDigest, UserId,
};

use crate::ports::{IdentityProvider, MemberRepo};
use crate::service::MemberError;

/// A verified sign-in token: whose, capped at which role, until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedIn {
    pub user_id: UserId,
    pub role_cap: Option<Role>,
    pub expires_at: DateTime<Utc>,
}

pub struct SessionVerifier {
    provider: Arc<dyn IdentityProvider>,
    repo: Arc<dyn MemberRepo>,
    pepper: Arc<Pepper>,
    clock: Arc<dyn Clock>,
    signed_in: CoherentCache<SecretDigest, Arc<SignedIn>>,
    roles: CoherentCache<(AccountId, UserId), Option<Role>>,
}

impl std::fmt::Debug for SessionVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionVerifier")
            .field("signed_in", &self.signed_in.stats())
            .field("roles", &self.roles.stats())
            .finish_non_exhaustive()
    }
}

impl ChangeSubscriber for SessionVerifier {
    fn on_change(&self, change: &Change) {
        match change {
            Change::Member(account, user) => self.forget_role(*account, *user),
            Change::Resync => {
                self.signed_in.invalidate_all();
                self.roles.invalidate_all();
            }
            _ => {}
        }
    }
}

impl SessionVerifier {
    pub fn new(
        provider: Arc<dyn IdentityProvider>,
        repo: Arc<dyn MemberRepo>,
        pepper: Arc<Pepper>,
        clock: Arc<dyn Clock>,
        settings: CacheSettings,
    ) -> Self {
        Self {
            provider,
            repo,
            pepper,
            clock,
            signed_in: CoherentCache::new(settings),
            roles: CoherentCache::new(settings),
        }
    }

    /// The person a sign-in token proves. Its first verification records the sign-in (and
    /// creates the person on their first ever).
    pub async fn sign_in(&self, token: &str) -> Result<Arc<SignedIn>, MemberError> {
        let digest = self.pepper.digest_text(token);
        let signed_in = self
            .signed_in
            .get_or_load(&digest, || async {
                let verified = self.provider.verify(token).await?;
                let user = self
                    .repo
                    .sign_in(&verified.identity, self.clock.now())
                    .await?;
                tracing::info!(user.id = %user.id, "signed in");
                Ok::<_, MemberError>(Arc::new(SignedIn {
                    user_id: user.id,
                    role_cap: verified.identity.role_cap,
                    expires_at: verified.expires_at,
                }))
            })
            .await?;
        self.unexpired(signed_in)
    }

    /// Like [`sign_in`](Self::sign_in) from the cache alone: `None` when it needs the
    /// provider or the store.
    pub async fn sign_in_cached(&self, token: &str) -> Option<Result<Arc<SignedIn>, MemberError>> {
        let digest = self.pepper.digest_text(token);
        let signed_in = self.signed_in.get(&digest).await?;
        Some(self.unexpired(signed_in))
    }

    fn unexpired(&self, signed_in: Arc<SignedIn>) -> Result<Arc<SignedIn>, MemberError> {
        // A cached sign-in outlives nothing: its token's `exp` is checked at every use.
        if signed_in.expires_at <= self.clock.now() {
            return Err(MemberError::Identity(crate::IdentityError::Expired));
        }
        Ok(signed_in)
    }

    /// The session of a signed-in person in `account`: the scopes of their role there,
    /// capped by their provider's role claim. Refused when they are not a member.
    pub async fn session(
        &self,
        signed_in: &SignedIn,
        account: AccountId,
    ) -> Result<Arc<AuthContext>, MemberError> {
        let key = (account, signed_in.user_id);
        let role = self
            .roles
            .get_or_load(&key, || async {
                self.repo.role_of(account, signed_in.user_id).await
            })
            .await?;
        Self::context(signed_in, account, role)
    }

    /// Like [`session`](Self::session) from the cache alone.
    pub async fn session_cached(
        &self,
        signed_in: &SignedIn,
        account: AccountId,
    ) -> Option<Result<Arc<AuthContext>, MemberError>> {
        let role = self.roles.get(&(account, signed_in.user_id)).await?;
        Some(Self::context(signed_in, account, role))
    }

    fn context(
        signed_in: &SignedIn,
        account: AccountId,
        role: Option<Role>,
    ) -> Result<Arc<AuthContext>, MemberError> {
        let role = role.ok_or(MemberError::NotAMember)?;
        let role = signed_in.role_cap.map_or(role, |cap| role.lower(cap));
        Ok(Arc::new(AuthContext {
            account_id: account,
            credential: Credential::UserSession(signed_in.user_id),
            user_id: Some(signed_in.user_id),
            acting_for: None,
            role: Some(role),
            scopes: role.scopes(),
            app_name: None,
        }))
    }

    /// Drops one cached role (after a change here; others hear of it through the feed).
    pub fn forget_role(&self, account: AccountId, user: UserId) {
        self.roles
            .invalidate_if(move |key, _| *key == (account, user));
    }

    pub fn stats(&self) -> (CacheStats, CacheStats) {
        (self.signed_in.stats(), self.roles.stats())
    }
}
