//! Which methods each path answers, for the 405 of an undeclared method.
//!
//! The table is built once at startup from the OpenAPI document's paths, the one list of
//! the routes the server serves (collected from the handlers), so it cannot drift from the
//! router: a request that no route matched either names a known path with a method the
//! path does not declare (405 with `Allow`) or no path at all (404).

use actix_web::dev::ResourceDef;
use actix_web::http::header::{self, HeaderValue};
use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use d2_kernel::Code;

use crate::error::ApiError;
use crate::state::ApiState;

/// Paths served outside the document, with their methods.
const UNDOCUMENTED: [(&str, &str); 1] = [("/openapi.json", "GET")];

/// Path templates and the methods each declares.
#[derive(Debug, Default)]
pub struct MethodTable {
    /// Each template, its number of parameters, and its `Allow` value.
    paths: Vec<(ResourceDef, usize, HeaderValue)>,
}

impl MethodTable {
    /// The table of `document`'s paths (OpenAPI templates such as `/v1/keys/{key_id}`
    /// are actix path patterns too).
    pub fn from_document(document: &utoipa::openapi::OpenApi) -> Self {
        let documented = document.paths.paths.iter().map(|(template, item)| {
            let methods = [
                ("GET", item.get.is_some()),
                ("PUT", item.put.is_some()),
                ("POST", item.post.is_some()),
                ("DELETE", item.delete.is_some()),
                ("OPTIONS", item.options.is_some()),
                ("HEAD", item.head.is_some()),
                ("PATCH", item.patch.is_some()),
                ("TRACE", item.trace.is_some()),
            ]
            .into_iter()
            .filter_map(|(method, declared)| declared.then_some(method))
            .collect::<Vec<_>>()
            .join(", ");
            (template.as_str(), methods)
        });
        let paths = documented
            .chain(UNDOCUMENTED.map(|(path, methods)| (path, methods.to_owned())))
            .filter_map(|(template, methods)| {
                let allow = HeaderValue::from_str(&methods).ok()?;
                Some((
                    ResourceDef::new(template),
                    template.matches('{').count(),
                    allow,
                ))
            })
            .collect();
        Self { paths }
    }

    /// The `Allow` value of the most specific template `path` matches (the fewest
    /// parameters): `/v1/policy/draft` rather than `/v1/policy/{policy_id}`.
    pub fn allowed_most_specific(&self, path: &str) -> Option<&HeaderValue> {
        self.paths
            .iter()
            .filter(|(def, _, _)| def.is_match(path))
            .min_by_key(|(_, params, _)| *params)
            .map(|(_, _, allow)| allow)
    }
}

/// 405 with `Allow` when a parameterised route took a request whose parameter does not
/// parse, but the path is another, more specific documented path that does not declare
/// the method: `GET /v1/policy/draft` is the draft path without GET, not a policy id that
/// fails to parse.
pub fn shadowed(req: &HttpRequest) -> Option<HttpResponse> {
    let state = req.app_data::<Data<ApiState>>()?;
    let allow = state.methods.allowed_most_specific(req.path())?;
    let declared = crate::headers::text(allow)
        .unwrap_or_default()
        .split(", ")
        .any(|method| method == req.method().as_str());
    (!declared).then(|| method_not_allowed(req, allow))
}

fn method_not_allowed(req: &HttpRequest, allow: &HeaderValue) -> HttpResponse {
    let mut response = ApiError::new(
        Code::MethodNotAllowed,
        format!(
            "{} is not allowed on {}; allowed: {}",
            req.method(),
            req.path(),
            crate::headers::text(allow).unwrap_or_default()
        ),
    )
    .error_response();
    response.headers_mut().insert(header::ALLOW, allow.clone());
    response
}

/// Anything no route matched: 405 with `Allow` on a known path, otherwise 404.
pub async fn unmatched(req: HttpRequest, state: Option<Data<ApiState>>) -> HttpResponse {
    let allow = state
        .as_ref()
        .and_then(|s| s.methods.allowed_most_specific(req.path()));
    match allow {
        Some(allow) => method_not_allowed(&req, allow),
        None => ApiError::new(
            Code::RouteNotFound,
            format!("no route for {} {}", req.method(), req.path()),
        )
        .error_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_templates_and_lists_declared_methods() {
        let mut document = utoipa::openapi::OpenApi::default();
        let get = utoipa::openapi::path::OperationBuilder::new().build();
        let post = utoipa::openapi::path::OperationBuilder::new().build();
        document.paths.add_path_operation(
            "/v1/keys/{key_id}",
            vec![utoipa::openapi::HttpMethod::Get],
            get,
        );
        document.paths.add_path_operation(
            "/v1/keys/{key_id}",
            vec![utoipa::openapi::HttpMethod::Delete],
            post,
        );
        let table = MethodTable::from_document(&document);
        assert_eq!(
            table
                .allowed_most_specific("/v1/keys/ed_123")
                .map(HeaderValue::as_bytes),
            Some(&b"GET, DELETE"[..])
        );
        assert!(
            table
                .allowed_most_specific("/v1/keys/ed_123/more")
                .is_none()
        );
        assert!(table.allowed_most_specific("/v1/nothing").is_none());
        assert_eq!(
            table
                .allowed_most_specific("/openapi.json")
                .map(HeaderValue::as_bytes),
            Some(&b"GET"[..])
        );
    }
}
