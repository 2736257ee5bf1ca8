use actix_web::http::StatusCode;
use actix_web::web::{Data, Payload, Query};
use actix_web::{HttpRequest, HttpResponse, get, post};
use chrono::{DateTime, Utc};
use d2_app::telemetry::RequestScope;
use d2_events::{Decision, EventFilter, IngestRequest, StoredEvent};
use d2_kernel::{AppName, Code};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use super::{PageQuery, paged};
use crate::auth::Auth;
use crate::body::{content_length, is_json, read_capped};
use crate::error::{ApiError, ApiResult, with_rate_limit};
use crate::state::ApiState;

pub fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(ingest).service(list);
}

// The documented shapes of the ingest body; the events service checks the body itself, so
// it can name the index of a bad event.

/// One event as the SDK sends it.
#[derive(ToSchema)]
#[expect(dead_code, reason = "documents the body; the events service parses it")]
pub struct EventIn {
    /// 1-64 characters of `a-z`, `0-9`, `_`, `.`; any type is stored.
    pub event_type: String,
    /// Free-form; `service`, `host` and `policy_etag` are read from it.
    pub payload: serde_json::Map<String, serde_json::Value>,
    /// ISO-8601; at most 30 days old and 10 minutes ahead.
    pub occurred_at: String,
    /// Optional client id: a retried event with the same id is not stored twice.
    pub id: Option<String>,
}

/// A batch of events.
#[derive(ToSchema)]
#[expect(dead_code, reason = "documents the body; the events service parses it")]
pub struct IngestBody {
    pub events: Vec<EventIn>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IngestAccepted {
    /// `Accepted N events`.
    pub message: String,
    /// Events stored by this request.
    pub accepted: usize,
    /// Events of this request stored already (a retried batch).
    pub duplicates: usize,
}

/// Stores a batch of telemetry events (scope `event.ingest`). Answers 202 only once every
/// event is durably stored; an invalid event rejects the whole batch (the error names its
/// index). A body over the plan's byte cap (never below 40 KiB) or with more events than
/// the plan's batch size is 413, so the SDK splits it. Each batch spends its events from
/// the account's quota of `ingest_events_per_minute` (every token and replica together);
/// over it, 429 with `Retry-After`, and the refused events are counted.
#[utoipa::path(tag = "events", security(("bearer" = []), ("api_key" = [])), request_body = IngestBody, responses(
    (status = 202, body = IngestAccepted, headers(("X-RateLimit-Limit" = u32, description = "The bucket's capacity"), ("X-RateLimit-Remaining" = u32, description = "Units left"), ("X-RateLimit-Reset" = u64, description = "Seconds until the bucket is full"))),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 402, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 413, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 415, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 429, body = crate::error::Problem, content_type = "application/problem+json", description = "The account's events-per-minute quota is spent; the batch is refused whole and counted in `events_refused` of the metrics summary", headers(("Retry-After" = u64, description = "Seconds to wait"), ("X-RateLimit-Limit" = u32), ("X-RateLimit-Remaining" = u32), ("X-RateLimit-Reset" = u64))),
    (status = 503, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/ingest")]
async fn ingest(
    state: Data<ApiState>,
    auth: Auth,
    req: HttpRequest,
    payload: Payload,
) -> ApiResult<HttpResponse> {
    let events = &state.app.events;
    let cap = events.ingest_body_cap(&auth).await?;
    let too_large = |size: &str| {
        ApiError::new(
            Code::EventBatchTooLarge,
            format!("the batch is {size} bytes; at most {cap} are accepted (split it)"),
        )
    };
    if let Some(length) = content_length(&req)
        && length > cap
    {
        return Err(too_large(&length.to_string()));
    }
    if !is_json(&req) {
        return Err(ApiError::new(
            Code::UnsupportedMediaType,
            "send the batch as JSON (Content-Type: application/json)",
        ));
    }
    let body = read_capped(payload, cap, Code::EventBatchTooLarge).await?;
    let request_id = RequestScope::with_current(|scope| scope.request_id.clone());
    let outcome = events
        .ingest(
            &auth,
            IngestRequest {
                body: &body,
                request_id: request_id.as_deref(),
                source_ip: Some(state.limiter.client_ip(&req).to_string()),
            },
        )
        .await?;
    state
        .metrics
        .events_ingested(outcome.accepted, outcome.duplicates);
    let mut response = HttpResponse::build(StatusCode::ACCEPTED);
    with_rate_limit(&mut response, &outcome.limit);
    Ok(response.json(IngestAccepted {
        message: format!("Accepted {} events", outcome.accepted),
        accepted: outcome.accepted,
        duplicates: outcome.duplicates,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Items per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The `X-Next-Cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only events of this type.
    pub event_type: Option<String>,
    /// Only events of this app (normalised like every app name).
    pub app: Option<String>,
    /// Only events of this service.
    pub service: Option<String>,
    /// Events that occurred at or after this instant (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Events that occurred before this instant (RFC 3339).
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventBody {
    pub id: i64,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub ingested_at: DateTime<Utc>,
    pub payload: serde_json::Value,
    pub app_name: Option<String>,
    pub service: Option<String>,
    pub host: Option<String>,
    pub source_ip: Option<String>,
    pub request_id: Option<String>,
    /// The token that sent it.
    pub token_id: Option<Uuid>,
    /// `allowed` or `denied` for authorization events, as analytics count them.
    pub decision: Option<&'static str>,
    pub tool: Option<String>,
}

impl From<StoredEvent> for EventBody {
    fn from(stored: StoredEvent) -> Self {
        let event = stored.event;
        Self {
            id: stored.id,
            event_type: event.event_type,
            occurred_at: event.occurred_at,
            ingested_at: event.ingested_at,
            payload: event.payload,
            app_name: event.app_name.map(|app| app.to_string()),
            service: event.service,
            host: event.host,
            source_ip: event.source_ip,
            request_id: event.request_id,
            token_id: event.token_id.map(Uuid::from),
            decision: event.facts.decision.map(|d| match d {
                Decision::Allowed => "allowed",
                Decision::Denied => "denied",
            }),
            tool: event.facts.tool,
        }
    }
}

/// The account's events, newest first by ingestion (strict scope `metrics.read`: granted
/// explicitly, never through `dev` or `server`).
#[utoipa::path(tag = "events", security(("bearer" = []), ("api_key" = [])), params(EventsQuery), responses(
    (status = 200, body = Vec<EventBody>, headers(("X-Next-Cursor" = String, description = "Present when another page follows"))),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("")]
async fn list(
    state: Data<ApiState>,
    auth: Auth,
    query: Query<EventsQuery>,
) -> ApiResult<HttpResponse> {
    let query = query.into_inner();
    crate::time::check_instants(&[("since", query.since), ("until", query.until)])?;
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    }
    .parse()?;
    let filter = EventFilter {
        event_type: query.event_type,
        app_name: query.app.as_deref().map(AppName::normalise),
        service: query.service,
        since: query.since,
        until: query.until,
    };
    let events = state.app.events.list(&auth, &filter, &page).await?;
    Ok(paged(events, EventBody::from))
}
