//! Who is calling: the result of authenticating a request, whatever the credential.

use std::fmt::{self, Write as _};

use crate::app_name::AppName;
use crate::error::{Code, ErrorCode};
use crate::ids::{AccountId, TokenId, UserId};
use crate::role::Role;
use crate::scope::{Scope, ScopeSet};

/// The kind of credential a request presented. Everything downstream reads
/// [`AuthContext`] and rarely cares which.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential {
    /// An API token (`d2_...`).
    ApiToken(TokenId),
    /// A person signed in through an identity provider (a verified JWT naming the user).
    UserSession(UserId),
}

/// On whose behalf a caller acts when it is not on its own: a delegated credential (an
/// agent's token used for a person) names the person it serves. It grants nothing: the
/// rights stay the credential's own (its account and scopes); it says who is served, for
/// audit records and for the rules that ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActingFor {
    pub user_id: UserId,
}

/// An authenticated caller.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthContext {
    pub account_id: AccountId,
    pub credential: Credential,
    /// The person behind the credential, when there is one: the token's creator, or the
    /// signed-in user of a session.
    pub user_id: Option<UserId>,
    /// The person the caller acts for, when it acts on someone's behalf (`None`: on its
    /// own).
    pub acting_for: Option<ActingFor>,
    /// A session's role in its account (capped by the identity provider's role claim, if
    /// any): its scopes are this role's. `None` for every other credential.
    pub role: Option<Role>,
    pub scopes: ScopeSet,
    /// The app a server token is bound to.
    pub app_name: Option<AppName>,
}

impl AuthContext {
    /// The API token presented, if the credential is one.
    pub fn token_id(&self) -> Option<TokenId> {
        match self.credential {
            Credential::ApiToken(id) => Some(id),
            Credential::UserSession(_) => None,
        }
    }

    /// Fails unless the caller holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), AccessError> {
        if self.scopes.allows(scope) {
            Ok(())
        } else {
            Err(AccessError::InsufficientScope(scope))
        }
    }

    /// Fails unless the caller belongs to `account_id` (routes under
    /// `/v1/accounts/{account_id}/...`).
    pub fn require_account(&self, account_id: AccountId) -> Result<(), AccessError> {
        if self.account_id == account_id {
            Ok(())
        } else {
            Err(AccessError::AccountMismatch)
        }
    }

    /// How audit records name this caller: `token:<id>` or `user:<id>` (a session),
    /// followed by ` for user:<id>` when it acts on someone's behalf.
    pub fn actor(&self) -> String {
        let mut actor = match self.credential {
            Credential::ApiToken(id) => format!("token:{id}"),
            Credential::UserSession(id) => format!("user:{id}"),
        };
        if let Some(ActingFor { user_id }) = self.acting_for {
            // Writing to a `String` cannot fail.
            let _ = write!(actor, " for user:{user_id}");
        }
        actor
    }
}

impl fmt::Debug for AuthContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthContext")
            .field("account_id", &self.account_id)
            .field("credential", &self.credential)
            .field("user_id", &self.user_id)
            .field("acting_for", &self.acting_for)
            .field("role", &self.role)
            .field("scopes", &self.scopes)
            .field("app_name", &self.app_name)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("this credential lacks the `{0}` scope")]
    InsufficientScope(Scope),
    #[error("this credential belongs to another account")]
    AccountMismatch,
}

impl ErrorCode for AccessError {
    fn code(&self) -> Code {
        match self {
            AccessError::InsufficientScope(_) => Code::InsufficientScope,
            AccessError::AccountMismatch => Code::AccountMismatch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(credential: Credential) -> AuthContext {
        AuthContext {
            account_id: AccountId::random(),
            credential,
            user_id: None,
            acting_for: None,
            role: None,
            scopes: ScopeSet::all(),
            app_name: None,
        }
    }

    #[test]
    fn audit_records_name_tokens_sessions_and_whom_they_act_for() {
        let token = TokenId::random();
        let user = UserId::random();
        let served = UserId::random();

        let by_token = context(Credential::ApiToken(token));
        assert_eq!(by_token.actor(), format!("token:{token}"));
        assert_eq!(by_token.token_id(), Some(token));

        let session = AuthContext {
            user_id: Some(user),
            ..context(Credential::UserSession(user))
        };
        assert_eq!(session.actor(), format!("user:{user}"));
        assert_eq!(session.token_id(), None);

        let delegated = AuthContext {
            acting_for: Some(ActingFor { user_id: served }),
            ..by_token
        };
        assert_eq!(
            delegated.actor(),
            format!("token:{token} for user:{served}")
        );
        assert_eq!(delegated.token_id(), Some(token));
    }
}
