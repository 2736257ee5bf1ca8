//! `d2-api`: the D2 HTTP server.

use std::net::TcpListener;
use std::sync::Arc;

use anyhow::Context;
use d2_app::{App, Settings, telemetry};
use d2_kernel::SystemClock;

// glibc's malloc spent about half of the CPU of JSON-heavy work (ingest, export) on its
// own bookkeeping (perf); mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("d2-api: {error}");
            std::process::exit(2);
        }
    };
    let log = telemetry::init(&settings.log);
    let addr = settings.http.addr.clone();
    tracing::info!(profile = %settings.profile, "starting d2-api");
    let app = match App::build(settings, Arc::new(SystemClock)).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(error = %error, "cannot start");
            eprintln!("d2-api: {error}");
            log.flush();
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
    match app.first_dev_account().await {
        Ok(Some(first)) => announce_first_account(&first, &addr),
        Ok(None) => {}
        Err(error) => tracing::warn!(error = %error, "cannot create the first dev account"),
    }
    running.wait().await?;
    tracing::info!("stopping");
    app.shutdown().await;
    Ok(())
}

/// Prints the first account's admin token, once, with a request to try it.
fn announce_first_account(first: &d2_tokens::Bootstrapped, addr: &str) {
    let token = first.issued.secret.expose();
    println!(
        "\nd2-api: created a first account ({}) on this empty database.\n\
         Its admin token, shown only now (store it; it cannot be read back):\n\n    {token}\n\n\
         Try it:\n\n    curl -H 'Authorization: Bearer {token}' http://{addr}/v1/accounts/me\n",
        first.account_id
    );
}
