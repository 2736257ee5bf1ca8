//! Building and running the HTTP server.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_cors::Cors;
use actix_web::dev::{Server, ServerHandle};
use actix_web::http::{Method, header};
use actix_web::middleware::Condition;
use actix_web::web::{self, Bytes, Data};
use actix_web::{App as ActixApp, HttpServer};
use d2_app::App;
use utoipa_actix_web::AppExt;
use utoipa_redoc::{Redoc, Servable as _};
use utoipa_swagger_ui::SwaggerUi;

use crate::body::{path_error, query_error};
use crate::limit::IpLimiter;
use crate::methods::{self, MethodTable};
use crate::metrics::Metrics;
use crate::observe::{LimitUnauthenticated, Observe};
use crate::ready::Readiness;
use crate::routes;
use crate::seal::Sealer;
use crate::state::ApiState;

/// How long one store ping answers `/readyz`.
const READINESS_TTL: Duration = Duration::from_secs(1);

/// Headers browsers may read from responses.
const EXPOSED: [&str; 9] = [
    "ETag",
    "X-D2-Poll-Seconds",
    "Retry-After",
    "X-Next-Cursor",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "X-Request-Id",
    "WWW-Authenticate",
];

fn cors(origins: &[String], max_age: usize) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            crate::headers::API_KEY,
            crate::headers::AGENT_TOKEN,
            crate::headers::ORG_ID,
            crate::headers::REQUEST_ID,
        ])
        .expose_headers(EXPOSED)
        .max_age(max_age)
        // A foreign origin gets no CORS headers (the browser blocks it); the request itself
        // is answered normally, so non-browser clients that send `Origin` are unaffected.
        .block_on_origin_mismatch(false);
    if origins.iter().any(|o| o == "*") {
        cors = cors.allow_any_origin();
    } else {
        for origin in origins {
            cors = cors.allowed_origin(origin);
        }
    }
    cors
}

/// A running server.
pub struct Running {
    pub port: u16,
    pub handle: ServerHandle,
    server: Server,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// Serves until stopped (by a signal when signals are handled, or by `handle.stop`).
    pub async fn wait(self) -> std::io::Result<()> {
        self.server.await
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Stop gracefully on SIGINT/SIGTERM (binaries); tests stop through the handle.
    pub handle_signals: bool,
}

/// Starts serving `app` on `listener` (bind port 0 to get a free port).
pub fn start(app: App, listener: TcpListener, options: Options) -> std::io::Result<Running> {
    let settings = app.settings.clone();
    let http = &settings.http;
    let metrics = Arc::new(Metrics::new(app.redis.is_some()).map_err(std::io::Error::other)?);
    let limiter = Arc::new(IpLimiter::new(
        settings.rate_limit.unauthenticated_per_minute,
        settings.rate_limit.unauthenticated_burst,
        http.trusted_proxies,
    ));
    let document = crate::openapi::document();
    let methods = Arc::new(MethodTable::from_document(&document));
    let openapi_json = Bytes::from(document.to_json().map_err(std::io::Error::other)?);
    let openapi_yaml = Bytes::from(format!(
        "# The D2 control plane's API, generated {} from the running server's routes.\n{}",
        app.clock
            .now()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        document.to_yaml().map_err(std::io::Error::other)?
    ));
    spawn_limiter_sweeper(limiter.clone(), app.shutdown_token());
    let jwks_cache_control = format!("public, max-age={}", settings.jwks.cache_max_age_seconds)
        .parse()
        .map_err(std::io::Error::other)?;
    let jwks_private_cache_control =
        format!("private, max-age={}", settings.jwks.cache_max_age_seconds)
            .parse()
            .map_err(std::io::Error::other)?;
    let public_base = match &http.public_base_url {
        Some(base) => base.trim_end_matches('/').to_owned(),
        None => format!("http://{}", listener.local_addr()?),
    };
    let sealer = Arc::new(
        Sealer::new(app.page_seal_key.as_bytes())
            .ok_or_else(|| std::io::Error::other("the consent pages' sealing key is unusable"))?,
    );
    let state = ApiState {
        public_base,
        sealer,
        app,
        limiter,
        metrics,
        readiness: Arc::new(Readiness::new(READINESS_TTL)),
        large_bodies: Arc::new(tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
        )),
        openapi_json,
        openapi_yaml,
        methods,
        jwks_cache_control,
        jwks_private_cache_control,
    };
    let origins = http.cors.allowed_origins.clone();
    let max_age = http.cors.max_age_seconds;
    let max_body = http.max_body_bytes;
    let swagger_ui = http.swagger_ui;
    let redoc_document = document;
    let port = listener.local_addr()?.port();

    let mut server = HttpServer::new(move || {
        let app = ActixApp::new()
            // A state per worker (its parts are shared): handlers clone the `Data` on
            // every request, and one count written by every worker would be a cache line
            // the cores take from each other on each clone.
            .app_data(Data::new(state.clone()))
            .app_data(web::PayloadConfig::new(max_body))
            .app_data(web::PathConfig::default().error_handler(path_error))
            .app_data(web::QueryConfig::default().error_handler(query_error))
            .wrap(LimitUnauthenticated)
            // No origin configured (the default): no cross-origin caller to answer, so no
            // CORS layer either, and no boxed future and `Vary` header on every answer.
            .wrap(Condition::new(!origins.is_empty(), cors(&origins, max_age)))
            .wrap(Observe)
            .into_utoipa_app()
            .configure(routes::configure)
            .into_app()
            .configure(routes::health_routes)
            .configure(routes::page_routes);
        let app = if swagger_ui {
            app.service(
                SwaggerUi::new("/docs/{_:.*}")
                    .url("/openapi.json", utoipa::openapi::OpenApi::default()),
            )
            .service(Redoc::with_url("/redoc", redoc_document.clone()))
        } else {
            app.service(web::scope("/docs").default_service(web::to(routes::not_found)))
                .service(web::resource("/redoc").to(routes::not_found))
        };
        app.default_service(web::to(methods::unmatched))
    })
    .listen(listener)?
    .shutdown_timeout(http.shutdown_timeout_seconds);
    if http.workers > 0 {
        server = server.workers(http.workers);
    }
    if !options.handle_signals {
        server = server.disable_signals();
    }
    let server = server.run();
    Ok(Running {
        port,
        handle: server.handle(),
        server,
    })
}

/// Forgets idle addresses of the per-IP limiter now and then, so its memory stays bounded.
fn spawn_limiter_sweeper(limiter: Arc<IpLimiter>, shutdown: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = every.tick() => limiter.forget_idle(),
            }
        }
    });
}
