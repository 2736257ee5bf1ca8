use std::sync::Arc;

use actix_web::web::Bytes;
use d2_app::App;

use crate::limit::IpLimiter;
use crate::methods::MethodTable;
use crate::metrics::Metrics;
use crate::ready::Readiness;

/// What every handler can reach: the services, the per-IP limiter, the metrics and the
/// OpenAPI document (rendered once).
#[derive(Clone, Debug)]
pub struct ApiState {
    pub app: App,
    pub limiter: Arc<IpLimiter>,
    pub metrics: Arc<Metrics>,
    /// The shared answer of `/readyz`.
    pub readiness: Arc<Readiness>,
    /// Permits to work on a large policy body, one per core.
    pub large_bodies: Arc<tokio::sync::Semaphore>,
    pub openapi_json: Bytes,
    /// `/public/openapi.yaml`: the same, as YAML, with the time it was generated.
    pub openapi_yaml: Bytes,
    /// The methods each documented path declares (for 405 and `Allow`).
    pub methods: Arc<MethodTable>,
    /// `Cache-Control` of the JWKS, rendered once.
    pub jwks_cache_control: actix_web::http::header::HeaderValue,
    /// `Cache-Control` of a JWKS chosen by the caller's credential, rendered once.
    pub jwks_private_cache_control: actix_web::http::header::HeaderValue,
    /// The server's public URL (`http.public_base_url`, else the address it listens on),
    /// without a trailing slash: the accounts' issuers live under it.
    pub public_base: String,
    /// Seals what the consent pages hand the browser.
    pub sealer: Arc<crate::seal::Sealer>,
}
