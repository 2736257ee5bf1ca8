//! Threshold notices of billing: the endpoint they are posted to, and the notices raised.

use actix_web::web::{Data, Query};
use actix_web::{HttpResponse, delete, get, put};
use chrono::{DateTime, Utc};
use d2_billing::{Notice, NoticeEndpoint};
use d2_kernel::Code;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::Auth;
use crate::body::Json;
use crate::error::{ApiError, ApiResult};
use crate::state::ApiState;

pub fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(get_endpoint)
        .service(set_endpoint)
        .service(delete_endpoint)
        .service(list_notices);
}

/// Where the account's threshold notices are posted.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointBody {
    /// An absolute `https` URL (`http` only to a loopback host), without credentials or
    /// fragment, at most 2048 bytes.
    #[schema(min_length = 1, max_length = 2048)]
    pub url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointView {
    pub url: String,
    pub updated_at: DateTime<Utc>,
}

impl From<NoticeEndpoint> for EndpointView {
    fn from(endpoint: NoticeEndpoint) -> Self {
        Self {
            url: endpoint.url,
            updated_at: endpoint.updated_at,
        }
    }
}

/// A threshold notice: usage reached `threshold` % of `limit` in the period starting at
/// `period_start`. The body posted to the endpoint is this, with `type` and `account_id`.
#[derive(Debug, Serialize, ToSchema)]
pub struct NoticeView {
    pub id: String,
    /// `included_credits` (the credits the plan includes for the period), or a budget:
    /// `budget:model:<model>` or `budget:agent:<agent>` (the calendar month).
    pub subject: String,
    pub period_start: DateTime<Utc>,
    /// 80, 90 or 100.
    pub threshold: u8,
    /// What was used of the limit when the notice was raised.
    pub used: u64,
    pub limit: u64,
    pub created_at: DateTime<Utc>,
}

impl From<Notice> for NoticeView {
    fn from(notice: Notice) -> Self {
        Self {
            id: notice.id.to_string(),
            subject: notice.subject,
            period_start: notice.period_start,
            threshold: notice.threshold,
            used: notice.used,
            limit: notice.limit,
            created_at: notice.created_at,
        }
    }
}

/// The account's notice endpoint (admin); 404 `notice_endpoint_not_found` when it has none.
#[utoipa::path(tag = "billing", security(("bearer" = []), ("api_key" = [])), responses(
    (status = 200, body = EndpointView),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/notices/endpoint")]
async fn get_endpoint(state: Data<ApiState>, auth: Auth) -> ApiResult<HttpResponse> {
    let endpoint = state.app.billing.notices.endpoint(&auth).await?;
    Ok(HttpResponse::Ok().json(EndpointView::from(endpoint)))
}

/// Set where the account's threshold notices are posted (admin), replacing any. Each
/// notice is posted as JSON with `D2-Notice-Id` and `D2-Signature`: a JWS with a
/// detached payload (`header..signature`) over the exact body, signed with the account's
/// signing key and verifiable against its JWKS. Audited as `billing.notice_endpoint_set`.
#[utoipa::path(tag = "billing", security(("bearer" = []), ("api_key" = [])),
    request_body = EndpointBody, responses(
    (status = 200, body = EndpointView),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[put("/notices/endpoint")]
async fn set_endpoint(
    state: Data<ApiState>,
    auth: Auth,
    body: Json<EndpointBody>,
) -> ApiResult<HttpResponse> {
    let endpoint = state
        .app
        .billing
        .notices
        .set_endpoint(&auth, &body.0.url)
        .await?;
    Ok(HttpResponse::Ok().json(EndpointView::from(endpoint)))
}

/// Stop posting the account's notices (admin); they are still raised and audited.
/// Audited as `billing.notice_endpoint_delete`.
#[utoipa::path(tag = "billing", security(("bearer" = []), ("api_key" = [])), responses(
    (status = 204),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[delete("/notices/endpoint")]
async fn delete_endpoint(state: Data<ApiState>, auth: Auth) -> ApiResult<HttpResponse> {
    state.app.billing.notices.delete_endpoint(&auth).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NoticesQuery {
    /// At most this many, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// The account's threshold notices, newest first (admin): one per subject, period and
/// threshold reached.
#[utoipa::path(tag = "billing", security(("bearer" = []), ("api_key" = [])),
    params(NoticesQuery), responses(
    (status = 200, body = Vec<NoticeView>),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/notices")]
async fn list_notices(
    state: Data<ApiState>,
    auth: Auth,
    query: Query<NoticesQuery>,
) -> ApiResult<HttpResponse> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(
            Code::InvalidQuery,
            "limit: 1 to 1000".to_owned(),
        ));
    }
    let notices = state.app.billing.notices.list(&auth, limit).await?;
    let views: Vec<NoticeView> = notices.into_iter().map(NoticeView::from).collect();
    Ok(HttpResponse::Ok().json(views))
}
