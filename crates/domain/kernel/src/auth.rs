//! Who is calling: the result of authenticating a request, whatever the credential.

use std::fmt;

use crate::app_name::AppName;
use crate::error::{Code, ErrorCode};
use crate::ids::{AccountId, TokenId, UserId};
use crate::scope::{Scope, ScopeSet};

/// The kind of credential a request presented. Identity-provider sessions will be a second
/// variant; everything downstream reads [`AuthContext`] and does not care which.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential {
    ApiToken(TokenId),
}

/// An authenticated caller.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthContext {
    pub account_id: AccountId,
    pub credential: Credential,
    /// The person behind the credential, when there is one (the token's creator).
    pub user_id: Option<UserId>,
    pub scopes: ScopeSet,
    /// The app a server token is bound to.
    pub app_name: Option<AppName>,
}

impl AuthContext {
    pub fn token_id(&self) -> Option<TokenId> {
        match self.credential {
            Credential::ApiToken(id) => Some(id),
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

    /// How audit records name this caller: `token:<id>`.
    pub fn actor(&self) -> String {
        match self.credential {
            Credential::ApiToken(id) => format!("token:{id}"),
        }
    }
}

impl fmt::Debug for AuthContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthContext")
            .field("account_id", &self.account_id)
            .field("credential", &self.credential)
            .field("user_id", &self.user_id)
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
