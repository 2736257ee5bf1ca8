//! The `Auth` and `Person` extractors: who is calling.
//!
//! A credential is read from `Authorization: Bearer <token>`, `X-API-Key: <token>` or
//! `X-Agent-Token: <token>` (the agent runtime's header) and handed to the app's
//! [`Authenticator`](d2_app::Authenticator), which tells its kind apart (an API token,
//! `d2_...`; an identity provider's JWT) before any lookup and answers each with the same
//! [`AuthContext`](d2_kernel::AuthContext): nothing downstream cares which kind it was. A
//! signed-in person acts in the account the route's path names (`{account_id}`), or else
//! the one `X-Org-ID` names. What stays here is actix's part: the per-address failure
//! budget, and running a lookup to its end in a task of its own.

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::web::Data;
use actix_web::{FromRequest, HttpRequest};
use d2_app::AuthenticationError;
use d2_kernel::{AccountId, AuthContext, Code, ErrorCode as _};
use d2_members::SignedIn;
use futures_util::future::LocalBoxFuture;

use crate::error::ApiError;
use crate::headers::{AGENT_TOKEN, API_KEY, ORG_ID};
use crate::state::ApiState;

/// An authenticated caller, acting in one account.
#[derive(Debug, Clone)]
pub struct Auth(pub Arc<AuthContext>);

impl Deref for Auth {
    type Target = AuthContext;

    fn deref(&self) -> &AuthContext {
        &self.0
    }
}

/// A signed-in person, on routes about people rather than one account (`GET
/// /v1/users/me`, `POST /v1/accounts`). API tokens are refused.
#[derive(Debug, Clone)]
pub struct Person(pub Arc<SignedIn>);

/// The presented credential, if any.
enum Presented {
    None,
    Malformed,
    Token(String),
}

fn presented(req: &HttpRequest) -> Presented {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let Some(value) = crate::headers::text(value) else {
            return Presented::Malformed;
        };
        let mut parts = value.trim().splitn(2, ' ');
        let (Some(scheme), Some(credential)) = (parts.next(), parts.next()) else {
            return Presented::Malformed;
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Presented::Malformed;
        }
        return Presented::Token(credential.trim().to_owned());
    }
    for name in [API_KEY, AGENT_TOKEN] {
        match req.headers().get(name).map(crate::headers::text) {
            Some(Some(value)) => return Presented::Token(value.trim().to_owned()),
            Some(None) => return Presented::Malformed,
            None => {}
        }
    }
    Presented::None
}

/// Does the request carry a credential at all (valid or not)?
pub fn has_credential(req: &HttpRequest) -> bool {
    let headers = req.headers();
    headers.contains_key(header::AUTHORIZATION)
        || headers.contains_key(API_KEY)
        || headers.contains_key(AGENT_TOKEN)
}

/// The account a request names: its path's `{account_id}`, else `X-Org-ID`.
fn named_account(req: &HttpRequest) -> Result<Option<AccountId>, ApiError> {
    if let Some(id) = req.match_info().get("account_id") {
        // A path that does not parse is answered by the `Path` extractor, before this.
        return Ok(id.parse().ok());
    }
    match req.headers().get(ORG_ID) {
        None => Ok(None),
        Some(value) => crate::headers::text(value)
            .and_then(|text| text.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::new(
                    Code::MalformedRequest,
                    "`X-Org-ID` must be an account id (a UUID)",
                )
            }),
    }
}

/// A caller who may be anonymous: `None` without credentials, an error for bad ones (a bad
/// token is never silently treated as anonymous).
#[derive(Debug, Clone)]
pub struct MaybeAuth(pub Option<Auth>);

impl FromRequest for MaybeAuth {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        if has_credential(req) {
            let auth = Auth::from_request(req, payload);
            Box::pin(async move { auth.await.map(|a| MaybeAuth(Some(a))) })
        } else {
            Box::pin(async { Ok(MaybeAuth(None)) })
        }
    }
}

impl FromRequest for Auth {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let account = named_account(req);
        let credential = Credential::of(req);
        Box::pin(async move {
            let account = account?;
            credential?
                .verify(
                    async move |authenticator, token| {
                        authenticator.authenticate_cached(token, account).await
                    },
                    async move |authenticator, token| {
                        authenticator.authenticate(&token, account).await
                    },
                )
                .await
                .map(Auth)
        })
    }
}

impl FromRequest for Person {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let credential = Credential::of(req);
        Box::pin(async move {
            credential?
                .verify(
                    // A person's sign-in is cached by the session verifier itself; the
                    // budget check below needs no cached-only answer.
                    async |_, _| None,
                    async move |authenticator, token| authenticator.identify(&token).await,
                )
                .await
                .map(Person)
        })
    }
}

/// A presented credential with what verifying it needs.
struct Credential {
    state: Data<ApiState>,
    ip: std::net::IpAddr,
    token: String,
}

impl Credential {
    fn of(req: &HttpRequest) -> Result<Self, ApiError> {
        let state = req
            .app_data::<Data<ApiState>>()
            .cloned()
            .ok_or_else(|| ApiError::new(Code::Internal, "application state missing"))?;
        let ip = state.limiter.client_ip(req);
        match presented(req) {
            // Requests without credentials were already counted by the per-IP limit.
            Presented::None => Err(ApiError::new(
                Code::MissingAuthorization,
                "send a token as `Authorization: Bearer <token>` or `X-API-Key: <token>`",
            )),
            Presented::Malformed => {
                let error = ApiError::new(
                    Code::InvalidToken,
                    "the Authorization header must be `Bearer <token>`",
                );
                Err(state.limiter.charge_failure(ip, error))
            }
            Presented::Token(token) => Ok(Self { state, ip, token }),
        }
    }

    /// Verifies the credential with `cached` (no store) and then, if need be, `full`.
    /// The cached answer borrows what it needs: the worker's state, not clones of shared
    /// parts (each an atomic operation on a count every worker writes).
    async fn verify<T, F>(
        self,
        cached: impl AsyncFnOnce(
            &d2_app::Authenticator,
            &str,
        ) -> Option<Result<Arc<T>, AuthenticationError>>,
        full: impl FnOnce(Arc<d2_app::Authenticator>, String) -> F + Send + 'static,
    ) -> Result<Arc<T>, ApiError>
    where
        T: Send + Sync + 'static,
        F: Future<Output = Result<Arc<T>, AuthenticationError>> + Send + 'static,
    {
        let Self { state, ip, token } = self;
        let answer = cached(&state.app.authenticator, &token).await;
        // Over its failed-authentication budget, an address gets answers from the cache
        // only: an unknown token costs no lookup.
        if let Some(limited) = state.limiter.over_budget(ip) {
            return match answer {
                Some(Ok(value)) => Ok(value),
                Some(Err(error)) if !error.is_bad_credential() => Err(error.into()),
                Some(Err(_)) | None => Err(limited),
            };
        }
        let verified = match answer {
            Some(answer) => answer,
            // A lookup runs in a task of its own, to its end even when actix drops this
            // extractor early (another extractor of the handler failed, say on a bad
            // body): a store query cancelled midway panics an actix worker on SQLite,
            // whose cancellation waits with `block_in_place`, which a current-thread
            // runtime forbids. Finished, it also fills the cache.
            None => actix_web::rt::spawn(full(state.app.authenticator.clone(), token))
                .await
                .map_err(|_| ApiError::new(Code::Internal, "the credential lookup failed"))?,
        };
        match verified {
            Ok(value) => Ok(value),
            Err(error) if error.is_bad_credential() => {
                tracing::info!(reason = error.code().as_str(), "authentication failed");
                Err(state.limiter.charge_failure(ip, error.into()))
            }
            Err(error) => Err(error.into()),
        }
    }
}
