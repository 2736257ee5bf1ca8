//! The OpenAPI 3.1 document, collected from the handlers' annotations.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
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

/// The document, built from the same route table the server serves.
pub fn document() -> utoipa::openapi::OpenApi {
    let (_, api) = actix_web::App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(crate::routes::configure)
        .split_for_parts();
    api
}
