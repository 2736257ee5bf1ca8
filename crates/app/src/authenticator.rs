//! One authenticator for every kind of credential a caller can present.
//!
//! The kind is told from the text's shape alone, before any lookup: the API token prefix
//! (`d2_`) is checked first, so the hot path (the bundle poll, a cached API token) costs
//! one prefix comparison more than the token verifier alone and allocates nothing. A
//! session served before is found by its keyed digest first, so a cached JWT is not
//! parsed again either. Each kind is answered by its own verifier and ends as the same
//! [`AuthContext`]: drivers and services never ask which kind it was.
//!
//! | presented | kind | answered by |
//! |---|---|---|
//! | `d2_...` | API token | [`TokenVerifier`] (cache, then store) |
//! | three non-empty base64url segments joined by `.` | JWT | [`SessionVerifier`]: the identity provider's signature, then the person's membership of the account named (refused when no provider is configured) |
//! | anything else | malformed | refused, before any lookup |

use std::sync::Arc;

use d2_kernel::{AccountId, AuthContext, Code, ErrorCode, SecretFormat as _};
use d2_members::{IdentityError, MemberError, SessionVerifier, SignedIn};
use d2_tokens::{ApiTokenFormat, AuthError, TokenVerifier};

/// What a presented credential is, told from its shape alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    /// Starts with the API token prefix, `d2_` (well formed or not: the token verifier
    /// checks the rest).
    ApiToken,
    /// Three non-empty base64url segments joined by dots: a compact JWS, as identity
    /// providers and OAuth access tokens are.
    Jwt,
    /// Neither.
    Malformed,
}

impl CredentialKind {
    pub fn of(presented: &str) -> Self {
        if presented.starts_with(ApiTokenFormat::PREFIX) {
            Self::ApiToken
        } else if is_compact_jws(presented) {
            Self::Jwt
        } else {
            Self::Malformed
        }
    }
}

fn is_compact_jws(text: &str) -> bool {
    let mut segments = text.split('.');
    match (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) {
        (Some(header), Some(payload), Some(signature), None) => {
            is_base64url(header) && is_base64url(payload) && is_base64url(signature)
        }
        _ => false,
    }
}

fn is_base64url(segment: &str) -> bool {
    !segment.is_empty()
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Why a presented credential is refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthenticationError {
    /// Not a credential of any kind; refused before any lookup.
    #[error("the token is malformed")]
    Malformed,
    /// A JWT, while no identity provider is configured to verify it.
    #[error("identity-provider sign-in is not configured")]
    SignInNotConfigured,
    /// An API token the token verifier refused (or could not look up).
    #[error(transparent)]
    Token(#[from] AuthError),
    /// A sign-in token the identity provider refused, or a person who is not a member of
    /// the account named.
    #[error(transparent)]
    Session(#[from] MemberError),
    /// A session on a route without an account in its path, and no `X-Org-ID`.
    #[error(
        "name the account: signed-in people send `X-Org-ID: <account id>` on routes without one in the path"
    )]
    AccountRequired,
    /// An API token sent with another account's id (path or `X-Org-ID`).
    #[error("this credential belongs to another account")]
    AccountMismatch,
    /// An API token on a route for signed-in people.
    #[error("this route is for signed-in people: present an identity provider's token")]
    UserSessionRequired,
}

impl ErrorCode for AuthenticationError {
    fn code(&self) -> Code {
        match self {
            AuthenticationError::Malformed | AuthenticationError::SignInNotConfigured => {
                Code::InvalidToken
            }
            AuthenticationError::Token(error) => error.code(),
            AuthenticationError::Session(error) => error.code(),
            AuthenticationError::AccountRequired => Code::AccountRequired,
            AuthenticationError::AccountMismatch => Code::AccountMismatch,
            AuthenticationError::UserSessionRequired => Code::UserSessionRequired,
        }
    }
}

impl AuthenticationError {
    /// Whether the credential itself was refused (as opposed to a valid one used where it
    /// may not be, or a store that could not answer): what counts against an address's
    /// failed-authentication budget.
    pub fn is_bad_credential(&self) -> bool {
        match self {
            AuthenticationError::Malformed
            | AuthenticationError::SignInNotConfigured
            | AuthenticationError::Token(
                AuthError::Malformed | AuthError::Unknown | AuthError::Expired | AuthError::Revoked,
            )
            | AuthenticationError::Session(MemberError::Identity(
                IdentityError::Invalid(_) | IdentityError::Expired,
            )) => true,
            AuthenticationError::Token(AuthError::Store(_))
            | AuthenticationError::Session(_)
            | AuthenticationError::AccountRequired
            | AuthenticationError::AccountMismatch
            | AuthenticationError::UserSessionRequired => false,
        }
    }
}

/// Authenticates a presented credential of any kind, dispatching on its kind.
#[derive(Debug)]
pub struct Authenticator {
    tokens: Arc<TokenVerifier>,
    /// Sign-in through the identity provider, when one is configured.
    sessions: Option<Arc<SessionVerifier>>,
}

impl Authenticator {
    pub fn new(tokens: Arc<TokenVerifier>, sessions: Option<Arc<SessionVerifier>>) -> Self {
        Self { tokens, sessions }
    }

    /// The caller behind `presented` acting in `account` (the account a route's path or
    /// the `X-Org-ID` header names, if any), or why it is refused, looking it up in the
    /// store if need be. An API token acts in its own account, and refuses another named;
    /// a signed-in person acts in the account named, as a member of it.
    pub async fn authenticate(
        &self,
        presented: &str,
        account: Option<AccountId>,
    ) -> Result<Arc<AuthContext>, AuthenticationError> {
        match CredentialKind::of(presented) {
            CredentialKind::ApiToken => in_account(self.tokens.verify(presented).await?, account),
            CredentialKind::Jwt => {
                let sessions = self.sessions()?;
                let Some(account) = account else {
                    // Verified anyway: a bad token is refused as such, not for its route.
                    sessions.sign_in(presented).await?;
                    return Err(AuthenticationError::AccountRequired);
                };
                Ok(sessions.authenticate(presented, account).await?)
            }
            CredentialKind::Malformed => Err(AuthenticationError::Malformed),
        }
    }

    /// Like [`authenticate`](Self::authenticate), without the store: `None` when the
    /// answer needs a lookup. Drivers try this first and run the full call on `None`
    /// (where the lookup may outlive the request), or refuse without it (an address over
    /// its failed-authentication budget).
    pub async fn authenticate_cached(
        &self,
        presented: &str,
        account: Option<AccountId>,
    ) -> Option<Result<Arc<AuthContext>, AuthenticationError>> {
        // A session served before answers from its keyed digest, without reading the text
        // again: only verified tokens are cached.
        if let (Some(sessions), Some(account)) = (self.sessions.as_deref(), account)
            && !presented.starts_with(ApiTokenFormat::PREFIX)
            && let Some(answer) = sessions.authenticate_cached(presented, account).await
        {
            return Some(answer.map_err(Into::into));
        }
        match CredentialKind::of(presented) {
            CredentialKind::ApiToken => Some(match self.tokens.verify_cached(presented).await? {
                Ok(context) => in_account(context, account),
                Err(error) => Err(error.into()),
            }),
            // Not served before (or no account named): the provider or the store decides.
            CredentialKind::Jwt => match self.sessions() {
                Err(error) => Some(Err(error)),
                Ok(_) => None,
            },
            CredentialKind::Malformed => Some(Err(AuthenticationError::Malformed)),
        }
    }

    /// The signed-in person behind `presented`, on routes for people rather than accounts
    /// (`GET /v1/users/me`, `POST /v1/accounts`). API tokens are refused.
    pub async fn identify(&self, presented: &str) -> Result<Arc<SignedIn>, AuthenticationError> {
        match CredentialKind::of(presented) {
            CredentialKind::ApiToken => {
                // A valid token is the wrong credential here; an invalid one is invalid.
                self.tokens.verify(presented).await?;
                Err(AuthenticationError::UserSessionRequired)
            }
            CredentialKind::Jwt => Ok(self.sessions()?.sign_in(presented).await?),
            CredentialKind::Malformed => Err(AuthenticationError::Malformed),
        }
    }

    fn sessions(&self) -> Result<&SessionVerifier, AuthenticationError> {
        self.sessions
            .as_deref()
            .ok_or(AuthenticationError::SignInNotConfigured)
    }
}

/// `context`, when the account named (if any) is its own.
fn in_account(
    context: Arc<AuthContext>,
    account: Option<AccountId>,
) -> Result<Arc<AuthContext>, AuthenticationError> {
    match account {
        Some(account) if account != context.account_id => Err(AuthenticationError::AccountMismatch),
        _ => Ok(context),
    }
}

#[cfg(test)]
mod tests {
    use d2_accounts::memory::MemoryAccountRepo;
    use d2_audit::memory::MemoryAuditLog;
    use d2_kernel::{CacheSettings, Credential, ManualClock};
    use d2_tokens::memory::MemoryStore;
    use d2_tokens::{BootstrapRequest, BootstrapService, ControlPlaneSecret, Pepper, TokenSecret};

    use super::*;

    const JWT: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJ1c2VyLTEifQ.c2lnbmF0dXJl";

    #[test]
    fn the_kind_is_told_from_the_shape() {
        let token = TokenSecret::generate().unwrap();
        assert_eq!(CredentialKind::of(token.expose()), CredentialKind::ApiToken);
        // The prefix decides; the token verifier refuses the rest.
        assert_eq!(CredentialKind::of("d2_typo"), CredentialKind::ApiToken);
        assert_eq!(CredentialKind::of("d2_a.b.c"), CredentialKind::ApiToken);

        assert_eq!(CredentialKind::of(JWT), CredentialKind::Jwt);
        assert_eq!(CredentialKind::of("a.b.c"), CredentialKind::Jwt);
        assert_eq!(CredentialKind::of("a-_.0.Z"), CredentialKind::Jwt);

        for garbage in [
            "", "Bearer", "D2_abc", "d2", "a.b", "a.b.c.d", "a..c", "a.b.", ".b.c", "a.b.c=",
            "a+b.c.d", "a/b.c.d", "a.b .c", "é.b.c",
        ] {
            assert_eq!(
                CredentialKind::of(garbage),
                CredentialKind::Malformed,
                "{garbage:?}"
            );
        }
    }

    struct World {
        store: Arc<MemoryStore>,
        authenticator: Authenticator,
        token: TokenSecret,
    }

    async fn world() -> World {
        let clock = Arc::new(ManualClock::starting_now());
        let accounts = Arc::new(MemoryAccountRepo::new(Arc::new(MemoryAuditLog::default())));
        let store = Arc::new(MemoryStore::new(accounts.clone()));
        let pepper = Arc::new(Pepper::new(&[3; 32]).unwrap());
        let verifier = Arc::new(TokenVerifier::new(
            store.clone(),
            pepper.clone(),
            clock.clone(),
            CacheSettings::default(),
        ));
        let bootstrap = BootstrapService::new(
            Some(ControlPlaneSecret::new("test").unwrap()),
            store.clone(),
            accounts,
            store.clone(),
            pepper,
            clock,
            14,
        );
        let token = bootstrap
            .issue_trusted(BootstrapRequest::default())
            .await
            .unwrap()
            .issued
            .secret;
        World {
            store,
            authenticator: Authenticator::new(verifier, None),
            token,
        }
    }

    #[tokio::test]
    async fn api_tokens_go_to_the_token_verifier() {
        let w = world().await;
        let text = w.token.expose();
        // Nothing cached yet: the cached call cannot answer.
        assert!(
            w.authenticator
                .authenticate_cached(text, None)
                .await
                .is_none()
        );
        let context = w.authenticator.authenticate(text, None).await.unwrap();
        assert!(matches!(context.credential, Credential::ApiToken(_)));
        assert_eq!(w.store.lookups(), 1);
        // Now from the cache, without another lookup.
        let cached = w
            .authenticator
            .authenticate_cached(text, None)
            .await
            .unwrap();
        assert_eq!(cached.unwrap(), context);
        assert_eq!(w.store.lookups(), 1);

        let unknown = TokenSecret::generate().unwrap();
        let refused = w
            .authenticator
            .authenticate(unknown.expose(), None)
            .await
            .unwrap_err();
        assert!(matches!(
            refused,
            AuthenticationError::Token(AuthError::Unknown)
        ));
        assert_eq!(refused.code(), Code::InvalidToken);
    }

    #[tokio::test]
    async fn jwts_and_garbage_are_refused_before_any_lookup() {
        let w = world().await;

        let jwt = w.authenticator.authenticate(JWT, None).await.unwrap_err();
        assert!(matches!(jwt, AuthenticationError::SignInNotConfigured));
        assert_eq!(jwt.code(), Code::InvalidToken);
        assert_eq!(
            jwt.to_string(),
            "identity-provider sign-in is not configured"
        );
        assert!(matches!(
            w.authenticator.authenticate_cached(JWT, None).await,
            Some(Err(AuthenticationError::SignInNotConfigured))
        ));

        for garbage in ["", "not a token", "a.b", "a.b.c.d"] {
            let refused = w
                .authenticator
                .authenticate(garbage, None)
                .await
                .unwrap_err();
            assert!(matches!(refused, AuthenticationError::Malformed));
            assert_eq!(refused.code(), Code::InvalidToken);
            assert!(matches!(
                w.authenticator.authenticate_cached(garbage, None).await,
                Some(Err(AuthenticationError::Malformed))
            ));
        }
        // A mistyped API token is the verifier's to refuse, still without a lookup.
        let typo = w.token.expose().replacen("d2_", "d2_x", 1);
        assert!(matches!(
            w.authenticator.authenticate(&typo, None).await,
            Err(AuthenticationError::Token(AuthError::Malformed))
        ));
        assert_eq!(w.store.lookups(), 0);
    }
}
