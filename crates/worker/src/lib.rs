#![doc = include_str!("../README.md")]
#![deny(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::panic
)]

mod metrics;
pub mod server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use d2_app::App;
use d2_kernel::{JobReport, ScheduledJob, TaskHandler, TaskRunner};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use metrics::WorkerMetrics;

/// What a run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// The job ran; `items` counts what it handled (events exported, accounts locked ...).
    Done { items: u64 },
    /// Another worker holds the job's lock.
    Busy,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("there is no job {0}; the jobs are {1}")]
    Unknown(String, String),
    #[error("{job} {reason}")]
    NotConfigured {
        job: &'static str,
        reason: &'static str,
    },
    #[error("{job} failed: {source}")]
    Failed {
        job: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Runs the jobs the domains registered in the [`App`], each under its lock so that one
/// worker process at a time runs it.
#[derive(Clone, Debug)]
pub struct Worker {
    app: App,
    metrics: Arc<WorkerMetrics>,
    tasks: Arc<TaskRunner>,
}

impl Worker {
    pub fn new(app: App) -> Result<Self, prometheus::Error> {
        Self::with_task_handlers(app, &[])
    }

    /// A worker that also does the tasks of `handlers` (an embedder's own kinds).
    pub fn with_task_handlers(
        app: App,
        handlers: &[Arc<dyn TaskHandler>],
    ) -> Result<Self, prometheus::Error> {
        let names: Vec<&str> = app.jobs.iter().map(|job| job.name()).collect();
        Ok(Self {
            metrics: Arc::new(WorkerMetrics::new(&names)?),
            tasks: Arc::new(app.task_runner(handlers)),
            app,
        })
    }

    pub fn task_runner(&self) -> &TaskRunner {
        &self.tasks
    }

    pub fn app(&self) -> &App {
        &self.app
    }

    pub fn metrics(&self) -> &Arc<WorkerMetrics> {
        &self.metrics
    }

    /// The job called `name` (as `d2-worker --once` takes it).
    pub fn job(&self, name: &str) -> Result<Arc<dyn ScheduledJob>, JobError> {
        self.app.job(name).cloned().ok_or_else(|| {
            let names: Vec<&str> = self.app.jobs.iter().map(|job| job.name()).collect();
            JobError::Unknown(name.to_owned(), names.join(", "))
        })
    }

    /// Runs the job called `name` once under its lock. `keep_going` is asked between the
    /// steps of a long run, so a shutdown finishes the step in hand and stops.
    pub async fn run_once(
        &self,
        name: &str,
        keep_going: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<JobOutcome, JobError> {
        let job = self.job(name)?;
        let name = job.name();
        if let Some(reason) = job.unavailable() {
            return Err(JobError::NotConfigured { job: name, reason });
        }
        let failed = |source: Box<dyn std::error::Error + Send + Sync>| JobError::Failed {
            job: name,
            source,
        };
        let started = Instant::now();
        let lock = self
            .app
            .store
            .try_lock_job(name)
            .await
            .map_err(|e| failed(e.into()));
        let outcome = match lock {
            Ok(None) => Ok(JobOutcome::Busy),
            Ok(Some(held)) => {
                let done = job.run(keep_going).await.map_err(failed);
                // Released before the outcome is reported, so the next run (here or in
                // another worker) finds the job free.
                held.release().await;
                done.map(|report| self.reported(name, report))
            }
            Err(error) => Err(error),
        };
        self.metrics.record(name, &outcome, started.elapsed());
        match &outcome {
            Ok(JobOutcome::Done { items }) => {
                tracing::info!(
                    job = name,
                    items,
                    elapsed_ms = started.elapsed().as_millis(),
                    "job done"
                );
            }
            Ok(JobOutcome::Busy) => {
                tracing::debug!(job = name, "job skipped: another worker holds its lock");
            }
            Err(error) => tracing::warn!(job = name, error = %error, "job failed"),
        }
        outcome
    }

    fn reported(&self, name: &str, report: JobReport) -> JobOutcome {
        if let Some(position) = report.position {
            self.metrics.position(name, position);
        }
        JobOutcome::Done {
            items: report.items,
        }
    }

    /// The jobs to run and their periods: enabled in `worker.jobs` and able to run in this
    /// configuration (the export only with ClickHouse).
    pub fn schedule(&self) -> Vec<(&'static str, Duration)> {
        self.app
            .jobs
            .iter()
            .filter(|job| job.unavailable().is_none())
            .filter_map(|job| {
                let settings = self.app.settings.worker.job(job.name()).ok()?;
                settings.enabled.then(|| {
                    (
                        job.name(),
                        Duration::from_secs(settings.interval_seconds.max(1)),
                    )
                })
            })
            .collect()
    }

    /// Runs every enabled job on its schedule until `shutdown`; a run in progress is
    /// finished (an export stops after its current batch) before this returns.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut loops = JoinSet::new();
        for (job, period) in self.schedule() {
            tracing::info!(job, period_s = period.as_secs(), "scheduled");
            let worker = self.clone();
            let shutdown = shutdown.clone();
            loops.spawn(async move {
                let mut ticks = tokio::time::interval(period);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        _ = ticks.tick() => {
                            let stop = shutdown.clone();
                            // Errors are logged and counted; the next tick tries again.
                            let _ = worker.run_once(job, &move || !stop.is_cancelled()).await;
                        }
                    }
                }
            });
        }
        let settings = &self.app.settings.worker.tasks;
        if settings.enabled && !self.tasks.kinds().is_empty() {
            let worker = self.clone();
            let idle = Duration::from_millis(settings.poll_interval_ms.max(1));
            tracing::info!(kinds = ?self.tasks.kinds(), "working through the task queue");
            loops.spawn(async move { worker.work_through_tasks(idle, shutdown).await });
        }
        while loops.join_next().await.is_some() {}
    }

    /// Claims and runs due tasks until `shutdown`: at once again after a full batch, after
    /// `idle` otherwise. A batch in hand is finished before this returns.
    async fn work_through_tasks(&self, idle: Duration, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let busy = match self.tasks.run_once().await {
                Ok(pass) => {
                    self.metrics.tasks_passed(&pass);
                    if pass.claimed() > 0 {
                        tracing::info!(
                            done = pass.done,
                            retried = pass.retried,
                            dead = pass.dead,
                            lost = pass.lost,
                            "tasks run"
                        );
                    }
                    pass.claimed() > 0
                }
                Err(error) => {
                    tracing::warn!(error = %error, "cannot claim tasks; trying again");
                    false
                }
            };
            if let Ok(counts) = self.tasks.queue().counts().await {
                self.metrics.task_counts(counts);
            }
            if !busy {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(idle) => {}
                }
            }
        }
    }
}
