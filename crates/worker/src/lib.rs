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
use d2_events::Exporter;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use metrics::WorkerMetrics;

/// The scheduled jobs. Their names are those of `d2-worker --once <job>`, of the advisory
/// locks and of the metrics labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Job {
    AnalyticsExport,
    TrialLocker,
    TokenExpiry,
    KeyPruning,
    Retention,
}

impl Job {
    pub const ALL: [Job; 5] = [
        Job::AnalyticsExport,
        Job::TrialLocker,
        Job::TokenExpiry,
        Job::KeyPruning,
        Job::Retention,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Job::AnalyticsExport => "analytics-export",
            Job::TrialLocker => "trial-locker",
            Job::TokenExpiry => "token-expiry",
            Job::KeyPruning => "key-pruning",
            Job::Retention => "retention",
        }
    }
}

impl std::fmt::Display for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

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
    #[error("{0} needs clickhouse.url")]
    NotConfigured(Job),
    #[error("{job} failed: {source}")]
    Failed {
        job: Job,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Runs the jobs of one worker process.
#[derive(Clone, Debug)]
pub struct Worker {
    app: App,
    exporter: Option<Exporter>,
    metrics: Arc<WorkerMetrics>,
}

impl Worker {
    pub fn new(app: App) -> Result<Self, prometheus::Error> {
        let exporter = app.exporter.clone();
        Ok(Self {
            app,
            exporter,
            metrics: Arc::new(WorkerMetrics::new()?),
        })
    }

    pub fn app(&self) -> &App {
        &self.app
    }

    pub fn metrics(&self) -> &Arc<WorkerMetrics> {
        &self.metrics
    }

    /// Runs `job` once under its lock. `keep_going` is asked between export batches, so a
    /// shutdown finishes the batch in hand and stops.
    pub async fn run_once(
        &self,
        job: Job,
        keep_going: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<JobOutcome, JobError> {
        if job == Job::AnalyticsExport && self.exporter.is_none() {
            return Err(JobError::NotConfigured(job));
        }
        let failed =
            |source: Box<dyn std::error::Error + Send + Sync>| JobError::Failed { job, source };
        let started = Instant::now();
        let lock = self
            .app
            .store
            .try_lock_job(job.name())
            .await
            .map_err(|e| failed(e.into()));
        let outcome = match lock {
            Ok(None) => Ok(JobOutcome::Busy),
            Ok(Some(held)) => {
                let done = self
                    .execute(job, keep_going)
                    .await
                    .map(|items| JobOutcome::Done { items })
                    .map_err(failed);
                // Released before the outcome is reported, so the next run (here or in
                // another worker) finds the job free.
                held.release().await;
                done
            }
            Err(error) => Err(error),
        };
        self.metrics.record(job, &outcome, started.elapsed());
        match &outcome {
            Ok(JobOutcome::Done { items }) => {
                tracing::info!(
                    job = job.name(),
                    items,
                    elapsed_ms = started.elapsed().as_millis(),
                    "job done"
                );
            }
            Ok(JobOutcome::Busy) => {
                tracing::debug!(
                    job = job.name(),
                    "job skipped: another worker holds its lock"
                );
            }
            Err(error) => tracing::warn!(job = job.name(), error = %error, "job failed"),
        }
        outcome
    }

    async fn execute(
        &self,
        job: Job,
        keep_going: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
        let app = &self.app;
        Ok(match job {
            Job::AnalyticsExport => {
                let Some(exporter) = &self.exporter else {
                    return Ok(0);
                };
                exporter.prepare().await?;
                let report = exporter.run(keep_going).await?;
                if let Some(checkpoint) = report.checkpoint {
                    self.metrics.export_position(checkpoint.ingested_at);
                }
                report.events
            }
            Job::TrialLocker => app.accounts.lock_expired_trials().await?,
            Job::TokenExpiry => app.tokens.enforce_expiry().await?,
            Job::KeyPruning => app.policies.jwks().prune_retired().await?,
            Job::Retention => match &self.exporter {
                // Only exported events are ever deleted.
                Some(exporter) => {
                    let keep = app.settings.worker.jobs.retention.keep_days;
                    exporter
                        .prune_exported(chrono::Duration::days(i64::from(keep)))
                        .await?
                }
                None => 0,
            },
        })
    }

    /// The enabled jobs and their periods (the export only with ClickHouse).
    pub fn schedule(&self) -> Vec<(Job, Duration)> {
        let jobs = &self.app.settings.worker.jobs;
        let every = Duration::from_secs;
        Job::ALL
            .into_iter()
            .filter_map(|job| {
                let (enabled, interval) = match job {
                    Job::AnalyticsExport => (
                        jobs.analytics_export.enabled && self.exporter.is_some(),
                        jobs.analytics_export.interval_seconds,
                    ),
                    Job::TrialLocker => (
                        jobs.trial_locker.enabled,
                        jobs.trial_locker.interval_seconds,
                    ),
                    Job::TokenExpiry => (
                        jobs.token_expiry.enabled,
                        jobs.token_expiry.interval_seconds,
                    ),
                    Job::KeyPruning => {
                        (jobs.key_pruning.enabled, jobs.key_pruning.interval_seconds)
                    }
                    Job::Retention => (
                        jobs.retention.enabled && self.exporter.is_some(),
                        jobs.retention.interval_seconds,
                    ),
                };
                enabled.then(|| (job, every(interval.max(1))))
            })
            .collect()
    }

    /// Runs every enabled job on its schedule until `shutdown`; a run in progress is
    /// finished (an export stops after its current batch) before this returns.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut loops = JoinSet::new();
        for (job, period) in self.schedule() {
            tracing::info!(job = job.name(), period_s = period.as_secs(), "scheduled");
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
        while loops.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum as _;

    use super::Job;

    #[test]
    fn command_line_names_are_the_job_names() {
        for job in Job::ALL {
            assert_eq!(Job::from_str(job.name(), false), Ok(job));
        }
        assert!(Job::from_str("analytics_export", false).is_err());
    }
}
