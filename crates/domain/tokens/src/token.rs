use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use d2_kernel::{
    AccountId, AppName, AuthContext, Credential, Grant, Scope, ScopeSet, TokenId, UserId,
};

use crate::secret::{TokenDigest, TokenSecret};

/// The profile a token was issued with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// CLI and CI: read, publish, upload keys, send events.
    Dev,
    /// An SDK runtime bound to one app: read its bundle, send events.
    Server,
    /// Every scope, explicitly, including account management.
    Admin,
    /// An explicit list of atomic scopes.
    Custom,
}

impl TokenKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            TokenKind::Dev => "dev",
            TokenKind::Server => "server",
            TokenKind::Admin => "admin",
            TokenKind::Custom => "custom",
        }
    }
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown token kind `{0}`")]
pub struct UnknownKind(pub String);

impl FromStr for TokenKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dev" => Ok(TokenKind::Dev),
            "server" => Ok(TokenKind::Server),
            "admin" => Ok(TokenKind::Admin),
            "custom" => Ok(TokenKind::Custom),
            other => Err(UnknownKind(other.to_owned())),
        }
    }
}

/// What a new token may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenGrant {
    Dev,
    Server,
    Admin,
    Scopes(Vec<Scope>),
}

impl TokenGrant {
    pub fn kind(&self) -> TokenKind {
        match self {
            TokenGrant::Dev => TokenKind::Dev,
            TokenGrant::Server => TokenKind::Server,
            TokenGrant::Admin => TokenKind::Admin,
            TokenGrant::Scopes(_) => TokenKind::Custom,
        }
    }

    pub fn scopes(&self) -> ScopeSet {
        match self {
            TokenGrant::Dev => ScopeSet::new([Grant::Dev]),
            TokenGrant::Server => ScopeSet::new([Grant::Server]),
            TokenGrant::Admin => ScopeSet::all(),
            TokenGrant::Scopes(scopes) => ScopeSet::new(scopes.iter().copied().map(Grant::Scope)),
        }
    }
}

/// A request for a new token, as a caller states it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    pub name: Option<String>,
    pub grant: TokenGrant,
    /// Only for server tokens: the app whose bundle the token reads.
    pub app_name: Option<AppName>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The member of the account the token is for (it still acts as its creator's).
    pub assigned_to: Option<UserId>,
}

/// Whether a token works at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenState {
    Active,
    Expired,
    Revoked,
}

/// A stored token (never its secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiToken {
    pub id: TokenId,
    pub account_id: AccountId,
    pub kind: TokenKind,
    pub scopes: ScopeSet,
    pub name: Option<String>,
    pub app_name: Option<AppName>,
    /// The user on whose behalf the token acts.
    pub created_by: Option<UserId>,
    /// The member the token was issued for, if not its creator: lists show it as the
    /// token's person. It grants nothing (the token acts as its creator's).
    pub assigned_to: Option<UserId>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Set when the token was rotated: the id of its replacement.
    pub replaced_by: Option<TokenId>,
    /// When the token last authenticated a request, to within a minute (a verifier notes
    /// a token's use at most once a minute), as last written by the verifiers' batched
    /// writes (so up to a flush interval behind).
    pub last_used_at: Option<DateTime<Utc>>,
}

impl ApiToken {
    /// Whether the token works at `now`, and if not, why it first stopped: a token revoked
    /// at or after its expiry (as the expiry job does, at `expires_at`) is `Expired`, so
    /// it reads the same before and after the job ran.
    pub fn state(&self, now: DateTime<Utc>) -> TokenState {
        state_at(self.expires_at, self.revoked_at, now)
    }

    /// Whom the token is for: its assignee, else its creator.
    pub fn holder(&self) -> Option<UserId> {
        self.assigned_to.or(self.created_by)
    }

    pub fn auth_context(&self) -> AuthContext {
        AuthContext {
            account_id: self.account_id,
            credential: Credential::ApiToken(self.id),
            user_id: self.created_by,
            acting_for: None,
            role: None,
            scopes: self.scopes.clone(),
            app_name: self.app_name.clone(),
        }
    }
}

/// The state of a token with these instants, at `now` (see [`ApiToken::state`]).
pub(crate) fn state_at(
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> TokenState {
    match (revoked_at, expires_at) {
        (Some(revoked), Some(expires)) if expires <= revoked => TokenState::Expired,
        (Some(_), _) => TokenState::Revoked,
        (None, Some(expires)) if expires <= now => TokenState::Expired,
        (None, _) => TokenState::Active,
    }
}

/// A token as lists show it: the record and how the people it names are called (a
/// person's display name, else full name, else email; `None` where the token names nobody,
/// or a person without any of them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedToken {
    pub token: ApiToken,
    pub created_by_name: Option<String>,
    pub assigned_to_name: Option<String>,
}

impl ListedToken {
    /// A token and no names (a token naming nobody).
    pub fn unnamed(token: ApiToken) -> Self {
        Self {
            token,
            created_by_name: None,
            assigned_to_name: None,
        }
    }

    /// The name of whom the token is for: its assignee's, else its creator's.
    pub fn holder_name(&self) -> Option<&str> {
        match self.token.assigned_to {
            Some(_) => self.assigned_to_name.as_deref(),
            None => self.created_by_name.as_deref(),
        }
    }
}

/// A change of a token's label or expiry. `None` keeps a field; `Some(None)` clears it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenPatch {
    pub name: Option<Option<String>>,
    pub expires_at: Option<Option<DateTime<Utc>>>,
}

impl TokenPatch {
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.expires_at.is_none()
    }

    /// `token` with this change.
    pub fn apply(&self, token: &ApiToken) -> ApiToken {
        let mut changed = token.clone();
        if let Some(name) = &self.name {
            changed.name.clone_from(name);
        }
        if let Some(expires_at) = self.expires_at {
            changed.expires_at = expires_at;
        }
        changed
    }
}

/// A token about to be stored: the record and the digest to find it by.
#[derive(Clone, Debug)]
pub struct NewToken {
    pub token: ApiToken,
    pub digest: TokenDigest,
}

/// A token just issued: the stored record and the secret, to show once.
#[derive(Debug)]
pub struct IssuedToken {
    pub token: ApiToken,
    pub secret: TokenSecret,
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    #[test]
    fn a_token_reads_as_what_first_stopped_it() {
        let now = Utc::now();
        let hour = Duration::hours(1);
        assert_eq!(state_at(None, None, now), TokenState::Active);
        assert_eq!(state_at(Some(now + hour), None, now), TokenState::Active);
        assert_eq!(state_at(Some(now), None, now), TokenState::Expired);
        // Revoked while it still worked: revoked, also once its expiry has passed.
        assert_eq!(state_at(None, Some(now - hour), now), TokenState::Revoked);
        assert_eq!(
            state_at(Some(now - hour), Some(now - hour - hour), now),
            TokenState::Revoked
        );
        // Marked revoked at (or after) its expiry, as the expiry job does: expired.
        assert_eq!(
            state_at(Some(now - hour), Some(now - hour), now),
            TokenState::Expired
        );
        assert_eq!(
            state_at(Some(now - hour - hour), Some(now - hour), now),
            TokenState::Expired
        );
    }
}
