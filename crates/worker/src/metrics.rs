//! Prometheus metrics of the worker process.

use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use d2_kernel::{TaskCounts, TaskPass};

use crate::{JobError, JobOutcome};

#[derive(Debug)]
pub struct WorkerMetrics {
    registry: Registry,
    runs: IntCounterVec,
    items: IntCounterVec,
    duration: HistogramVec,
    last_success: IntGaugeVec,
    position: IntGaugeVec,
    task_outcomes: IntCounterVec,
    tasks: IntGaugeVec,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    // Names are fixed and unique, so registration cannot fail.
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

impl WorkerMetrics {
    /// The metrics of a worker running the jobs called `jobs`.
    pub fn new(jobs: &[&str]) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let runs = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "d2_worker_job_runs_total",
                    "Job runs by outcome: success, failure, or busy (another worker held the lock).",
                ),
                &["job", "outcome"],
            )?,
        );
        let items = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "d2_worker_job_items_total",
                    "What successful runs handled: events exported, accounts locked, tokens expired, keys pruned, events pruned.",
                ),
                &["job"],
            )?,
        );
        let duration = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new("d2_worker_job_duration_seconds", "Job run duration.")
                    .buckets(vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0]),
                &["job"],
            )?,
        );
        let last_success = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "d2_worker_job_last_success_timestamp_seconds",
                    "Unix time of the job's last successful run.",
                ),
                &["job"],
            )?,
        );
        let position = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "d2_worker_job_position_timestamp_seconds",
                    "How far a job working through a stream has come, in Unix seconds (analytics-export: the latest ingest time among the events exported).",
                ),
                &["job"],
            )?,
        );
        let task_outcomes = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "d2_worker_tasks_total",
                    "Claimed tasks by outcome: done, retried (failed, tried again later), dead (failed for good), lost (finished after its lease ran out).",
                ),
                &["outcome"],
            )?,
        );
        let tasks = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "d2_worker_tasks",
                    "Tasks in the queue by state: pending (due, waiting or leased) and dead.",
                ),
                &["state"],
            )?,
        );
        for outcome in ["done", "retried", "dead", "lost"] {
            task_outcomes.with_label_values(&[outcome]);
        }
        for job in jobs {
            for outcome in ["success", "failure", "busy"] {
                runs.with_label_values(&[job, outcome]);
            }
        }
        Ok(Self {
            registry,
            runs,
            items,
            duration,
            last_success,
            position,
            task_outcomes,
            tasks,
        })
    }

    pub(crate) fn record(
        &self,
        name: &str,
        outcome: &Result<JobOutcome, JobError>,
        elapsed: Duration,
    ) {
        let label = match outcome {
            Ok(JobOutcome::Done { items }) => {
                self.items.with_label_values(&[name]).inc_by(*items);
                self.last_success
                    .with_label_values(&[name])
                    .set(Utc::now().timestamp());
                "success"
            }
            Ok(JobOutcome::Busy) => "busy",
            Err(_) => "failure",
        };
        self.runs.with_label_values(&[name, label]).inc();
        self.duration
            .with_label_values(&[name])
            .observe(elapsed.as_secs_f64());
    }

    pub(crate) fn position(&self, job: &str, at: DateTime<Utc>) {
        self.position.with_label_values(&[job]).set(at.timestamp());
    }

    pub(crate) fn tasks_passed(&self, pass: &TaskPass) {
        for (outcome, count) in [
            ("done", pass.done),
            ("retried", pass.retried),
            ("dead", pass.dead),
            ("lost", pass.lost),
        ] {
            self.task_outcomes
                .with_label_values(&[outcome])
                .inc_by(count);
        }
    }

    pub(crate) fn task_counts(&self, counts: TaskCounts) {
        for (state, count) in [("pending", counts.pending), ("dead", counts.dead)] {
            self.tasks
                .with_label_values(&[state])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// Claimed tasks with `outcome` so far (for tests and the log).
    pub fn task_outcomes(&self, outcome: &str) -> u64 {
        self.task_outcomes.with_label_values(&[outcome]).get()
    }

    /// Runs of `job` with `outcome` so far (for tests and the log).
    pub fn runs(&self, job: &str, outcome: &str) -> u64 {
        self.runs.with_label_values(&[job, outcome]).get()
    }

    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}
