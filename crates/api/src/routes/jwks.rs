use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::web::{Data, Query};
use actix_web::{HttpRequest, HttpResponse, get, post};
use chrono::{DateTime, Utc};
use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::{AccountId, Code};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::{Auth, MaybeAuth};
use crate::error::{ApiError, ApiResult};
use crate::state::ApiState;

/// `/.well-known/jwks.json`.
pub fn configure_document(cfg: &mut ServiceConfig<'_>) {
    cfg.service(jwks_document);
}

/// Routes under `/v1/jwks`.
pub fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(rotate).service(configuration).service(history);
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JwksQuery {
    /// Whose keys; optional when a token is presented (its account's keys).
    #[param(value_type = Option<String>, format = Uuid)]
    pub account_id: Option<AccountId>,
}

/// The public keys that verify an account's bundles: the active key and retired keys
/// still in their grace period. With a token, its account's (a private answer); with
/// `?account_id=`, that account's (a public one); with neither, 400. Never every tenant's
/// keys.
#[utoipa::path(tag = "jwks", params(JwksQuery), security((), ("bearer" = []), ("api_key" = [])), responses(
    (status = 200, body = Object, description = "`{\"keys\": [{kty, kid, alg, use, n, e}]}`, with `ETag` and `Cache-Control` (`private` and `Vary: Authorization, X-API-Key` when the token chooses the account)"),
    (status = 304, description = "Not modified"),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/.well-known/jwks.json")]
async fn jwks_document(
    state: Data<ApiState>,
    auth: MaybeAuth,
    req: HttpRequest,
    query: Query<JwksQuery>,
) -> ApiResult<HttpResponse> {
    // Without `account_id` the answer depends on the credential, not on the URL: it is
    // marked private (and varies by the credential headers) so that no shared cache hands
    // one account's keys to another caller. A URL naming the account stays public.
    let by_credential = auth.0.is_some() && query.account_id.is_none();
    let account_id = match (&auth.0, query.account_id) {
        (Some(auth), Some(requested)) => {
            auth.require_account(requested)?;
            requested
        }
        (Some(auth), None) => auth.account_id,
        (None, Some(requested)) => {
            if !state.app.accounts.exists(requested).await? {
                return Err(ApiError::new(Code::AccountNotFound, "no such account"));
            }
            requested
        }
        (None, None) => {
            return Err(ApiError::new(
                Code::AccountRequired,
                "name the account with `?account_id=`, or present one of its tokens",
            ));
        }
    };
    let set = state.app.policies.jwks().key_set(account_id).await?;
    let document = &set.document;
    let unchanged = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(crate::headers::text)
        .is_some_and(|v| d2_policy::normalise_etag(v) == d2_policy::normalise_etag(&document.etag));
    let status = if unchanged {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    let mut response = HttpResponse::build(status);
    response.insert_header((header::ETAG, document.etag.clone()));
    if by_credential {
        response
            .insert_header((
                header::CACHE_CONTROL,
                state.jwks_private_cache_control.clone(),
            ))
            .insert_header((header::VARY, "Authorization, X-API-Key"));
    } else {
        response.insert_header((header::CACHE_CONTROL, state.jwks_cache_control.clone()));
    }
    if unchanged {
        return Ok(response.finish());
    }
    let body = actix_web::web::Bytes::from_owner(std::sync::Arc::clone(&document.body));
    Ok(response.content_type("application/json").body(body))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResignedBody {
    pub app_name: String,
    pub version: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedBody {
    pub message: &'static str,
    pub new_key_id: String,
    pub previous_key_id: Option<String>,
    pub algorithm: &'static str,
    pub rotation_id: String,
    pub rotated_at: DateTime<Utc>,
    /// Until then the previous key stays in the JWKS.
    pub old_keys_expire_at: DateTime<Utc>,
    /// Every active bundle, re-signed with the new key as a new version.
    pub resigned: Vec<ResignedBody>,
    /// The account's access-token key, rotated with them when access tokens are signed
    /// with a key of their own (`oauth.signing_algorithm = "ES256"`); null otherwise, or
    /// when the account has issued no access token yet.
    pub access_token_key: Option<AccessTokenKeyBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccessTokenKeyBody {
    pub new_key_id: String,
    pub previous_key_id: String,
    pub algorithm: &'static str,
    /// Until then the previous key stays at the issuer's `jwks_uri`.
    pub old_key_expires_at: DateTime<Utc>,
}

/// Replaces the account's signing key (admin): every active bundle is re-signed as a new
/// version whose header tells SDKs to refresh their JWKS; the old key stays published for
/// `jwks.grace_seconds`. When access tokens are signed ES256, the account's EC key is
/// replaced too (the old one published as long). At most `jwks.max_rotations_per_hour` per
/// account. Audited as `jwks.rotate` (once per key).
#[utoipa::path(tag = "jwks", security(("bearer" = []), ("api_key" = [])), responses(
    (status = 201, body = RotatedBody),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 429, body = crate::error::Problem, content_type = "application/problem+json", description = "Over the account's rotations per hour", headers(("Retry-After" = u64, description = "Seconds to wait"), ("X-RateLimit-Limit" = u32), ("X-RateLimit-Remaining" = u32), ("X-RateLimit-Reset" = u64))),
))]
#[post("/rotate")]
async fn rotate(state: Data<ApiState>, auth: Auth) -> ApiResult<HttpResponse> {
    let rotated = state.app.policies.rotate_signing_key(&auth).await?;
    let audit = AuditEntry::by(&auth, AuditAction::JwksRotate, state.app.clock.now());
    let token_key = state
        .app
        .oauth
        .rotate_own_key(auth.account_id, audit)
        .await?;
    Ok(HttpResponse::Created().json(RotatedBody {
        message: "signing key rotated",
        new_key_id: rotated.new_key.kid,
        previous_key_id: rotated.previous_kid,
        algorithm: "RS256",
        rotation_id: rotated.rotation_id,
        rotated_at: rotated.at,
        old_keys_expire_at: rotated.old_keys_published_until,
        resigned: rotated
            .resigned
            .iter()
            .map(|r| ResignedBody {
                app_name: r.app_name.to_string(),
                version: r.version,
            })
            .collect(),
        access_token_key: token_key.map(|key| AccessTokenKeyBody {
            new_key_id: key.new_kid,
            previous_key_id: key.previous_kid,
            algorithm: state.app.oauth.keys.algorithm().as_str(),
            old_key_expires_at: key.previous_published_until,
        }),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JwksConfiguration {
    pub current_key_id: Option<String>,
    pub algorithm: &'static str,
    pub jwks_url: String,
    /// The current public key as a JWK.
    pub public_key: Option<serde_json::Value>,
    pub rotation_grace_seconds: i64,
}

/// The account's signing configuration (admin).
#[utoipa::path(tag = "jwks", security(("bearer" = []), ("api_key" = [])), responses(
    (status = 200, body = JwksConfiguration),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/configuration")]
async fn configuration(
    state: Data<ApiState>,
    auth: Auth,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    auth.require(d2_kernel::Scope::Admin)?;
    let keys = state.app.policies.jwks();
    let set = keys.key_set(auth.account_id).await?;
    let info = req.connection_info();
    Ok(HttpResponse::Ok().json(JwksConfiguration {
        current_key_id: set.active.as_ref().map(|k| k.kid.clone()),
        algorithm: "RS256",
        jwks_url: format!(
            "{}://{}/.well-known/jwks.json?account_id={}",
            info.scheme(),
            info.host(),
            auth.account_id
        ),
        public_key: set
            .active
            .as_ref()
            .and_then(|k| serde_json::to_value(&k.public).ok()),
        rotation_grace_seconds: keys.grace().num_seconds(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyHistoryEntry {
    pub key_id: String,
    pub algorithm: &'static str,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
    /// When a retired key leaves the JWKS.
    pub published_until: Option<DateTime<Utc>>,
    pub is_active: bool,
    pub public_key: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyHistory {
    pub keys: Vec<KeyHistoryEntry>,
    pub total_rotations: usize,
}

/// The account's signing keys, newest first (admin). Keys whose grace period ended are
/// removed by the worker.
#[utoipa::path(tag = "jwks", security(("bearer" = []), ("api_key" = [])), responses(
    (status = 200, body = KeyHistory),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/history")]
async fn history(state: Data<ApiState>, auth: Auth) -> ApiResult<HttpResponse> {
    auth.require(d2_kernel::Scope::Admin)?;
    let keys = state.app.policies.jwks();
    let set = keys.key_set(auth.account_id).await?;
    let keys: Vec<KeyHistoryEntry> = set
        .all
        .iter()
        .map(|k| KeyHistoryEntry {
            key_id: k.kid.clone(),
            algorithm: "RS256",
            created_at: k.created_at,
            retired_at: k.retired_at,
            published_until: k.retired_at.map(|r| r + keys.grace()),
            is_active: k.is_active(),
            public_key: serde_json::to_value(&k.public).unwrap_or_default(),
        })
        .collect();
    Ok(HttpResponse::Ok().json(KeyHistory {
        total_rotations: keys.len().saturating_sub(1),
        keys,
    }))
}
