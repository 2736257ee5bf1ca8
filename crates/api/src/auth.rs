//! The `Auth` extractor: who is calling.
//!
//! A credential is read from `Authorization: Bearer <token>` or `X-API-Key: <token>` and
//! handed to the app's [`Authenticator`](d2_app::Authenticator), which tells its kind apart
//! (an API token, `d2_...`; a JWT) before any lookup and answers each with the same
//! [`AuthContext`](d2_kernel::AuthContext): nothing downstream cares which kind it was.
//! What stays here is actix's part: the per-address failure budget, and running a lookup
//! to its end in a task of its own.

use std::ops::Deref;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::web::Data;
use actix_web::{FromRequest, HttpRequest};
use d2_app::AuthenticationError;
use d2_kernel::{AuthContext, Code};
use d2_tokens::AuthError;
use futures_util::future::LocalBoxFuture;

use crate::error::ApiError;
use crate::headers::API_KEY;
use crate::state::ApiState;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Auth(pub Arc<AuthContext>);

impl Deref for Auth {
    type Target = AuthContext;

    fn deref(&self) -> &AuthContext {
        &self.0
    }
}

/// The presented credential, if any.
enum Presented {
    None,
    Malformed,
    Token(String),
}

fn presented(req: &HttpRequest) -> Presented {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let Ok(value) = value.to_str() else {
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
    match req.headers().get(API_KEY).map(|v| v.to_str()) {
        Some(Ok(value)) => Presented::Token(value.trim().to_owned()),
        Some(Err(_)) => Presented::Malformed,
        None => Presented::None,
    }
}

/// Does the request carry a credential at all (valid or not)?
pub fn has_credential(req: &HttpRequest) -> bool {
    req.headers().contains_key(header::AUTHORIZATION) || req.headers().contains_key(API_KEY)
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
        let state = req.app_data::<Data<ApiState>>().cloned();
        let presented = presented(req);
        let ip = state.as_ref().map(|s| s.limiter.client_ip(req));
        Box::pin(async move {
            let (Some(state), Some(ip)) = (state, ip) else {
                return Err(ApiError::new(Code::Internal, "application state missing"));
            };
            let token = match presented {
                // Requests without credentials were already counted by the per-IP limit.
                Presented::None => {
                    return Err(ApiError::new(
                        Code::MissingAuthorization,
                        "send a token as `Authorization: Bearer <token>` or `X-API-Key: <token>`",
                    ));
                }
                Presented::Malformed => {
                    let error = ApiError::new(
                        Code::InvalidToken,
                        "the Authorization header must be `Bearer <token>`",
                    );
                    return Err(state.limiter.charge_failure(ip, error));
                }
                Presented::Token(token) => token,
            };
            // Over its failed-authentication budget, an address gets answers from the cache
            // only: an unknown token costs no lookup.
            if let Some(limited) = state.limiter.over_budget(ip) {
                return match state.app.authenticator.authenticate_cached(&token).await {
                    Some(Ok(context)) => Ok(Auth(context)),
                    Some(Err(AuthenticationError::Token(AuthError::Store(error)))) => {
                        Err(error.into())
                    }
                    Some(Err(_)) | None => Err(limited),
                };
            }
            let verified = match state.app.authenticator.authenticate_cached(&token).await {
                Some(answer) => answer,
                None => {
                    // A lookup runs in a task of its own, to its end even when actix drops
                    // this extractor early (another extractor of the handler failed, say on
                    // a bad body): a store query cancelled midway panics an actix worker on
                    // SQLite, whose cancellation waits with `block_in_place`, which a
                    // current-thread runtime forbids. Finished, it also fills the cache.
                    let authenticator = state.app.authenticator.clone();
                    actix_web::rt::spawn(async move { authenticator.authenticate(&token).await })
                        .await
                        .map_err(|_| {
                            ApiError::new(Code::Internal, "the credential lookup failed")
                        })?
                }
            };
            match verified {
                Ok(context) => Ok(Auth(context)),
                Err(AuthenticationError::Token(AuthError::Store(error))) => Err(error.into()),
                Err(error) => {
                    tracing::info!(reason = error.code().as_str(), "authentication failed");
                    Err(state.limiter.charge_failure(ip, error.into()))
                }
            }
        })
    }
}

use d2_kernel::ErrorCode as _;
