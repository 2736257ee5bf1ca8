//! The outermost middleware: per-request observability (the request id, accepted from
//! `X-Request-Id` or generated, echoed back, and recorded on every log line of the request
//! through its [`RequestScope`]; the access log line; the request metrics) around the CORS
//! of `/public/*` ([`crate::public`]). One layer, not two: each `from_fn` layer costs every
//! request two boxed futures.

use std::borrow::Cow;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::HeaderValue;
use actix_web::middleware::Next;
use actix_web::web::Data;
use actix_web::{Error, HttpMessage};
use d2_app::telemetry::{RequestScope, in_request};

use crate::headers::REQUEST_ID;
use crate::state::ApiState;

/// The id of the current request, for handlers that want it.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// The route label of requests no route matched: one label, whatever the path.
pub const UNMATCHED: &str = "unmatched";

/// A client-supplied id is kept if it is short and printable; otherwise a new one is made.
fn accept(value: &HeaderValue) -> Option<String> {
    let text = crate::headers::text(value)?;
    (!text.is_empty() && text.len() <= 128 && text.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| text.to_owned())
}

/// The path as logs record it: secrets in paths (an invitation's token, in
/// `GET /public/invitations/{token}`) are replaced by their parameter's name.
fn loggable_path(path: &str) -> &str {
    const INVITATION: &str = "/public/invitations/";
    match path.strip_prefix(INVITATION) {
        Some(rest) if rest != "accept" => "/public/invitations/{token}",
        _ => path,
    }
}

pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(accept)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let method = req.method().clone();
    let scope = RequestScope {
        request_id: request_id.clone(),
        method: method_text(&method),
        path: loggable_path(req.path()).to_owned(),
    };
    let echoed = HeaderValue::from_str(&request_id).ok();
    req.extensions_mut().insert(RequestId(request_id));
    in_request(scope, serve(req, next, method, echoed)).await
}

/// The request served, counted and logged, inside its [`RequestScope`].
async fn serve(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
    method: Method,
    request_id: Option<HeaderValue>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let mut response = crate::public::public_cors(req, next).await?;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let request = response.request();
    let route = request
        .match_pattern()
        .unwrap_or_else(|| UNMATCHED.to_owned());
    // Borrowed from the request, not cloned before serving it: a clone is an atomic
    // operation on a count every worker writes.
    if let Some(state) = request.app_data::<Data<ApiState>>() {
        state.metrics.observe(&method, &route, status, elapsed);
    }
    if let Some(value) = request_id {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    tracing::info!(
        http.route = route.as_str(),
        http.status = status,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        "request completed"
    );
    Ok(response)
}

/// The method as logs record it: the common ones without an allocation.
fn method_text(method: &Method) -> Cow<'static, str> {
    match crate::metrics::method_label(method) {
        "OTHER" => Cow::Owned(method.as_str().to_owned()),
        common => Cow::Borrowed(common),
    }
}

/// The probes and the API description, which the per-IP limit never refuses.
pub fn is_exempt_from_ip_limit(path: &str) -> bool {
    matches!(
        path,
        "/" | "/healthz" | "/readyz" | "/metrics" | "/openapi.json"
    ) || path.starts_with("/docs")
}

/// The per-IP limit on requests without any credential. Probes and the API description
/// are exempt.
pub async fn limit_unauthenticated(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::EitherBody<impl MessageBody>>, Error> {
    if !is_exempt_from_ip_limit(req.path())
        && !crate::auth::has_credential(req.request())
        && let Some(state) = req.app_data::<Data<ApiState>>()
    {
        let ip = state.limiter.service_client_ip(&req);
        if let Err(limited) = state.limiter.check(ip) {
            let response = actix_web::ResponseError::error_response(&limited);
            return Ok(req.into_response(response).map_into_right_body());
        }
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

#[cfg(test)]
mod tests {
    use super::loggable_path;

    #[test]
    fn invitation_tokens_never_reach_the_log() {
        assert_eq!(
            loggable_path("/public/invitations/d2inv_secret"),
            "/public/invitations/{token}"
        );
        assert_eq!(
            loggable_path("/public/invitations/accept"),
            "/public/invitations/accept"
        );
        assert_eq!(loggable_path("/v1/keys/ed_1"), "/v1/keys/ed_1");
    }
}
