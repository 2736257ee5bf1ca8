//! `d2-worker`: runs D2's scheduled jobs, or one job with `--once <job>`.

use std::net::TcpListener;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use d2_app::{App, Mode, Settings, telemetry};
use d2_kernel::SystemClock;
use d2_worker::{JobOutcome, Worker};
use tokio_util::sync::CancellationToken;

// glibc's malloc spent about half of the CPU of JSON-heavy work (ingest, export) on its
// own bookkeeping (perf); mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// D2's scheduled jobs. Configuration as for d2-api (config/, D2_ENV, D2__... variables).
#[derive(Debug, Parser)]
#[command(name = "d2-worker", version)]
struct Cli {
    /// Run this job once and exit (status 1 if it failed, 3 if another worker holds it):
    /// analytics-export, trial-locker, token-expiry, key-pruning or retention.
    #[arg(long, value_name = "JOB")]
    once: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("d2-worker: {error}");
            std::process::exit(2);
        }
    };
    let log = telemetry::init(&settings.log);
    let addr = settings.worker.addr.clone();
    let app = match App::build_with(settings, Arc::new(SystemClock), Mode::Command).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(error = %error, "cannot start");
            eprintln!("d2-worker: {error}");
            log.flush();
            std::process::exit(1);
        }
    };
    let worker = Worker::new(app.clone())?;

    if let Some(job) = cli.once {
        let outcome = worker.run_once(&job, &|| true).await;
        app.shutdown().await;
        match outcome {
            Ok(JobOutcome::Done { items }) => println!("{job}: done ({items})"),
            Ok(JobOutcome::Busy) => {
                eprintln!("d2-worker: {job} is running in another worker");
                log.flush();
                std::process::exit(3);
            }
            Err(error) => {
                eprintln!("d2-worker: {error}");
                log.flush();
                std::process::exit(1);
            }
        }
        return Ok(());
    }

    let listener = TcpListener::bind(&addr).with_context(|| format!("cannot listen on {addr}"))?;
    let (server, handle) = d2_worker::server::start(worker.clone(), listener)?;
    let serving = tokio::spawn(server);
    tracing::info!(addr = %addr, "d2-worker started");
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            wait_for_signal().await;
            tracing::info!("stopping: finishing the runs in progress");
            shutdown.cancel();
        }
    });
    worker.run(shutdown).await;
    handle.stop(true).await;
    let _ = serving.await;
    app.shutdown().await;
    tracing::info!("d2-worker stopped");
    Ok(())
}

/// SIGINT or SIGTERM (what a container runtime sends before it kills the process).
async fn wait_for_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut terminate) = signal(SignalKind::terminate()) else {
            return interrupt.await.unwrap_or_default();
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    interrupt.await.unwrap_or_default();
}
