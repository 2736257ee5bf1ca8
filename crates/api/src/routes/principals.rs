//! Principals (seed 003's resource owners): the account's own end users, on whose behalf
//! agents act, with the attributes access rules read. Admins manage them.

use actix_web::http::StatusCode;
use actix_web::web::{Data, Path, Query};
use actix_web::{HttpResponse, delete, get, post, put};
use chrono::{DateTime, Utc};
use d2_oauth::{Principal, PrincipalId, PrincipalSpec};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use super::{PageQuery, paged};
use crate::auth::Auth;
use crate::body::Json;
use crate::error::ApiResult;
use crate::state::ApiState;

pub fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(create_principal)
        .service(list_principals)
        .service(show_principal)
        .service(replace_principal)
        .service(delete_principal);
}

fn default_active() -> bool {
    true
}

/// A principal as written (`POST` creates, `PUT` replaces every field).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrincipalBody {
    /// Unique in the account (exactly, case included); trimmed.
    #[schema(min_length = 1, max_length = 200, example = "ada")]
    pub username: String,
    /// Checked loosely: name@domain, no spaces.
    #[schema(max_length = 254, example = "ada@example.com")]
    pub email: Option<String>,
    #[schema(max_length = 200)]
    pub display_name: Option<String>,
    /// What access rules read as `principal.attributes.<key>`: at most 64 keys of 1 to 64
    /// characters, 16 KiB as JSON. Default `{}`.
    #[serde(default)]
    #[schema(value_type = Object, example = json!({"department": "finance"}))]
    pub attributes: Map<String, Value>,
    /// Default `true`.
    #[serde(default = "default_active")]
    pub active: bool,
}

impl From<PrincipalBody> for PrincipalSpec {
    fn from(body: PrincipalBody) -> Self {
        Self {
            username: body.username,
            email: body.email,
            display_name: body.display_name,
            attributes: body.attributes,
            active: body.active,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PrincipalView {
    pub principal_id: Uuid,
    pub username: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Principal> for PrincipalView {
    fn from(principal: Principal) -> Self {
        Self {
            principal_id: *principal.id.as_uuid(),
            username: principal.spec.username,
            email: principal.spec.email,
            display_name: principal.spec.display_name,
            attributes: principal.spec.attributes,
            active: principal.spec.active,
            created_at: principal.created_at,
            updated_at: principal.updated_at,
        }
    }
}

/// Create a principal, an end user of the account (`admin`). 409 `username_taken` when
/// another principal has the username. Audited as `principal.create`.
#[utoipa::path(tag = "oauth", security(("bearer" = []), ("api_key" = [])), request_body = PrincipalBody, responses(
    (status = 201, body = PrincipalView),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 409, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("")]
async fn create_principal(
    state: Data<ApiState>,
    auth: Auth,
    body: Json<PrincipalBody>,
) -> ApiResult<HttpResponse> {
    let principal = state
        .app
        .oauth
        .principals
        .create(&auth, body.0.into())
        .await?;
    Ok(HttpResponse::build(StatusCode::CREATED).json(PrincipalView::from(principal)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PrincipalsQuery {
    /// Only the active (`true`) or inactive (`false`) principals.
    pub active: Option<bool>,
    /// Items per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The `X-Next-Cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The account's principals, newest first, a page at a time (`admin`).
#[utoipa::path(tag = "oauth", security(("bearer" = []), ("api_key" = [])), params(PrincipalsQuery), responses(
    (status = 200, body = Vec<PrincipalView>, headers(("X-Next-Cursor" = String, description = "Present when another page follows"))),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("")]
async fn list_principals(
    state: Data<ApiState>,
    auth: Auth,
    query: Query<PrincipalsQuery>,
) -> ApiResult<HttpResponse> {
    let query = query.into_inner();
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    }
    .parse()?;
    let principals = state
        .app
        .oauth
        .principals
        .list(&auth, query.active, &page)
        .await?;
    Ok(paged(principals, PrincipalView::from))
}

/// One principal of the account (`admin`); another account's is 404
/// `principal_not_found`.
#[utoipa::path(tag = "oauth", security(("bearer" = []), ("api_key" = [])),
    params(("principal_id" = Uuid, Path)), responses(
    (status = 200, body = PrincipalView),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/{principal_id}")]
async fn show_principal(
    state: Data<ApiState>,
    id: Path<PrincipalId>,
    auth: Auth,
) -> ApiResult<HttpResponse> {
    let principal = state.app.oauth.principals.get(&auth, *id).await?;
    Ok(HttpResponse::Ok().json(PrincipalView::from(principal)))
}

/// Replace a principal: every field as sent (absent ones take their defaults). Audited as
/// `principal.update`.
#[utoipa::path(tag = "oauth", security(("bearer" = []), ("api_key" = [])),
    params(("principal_id" = Uuid, Path)), request_body = PrincipalBody, responses(
    (status = 200, body = PrincipalView),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 409, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[put("/{principal_id}")]
async fn replace_principal(
    state: Data<ApiState>,
    id: Path<PrincipalId>,
    auth: Auth,
    body: Json<PrincipalBody>,
) -> ApiResult<HttpResponse> {
    let principal = state
        .app
        .oauth
        .principals
        .update(&auth, *id, body.0.into())
        .await?;
    Ok(HttpResponse::Ok().json(PrincipalView::from(principal)))
}

/// Delete a principal. Audited as `principal.delete`.
#[utoipa::path(tag = "oauth", security(("bearer" = []), ("api_key" = [])),
    params(("principal_id" = Uuid, Path)), responses(
    (status = 204),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[delete("/{principal_id}")]
async fn delete_principal(
    state: Data<ApiState>,
    id: Path<PrincipalId>,
    auth: Auth,
) -> ApiResult<HttpResponse> {
    state.app.oauth.principals.delete(&auth, *id).await?;
    Ok(HttpResponse::NoContent().finish())
}
