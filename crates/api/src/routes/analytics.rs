use actix_web::web::{Data, Query};
use actix_web::{HttpResponse, get};
use chrono::{DateTime, Utc};
use d2_events::{Bucket, Dimension};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use super::invalid_query;
use crate::auth::Auth;
use crate::error::ApiResult;
use crate::state::ApiState;

pub fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(summary).service(timeseries).service(top);
}

fn fresh(body: &impl Serialize) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(body)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SummaryQuery {
    /// Start of the window (inclusive, RFC 3339; default `end` minus 30 days).
    pub start: Option<DateTime<Utc>>,
    /// End of the window (exclusive, RFC 3339; default now).
    pub end: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SummaryBody {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Authorization events (`authz_decision`, `tool_invoked`) with a decision.
    pub total_authorizations: u64,
    pub total_denied: u64,
    /// Denied over total, four decimal places.
    pub deny_rate: f64,
    pub unique_tools: u64,
    /// The same as `unique_tools` (a tool is the resource an agent acts on).
    pub unique_resources: u64,
    pub avg_decision_ms: Option<f64>,
    pub avg_ingest_lag_ms: Option<f64>,
    /// Telemetry events refused by the account's per-minute quota (429), counted per hour:
    /// the hours that start in the window (the hour of `start` included).
    pub events_refused: u64,
}

/// Authorization totals over a window (strict scope `metrics.read`; the account must have
/// metrics enabled).
#[utoipa::path(tag = "metrics", security(("bearer" = []), ("api_key" = [])), params(SummaryQuery), responses(
    (status = 200, body = SummaryBody),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/summary")]
async fn summary(
    state: Data<ApiState>,
    auth: Auth,
    query: Query<SummaryQuery>,
) -> ApiResult<HttpResponse> {
    crate::time::check_instants(&[("start", query.start), ("end", query.end)])?;
    let (summary, start, end) = state
        .app
        .events
        .summary(&auth, query.start, query.end)
        .await?;
    let events_refused = state.app.events.refused_events(&auth, start, end).await?;
    Ok(fresh(&SummaryBody {
        start,
        end,
        total_authorizations: summary.total(),
        total_denied: summary.denied,
        deny_rate: summary.deny_rate(),
        unique_tools: summary.unique_tools,
        unique_resources: summary.unique_tools,
        avg_decision_ms: summary.avg_decision_ms,
        avg_ingest_lag_ms: summary.avg_ingest_lag_ms,
        events_refused,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TimeseriesQuery {
    /// `hour` or `day` (default `day`); buckets are UTC.
    #[param(value_type = Option<String>, pattern = "^(hour|day)$")]
    pub bucket: Option<String>,
    /// The last 1 to 90 days (default 7).
    #[param(minimum = 1, maximum = 90)]
    pub days: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PointBody {
    /// Start of the bucket.
    pub ts: DateTime<Utc>,
    pub allowed: u64,
    pub denied: u64,
    pub total: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TimeseriesBody {
    pub bucket: &'static str,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Oldest first; only buckets with authorizations appear.
    pub points: Vec<PointBody>,
}

/// Authorizations per hour or day (strict scope `metrics.read`).
#[utoipa::path(tag = "metrics", security(("bearer" = []), ("api_key" = [])), params(TimeseriesQuery), responses(
    (status = 200, body = TimeseriesBody),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/timeseries")]
async fn timeseries(
    state: Data<ApiState>,
    auth: Auth,
    query: Query<TimeseriesQuery>,
) -> ApiResult<HttpResponse> {
    let bucket = Bucket::parse(query.bucket.as_deref())
        .ok_or_else(|| invalid_query("`bucket` must be `hour` or `day`"))?;
    let (points, start, end) = state
        .app
        .events
        .timeseries(&auth, bucket, query.days)
        .await?;
    Ok(fresh(&TimeseriesBody {
        bucket: bucket.as_str(),
        start,
        end,
        points: points
            .into_iter()
            .map(|p| PointBody {
                ts: p.ts,
                allowed: p.allowed,
                denied: p.denied,
                total: p.total(),
            })
            .collect(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TopQuery {
    /// `tools`, `resources` or `event_type` (default `tools`).
    #[param(value_type = Option<String>, pattern = "^(tools|resources|event_type)$")]
    pub dimension: Option<String>,
    /// The last 1 to 180 days (default 30).
    #[param(minimum = 1, maximum = 180)]
    pub days: Option<u32>,
    /// How many keys, 1 to 100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    pub n: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TopItemBody {
    pub key: String,
    pub count: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TopBody {
    pub dimension: &'static str,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// The sum over every key, not only the top `n`.
    pub total: u64,
    /// Most frequent first; ties by key.
    pub items: Vec<TopItemBody>,
}

/// The most frequent tools or event types (strict scope `metrics.read`).
#[utoipa::path(tag = "metrics", security(("bearer" = []), ("api_key" = [])), params(TopQuery), responses(
    (status = 200, body = TopBody),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/top")]
async fn top(state: Data<ApiState>, auth: Auth, query: Query<TopQuery>) -> ApiResult<HttpResponse> {
    let dimension = Dimension::parse(query.dimension.as_deref())
        .ok_or_else(|| invalid_query("`dimension` must be `tools`, `resources` or `event_type`"))?;
    let (top, start, end) = state
        .app
        .events
        .top(&auth, dimension, query.days, query.n)
        .await?;
    Ok(fresh(&TopBody {
        dimension: dimension.as_str(),
        start,
        end,
        total: top.total,
        items: top
            .items
            .into_iter()
            .map(|i| TopItemBody {
                key: i.key,
                count: i.count,
            })
            .collect(),
    }))
}
