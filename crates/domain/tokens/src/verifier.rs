//! Token verification: the hot path of every authenticated request.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, SubsecRound as _, Utc};
use d2_kernel::{
    AuthContext, CacheSettings, CacheStats, Change, ChangeSubscriber, Clock, Code, CoherentCache,
    ErrorCode, StoreError, TokenId,
};

use crate::ports::TokenRepo;
use crate::secret::{Pepper, TokenDigest, TokenSecret};
use crate::token::{ApiToken, TokenState, state_at};

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

#[derive(Debug)]
struct KnownToken {
    id: TokenId,
    context: Arc<AuthContext>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    /// When this process last noted a use of the token (Unix seconds), so a busy token is
    /// noted once a minute: one atomic read per request otherwise.
    noted_at: AtomicI64,
}

/// A use is noted at most once per token and this many seconds (`last_used_at` is shown to
/// the minute).
const NOTE_EVERY_SECONDS: i64 = 60;

/// A cached lookup. Unknown digests are cached too: a digest is unforgeable, so a newly
/// issued token can never be hiding behind a cached miss.
#[derive(Clone, Debug)]
enum Lookup {
    Known(Arc<KnownToken>),
    Unknown,
}

/// Verifies presented tokens: format and checksum, keyed digest, cache, store. Notes when
/// each token was used, in memory, for [`flush_usage`](Self::flush_usage) to write in
/// batches: verifying never writes.
pub struct TokenVerifier {
    repo: Arc<dyn TokenRepo>,
    pepper: Arc<Pepper>,
    clock: Arc<dyn Clock>,
    cache: CoherentCache<TokenDigest, Lookup>,
    /// Uses noted since the last flush: the latest per token.
    used: Mutex<HashMap<TokenId, DateTime<Utc>>>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl ChangeSubscriber for TokenVerifier {
    fn on_change(&self, change: &Change) {
        match change {
            Change::Token(id) => self.invalidate(*id),
            Change::Resync => self.invalidate_all(),
            _ => {}
        }
    }
}

impl TokenVerifier {
    pub fn new(
        repo: Arc<dyn TokenRepo>,
        pepper: Arc<Pepper>,
        clock: Arc<dyn Clock>,
        settings: CacheSettings,
    ) -> Self {
        Self {
            repo,
            pepper,
            clock,
            cache: CoherentCache::new(settings),
            used: Mutex::new(HashMap::new()),
        }
    }

    /// The caller behind `presented`, or why it is refused.
    pub async fn verify(&self, presented: &str) -> Result<Arc<AuthContext>, AuthError> {
        TokenSecret::check_format(presented).map_err(|_| AuthError::Malformed)?;
        let digest = self.pepper.digest_text(presented);
        let lookup = self
            .cache
            .get_or_load(&digest, || async {
                Ok::<_, StoreError>(match self.repo.find_by_digest(&digest).await? {
                    Some(token) => Lookup::Known(Arc::new(known(&token))),
                    None => Lookup::Unknown,
                })
            })
            .await?;
        self.answer(lookup)
    }

    /// Like [`verify`](Self::verify), from the cache alone: `None` when answering would
    /// need the store (for callers that must not cost a query, such as an address over its
    /// failed-authentication budget).
    pub async fn verify_cached(
        &self,
        presented: &str,
    ) -> Option<Result<Arc<AuthContext>, AuthError>> {
        // The cache first: only well-formed tokens are ever cached, so a hit needs no
        // format check, and the hot path computes one digest and nothing else.
        let digest = self.pepper.digest_text(presented);
        match self.cache.get(&digest).await {
            Some(lookup) => Some(self.answer(lookup)),
            None if TokenSecret::check_format(presented).is_err() => {
                Some(Err(AuthError::Malformed))
            }
            None => None,
        }
    }

    fn answer(&self, lookup: Lookup) -> Result<Arc<AuthContext>, AuthError> {
        let Lookup::Known(token) = lookup else {
            return Err(AuthError::Unknown);
        };
        let now = self.clock.now();
        match state_at(token.expires_at, token.revoked_at, now) {
            TokenState::Active => {
                self.note_use(&token, now);
                Ok(Arc::clone(&token.context))
            }
            TokenState::Expired => Err(AuthError::Expired),
            TokenState::Revoked => Err(AuthError::Revoked),
        }
    }

    /// Notes a use of `token` at `now`, unless this process noted one less than a minute
    /// ago: the common case costs one atomic read.
    fn note_use(&self, token: &KnownToken, now: DateTime<Utc>) {
        let second = now.timestamp();
        let noted = token.noted_at.load(Ordering::Relaxed);
        if second.saturating_sub(noted) < NOTE_EVERY_SECONDS
            || token
                .noted_at
                .compare_exchange(noted, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        // To the second: every store keeps that exactly.
        let at = now.trunc_subsecs(0);
        self.pending_uses()
            .entry(token.id)
            .and_modify(|noted| *noted = (*noted).max(at))
            .or_insert(at);
    }

    fn pending_uses(&self) -> MutexGuard<'_, HashMap<TokenId, DateTime<Utc>>> {
        self.used.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the uses noted since the last flush (`TokenRepo::record_usage`, one statement)
    /// and returns how many tokens it wrote. Run periodically and at shutdown; uses of a
    /// failed write are kept for the next.
    pub async fn flush_usage(&self) -> Result<usize, StoreError> {
        let mut used: Vec<(TokenId, DateTime<Utc>)> = std::mem::take(&mut *self.pending_uses())
            .into_iter()
            .collect();
        if used.is_empty() {
            return Ok(0);
        }
        used.sort_unstable();
        match self.repo.record_usage(&used).await {
            Ok(()) => Ok(used.len()),
            Err(error) => {
                let mut pending = self.pending_uses();
                for (id, at) in used {
                    pending
                        .entry(id)
                        .and_modify(|later| *later = (*later).max(at))
                        .or_insert(at);
                }
                Err(error)
            }
        }
    }

    /// Drops the cached entry of one token (after a revoke or rotate, here or elsewhere).
    pub fn invalidate(&self, id: TokenId) {
        self.cache
            .invalidate_if(move |_, lookup| matches!(lookup, Lookup::Known(t) if t.id == id));
    }

    /// Drops the cached entries of many tokens at once (after a job changed them).
    pub fn invalidate_many(&self, ids: &[TokenId]) {
        if ids.is_empty() {
            return;
        }
        let ids: HashSet<TokenId> = ids.iter().copied().collect();
        self.cache.invalidate_if(
            move |_, lookup| matches!(lookup, Lookup::Known(t) if ids.contains(&t.id)),
        );
    }

    /// Drops every cached entry (for example after losing the change feed, when some
    /// announcements may have been missed).
    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }

    pub fn stats(&self) -> CacheStats {
        self.cache.stats()
    }
}

fn known(token: &ApiToken) -> KnownToken {
    KnownToken {
        id: token.id,
        context: Arc::new(token.auth_context()),
        expires_at: token.expires_at,
        revoked_at: token.revoked_at,
        noted_at: AtomicI64::new(i64::MIN),
    }
}
