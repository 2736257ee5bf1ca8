use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse, get};
use d2_kernel::Code;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::error::{ApiError, ApiResult};
use crate::state::ApiState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    /// `ok` or `ready`.
    pub status: &'static str,
}

pub fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(root)
        .service(healthz)
        .service(readyz)
        .service(metrics);
}

/// Routes served outside the OpenAPI description.
pub fn health_routes(cfg: &mut actix_web::web::ServiceConfig) {
    cfg.service(openapi_json).service(openapi_yaml);
}

/// The process is up.
#[utoipa::path(tag = "health", responses((status = 200, body = Status)))]
#[get("/")]
async fn root() -> HttpResponse {
    HttpResponse::Ok().json(Status { status: "ok" })
}

/// The process is up (liveness probe).
#[utoipa::path(tag = "health", responses((status = 200, body = Status)))]
#[get("/healthz")]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Status { status: "ok" })
}

/// The database answers (readiness probe). One store ping per second at most answers
/// every probe; a failing database is reported within about a second.
#[utoipa::path(tag = "health", responses(
    (status = 200, body = Status),
    (status = 503, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/readyz")]
async fn readyz(state: Data<ApiState>) -> ApiResult<HttpResponse> {
    let ready = state
        .readiness
        .ready(|| async {
            state.metrics.readiness_checked();
            match state.app.store.ping().await {
                Ok(()) => true,
                Err(error) => {
                    // Logged once per check, not once per probe answered with it.
                    tracing::warn!(error.cause = %d2_kernel::ErrorChain(&error), "readiness check failed");
                    false
                }
            }
        })
        .await;
    if ready {
        Ok(HttpResponse::Ok().json(Status { status: "ready" }))
    } else {
        Err(ApiError::new(
            Code::ServiceUnavailable,
            "the database is not answering",
        ))
    }
}

/// Prometheus metrics: requests by route and status, latency, token-cache hits and misses,
/// database pool.
#[utoipa::path(tag = "health", responses((status = 200, content_type = "text/plain", body = String)))]
#[get("/metrics")]
async fn metrics(state: Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render(&state.app))
}

#[get("/openapi.json")]
async fn openapi_json(state: Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(state.openapi_json.clone())
}

/// The API description as YAML, for tools and pages anywhere (public, cacheable).
#[get("/public/openapi.yaml")]
async fn openapi_yaml(state: Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/yaml")
        .insert_header((
            actix_web::http::header::CACHE_CONTROL,
            "public, max-age=300",
        ))
        .body(state.openapi_yaml.clone())
}

/// Anything no route matched.
pub async fn not_found(req: HttpRequest) -> ApiResult<HttpResponse> {
    Err(ApiError::new(
        Code::RouteNotFound,
        format!("no route for {} {}", req.method(), req.path()),
    ))
}
