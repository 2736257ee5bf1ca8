//! The OpenAPI 3.1 document, collected from the handlers' annotations.

use utoipa::openapi::header::Header;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{Object, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr};
use utoipa::{Modify, OpenApi};
use utoipa_actix_web::AppExt;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "D2 control plane",
        description = "Authorization control plane for AI agents: API tokens, accounts, signed policy bundles, signing keys, telemetry and analytics, audit. \
                       Errors are RFC 9457 problem documents (`application/problem+json`) with a stable `code`.",
        license(name = "Apache-2.0")
    ),
    modifiers(&Security),
    components(schemas(crate::error::Problem)),
    tags(
        (name = "health", description = "Probes and metrics"),
        (name = "accounts", description = "The caller's account"),
        (name = "tokens", description = "API tokens"),
        (name = "bootstrap", description = "Control-plane bootstrap and self-service token lifecycle"),
        (name = "audit", description = "The audit trail"),
        (name = "policy", description = "Policy drafts, signed bundles, versions and polling"),
        (name = "keys", description = "Publisher (Ed25519) keys that authorise publishing"),
        (name = "jwks", description = "Signing keys and the public JWKS"),
        (name = "events", description = "Telemetry ingest and the stored events"),
        (name = "metrics", description = "Authorization analytics computed by the analytics store"),
        (name = "agents", description = "Agents: the OAuth clients of the account's authorization server"),
        (name = "oauth", description = "Each account's authorization server for its agents: discovery, JWKS, token, introspection, revocation, principals (its end users) and access rules"),
        (name = "billing", description = "Subscriptions reported by the payment provider's signed webhooks, and what they make of the account's plan and lock"),
        (name = "admin", description = "The account's view of its authorization server: dashboard, issued tokens with their lineage, revocation, introspection, tasks"),
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("d2_...")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "control_plane",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Control-Plane-Token"))),
        );
    }
}

/// Adds to every operation the answers the server's shared layers give, so each handler
/// declares only its own: 400 where a path or query parameter or a body is read (a value
/// the extractor refuses), 413 and 415 where a body is read, 401 where a credential is
/// required, and 429 (the per-IP limit on refused requests) and 503 (the store behind the
/// credential lookup and the handler) on every route but the probes. A response a
/// handler declares itself is kept.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in &mut openapi.paths.paths {
            let probe = crate::observe::is_exempt_from_ip_limit(path);
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                let has_body = operation.request_body.is_some();
                let has_params = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
                let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
                let mut common = Vec::new();
                if has_body || has_params {
                    common.push(("400", "The request is invalid", None));
                }
                if secured {
                    common.push((
                        "401",
                        "No valid credential",
                        Some(("WWW-Authenticate", Type::String)),
                    ));
                }
                if has_body {
                    common.push(("413", "The body is too large", None));
                    common.push(("415", "The body is not JSON", None));
                }
                if !probe {
                    common.push((
                        "429",
                        "Too many requests",
                        Some(("Retry-After", Type::Integer)),
                    ));
                    common.push((
                        "503",
                        "The store is unavailable",
                        Some(("Retry-After", Type::Integer)),
                    ));
                }
                for (status, description, header) in common {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| problem(description, header));
                }
            }
        }
    }
}

/// A problem+json response, with one header.
fn problem(description: &str, header: Option<(&str, Type)>) -> RefOr<Response> {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/problem+json",
        Content::new(Some(Ref::from_schema_name("Problem"))),
    );
    if let Some((name, kind)) = header {
        response = response.header(name, Header::new(Object::with_type(kind)));
    }
    RefOr::T(response.build())
}

/// The document, built from the same route table the server serves.
pub fn document() -> utoipa::openapi::OpenApi {
    let (_, api) = actix_web::App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(crate::routes::configure)
        .split_for_parts();
    let mut api = api;
    // After the handlers' paths are in: the derive's modifiers run before them.
    CommonResponses.modify(&mut api);
    api
}
