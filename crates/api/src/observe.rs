//! The outermost middleware: per-request observability (the request id, accepted from
//! `X-Request-Id` or generated, echoed back, and recorded on every log line of the request
//! through its [`RequestScope`]; the access log line; the request metrics) around the CORS
//! of `/public/*` ([`crate::public`]). One layer, not two: each `from_fn` layer costs every
//! request two boxed futures.

use std::borrow::Cow;
use std::time::Instant;

use actix_web::Error;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::Method;
use actix_web::http::header::HeaderValue;
use actix_web::middleware::Next;
use actix_web::web::Data;
use d2_app::telemetry::{RequestScope, in_request};
use futures_util::TryFutureExt as _;
use futures_util::future::{Either, MapOk, Ready, ready};

use crate::headers::REQUEST_ID;
use crate::state::ApiState;

/// The route label of requests no route matched: one label, whatever the path.
pub const UNMATCHED: &str = "unmatched";

/// A client-supplied id is kept if it is short and printable; otherwise a new one is made.
fn accept(value: &HeaderValue) -> Option<&str> {
    let text = crate::headers::text(value)?;
    (!text.is_empty() && text.len() <= 128 && text.bytes().all(|b| b.is_ascii_graphic()))
        .then_some(text)
}

/// The request's id and the header echoing it: the client's, when acceptable, else a new
/// UUID written without the formatting machinery. Handlers read the id from the
/// [`RequestScope`] (`RequestScope::with_current`).
fn request_id(req: &ServiceRequest) -> (String, Option<HeaderValue>) {
    if let Some(value) = req.headers().get(&REQUEST_ID)
        && let Some(text) = accept(value)
    {
        return (text.to_owned(), Some(value.clone()));
    }
    let mut buffer = uuid::Uuid::encode_buffer();
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buffer);
    (text.to_owned(), HeaderValue::from_str(text).ok())
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
    let (request_id, echoed) = request_id(&req);
    let method = req.method().clone();
    let scope = RequestScope {
        request_id,
        method: method_text(&method),
        path: loggable_path(req.path()).to_owned(),
    };
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
    d2_app::telemetry::request_completed(&route, status, elapsed);
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
/// are exempt. A middleware of its own rather than `from_fn`, whose two boxed futures
/// every request would pay: its future is the inner service's, unboxed.
#[derive(Debug, Clone, Copy)]
pub struct LimitUnauthenticated;

impl<S, B> Transform<S, ServiceRequest> for LimitUnauthenticated
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = LimitUnauthenticatedService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(LimitUnauthenticatedService { service }))
    }
}

#[derive(Debug)]
pub struct LimitUnauthenticatedService<S> {
    service: S,
}

type Served<B> = fn(ServiceResponse<B>) -> ServiceResponse<EitherBody<B>>;

impl<S, B> Service<ServiceRequest> for LimitUnauthenticatedService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = Either<Ready<Result<Self::Response, Error>>, MapOk<S::Future, Served<B>>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        match refusal(&req) {
            Some(refused) => {
                let response = actix_web::ResponseError::error_response(&refused);
                Either::Left(ready(Ok(req.into_response(response).map_into_right_body())))
            }
            None => Either::Right(
                self.service
                    .call(req)
                    .map_ok(ServiceResponse::map_into_left_body as Served<B>),
            ),
        }
    }
}

/// The 429 of a request without credentials from an address over its allowance.
fn refusal(req: &ServiceRequest) -> Option<crate::error::ApiError> {
    if is_exempt_from_ip_limit(req.path()) || crate::auth::has_credential(req.request()) {
        return None;
    }
    let state = req.app_data::<Data<ApiState>>()?;
    let ip = state.limiter.service_client_ip(req);
    state.limiter.check(ip).err()
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
