//! Delegation grants (seed 003): a principal, or an agent, lets an agent act for it with a
//! subset of what it holds. Admins make, read, list and revoke them.

use std::collections::BTreeSet;

use actix_web::http::StatusCode;
use actix_web::web::{Data, Path, Query};
use actix_web::{HttpResponse, delete, get, post};
use chrono::{DateTime, Utc};
use d2_oauth::{
    AgentId, Delegation, DelegationFilter, DelegationId, DelegationSpec, Grantor, PrincipalId,
    delegation_limits,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use super::{PageQuery, paged};
use crate::auth::Auth;
use crate::body::Json;
use crate::error::ApiResult;
use crate::state::ApiState;

pub fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(create_delegation)
        .service(list_delegations)
        .service(show_delegation)
        .service(revoke_delegation);
}

/// Who delegates.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GrantorType {
    /// One of the account's principals (`/v1/users`).
    Principal,
    /// One of the account's agents, handing part of its work to another.
    Agent,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantorRef {
    #[serde(rename = "type")]
    pub kind: GrantorType,
    /// The principal's `principal_id`, or the agent's `client_id`.
    pub id: Uuid,
}

impl From<GrantorRef> for Grantor {
    fn from(grantor: GrantorRef) -> Self {
        match grantor.kind {
            GrantorType::Principal => Grantor::Principal(PrincipalId::from_uuid(grantor.id)),
            GrantorType::Agent => Grantor::Agent(AgentId::from_uuid(grantor.id)),
        }
    }
}

impl From<Grantor> for GrantorRef {
    fn from(grantor: Grantor) -> Self {
        let kind = match grantor {
            Grantor::Principal(_) => GrantorType::Principal,
            Grantor::Agent(_) => GrantorType::Agent,
        };
        Self {
            kind,
            id: grantor.id(),
        }
    }
}

fn default_max_depth() -> u8 {
    1
}

fn default_expires_in() -> u32 {
    delegation_limits::DEFAULT_SECONDS
}

/// A grant as asked for.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DelegationBody {
    pub grantor: GrantorRef,
    /// The agent that may act for the grantor (its `client_id`).
    pub agent_id: Uuid,
    /// 1 to 100 scopes, each held by the grantor and allowed to the agent.
    #[schema(min_items = 1, max_items = 100, example = json!(["reports.read"]))]
    pub scopes: BTreeSet<String>,
    /// The tools the agent may call for the grantor (active, held by the grantor, bound to
    /// the agent); absent: any its scopes allow.
    #[schema(max_items = 100)]
    pub tools: Option<BTreeSet<String>>,
    /// The RFC 8707 resources its tokens may target for the grantor; absent or empty: any
    /// the agent may target.
    #[serde(default)]
    #[schema(max_items = 10)]
    pub resources: BTreeSet<String>,
    /// The task the grant is for; absent: any.
    #[schema(min_length = 1, max_length = 128)]
    pub task_id: Option<String>,
    /// How many agents deep the delegation may reach, the agent itself the first: 1 to
    /// 10, default 1.
    #[serde(default = "default_max_depth")]
    #[schema(minimum = 1, maximum = 10)]
    pub max_depth: u8,
    /// Seconds the grant lasts: 60 to 31,536,000, default 86,400.
    #[serde(default = "default_expires_in")]
    #[schema(minimum = 60, maximum = 31_536_000)]
    pub expires_in: u32,
}

impl From<DelegationBody> for DelegationSpec {
    fn from(body: DelegationBody) -> Self {
        Self {
            grantor: body.grantor.into(),
            agent_id: AgentId::from_uuid(body.agent_id),
            scopes: body.scopes,
            tools: body.tools,
            resources: body.resources,
            task_id: body.task_id,
            max_depth: body.max_depth,
            expires_in_seconds: body.expires_in,
        }
    }
}

/// A grant as stored, with where it stands now.
#[derive(Debug, Serialize, ToSchema)]
pub struct DelegationView {
    pub delegation_id: Uuid,
    pub grantor: GrantorRef,
    pub agent_id: Uuid,
    pub scopes: BTreeSet<String>,
    pub tools: Option<BTreeSet<String>>,
    pub resources: BTreeSet<String>,
    pub task_id: Option<String>,
    pub max_depth: u8,
    /// `active`, `expired` or `revoked`.
    #[schema(example = "active")]
    pub status: &'static str,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Who made it, as audit records name an actor.
    pub created_by: String,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Why it was revoked: `admin`.
    pub revoked_reason: Option<String>,
    pub revoked_by: Option<String>,
}

impl DelegationView {
    fn at(delegation: Delegation, now: DateTime<Utc>) -> Self {
        let status = delegation.status(now).as_str();
        let revocation = delegation.revocation;
        Self {
            delegation_id: *delegation.id.as_uuid(),
            grantor: delegation.grantor.into(),
            agent_id: *delegation.agent_id.as_uuid(),
            scopes: delegation.scopes,
            tools: delegation.tools,
            resources: delegation.resources,
            task_id: delegation.task_id,
            max_depth: delegation.max_depth,
            status,
            created_at: delegation.created_at,
            expires_at: delegation.expires_at,
            created_by: delegation.created_by,
            revoked_at: revocation.as_ref().map(|r| r.at),
            revoked_reason: revocation.as_ref().map(|r| r.reason.clone()),
            revoked_by: revocation.map(|r| r.by),
        }
    }
}

/// Grant an agent part of what a principal or an agent holds (`admin`): the scopes, tools
/// and resources named must be held by the grantor (an active principal holds any scope
/// and resource and every active tool; an active agent what it may have, the active tools
/// bound to it and its resources) and allowed to the agent. 400
/// `delegation_exceeds_grantor` otherwise, 404 `agent_not_found` / `principal_not_found`
/// for parties the account does not have. Audited as `delegation.create`.
#[utoipa::path(tag = "oauth", security(("bearer" = []), ("api_key" = [])), request_body = DelegationBody, responses(
    (status = 201, body = DelegationView),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("")]
async fn create_delegation(
    state: Data<ApiState>,
    auth: Auth,
    body: Json<DelegationBody>,
) -> ApiResult<HttpResponse> {
    let delegation = state
        .app
        .oauth
        .delegations
        .create(&auth, body.0.into())
        .await?;
    let view = DelegationView::at(delegation, state.app.clock.now());
    Ok(HttpResponse::build(StatusCode::CREATED).json(view))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DelegationsQuery {
    /// Only the grants this principal made.
    pub principal_id: Option<Uuid>,
    /// Only the grants this agent made.
    pub grantor_agent_id: Option<Uuid>,
    /// Only the grants to this agent.
    pub agent_id: Option<Uuid>,
    /// `true`: only the grants working now (neither revoked nor expired).
    pub active: Option<bool>,
    /// Items per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The `X-Next-Cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The account's grants, newest first, a page at a time (`admin`). `principal_id` and
/// `grantor_agent_id` are exclusive (400 `invalid_query`).
#[utoipa::path(tag = "oauth", security(("bearer" = []), ("api_key" = [])), params(DelegationsQuery), responses(
    (status = 200, body = Vec<DelegationView>, headers(("X-Next-Cursor" = String, description = "Present when another page follows"))),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("")]
async fn list_delegations(
    state: Data<ApiState>,
    auth: Auth,
    query: Query<DelegationsQuery>,
) -> ApiResult<HttpResponse> {
    let query = query.into_inner();
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    }
    .parse()?;
    let grantor = match (query.principal_id, query.grantor_agent_id) {
        (Some(_), Some(_)) => {
            return Err(super::invalid_query(
                "`principal_id` and `grantor_agent_id` cannot both be given",
            ));
        }
        (Some(id), None) => Some(Grantor::Principal(PrincipalId::from_uuid(id))),
        (None, Some(id)) => Some(Grantor::Agent(AgentId::from_uuid(id))),
        (None, None) => None,
    };
    let now = state.app.clock.now();
    let filter = DelegationFilter {
        grantor,
        agent_id: query.agent_id.map(AgentId::from_uuid),
        active_at: query.active.filter(|active| *active).map(|_| now),
    };
    let delegations = state
        .app
        .oauth
        .delegations
        .list(&auth, &filter, &page)
        .await?;
    Ok(paged(delegations, |d| DelegationView::at(d, now)))
}

/// One grant of the account (`admin`); another account's is 404 `delegation_not_found`.
#[utoipa::path(tag = "oauth", security(("bearer" = []), ("api_key" = [])),
    params(("delegation_id" = Uuid, Path)), responses(
    (status = 200, body = DelegationView),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/{delegation_id}")]
async fn show_delegation(
    state: Data<ApiState>,
    id: Path<DelegationId>,
    auth: Auth,
) -> ApiResult<HttpResponse> {
    let delegation = state.app.oauth.delegations.get(&auth, *id).await?;
    Ok(HttpResponse::Ok().json(DelegationView::at(delegation, state.app.clock.now())))
}

/// Revoke a grant (`admin`): answered with the grant as revoked; one revoked before is
/// answered as it is, and nothing is written. Audited as `delegation.revoke`.
#[utoipa::path(tag = "oauth", security(("bearer" = []), ("api_key" = [])),
    params(("delegation_id" = Uuid, Path)), responses(
    (status = 200, body = DelegationView),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[delete("/{delegation_id}")]
async fn revoke_delegation(
    state: Data<ApiState>,
    id: Path<DelegationId>,
    auth: Auth,
) -> ApiResult<HttpResponse> {
    let delegation = state.app.oauth.delegations.revoke(&auth, *id).await?;
    Ok(HttpResponse::Ok().json(DelegationView::at(delegation, state.app.clock.now())))
}
