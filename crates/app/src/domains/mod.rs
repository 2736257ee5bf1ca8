//! The composition root, one module per domain. Each declares its configuration sections
//! (deserialized from `config/`, validated, documented in `config/default.toml`) and one
//! `build` function that makes its services from the [`Shared`] dependencies and
//! registers, in the [`Registry`], what it adds to the process: the subscribers of the
//! change feed, its scheduled jobs, the handlers of the tasks it enqueues and its
//! in-process housekeeping.

pub mod accounts;
pub mod audit;
pub mod billing;
pub mod events;
pub mod members;
pub mod oauth;
pub mod policy;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use d2_kernel::limit::QuotaStore;
use d2_kernel::{ChangeSubscriber, Clock, ScheduledJob, TaskHandler};
use d2_tokens::Pepper;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Mode, Repositories, Settings, Store};

/// What every domain is built from.
pub(crate) struct Shared<'a> {
    pub settings: &'a Settings,
    pub store: &'a Store,
    pub repositories: Arc<dyn Repositories>,
    pub clock: Arc<dyn Clock>,
    /// The key of secret digests.
    pub pepper: Arc<Pepper>,
    /// Account quotas: in this process, or shared through Redis.
    pub quotas: Arc<dyn QuotaStore>,
    pub mode: Mode,
}

/// What the domains add to the process besides their services.
pub(crate) struct Registry {
    pub subscribers: Vec<Arc<dyn ChangeSubscriber>>,
    pub jobs: Vec<Arc<dyn ScheduledJob>>,
    pub task_handlers: Vec<Arc<dyn TaskHandler>>,
    pub background: Vec<JoinHandle<()>>,
    pub shutdown: CancellationToken,
    mode: Mode,
}

impl Registry {
    pub fn new(mode: Mode) -> Self {
        Self {
            subscribers: Vec::new(),
            jobs: Vec::new(),
            task_handlers: Vec::new(),
            background: Vec::new(),
            shutdown: CancellationToken::new(),
            mode,
        }
    }

    /// A cache that a change can make stale: it hears every change announced.
    pub fn subscribe(&mut self, subscriber: Arc<dyn ChangeSubscriber>) {
        self.subscribers.push(subscriber);
    }

    /// A job for the worker.
    pub fn schedule(&mut self, job: impl ScheduledJob + 'static) {
        self.jobs.push(Arc::new(job));
    }

    /// The handler of the tasks of one kind the domain enqueues.
    pub fn handle(&mut self, handler: impl TaskHandler + 'static) {
        self.task_handlers.push(Arc::new(handler));
    }

    /// Runs `work` every `period` until shutdown, in servers only (a command is gone before
    /// the first period).
    pub fn every(&mut self, period: Duration, work: impl Fn() + Send + 'static) {
        if self.mode != Mode::Server {
            return;
        }
        let shutdown = self.shutdown.clone();
        self.background.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticks.tick() => work(),
                }
            }
        }));
    }

    /// A task of a server that runs until shutdown (it watches [`Self::shutdown`]).
    pub fn spawn(&mut self, task: impl FnOnce(CancellationToken) -> JoinHandle<()>) {
        if self.mode == Mode::Server {
            self.background.push(task(self.shutdown.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use d2_kernel::SystemClock;

    use crate::{App, Mode, Profile, Settings, StartupError};

    /// An app on a fresh SQLite file, with `vars` over the default configuration.
    async fn build(vars: &[(&str, &str)]) -> Result<App, StartupError> {
        static FILES: AtomicUsize = AtomicUsize::new(0);
        let file = std::env::temp_dir().join(format!(
            "d2-app-{}-{}.sqlite",
            std::process::id(),
            FILES.fetch_add(1, Ordering::Relaxed)
        ));
        let url = format!("sqlite://{}", file.display());
        let mut vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        vars.insert("D2__DATABASE__URL".into(), url);
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        let settings = Settings::load_with(Profile::new("dev"), &dir, Some(vars))?;
        let app = App::build_with(settings, Arc::new(SystemClock), Mode::Command).await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
        }
        app
    }

    #[tokio::test]
    async fn each_domain_registers_its_jobs_and_each_job_has_its_schedule() {
        let app = build(&[]).await.unwrap();
        let names: Vec<&str> = app.jobs.iter().map(|job| job.name()).collect();
        assert_eq!(
            names,
            [
                "trial-locker",
                "token-expiry",
                "key-pruning",
                "analytics-export",
                "retention",
                "oauth-token-pruning",
                "oauth-client-reaping",
                "reservation-expiry",
                "billing-thresholds"
            ]
        );
        for job in &app.jobs {
            assert!(
                app.settings.worker.job(job.name()).is_ok(),
                "{}",
                job.name()
            );
        }
        assert_eq!(
            app.job("analytics-export").unwrap().unavailable(),
            Some("needs clickhouse.url")
        );
        app.shutdown().await;
    }

    #[tokio::test]
    async fn an_unknown_job_or_job_option_is_refused_by_name() {
        let error = build(&[
            ("D2__WORKER__JOBS__NIGHTLY__ENABLED", "true"),
            ("D2__WORKER__JOBS__NIGHTLY__INTERVAL_SECONDS", "60"),
        ])
        .await
        .unwrap_err()
        .to_string();
        assert!(error.contains("worker.jobs.nightly"), "{error}");
        assert!(error.contains("D2__WORKER__JOBS__NIGHTLY"), "{error}");
        assert!(error.contains("trial_locker"), "names the jobs: {error}");

        let error = build(&[("D2__WORKER__JOBS__RETENTION__KEEP_DAYZ", "3")])
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("worker.jobs.retention"), "{error}");
        assert!(error.contains("keep_dayz"), "{error}");

        let options = build(&[("D2__WORKER__JOBS__RETENTION__KEEP_DAYS", "3")]).await;
        assert!(options.is_ok(), "{:?}", options.err());
    }
}
