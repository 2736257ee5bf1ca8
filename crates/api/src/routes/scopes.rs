//! The scope catalog of the caller's account (seed 003's scope engine): scopes, what each
//! implies, expansion and the flattened registry.

use actix_web::web::{Data, Path};
use actix_web::{HttpResponse, delete, get, post, put};
use chrono::{DateTime, Utc};
use d2_kernel::Code;
use d2_oauth::{KnownScope, OAuthScope, ScopePatch, ScopeSpec};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::Auth;
use crate::body::Json;
use crate::error::{ApiError, ApiResult};
use crate::state::ApiState;

/// Scope names one expansion may ask for.
const EXPAND_NAMES: usize = 500;

/// `expand` and `registry` first: they would otherwise be read as scope names.
pub fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(expand)
        .service(registry)
        .service(create)
        .service(list)
        .service(get_one)
        .service(update)
        .service(remove);
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateScopeBody {
    /// An RFC 6749 scope token of at most 128 characters, unique in the account
    /// (`tools:read`).
    #[schema(min_length = 1, max_length = 128)]
    pub name: String,
    #[schema(max_length = 1000)]
    pub description: Option<String>,
    /// A short token: 1 to 50 of `A-Z a-z 0-9 . _ : -`.
    #[schema(max_length = 50)]
    pub category: Option<String>,
    /// Narrower scopes of the catalog this one implies (at most 50; no cycles).
    #[serde(default)]
    pub implies: Vec<String>,
}

/// What an update replaces: absent fields are cleared (the name stays).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateScopeBody {
    #[schema(max_length = 1000)]
    pub description: Option<String>,
    #[schema(max_length = 50)]
    pub category: Option<String>,
    #[serde(default)]
    pub implies: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthScopeBody {
    pub name: String,
    pub description: Option<String>,
    pub category: Option<String>,
    /// The scopes it implies directly.
    pub implies: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<OAuthScope> for OAuthScopeBody {
    fn from(scope: OAuthScope) -> Self {
        Self {
            name: scope.spec.name,
            description: scope.spec.description,
            category: scope.spec.category,
            implies: scope.spec.implies,
            created_at: scope.created_at,
            updated_at: scope.updated_at,
        }
    }
}

/// A scope with everything a token carrying it may do.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExpandedScopeBody {
    #[serde(flatten)]
    pub scope: OAuthScopeBody,
    /// The scope and every scope it implies, directly or through others, sorted.
    pub expanded: Vec<String>,
}

impl From<KnownScope> for ExpandedScopeBody {
    fn from(known: KnownScope) -> Self {
        Self {
            expanded: known.expanded.into_iter().collect(),
            scope: known.scope.into(),
        }
    }
}

/// Adds a scope to the caller's catalog (admin). A name taken is 409 `scope_name_taken`;
/// implying a scope the catalog does not hold is 400 `unknown_scopes`; implying what leads
/// back to it is 409 `scope_cycle`. Audited as `scope.create`.
#[utoipa::path(tag = "scopes", security(("bearer" = []), ("api_key" = [])), request_body = CreateScopeBody, responses(
    (status = 201, body = OAuthScopeBody),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 409, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("")]
async fn create(
    state: Data<ApiState>,
    auth: Auth,
    body: Json<CreateScopeBody>,
) -> ApiResult<HttpResponse> {
    let body = body.0;
    let spec = ScopeSpec {
        name: body.name,
        description: body.description,
        category: body.category,
        implies: body.implies,
    };
    let scope = state.app.oauth.scopes.create(&auth, spec).await?;
    Ok(HttpResponse::Created().json(OAuthScopeBody::from(scope)))
}

/// The caller's scopes, by name (admin). An account starts from the default scopes, stored
/// as its own on its first use of the catalog.
#[utoipa::path(tag = "scopes", security(("bearer" = []), ("api_key" = [])), responses(
    (status = 200, body = Vec<OAuthScopeBody>),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("")]
async fn list(state: Data<ApiState>, auth: Auth) -> ApiResult<HttpResponse> {
    let known = state.app.oauth.scopes.list(&auth).await?;
    let scopes: Vec<OAuthScopeBody> = known.iter().map(|k| k.scope.clone().into()).collect();
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(scopes))
}

/// The flattened registry (admin): every scope of the caller's catalog with its full
/// expanded set, by name.
#[utoipa::path(tag = "scopes", security(("bearer" = []), ("api_key" = [])), responses(
    (status = 200, body = Vec<ExpandedScopeBody>),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/registry")]
async fn registry(state: Data<ApiState>, auth: Auth) -> ApiResult<HttpResponse> {
    let known = state.app.oauth.scopes.list(&auth).await?;
    let scopes: Vec<ExpandedScopeBody> = known.iter().cloned().map(Into::into).collect();
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(scopes))
}

/// One scope of the caller's catalog, with its expanded set (admin).
#[utoipa::path(tag = "scopes", security(("bearer" = []), ("api_key" = [])), params(("name" = String, Path)), responses(
    (status = 200, body = ExpandedScopeBody),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/{name}")]
async fn get_one(state: Data<ApiState>, name: Path<String>, auth: Auth) -> ApiResult<HttpResponse> {
    let known = state.app.oauth.scopes.get(&auth, &name).await?;
    Ok(HttpResponse::Ok().json(ExpandedScopeBody::from(known)))
}

/// Replaces a scope's description, category and implied scopes (admin); the same
/// refusals as a creation. Audited as `scope.update`.
#[utoipa::path(tag = "scopes", security(("bearer" = []), ("api_key" = [])), request_body = UpdateScopeBody,
    params(("name" = String, Path)), responses(
    (status = 200, body = OAuthScopeBody),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 409, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[put("/{name}")]
async fn update(
    state: Data<ApiState>,
    name: Path<String>,
    auth: Auth,
    body: Json<UpdateScopeBody>,
) -> ApiResult<HttpResponse> {
    let body = body.0;
    let patch = ScopePatch {
        description: body.description,
        category: body.category,
        implies: body.implies,
    };
    let scope = state.app.oauth.scopes.update(&auth, &name, patch).await?;
    Ok(HttpResponse::Ok().json(OAuthScopeBody::from(scope)))
}

/// Deletes a scope (admin). A scope other scopes imply is 409 `scope_implied`, naming
/// them. Tools that require it keep requiring it, and cannot be called until it exists
/// again. Audited as `scope.delete`.
#[utoipa::path(tag = "scopes", security(("bearer" = []), ("api_key" = [])), params(("name" = String, Path)), responses(
    (status = 204),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 409, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[delete("/{name}")]
async fn remove(state: Data<ApiState>, name: Path<String>, auth: Auth) -> ApiResult<HttpResponse> {
    state.app.oauth.scopes.delete(&auth, &name).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpandBody {
    /// Scope names of the caller's catalog (at most 500).
    pub scopes: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExpandedBody {
    /// The scopes given and every scope they imply, sorted.
    pub scopes: Vec<String>,
}

/// The closure of scopes under `implies` (admin): what a token carrying them may do,
/// sorted. Names the catalog does not hold are 400 `unknown_scopes`, every one named.
#[utoipa::path(tag = "scopes", security(("bearer" = []), ("api_key" = [])), request_body = ExpandBody, responses(
    (status = 200, body = ExpandedBody),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/expand")]
async fn expand(
    state: Data<ApiState>,
    auth: Auth,
    body: Json<ExpandBody>,
) -> ApiResult<HttpResponse> {
    let names = body.0.scopes;
    if names.len() > EXPAND_NAMES {
        return Err(ApiError::new(
            Code::InvalidBody,
            format!("`scopes` holds at most {EXPAND_NAMES} names"),
        ));
    }
    let expanded = state.app.oauth.scopes.expand_for(&auth, &names).await?;
    Ok(HttpResponse::Ok().json(ExpandedBody {
        scopes: expanded.into_iter().collect(),
    }))
}
