use actix_web::web::{Data, Query};
use actix_web::{HttpResponse, get};
use chrono::{DateTime, Utc};
use d2_audit::{AuditAction, AuditFilter, AuditRecord};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use super::{invalid_query, paged};
use crate::auth::Auth;
use crate::error::ApiResult;
use crate::state::ApiState;

pub fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(list);
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Items per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The `X-Next-Cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only this action, e.g. `token.create`.
    pub action: Option<String>,
    /// Only this actor: `token:<id>`, `control_plane` or `system`.
    pub actor: Option<String>,
    /// From this instant (inclusive, RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Before this instant (exclusive, RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Only the records of this OAuth task (its issuances, refreshes, reuses and
    /// introspection refusals).
    #[param(max_length = 128)]
    pub task_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditRecordBody {
    pub id: i64,
    pub action: &'static str,
    /// `success`, `failure` or `denied`.
    pub status: &'static str,
    pub actor: String,
    pub token_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    /// The name of `user_id` (display name, else full name, else email); `Server Token`
    /// for an action of a token without a person; null for the system and the control
    /// plane.
    pub user_name: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

impl From<AuditRecord> for AuditRecordBody {
    fn from(record: AuditRecord) -> Self {
        let entry = record.entry;
        let user_name = match (entry.user_id, entry.token_id) {
            (None, None) => None,
            (user, _) => super::person_or_server_token(user, record.user_name),
        };
        Self {
            id: record.id,
            action: entry.action.as_str(),
            status: entry.status.as_str(),
            actor: entry.actor,
            token_id: entry.token_id.map(Uuid::from),
            user_id: entry.user_id.map(Uuid::from),
            user_name,
            resource_type: entry.resource_type,
            resource_id: entry.resource_id,
            metadata: entry.metadata,
            created_at: entry.occurred_at,
        }
    }
}

/// The caller's account's audit trail, newest first (admin).
#[utoipa::path(tag = "audit", security(("bearer" = []), ("api_key" = [])), params(AuditQuery), responses(
    (status = 200, body = Vec<AuditRecordBody>, headers(("X-Next-Cursor" = String, description = "Present when another page follows"))),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("")]
async fn list(
    state: Data<ApiState>,
    auth: Auth,
    query: Query<AuditQuery>,
) -> ApiResult<HttpResponse> {
    let query = query.into_inner();
    crate::time::check_instants(&[("since", query.since), ("until", query.until)])?;
    let page = super::PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    }
    .parse()?;
    let action = query
        .action
        .as_deref()
        .map(str::parse::<AuditAction>)
        .transpose()
        .map_err(|e| invalid_query(e.to_string()))?;
    if query
        .task_id
        .as_ref()
        .is_some_and(|task| task.chars().count() > 128)
    {
        return Err(invalid_query(
            "`task_id` is at most 128 characters".to_owned(),
        ));
    }
    let filter = AuditFilter {
        action,
        actor: query.actor,
        since: query.since,
        until: query.until,
        task_id: query.task_id,
    };
    let records = state.app.audit.list(&auth, &filter, &page).await?;
    Ok(paged(records, AuditRecordBody::from))
}
