//! The outermost middleware: per-request observability (the request id, accepted from
//! `X-Request-Id` or generated, echoed back, and recorded on every log line of the request
//! through its [`RequestScope`]; the access log line; the request metrics) around the CORS
//! of `/public/*` ([`crate::public`]). One layer, not two, and a `Transform` with a named
//! future rather than `from_fn`, whose layer costs every request two boxed futures.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use actix_web::Error;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::Method;
use actix_web::http::header::HeaderValue;
use actix_web::web::Data;
use d2_app::telemetry::{RequestScope, in_request};
use futures_util::TryFutureExt as _;
use futures_util::future::{Either, MapOk, Ready, ready};
use tokio::task::futures::TaskLocalFuture;

use crate::headers::REQUEST_ID;
use crate::public::PublicCors;
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

/// The outermost middleware: see the module's description. Its future is named, not
/// boxed: the request's scope around [`Observed`], which calls the inner service on its
/// first poll, inside the scope.
#[derive(Debug, Clone, Copy)]
pub struct Observe;

impl<S, B> Transform<S, ServiceRequest> for Observe
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = ObserveService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(ObserveService {
            service: Rc::new(service),
        }))
    }
}

#[derive(Debug)]
pub struct ObserveService<S> {
    service: Rc<S>,
}

impl<S, B> Service<ServiceRequest> for ObserveService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = TaskLocalFuture<RequestScope, Observed<S>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let (request_id, echoed) = request_id(&req);
        let method = req.method().clone();
        let scope = RequestScope {
            request_id,
            method: method_text(&method),
            path: loggable_path(req.path()).to_owned(),
        };
        let cors = PublicCors::of(&req);
        in_request(
            scope,
            Observed {
                service: Rc::clone(&self.service),
                request: Some(req),
                serving: None,
                cors,
                method,
                echoed,
                started: Instant::now(),
            },
        )
    }
}

pin_project_lite::pin_project! {
    /// A request served, counted and logged, polled inside its [`RequestScope`].
    pub struct Observed<S>
    where
        S: Service<ServiceRequest>,
    {
        service: Rc<S>,
        // Until the first poll, which hands it to `service` (or answers a preflight).
        request: Option<ServiceRequest>,
        #[pin]
        serving: Option<S::Future>,
        cors: PublicCors,
        method: Method,
        echoed: Option<HeaderValue>,
        started: Instant,
    }
}

impl<S, B> Future for Observed<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody,
{
    type Output = Result<ServiceResponse<EitherBody<B>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(req) = this.request.take() {
            if *this.cors == PublicCors::Preflight {
                let response = req.into_response(crate::public::preflight());
                let response = response.map_into_right_body();
                return Poll::Ready(Ok(completed(
                    response,
                    this.method,
                    this.echoed.take(),
                    this.started.elapsed(),
                )));
            }
            this.serving.set(Some(this.service.call(req)));
        }
        let Some(serving) = this.serving.as_pin_mut() else {
            return Poll::Ready(Err(actix_web::error::ErrorInternalServerError(
                "a request polled after its answer",
            )));
        };
        let mut response = ready!(serving.poll(cx))?;
        let elapsed = this.started.elapsed();
        if *this.cors == PublicCors::Readable {
            crate::public::mark_readable(response.headers_mut());
        }
        Poll::Ready(Ok(completed(
            response.map_into_left_body(),
            this.method,
            this.echoed.take(),
            elapsed,
        )))
    }
}

/// Counts and logs an answer, and echoes the request id on it.
fn completed<B>(
    mut response: ServiceResponse<B>,
    method: &Method,
    request_id: Option<HeaderValue>,
    elapsed: Duration,
) -> ServiceResponse<B> {
    let status = response.status().as_u16();
    let request = response.request();
    let route = request
        .match_pattern()
        .unwrap_or_else(|| UNMATCHED.to_owned());
    // Borrowed from the request, not cloned: a clone is an atomic operation on a count
    // every worker writes.
    if let Some(state) = request.app_data::<Data<ApiState>>() {
        state.metrics.observe(method, &route, status, elapsed);
    }
    if let Some(value) = request_id {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    d2_app::telemetry::request_completed(&route, status, elapsed);
    response
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
