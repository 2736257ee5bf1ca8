//! `d2-api`: the D2 HTTP server.

use std::net::TcpListener;
use std::sync::Arc;

use anyhow::Context;
use d2_app::{App, Settings, telemetry};
use d2_kernel::SystemClock;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("d2-api: {error}");
            std::process::exit(2);
        }
    };
    telemetry::init(&settings.log);
    let addr = settings.http.addr.clone();
    tracing::info!(profile = %settings.profile, "starting d2-api");
    let app = match App::build(settings, Arc::new(SystemClock)).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(error = %error, "cannot start");
            eprintln!("d2-api: {error}");
            std::process::exit(1);
        }
    };
    let listener = TcpListener::bind(&addr).with_context(|| format!("cannot listen on {addr}"))?;
    let running = d2_api::start(
        app.clone(),
        listener,
        d2_api::Options {
            handle_signals: true,
        },
    )?;
    tracing::info!(addr = %addr, "listening");
    running.wait().await?;
    tracing::info!("stopping");
    app.shutdown().await;
    Ok(())
}
