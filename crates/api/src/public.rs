//! `/public/*`: routes any web page may call (the acceptance page of invitations, the API
//! description), as in seeds 000 and 001. Their CORS allows every origin without
//! credentials (`Access-Control-Allow-Origin: *`), whatever `http.cors.allowed_origins`
//! says for the rest of the API: a browser never sends cookies or reads a credentialed
//! answer through them.

use actix_web::Error;
use actix_web::HttpResponse;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;

/// The prefix of the public routes.
pub const PREFIX: &str = "/public/";

const ALLOWED_METHODS: HeaderValue = HeaderValue::from_static("GET, POST, OPTIONS");
const ALLOWED_HEADERS: HeaderValue =
    HeaderValue::from_static("authorization, content-type, x-request-id");
const EXPOSED: HeaderValue = HeaderValue::from_static("Retry-After, X-Request-Id");
const MAX_AGE: HeaderValue = HeaderValue::from_static("3600");

/// Answers the preflights of `/public/*` itself and marks its answers readable by any
/// origin; everything else passes through untouched. Called by
/// [`crate::observe::observe`], inside the request's scope.
pub async fn public_cors(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    if !req.path().starts_with(PREFIX) || !req.headers().contains_key(header::ORIGIN) {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let response = HttpResponse::NoContent()
            .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
            .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, ALLOWED_METHODS))
            .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOWED_HEADERS))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, MAX_AGE))
            .finish();
        return Ok(req.into_response(response).map_into_right_body());
    }
    let mut response = next.call(req).await?;
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED);
    headers.remove(header::ACCESS_CONTROL_ALLOW_CREDENTIALS);
    Ok(response.map_into_left_body())
}
