//! Signed-in sessions: an identity provider's token, verified once and then answered from
//! memory until it expires or the person's membership changes.
//!
//! Three caches, each keyed so that nothing in it outlives what it depends on:
//! - the token's keyed digest to the person it signed in (filled by the first
//!   verification, which also records the sign-in);
//! - (account, person) to their role there;
//! - (token digest, account) to the session itself, ready to serve: the hot path is one
//!   digest and one lookup, as for an API token.
//!
//! A membership change (here or, through the change feed, on any replica) drops the role
//! and the sessions built on it, so a removed member's next request is refused.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use d2_kernel::{
    AccountId, AuthContext, CacheSettings, CacheStats, Change, ChangeSubscriber, Clock,
    CoherentCache, Credential, Pepper, Role, SecretDigest, UserId,
};

use crate::ports::{IdentityError, IdentityProvider, MemberRepo};
use crate::service::MemberError;

/// A verified sign-in token: whose, capped at which role, until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedIn {
    pub user_id: UserId,
    pub role_cap: Option<Role>,
    pub expires_at: DateTime<Utc>,
}

/// A session ready to serve: the caller's context in one account, until the token's `exp`.
#[derive(Debug)]
struct Session {
    context: Arc<AuthContext>,
    user_id: UserId,
    expires_at: DateTime<Utc>,
}

pub struct SessionVerifier {
    provider: Arc<dyn IdentityProvider>,
    repo: Arc<dyn MemberRepo>,
    pepper: Arc<Pepper>,
    clock: Arc<dyn Clock>,
    signed_in: CoherentCache<SecretDigest, Arc<SignedIn>>,
    roles: CoherentCache<(AccountId, UserId), Option<Role>>,
    sessions: CoherentCache<(SecretDigest, AccountId), Arc<Session>>,
}

impl std::fmt::Debug for SessionVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionVerifier")
            .field("sessions", &self.sessions.stats())
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
                self.sessions.invalidate_all();
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
            sessions: CoherentCache::new(settings),
        }
    }

    /// The person a sign-in token proves. Its first verification records the sign-in (and
    /// creates the person on their first ever).
    pub async fn sign_in(&self, token: &str) -> Result<Arc<SignedIn>, MemberError> {
        self.signed_in_by(&self.pepper.digest_text(token), token)
            .await
    }

    async fn signed_in_by(
        &self,
        digest: &SecretDigest,
        token: &str,
    ) -> Result<Arc<SignedIn>, MemberError> {
        let signed_in = self
            .signed_in
            .get_or_load(digest, || async {
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
        self.unexpired(signed_in.expires_at)?;
        Ok(signed_in)
    }

    /// The session of the person behind `token` in `account`: the scopes of their role
    /// there, capped by their provider's role claim. Refused when they are not a member.
    pub async fn authenticate(
        &self,
        token: &str,
        account: AccountId,
    ) -> Result<Arc<AuthContext>, MemberError> {
        let digest = self.pepper.digest_text(token);
        let session = self
            .sessions
            .get_or_load(&(digest, account), || async {
                let signed_in = self.signed_in_by(&digest, token).await?;
                let user = signed_in.user_id;
                let role = self
                    .roles
                    .get_or_load(&(account, user), || async {
                        self.repo.role_of(account, user).await
                    })
                    .await?;
                Self::session(&signed_in, account, role)
            })
            .await?;
        self.unexpired(session.expires_at)?;
        Ok(Arc::clone(&session.context))
    }

    /// Like [`authenticate`](Self::authenticate) from memory alone: `None` when it needs
    /// the provider or the store. The text is not parsed: only verified tokens are cached.
    pub async fn authenticate_cached(
        &self,
        token: &str,
        account: AccountId,
    ) -> Option<Result<Arc<AuthContext>, MemberError>> {
        let session = self
            .sessions
            .get(&(self.pepper.digest_text(token), account))
            .await?;
        Some(
            self.unexpired(session.expires_at)
                .map(|()| Arc::clone(&session.context)),
        )
    }

    /// A cached sign-in outlives nothing: its token's `exp` is checked at every use.
    fn unexpired(&self, expires_at: DateTime<Utc>) -> Result<(), MemberError> {
        if expires_at <= self.clock.now() {
            return Err(MemberError::Identity(IdentityError::Expired));
        }
        Ok(())
    }

    fn session(
        signed_in: &SignedIn,
        account: AccountId,
        role: Option<Role>,
    ) -> Result<Arc<Session>, MemberError> {
        let role = role.ok_or(MemberError::NotAMember)?;
        let role = signed_in.role_cap.map_or(role, |cap| role.lower(cap));
        Ok(Arc::new(Session {
            context: Arc::new(AuthContext {
                account_id: account,
                credential: Credential::UserSession(signed_in.user_id),
                user_id: Some(signed_in.user_id),
                acting_for: None,
                role: Some(role),
                scopes: role.scopes(),
                app_name: None,
            }),
            user_id: signed_in.user_id,
            expires_at: signed_in.expires_at,
        }))
    }

    /// Drops one person's role in one account and the sessions built on it (after a change
    /// here; others hear of it through the feed).
    pub fn forget_role(&self, account: AccountId, user: UserId) {
        self.roles
            .invalidate_if(move |key, _| *key == (account, user));
        self.sessions
            .invalidate_if(move |(_, session_account), session| {
                *session_account == account && session.user_id == user
            });
    }

    /// Sessions ready to serve, sign-ins, roles.
    pub fn stats(&self) -> [CacheStats; 3] {
        [
            self.sessions.stats(),
            self.signed_in.stats(),
            self.roles.stats(),
        ]
    }
}
