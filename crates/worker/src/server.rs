//! The worker's own HTTP endpoint: `/metrics`, `/healthz` (the process) and `/readyz`
//! (PostgreSQL reachable).

use std::net::TcpListener;

use actix_web::dev::{Server, ServerHandle};
use actix_web::web::{self, Data};
use actix_web::{App as HttpApp, HttpResponse, HttpServer};

use crate::Worker;

async fn metrics(worker: Data<Worker>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(worker.metrics().render())
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(worker: Data<Worker>) -> HttpResponse {
    match worker.app().store.ping().await {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })),
        Err(_) => HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({ "status": "unavailable", "database": "unreachable" })),
    }
}

/// Serves the endpoints on `listener` until the returned handle stops it.
pub fn start(worker: Worker, listener: TcpListener) -> std::io::Result<(Server, ServerHandle)> {
    let data = Data::new(worker);
    let server = HttpServer::new(move || {
        HttpApp::new()
            .app_data(data.clone())
            .route("/metrics", web::get().to(metrics))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    let handle = server.handle();
    Ok((server, handle))
}
