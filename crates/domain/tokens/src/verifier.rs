//! Token verification: the hot path of every authenticated request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use d2_kernel::{AuthContext, Clock, Code, ErrorCode, StoreError, TokenId};
use moka::future::Cache;

use crate::ports::TokenRepo;
use crate::secret::{Pepper, TokenDigest, TokenSecret};
use crate::token::ApiToken;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Not a D2 token at all; rejected before any lookup.
    #[error("the token is malformed")]
    Malformed,
    #[error("the token is not valid")]
    Unknown,
    #[error("the token has expired")]
    Expired,
    #[error("the token has been revoked")]
    Revoked,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for AuthError {
    fn code(&self) -> Code {
        match self {
            // Malformed and unknown tokens look the same to the caller.
            AuthError::Malformed | AuthError::Unknown => Code::InvalidToken,
            AuthError::Expired => Code::TokenExpired,
            AuthError::Revoked => Code::TokenRevoked,
            AuthError::Store(error) => error.code(),
        }
    }
}

/// Size and lifetime of the verification cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSettings {
    pub ttl: Duration,
    pub capacity: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(60),
            capacity: 100_000,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: u64,
}

#[derive(Debug)]
struct KnownToken {
    id: TokenId,
    context: Arc<AuthContext>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

/// A cached lookup. Unknown digests are cached too: a digest is unforgeable, so a newly
/// issued token can never be hiding behind a cached miss.
#[derive(Clone, Debug)]
enum Lookup {
    Known(Arc<KnownToken>),
    Unknown,
}

/// Verifies presented tokens: format and checksum, keyed digest, cache, store.
pub struct TokenVerifier {
    repo: Arc<dyn TokenRepo>,
    pepper: Arc<Pepper>,
    clock: Arc<dyn Clock>,
    cache: Cache<TokenDigest, Lookup>,
    /// Bumped by every invalidation, so a lookup that raced with one is not cached.
    epoch: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    pub fn new(
        repo: Arc<dyn TokenRepo>,
        pepper: Arc<Pepper>,
        clock: Arc<dyn Clock>,
        settings: CacheSettings,
    ) -> Self {
        let cache = Cache::builder()
            .max_capacity(settings.capacity)
            .time_to_live(settings.ttl)
            .support_invalidation_closures()
            .build();
        Self {
            repo,
            pepper,
            clock,
            cache,
            epoch: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The caller behind `presented`, or why it is refused.
    pub async fn verify(&self, presented: &str) -> Result<Arc<AuthContext>, AuthError> {
        TokenSecret::check_format(presented).map_err(|_| AuthError::Malformed)?;
        let digest = self.pepper.digest_text(presented);
        let lookup = match self.cache.get(&digest).await {
            Some(lookup) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                lookup
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                self.load(digest).await?
            }
        };
        let Lookup::Known(token) = lookup else {
            return Err(AuthError::Unknown);
        };
        if token.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        if token
            .expires_at
            .is_some_and(|expires| expires <= self.clock.now())
        {
            return Err(AuthError::Expired);
        }
        Ok(Arc::clone(&token.context))
    }

    async fn load(&self, digest: TokenDigest) -> Result<Lookup, AuthError> {
        let epoch = self.epoch.load(Ordering::Acquire);
        let lookup = match self.repo.find_by_digest(&digest).await? {
            Some(token) => Lookup::Known(Arc::new(known(&token))),
            None => Lookup::Unknown,
        };
        self.cache.insert(digest, lookup.clone()).await;
        if self.epoch.load(Ordering::Acquire) != epoch {
            // An invalidation ran while we read: what we read may predate it.
            self.cache.invalidate(&digest).await;
        }
        Ok(lookup)
    }

    /// Drops the cached entry of one token (after a revoke or rotate, here or elsewhere).
    pub fn invalidate(&self, id: TokenId) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let predicate = move |_: &TokenDigest, lookup: &Lookup| matches!(lookup, Lookup::Known(t) if t.id == id);
        if self.cache.invalidate_entries_if(predicate).is_err() {
            // Only possible if closures were not enabled at build time; be safe anyway.
            self.cache.invalidate_all();
        }
    }

    /// Drops every cached entry (for example after losing the change feed, when some
    /// announcements may have been missed).
    pub fn invalidate_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate_all();
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.cache.entry_count(),
        }
    }
}

fn known(token: &ApiToken) -> KnownToken {
    KnownToken {
        id: token.id,
        context: Arc::new(token.auth_context()),
        expires_at: token.expires_at,
        revoked_at: token.revoked_at,
    }
}
