//! The tools of the caller's account (seed 003) and the tools bound to its agents.

use actix_web::http::StatusCode;
use actix_web::web::{Data, Path, Query};
use actix_web::{HttpResponse, delete, get, post, put};
use chrono::{DateTime, Utc};
use d2_kernel::Code;
use d2_oauth::{AgentId, Tool, ToolFilter, ToolId, ToolSpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use super::{PageQuery, paged};
use crate::auth::Auth;
use crate::body::Json;
use crate::error::{ApiError, ApiResult};
use crate::state::ApiState;

/// Routes under `/v1/tools`.
pub fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(create)
        .service(list)
        .service(get_one)
        .service(update)
        .service(remove)
        .service(activate)
        .service(deactivate);
}

/// Routes under `/v1/agents/{client_id}/tools`.
pub fn configure_agent_tools(cfg: &mut ServiceConfig<'_>) {
    cfg.service(agent_tools).service(bind).service(unbind);
}

/// A tool's definition.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolDefinitionBody {
    /// The name agents call it by, unique in the account: 1 to 100 of
    /// `A-Z a-z 0-9 . _ : / -` (`search.web`).
    #[schema(min_length = 1, max_length = 100, pattern = "^[A-Za-z0-9._:/-]+$")]
    pub name: String,
    /// At most 1,000 characters, no control characters.
    #[schema(max_length = 1000)]
    pub description: Option<String>,
    /// A short token: 1 to 50 of `A-Z a-z 0-9 . _ : -`.
    #[schema(max_length = 50)]
    pub category: Option<String>,
    /// The JSON Schema of the tool's parameters (draft 2020-12 unless its `$schema` names
    /// 2019-09, 7, 6 or 4), at most 64 KiB; `{"type": "object"}` if absent or null.
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
    /// The scopes of the account's catalog a token must carry to call the tool.
    #[serde(default)]
    pub required_scopes: Vec<String>,
}

impl ToolDefinitionBody {
    fn into_spec(self) -> ToolSpec {
        ToolSpec {
            name: self.name,
            description: self.description,
            category: self.category,
            parameters: self.parameters.unwrap_or_else(ToolSpec::any_parameters),
            required_scopes: self.required_scopes,
        }
    }
}

/// A new tool: its definition (as [`ToolDefinitionBody`]), and whether it starts active
/// (it does if absent).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToolBody {
    #[schema(min_length = 1, max_length = 100, pattern = "^[A-Za-z0-9._:/-]+$")]
    pub name: String,
    #[schema(max_length = 1000)]
    pub description: Option<String>,
    #[schema(max_length = 50)]
    pub category: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
    #[serde(default)]
    pub required_scopes: Vec<String>,
    pub active: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ToolBody {
    pub tool_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub category: Option<String>,
    #[schema(value_type = Object)]
    pub parameters: Value,
    pub required_scopes: Vec<String>,
    /// An inactive tool stays defined and bound, and is not granted.
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Tool> for ToolBody {
    fn from(tool: Tool) -> Self {
        Self {
            tool_id: *tool.id.as_uuid(),
            name: tool.spec.name,
            description: tool.spec.description,
            category: tool.spec.category,
            parameters: tool.spec.parameters,
            required_scopes: tool.spec.required_scopes,
            active: tool.active,
            created_at: tool.created_at,
            updated_at: tool.updated_at,
        }
    }
}

/// Adds a tool to the caller's account (admin). A name another tool has is 409
/// `tool_name_taken`; a `parameters` that is no JSON Schema is 400 `invalid_tool_schema`
/// (413 `tool_schema_too_large` past 64 KiB); required scopes the catalog does not hold are
/// 400 `unknown_scopes`. Audited as `tool.create`.
#[utoipa::path(tag = "tools", security(("bearer" = []), ("api_key" = [])), request_body = CreateToolBody, responses(
    (status = 201, body = ToolBody),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 409, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 413, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("")]
async fn create(
    state: Data<ApiState>,
    auth: Auth,
    body: Json<CreateToolBody>,
) -> ApiResult<HttpResponse> {
    let body = body.0;
    let active = body.active.unwrap_or(true);
    let definition = ToolDefinitionBody {
        name: body.name,
        description: body.description,
        category: body.category,
        parameters: body.parameters,
        required_scopes: body.required_scopes,
    };
    let tool = state
        .app
        .oauth
        .tools
        .create(&auth, definition.into_spec(), active)
        .await?;
    Ok(HttpResponse::Created().json(ToolBody::from(tool)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ToolQuery {
    /// Only the tools of this category.
    pub category: Option<String>,
    /// Only the active (`true`) or the inactive (`false`) tools.
    pub active: Option<bool>,
}

/// The caller's tools, newest first (admin), filtered by `category` and `active`.
#[utoipa::path(tag = "tools", security(("bearer" = []), ("api_key" = [])), params(ToolQuery, PageQuery), responses(
    (status = 200, body = Vec<ToolBody>, headers(("X-Next-Cursor" = String, description = "Present when another page follows"))),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("")]
async fn list(
    state: Data<ApiState>,
    auth: Auth,
    filter: Query<ToolQuery>,
    page: Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let page = page.parse()?;
    let filter = filter.into_inner();
    if let Some(category) = &filter.category
        && !d2_oauth::catalog::text::is_category(category)
    {
        return Err(ApiError::new(
            Code::InvalidQuery,
            "`category` must be 1 to 50 of A-Z a-z 0-9 . _ : -",
        ));
    }
    let filter = ToolFilter {
        category: filter.category,
        active: filter.active,
    };
    let tools = state.app.oauth.tools.list(&auth, &filter, &page).await?;
    Ok(paged(tools, ToolBody::from))
}

/// One of the caller's tools (admin); another account's is 404 `tool_not_found`.
#[utoipa::path(tag = "tools", security(("bearer" = []), ("api_key" = [])), params(("tool_id" = Uuid, Path)), responses(
    (status = 200, body = ToolBody),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/{tool_id}")]
async fn get_one(
    state: Data<ApiState>,
    tool_id: Path<ToolId>,
    auth: Auth,
) -> ApiResult<HttpResponse> {
    let tool = state.app.oauth.tools.get(&auth, *tool_id).await?;
    Ok(HttpResponse::Ok().json(ToolBody::from(tool)))
}

/// Replaces a tool's definition (admin): absent optional fields are cleared (parameters
/// become `{"type": "object"}`); whether it is active stays. The same refusals as a
/// creation. Audited as `tool.update`.
#[utoipa::path(tag = "tools", security(("bearer" = []), ("api_key" = [])), request_body = ToolDefinitionBody,
    params(("tool_id" = Uuid, Path)), responses(
    (status = 200, body = ToolBody),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 409, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 413, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[put("/{tool_id}")]
async fn update(
    state: Data<ApiState>,
    tool_id: Path<ToolId>,
    auth: Auth,
    body: Json<ToolDefinitionBody>,
) -> ApiResult<HttpResponse> {
    let tool = state
        .app
        .oauth
        .tools
        .update(&auth, *tool_id, body.0.into_spec())
        .await?;
    Ok(HttpResponse::Ok().json(ToolBody::from(tool)))
}

/// Deletes a tool (admin); every agent it was bound to loses it. Audited as `tool.delete`.
#[utoipa::path(tag = "tools", security(("bearer" = []), ("api_key" = [])), params(("tool_id" = Uuid, Path)), responses(
    (status = 204),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[delete("/{tool_id}")]
async fn remove(
    state: Data<ApiState>,
    tool_id: Path<ToolId>,
    auth: Auth,
) -> ApiResult<HttpResponse> {
    state.app.oauth.tools.delete(&auth, *tool_id).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn set_active(
    state: &ApiState,
    tool_id: ToolId,
    auth: &Auth,
    active: bool,
) -> ApiResult<HttpResponse> {
    let tool = state
        .app
        .oauth
        .tools
        .set_active(auth, tool_id, active)
        .await?;
    Ok(HttpResponse::Ok().json(ToolBody::from(tool)))
}

/// Turns a tool on (admin); an active tool is answered unchanged. Audited as
/// `tool.activate`.
#[utoipa::path(tag = "tools", security(("bearer" = []), ("api_key" = [])), params(("tool_id" = Uuid, Path)), responses(
    (status = 200, body = ToolBody),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/{tool_id}/activate")]
async fn activate(
    state: Data<ApiState>,
    tool_id: Path<ToolId>,
    auth: Auth,
) -> ApiResult<HttpResponse> {
    set_active(&state, *tool_id, &auth, true).await
}

/// Turns a tool off (admin): it stays defined and bound, and is not granted. An inactive
/// tool is answered unchanged. Audited as `tool.deactivate`.
#[utoipa::path(tag = "tools", security(("bearer" = []), ("api_key" = [])), params(("tool_id" = Uuid, Path)), responses(
    (status = 200, body = ToolBody),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/{tool_id}/deactivate")]
async fn deactivate(
    state: Data<ApiState>,
    tool_id: Path<ToolId>,
    auth: Auth,
) -> ApiResult<HttpResponse> {
    set_active(&state, *tool_id, &auth, false).await
}

/// The tools bound to one of the caller's agents, by name (admin). Another account's agent
/// is 404 `agent_not_found`.
#[utoipa::path(tag = "tools", security(("bearer" = []), ("api_key" = [])), params(("client_id" = Uuid, Path)), responses(
    (status = 200, body = Vec<ToolBody>),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/{client_id}/tools")]
async fn agent_tools(
    state: Data<ApiState>,
    client_id: Path<AgentId>,
    auth: Auth,
) -> ApiResult<HttpResponse> {
    let tools = state.app.oauth.tools.bound(&auth, *client_id).await?;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(
            tools
                .iter()
                .cloned()
                .map(ToolBody::from)
                .collect::<Vec<_>>(),
        ))
}

/// Binds one of the caller's tools to one of the caller's agents (admin): 201 when newly
/// bound, 200 when it already was (nothing written). Either of another account is 404
/// (`agent_not_found`, `tool_not_found`), nothing written. Audited as `agent.tool_bind`.
#[utoipa::path(tag = "tools", security(("bearer" = []), ("api_key" = [])),
    params(("client_id" = Uuid, Path), ("tool_id" = Uuid, Path)), responses(
    (status = 201, body = ToolBody),
    (status = 200, body = ToolBody),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/{client_id}/tools/{tool_id}")]
async fn bind(
    state: Data<ApiState>,
    ids: Path<(AgentId, ToolId)>,
    auth: Auth,
) -> ApiResult<HttpResponse> {
    let (agent, tool) = *ids;
    let tools = &state.app.oauth.tools;
    let bound = tools.bind(&auth, agent, tool).await?;
    let tool = tools.get(&auth, tool).await?;
    let status = if bound {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(ToolBody::from(tool)))
}

/// Unbinds a tool from one of the caller's agents (admin); a tool not bound to it is 404
/// `tool_not_bound`. Audited as `agent.tool_unbind`.
#[utoipa::path(tag = "tools", security(("bearer" = []), ("api_key" = [])),
    params(("client_id" = Uuid, Path), ("tool_id" = Uuid, Path)), responses(
    (status = 204),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[delete("/{client_id}/tools/{tool_id}")]
async fn unbind(
    state: Data<ApiState>,
    ids: Path<(AgentId, ToolId)>,
    auth: Auth,
) -> ApiResult<HttpResponse> {
    let (agent, tool) = *ids;
    state.app.oauth.tools.unbind(&auth, agent, tool).await?;
    Ok(HttpResponse::NoContent().finish())
}
