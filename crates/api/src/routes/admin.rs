//! The account's admins' view of its authorization server (seed 003's `/admin`): the
//! dashboard, the tokens issued with their lineage, revocation with descendants,
//! introspection of a token's text, and a task with the chain of tasks above it.

use actix_web::web::{Data, Path, Query};
use actix_web::{HttpResponse, get, post};
use chrono::{DateTime, Utc};
use d2_oauth::admin::DASHBOARD_WINDOWS;
use d2_oauth::{AgentId, OAuthTokenId, TokenFilter, TokenKind, TokenRecord};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use super::audit::AuditRecordBody;
use super::oauth::{IntrospectionBody, VerificationBody, token_type};
use super::{PageQuery, paged, secret_response};
use crate::auth::Auth;
use crate::body::Json;
use crate::error::{ApiError, ApiResult};
use crate::state::ApiState;

pub fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(dashboard)
        .service(list_tokens)
        .service(show_token)
        .service(revoke_token)
        .service(introspect)
        .service(show_task);
}

/// Counts over one window.
#[derive(Debug, Serialize, ToSchema)]
pub struct WindowBody {
    /// `1h`, `24h` or `7d`.
    pub window: &'static str,
    /// Access tokens issued.
    pub issued: u64,
    /// Token requests denied (`oauth.token_deny`).
    pub denied: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentCountsBody {
    pub pending: u64,
    pub active: u64,
    pub disabled: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DashboardBody {
    pub at: DateTime<Utc>,
    pub agents: AgentCountsBody,
    pub active_access_tokens: u64,
    pub active_refresh_tokens: u64,
    pub windows: Vec<WindowBody>,
}

/// The authorization server at a glance (`admin`): agents by state, tokens working now,
/// issuances and denials over the last hour, day and week.
#[utoipa::path(tag = "admin", security(("bearer" = []), ("api_key" = [])), responses(
    (status = 200, body = DashboardBody),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/dashboard")]
async fn dashboard(state: Data<ApiState>, auth: Auth) -> ApiResult<HttpResponse> {
    let dashboard = state.app.oauth.admin.dashboard(&auth).await?;
    let counts = dashboard.counts;
    let windows = DASHBOARD_WINDOWS
        .iter()
        .enumerate()
        .map(|(i, (window, _))| WindowBody {
            window,
            issued: counts.issued_since.get(i).copied().unwrap_or_default(),
            denied: counts.denied_since.get(i).copied().unwrap_or_default(),
        })
        .collect();
    Ok(HttpResponse::Ok().json(DashboardBody {
        at: dashboard.at,
        agents: AgentCountsBody {
            pending: counts.agents.pending,
            active: counts.agents.active,
            disabled: counts.agents.disabled,
        },
        active_access_tokens: counts.active_access,
        active_refresh_tokens: counts.active_refresh,
        windows,
    }))
}

/// A token the account's server issued (never its text or digest).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    /// The token's id: an access token's `jti`.
    pub token_id: Uuid,
    /// `access_token` or `refresh_token`.
    pub token_type: &'static str,
    pub client_id: Uuid,
    pub scope: String,
    pub aud: Vec<String>,
    pub task_id: String,
    pub parent_task_id: Option<String>,
    pub grant_type: &'static str,
    pub family_id: Uuid,
    pub parent_token_id: Option<Uuid>,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_reason: Option<String>,
}

impl From<TokenRecord> for TokenView {
    fn from(record: TokenRecord) -> Self {
        Self {
            token_id: *record.id.as_uuid(),
            token_type: token_type(record.kind),
            client_id: *record.agent_id.as_uuid(),
            scope: record.scope(),
            aud: record.audience,
            task_id: record.task_id,
            parent_task_id: record.parent_task_id,
            grant_type: record.grant_type.as_str(),
            family_id: *record.family_id.as_uuid(),
            parent_token_id: record.parent_id.map(|id| *id.as_uuid()),
            issued_at: record.issued_at,
            expires_at: record.expires_at,
            revoked_at: record.revoked_at,
            revoked_reason: record.revoked_reason,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TokensQuery {
    /// Only the tokens of this agent.
    pub client_id: Option<Uuid>,
    /// `access_token` or `refresh_token`.
    pub token_type: Option<String>,
    /// Only the tokens of this task.
    pub task_id: Option<String>,
    /// Only the tokens working now (`true`); default all.
    #[serde(default)]
    pub active: bool,
    /// Items per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The `X-Next-Cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The tokens the account's server issued, newest first, filtered, a page at a time
/// (`admin`).
#[utoipa::path(tag = "admin", security(("bearer" = []), ("api_key" = [])), params(TokensQuery), responses(
    (status = 200, body = Vec<TokenView>, headers(("X-Next-Cursor" = String, description = "Present when another page follows"))),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/tokens")]
async fn list_tokens(
    state: Data<ApiState>,
    auth: Auth,
    query: Query<TokensQuery>,
) -> ApiResult<HttpResponse> {
    let query = query.into_inner();
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    }
    .parse()?;
    let kind = match query.token_type.as_deref() {
        None => None,
        Some("access_token") => Some(TokenKind::Access),
        Some("refresh_token") => Some(TokenKind::Refresh),
        Some(_) => {
            return Err(ApiError::new(
                d2_kernel::Code::InvalidQuery,
                "`token_type` is access_token or refresh_token",
            ));
        }
    };
    let filter = TokenFilter {
        agent_id: query.client_id.map(AgentId::from_uuid),
        kind,
        task_id: query.task_id,
        active_at: None,
    };
    let tokens = state
        .app
        .oauth
        .admin
        .tokens(&auth, filter, query.active, &page)
        .await?;
    Ok(paged(tokens, TokenView::from))
}

/// One token of the account with its lineage and what is wrong with them (`admin`), as
/// the `verify` endpoint answers for a token's text; another account's is 404
/// `oauth_token_not_found`.
#[utoipa::path(tag = "admin", security(("bearer" = []), ("api_key" = [])),
    params(("token_id" = Uuid, Path)), responses(
    (status = 200, body = VerificationBody),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/tokens/{token_id}")]
async fn show_token(
    state: Data<ApiState>,
    id: Path<OAuthTokenId>,
    auth: Auth,
) -> ApiResult<HttpResponse> {
    let verification = state.app.oauth.admin.token(&auth, *id).await?;
    let issuer = d2_oauth::issuer_url(&state.public_base, auth.account_id);
    Ok(HttpResponse::Ok().json(VerificationBody::of(&verification, issuer)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevokedBody {
    /// The tokens this revocation revoked: the token and those derived from it that still
    /// worked.
    pub revoked: Vec<Uuid>,
}

/// Revokes a token of the account and every token derived from it (`admin`). Audited as
/// `oauth.token_revoke` (`reason: admin`, `by`: the caller) when it revoked any.
#[utoipa::path(tag = "admin", security(("bearer" = []), ("api_key" = [])),
    params(("token_id" = Uuid, Path)), responses(
    (status = 200, body = RevokedBody),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/tokens/{token_id}/revoke")]
async fn revoke_token(
    state: Data<ApiState>,
    id: Path<OAuthTokenId>,
    auth: Auth,
) -> ApiResult<HttpResponse> {
    let revoked = state.app.oauth.admin.revoke(&auth, *id).await?;
    Ok(HttpResponse::Ok().json(RevokedBody {
        revoked: revoked.iter().map(|id| *id.as_uuid()).collect(),
    }))
}

/// The longest token text introspected (access tokens are about a kilobyte).
const INTROSPECTED_BYTES: usize = 16_384;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntrospectBody {
    /// An access token (JWT) or refresh token (`d2rt_…`) of the account.
    #[schema(min_length = 1, max_length = 16384)]
    pub token: String,
}

/// RFC 7662's answer for a token's text, for the account's admins (no client
/// authentication): its claims and lineage while it works, else `{"active": false}`.
#[utoipa::path(tag = "admin", security(("bearer" = []), ("api_key" = [])),
    request_body = IntrospectBody, responses(
    (status = 200, body = IntrospectionBody),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/introspect")]
async fn introspect(
    state: Data<ApiState>,
    auth: Auth,
    body: Json<IntrospectBody>,
) -> ApiResult<HttpResponse> {
    if body.0.token.is_empty() || body.0.token.len() > INTROSPECTED_BYTES {
        return Err(ApiError::new(
            d2_kernel::Code::InvalidBody,
            format!("`token` must be 1 to {INTROSPECTED_BYTES} bytes"),
        ));
    }
    let issuer = d2_oauth::issuer_url(&state.public_base, auth.account_id);
    let found = state
        .app
        .oauth
        .admin
        .introspect(&auth, &issuer, &body.0.token)
        .await?;
    Ok(secret_response(
        actix_web::http::StatusCode::OK,
        &IntrospectionBody::of(found),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TaskLinkBody {
    pub task_id: String,
    pub parent_task_id: Option<String>,
    /// Whether a token of the account carries this task.
    pub known: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TaskBody {
    pub task_id: String,
    /// The task's tokens, newest first (at most 100).
    pub tokens: Vec<TokenView>,
    /// Whether the task has more tokens than listed (page them with
    /// `GET /v1/admin/tokens?task_id=`).
    pub more_tokens: bool,
    /// The task's audit records, newest first (at most 100): its issuances, refreshes,
    /// reuses and introspection refusals.
    pub audit: Vec<AuditRecordBody>,
    /// Whether it has more (page them with `GET /v1/audit?task_id=`).
    pub more_audit: bool,
    /// The tasks it descends from, nearest first (at most 20).
    pub chain: Vec<TaskLinkBody>,
    pub chain_truncated: bool,
}

/// A task (`admin`): its tokens, its audit trail and the chain of tasks it descends from,
/// as their tokens' `parent_task_id` name them. 400 `invalid_query` for a malformed task id.
#[utoipa::path(tag = "admin", security(("bearer" = []), ("api_key" = [])),
    params(("task_id" = String, Path)), responses(
    (status = 200, body = TaskBody),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/tasks/{task_id}")]
async fn show_task(
    state: Data<ApiState>,
    task_id: Path<String>,
    auth: Auth,
) -> ApiResult<HttpResponse> {
    let task = state.app.oauth.admin.task(&auth, &task_id).await?;
    Ok(HttpResponse::Ok().json(TaskBody {
        task_id: task.task_id,
        tokens: task.tokens.into_iter().map(TokenView::from).collect(),
        more_tokens: task.more_tokens,
        audit: task.audit.into_iter().map(AuditRecordBody::from).collect(),
        more_audit: task.more_audit,
        chain: task
            .chain
            .into_iter()
            .map(|link| TaskLinkBody {
                task_id: link.task_id,
                parent_task_id: link.parent_task_id,
                known: link.known,
            })
            .collect(),
        chain_truncated: task.chain_truncated,
    }))
}
