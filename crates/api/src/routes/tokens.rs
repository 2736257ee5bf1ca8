use actix_web::http::StatusCode;
use actix_web::web::{Data, Path, Query};
use actix_web::{HttpResponse, delete, get, patch, post};
use chrono::{DateTime, Utc};
use d2_kernel::{AccountId, AppName, Code, Grant, Scope, TokenId, UserId};
use d2_tokens::{
    IssuedToken, ListedToken, Revocation, Rotation, TokenGrant, TokenPatch, TokenRequest,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use super::{Message, PageQuery, paged, person_or_server_token, secret_response};
use crate::auth::Auth;
use crate::body::{Json, OptionalJson, present};
use crate::error::{ApiError, ApiResult};
use crate::state::ApiState;

pub fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(create)
        .service(create_server)
        .service(list)
        .service(get_one)
        .service(update)
        .service(revoke)
        .service(rotate);
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenKindBody {
    Dev,
    Server,
    Admin,
}

/// A new token. With neither `kind` nor `scopes`, a `dev` token.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenBody {
    /// A label, at most 100 characters.
    #[schema(max_length = 100, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub token_name: Option<String>,
    pub kind: Option<TokenKindBody>,
    /// `["dev"]`, `["server"]`, `["admin"]`, or atomic scopes such as `["metrics.read"]`.
    #[schema(min_items = 1)]
    pub scopes: Option<Vec<String>>,
    /// Server tokens only: the app whose bundle the token reads (normalised).
    pub app_name: Option<String>,
    /// When the token stops working; never, if absent.
    pub expires_at: Option<DateTime<Utc>>,
    /// The member of the account the token is for (lists show them as its person); the
    /// token still acts as its creator's. Absent, it is for its creator.
    pub assigned_user_id: Option<Uuid>,
}

fn grant_of(kind: Option<TokenKindBody>, scopes: Option<&[String]>) -> ApiResult<TokenGrant> {
    let invalid = |detail: String| ApiError::new(Code::InvalidTokenRequest, detail);
    match (kind, scopes) {
        (Some(_), Some(_)) => Err(invalid("give either `kind` or `scopes`, not both".into())),
        (Some(TokenKindBody::Dev), None) | (None, None) => Ok(TokenGrant::Dev),
        (Some(TokenKindBody::Server), None) => Ok(TokenGrant::Server),
        (Some(TokenKindBody::Admin), None) => Ok(TokenGrant::Admin),
        (None, Some(names)) => match names {
            [single] if single == "dev" => Ok(TokenGrant::Dev),
            [single] if single == "server" => Ok(TokenGrant::Server),
            [single] if single == "admin" => Ok(TokenGrant::Admin),
            names => names
                .iter()
                .map(|name| match name.parse::<Grant>() {
                    Ok(Grant::Scope(scope)) => Ok(scope),
                    Ok(_) => Err(invalid(format!("`{name}` is a token kind; give it alone"))),
                    Err(_) => Err(invalid(format!("unknown scope `{name}`"))),
                })
                .collect::<ApiResult<Vec<Scope>>>()
                .map(TokenGrant::Scopes),
        },
    }
}

impl CreateTokenBody {
    fn into_request(self, forced: Option<TokenGrant>) -> ApiResult<TokenRequest> {
        let grant = match forced {
            Some(grant) => grant,
            None => grant_of(self.kind, self.scopes.as_deref())?,
        };
        Ok(TokenRequest {
            name: self.token_name,
            grant,
            app_name: self.app_name.as_deref().map(AppName::normalise),
            expires_at: self.expires_at,
            assigned_to: self.assigned_user_id.map(UserId::from),
        })
    }
}

/// A token just issued. `token` is the secret: it is shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedTokenBody {
    pub token_id: Uuid,
    pub token: String,
    /// `dev`, `server`, `admin` or `custom`.
    pub kind: &'static str,
    pub scopes: Vec<String>,
    pub token_name: Option<String>,
    pub app_name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The member the token is for, when not its creator.
    pub assigned_user_id: Option<Uuid>,
}

impl From<IssuedToken> for IssuedTokenBody {
    fn from(issued: IssuedToken) -> Self {
        let token = issued.token;
        Self {
            token_id: *token.id.as_uuid(),
            token: issued.secret.expose().to_owned(),
            kind: token.kind.as_str(),
            scopes: token.scopes.names(),
            token_name: token.name,
            app_name: token.app_name.map(|a| a.as_str().to_owned()),
            created_at: token.created_at,
            expires_at: token.expires_at,
            assigned_user_id: token.assigned_to.map(Uuid::from),
        }
    }
}

/// A stored token, with the names of the people it names (a person's display name, else
/// full name, else email). Never the secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenBody {
    pub token_id: Uuid,
    pub kind: &'static str,
    pub scopes: Vec<String>,
    pub token_name: Option<String>,
    pub app_name: Option<String>,
    /// The person who created it (the token acts as theirs).
    pub created_by: Option<Uuid>,
    /// The creator's name; `Server Token` for a token created for nobody (by the control
    /// plane, or by a token without a person).
    pub created_by_name: Option<String>,
    /// The member it was issued for, if not its creator.
    pub assigned_user_id: Option<Uuid>,
    pub assigned_user_name: Option<String>,
    /// Whom the token is for: its assignee, else its creator.
    pub user_id: Option<Uuid>,
    /// The name of `user_id`; `Server Token` when the token is for nobody.
    pub user_name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Set once rotated: the replacement's id.
    pub replaced_by: Option<Uuid>,
    /// When it last authenticated a request, to within a minute: a server notes a token's
    /// use at most once a minute, and writes what it noted every 30 seconds.
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<ListedToken> for TokenBody {
    fn from(listed: ListedToken) -> Self {
        let holder = listed.token.holder();
        let user_name = person_or_server_token(holder, listed.holder_name().map(str::to_owned));
        let ListedToken {
            token,
            created_by_name,
            assigned_to_name,
        } = listed;
        Self {
            token_id: *token.id.as_uuid(),
            kind: token.kind.as_str(),
            scopes: token.scopes.names(),
            token_name: token.name,
            app_name: token.app_name.map(|a| a.as_str().to_owned()),
            created_by: token.created_by.map(Uuid::from),
            created_by_name: person_or_server_token(token.created_by, created_by_name),
            assigned_user_id: token.assigned_to.map(Uuid::from),
            assigned_user_name: assigned_to_name,
            user_id: holder.map(Uuid::from),
            user_name,
            created_at: token.created_at,
            expires_at: token.expires_at,
            revoked_at: token.revoked_at,
            replaced_by: token.replaced_by.map(Uuid::from),
            last_used_at: token.last_used_at,
        }
    }
}

/// A rotation: the new token (secret shown once) and until when the old one still works.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedTokenBody {
    #[serde(flatten)]
    pub token: IssuedTokenBody,
    pub previous_token_id: Uuid,
    /// The old token keeps working until this instant (the rotation grace period).
    pub previous_token_expires_at: Option<DateTime<Utc>>,
}

impl From<Rotation> for RotatedTokenBody {
    fn from(rotation: Rotation) -> Self {
        Self {
            previous_token_id: *rotation.previous.id.as_uuid(),
            previous_token_expires_at: rotation.previous_valid_until(),
            token: rotation.issued.into(),
        }
    }
}

/// Issue a token (admin), for a member of the account with `assigned_user_id` (400
/// `invalid_assignee` for anyone else). Beyond the plan's `max_tokens` tokens that work,
/// 402 `token_limit`. Audited as `token.create`.
#[utoipa::path(tag = "tokens", security(("bearer" = []), ("api_key" = [])), request_body(content = Option<CreateTokenBody>),
    params(("account_id" = Uuid, Path)), responses(
    (status = 201, body = IssuedTokenBody),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 402, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/{account_id}/tokens")]
async fn create(
    state: Data<ApiState>,
    account_id: Path<AccountId>,
    auth: Auth,
    body: OptionalJson<CreateTokenBody>,
) -> ApiResult<HttpResponse> {
    issue(&state, &auth, *account_id, || {
        body.0.unwrap_or_default().into_request(None)
    })
    .await
}

/// Issues a token and answers it (the secret, once). A caller of another account is
/// refused before its request is even read.
async fn issue(
    state: &ApiState,
    auth: &Auth,
    account_id: AccountId,
    request: impl FnOnce() -> ApiResult<TokenRequest>,
) -> ApiResult<HttpResponse> {
    auth.require_account(account_id)?;
    let issued = state
        .app
        .tokens
        .create(auth, account_id, request()?)
        .await?;
    Ok(secret_response(
        StatusCode::CREATED,
        &IssuedTokenBody::from(issued),
    ))
}

/// A server token: what an SDK runtime uses.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateServerTokenBody {
    /// A label, at most 100 characters.
    #[schema(max_length = 100, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub token_name: Option<String>,
    /// The app whose bundle the token reads (normalised); `default` if absent.
    pub app_name: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The member of the account the token is for (see `POST .../tokens`).
    pub assigned_user_id: Option<Uuid>,
}

/// Issue a server token bound to an app (admin); counted against `max_tokens` like any.
/// Audited as `token.create`.
#[utoipa::path(tag = "tokens", security(("bearer" = []), ("api_key" = [])), request_body(content = Option<CreateServerTokenBody>),
    params(("account_id" = Uuid, Path)), responses(
    (status = 201, body = IssuedTokenBody),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 402, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/{account_id}/tokens/server")]
async fn create_server(
    state: Data<ApiState>,
    account_id: Path<AccountId>,
    auth: Auth,
    body: OptionalJson<CreateServerTokenBody>,
) -> ApiResult<HttpResponse> {
    issue(&state, &auth, *account_id, || {
        let body = body.0.unwrap_or_default();
        CreateTokenBody {
            token_name: body.token_name,
            app_name: body.app_name,
            expires_at: body.expires_at,
            assigned_user_id: body.assigned_user_id,
            ..CreateTokenBody::default()
        }
        .into_request(Some(TokenGrant::Server))
    })
    .await
}

/// The account's tokens, newest first, revoked ones included, with the names of their
/// people and when each was last used (admin). Never a secret.
#[utoipa::path(tag = "tokens", security(("bearer" = []), ("api_key" = [])),
    params(("account_id" = Uuid, Path), PageQuery), responses(
    (status = 200, body = Vec<TokenBody>, headers(("X-Next-Cursor" = String, description = "Present when another page follows"))),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/{account_id}/tokens")]
async fn list(
    state: Data<ApiState>,
    account_id: Path<AccountId>,
    auth: Auth,
    query: Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    auth.require_account(*account_id)?;
    let page = query.parse()?;
    let tokens = state.app.tokens.list(&auth, *account_id, &page).await?;
    Ok(paged(tokens, TokenBody::from))
}

/// One token, as the list shows it (admin). Another account's token is 404
/// `token_not_found`.
#[utoipa::path(tag = "tokens", security(("bearer" = []), ("api_key" = [])),
    params(("account_id" = Uuid, Path), ("token_id" = Uuid, Path)), responses(
    (status = 200, body = TokenBody),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/{account_id}/tokens/{token_id}")]
async fn get_one(
    state: Data<ApiState>,
    ids: Path<(AccountId, TokenId)>,
    auth: Auth,
) -> ApiResult<HttpResponse> {
    let (account_id, token_id) = ids.into_inner();
    auth.require_account(account_id)?;
    let token = state.app.tokens.get(&auth, account_id, token_id).await?;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(TokenBody::from(token)))
}

/// A change of a token: absent fields are kept, `null` clears.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenPatchBody {
    /// A label, at most 100 characters; `null` or blank removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable, max_length = 100, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub token_name: Option<Option<String>>,
    /// When the token stops working: in the future, or `null` for never.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<DateTime<Utc>>, nullable)]
    pub expires_at: Option<Option<DateTime<Utc>>>,
}

/// Rename a token or move its expiry (admin). Every replica applies a new expiry at once.
/// A revoked token is 410 `token_already_revoked` (an expired one `token_already_expired`);
/// a rotated token keeps the end of its grace period (409 `token_already_rotated` for a
/// new expiry); a body changing nothing is 400 `invalid_body`. Audited as
/// `token.update`.
#[utoipa::path(tag = "tokens", security(("bearer" = []), ("api_key" = [])), request_body = TokenPatchBody,
    params(("account_id" = Uuid, Path), ("token_id" = Uuid, Path)), responses(
    (status = 200, body = TokenBody),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 409, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 410, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[patch("/{account_id}/tokens/{token_id}")]
async fn update(
    state: Data<ApiState>,
    ids: Path<(AccountId, TokenId)>,
    auth: Auth,
    body: Json<TokenPatchBody>,
) -> ApiResult<HttpResponse> {
    let (account_id, token_id) = ids.into_inner();
    auth.require_account(account_id)?;
    let body = body.0;
    let patch = TokenPatch {
        name: body.token_name,
        expires_at: body.expires_at,
    };
    let token = state
        .app
        .tokens
        .update(&auth, account_id, token_id, patch)
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(TokenBody::from(token)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RevokeQuery {
    /// Also revoke every token this one was rotated into (and those they were rotated
    /// into), so a leaked token cannot keep itself alive by rotating.
    #[serde(default)]
    pub chain: bool,
}

/// What `?chain=true` revoked.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChainRevoked {
    /// `token_chain_revoked`.
    pub message: &'static str,
    /// The tokens this call revoked, the named one first, then its replacements in order
    /// (tokens revoked before are not listed).
    pub revoked: Vec<Uuid>,
}

/// Revoke a token (admin). It stops working on every replica within a second. Revoking
/// twice is accepted. With `?chain=true`, every token it was rotated into is revoked too
/// (answered with the list); without it, its replacement keeps working, so the flow
/// "rotate, deploy the new one, revoke the old one early" works. Audited as
/// `token.revoke`, once per token.
#[utoipa::path(tag = "tokens", security(("bearer" = []), ("api_key" = [])),
    params(("account_id" = Uuid, Path), ("token_id" = Uuid, Path), RevokeQuery), responses(
    (status = 202, body = Message, description = "`{\"message\"}`, or with `?chain=true` `{\"message\", \"revoked\": [ids]}`"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[delete("/{account_id}/tokens/{token_id}")]
async fn revoke(
    state: Data<ApiState>,
    ids: Path<(AccountId, TokenId)>,
    auth: Auth,
    query: Query<RevokeQuery>,
) -> ApiResult<HttpResponse> {
    let (account_id, token_id) = ids.into_inner();
    auth.require_account(account_id)?;
    if query.chain {
        let revoked = state
            .app
            .tokens
            .revoke_chain(&auth, account_id, token_id)
            .await?;
        return Ok(HttpResponse::Accepted().json(ChainRevoked {
            message: "token_chain_revoked",
            revoked: revoked.into_iter().map(Uuid::from).collect(),
        }));
    }
    let outcome = state.app.tokens.revoke(&auth, account_id, token_id).await?;
    let message = match outcome {
        Revocation::Revoked => "token_revoked",
        Revocation::WasAlreadyRevoked => "token_already_revoked",
    };
    Ok(HttpResponse::Accepted().json(Message { message }))
}

/// Replace a token with a new one; the old one keeps working for the grace period
/// (`auth.rotation_grace_seconds`). Audited as `token.rotate`.
#[utoipa::path(tag = "tokens", security(("bearer" = []), ("api_key" = [])),
    params(("account_id" = Uuid, Path), ("token_id" = Uuid, Path)), responses(
    (status = 201, body = RotatedTokenBody),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 409, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 410, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/{account_id}/tokens/{token_id}/rotate")]
async fn rotate(
    state: Data<ApiState>,
    ids: Path<(AccountId, TokenId)>,
    auth: Auth,
) -> ApiResult<HttpResponse> {
    let (account_id, token_id) = ids.into_inner();
    auth.require_account(account_id)?;
    let rotation = state.app.tokens.rotate(&auth, account_id, token_id).await?;
    Ok(secret_response(
        StatusCode::CREATED,
        &RotatedTokenBody::from(rotation),
    ))
}
