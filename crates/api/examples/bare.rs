//! The reference for `scripts/bench.sh`: a bare actix-web server with the same allocator and
//! worker count as `d2-api`, answering a conditional GET and a small JSON document with no
//! authentication, middleware or logging. Each hot route is reported as a share of this.
//!
//! `cargo run --release -p d2-api --example bare -- 127.0.0.1:18081`

use actix_web::http::header::{self, ETag, EntityTag};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, get};
use serde::Serialize;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TAG: &str = "sha256:bare";

/// 304 on a matching `If-None-Match`, as the bundle poll answers an up-to-date SDK.
#[get("/bundle")]
async fn bundle(req: HttpRequest) -> HttpResponse {
    let tag = EntityTag::new_strong(TAG.to_owned());
    let matches = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim_matches('"') == TAG);
    if matches {
        HttpResponse::NotModified()
            .insert_header(ETag(tag))
            .finish()
    } else {
        HttpResponse::Ok().insert_header(ETag(tag)).body("bundle")
    }
}

#[derive(Serialize)]
struct Document {
    account_id: &'static str,
    name: &'static str,
    plan: &'static str,
    poll_seconds: u32,
    scopes: [&'static str; 4],
}

/// A small JSON document serialised per request, as `/v1/accounts/me` and the JWKS are.
#[get("/json")]
async fn json() -> HttpResponse {
    HttpResponse::Ok().json(Document {
        account_id: "0b0e4f3c-5d39-4f7e-9a51-7f8e0f6b2c11",
        name: "reference",
        plan: "essentials",
        poll_seconds: 60,
        scopes: [
            "policy.read",
            "policy.publish",
            "events.write",
            "metrics.read",
        ],
    })
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18081".to_owned());
    HttpServer::new(|| App::new().service(bundle).service(json))
        .bind(addr)?
        .run()
        .await
}
