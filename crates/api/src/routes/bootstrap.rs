use actix_web::http::StatusCode;
use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse, post};
use d2_kernel::AccountId;
use d2_tokens::{BootstrapRequest, Revocation};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use super::secret_response;
use super::tokens::RotatedTokenBody;
use crate::auth::Auth;
use crate::body::OptionalJson;
use crate::error::ApiResult;
use crate::state::ApiState;

pub const CONTROL_PLANE_HEADER: &str = "x-control-plane-token";

pub fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(issue).service(rotate_own).service(revoke_own);
}

/// Without `account_id`: a new trial account with its owner and an admin token. With it:
/// a break-glass owner token for that account.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueBody {
    #[schema(value_type = Option<Uuid>)]
    pub account_id: Option<AccountId>,
    pub account_name: Option<String>,
    pub owner_email: Option<String>,
    pub owner_name: Option<String>,
    pub token_name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedUserToken {
    /// The admin token. Shown once.
    #[serde(rename = "userToken")]
    pub user_token: String,
    pub token_id: Uuid,
    pub account_id: Uuid,
    pub user_id: Option<Uuid>,
    pub scopes: Vec<String>,
    /// `true` for a new account, `false` for a break-glass token.
    pub created_account: bool,
}

/// Bootstrap with the control-plane secret (`X-Control-Plane-Token`). Disabled (404) when
/// no secret is configured. Audited as `account.bootstrap` or `token.break_glass`.
#[utoipa::path(tag = "bootstrap", security(("control_plane" = [])), request_body(content = Option<IssueBody>), responses(
    (status = 201, body = IssuedUserToken),
    (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/issue")]
async fn issue(
    state: Data<ApiState>,
    req: HttpRequest,
    body: OptionalJson<IssueBody>,
) -> ApiResult<HttpResponse> {
    let presented = req
        .headers()
        .get(CONTROL_PLANE_HEADER)
        .and_then(crate::headers::text);
    let body = body.0.unwrap_or_default();
    let request = BootstrapRequest {
        account_id: body.account_id,
        account_name: body.account_name,
        owner_email: body.owner_email,
        owner_name: body.owner_name,
        token_name: body.token_name,
    };
    let result = state.app.bootstrap.issue(presented, request).await;
    let done = match result {
        Ok(done) => done,
        Err(error) => {
            let ip = state.limiter.client_ip(&req);
            return Err(state.limiter.charge_failure(ip, error.into()));
        }
    };
    let token = done.issued.token;
    Ok(secret_response(
        StatusCode::CREATED,
        &IssuedUserToken {
            user_token: done.issued.secret.expose().to_owned(),
            token_id: *token.id.as_uuid(),
            account_id: *done.account_id.as_uuid(),
            user_id: done.user_id.map(Uuid::from),
            scopes: token.scopes.names(),
            created_account: done.created_account,
        },
    ))
}

/// Rotate the caller's own token; the old one keeps working for the grace period.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedUserToken {
    #[serde(rename = "userToken")]
    pub user_token: String,
    #[serde(flatten)]
    pub rotation: RotatedTokenBody,
}

/// Rotate the token presented. Audited as `token.rotate`.
#[utoipa::path(tag = "bootstrap", security(("bearer" = []), ("api_key" = [])), responses(
    (status = 201, body = RotatedUserToken),
    (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 409, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/rotate")]
async fn rotate_own(state: Data<ApiState>, auth: Auth) -> ApiResult<HttpResponse> {
    let rotation = RotatedTokenBody::from(state.app.tokens.rotate_own(&auth).await?);
    Ok(secret_response(
        StatusCode::CREATED,
        &RotatedUserToken {
            user_token: rotation.token.token.clone(),
            rotation,
        },
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevokedOwn {
    pub message: &'static str,
    pub token_id: Option<Uuid>,
}

/// Revoke the token presented. Audited as `token.revoke`.
#[utoipa::path(tag = "bootstrap", security(("bearer" = []), ("api_key" = [])), responses(
    (status = 200, body = RevokedOwn),
    (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/revoke")]
async fn revoke_own(state: Data<ApiState>, auth: Auth) -> ApiResult<HttpResponse> {
    let outcome = state.app.tokens.revoke_own(&auth).await?;
    let message = match outcome {
        Revocation::Revoked => "token_revoked",
        Revocation::WasAlreadyRevoked => "token_already_revoked",
    };
    Ok(HttpResponse::Ok().json(RevokedOwn {
        message,
        token_id: auth.token_id().map(Uuid::from),
    }))
}
