//! Scheduled jobs: work a domain wants done on a period, by whichever worker process takes
//! the job's lock first. A domain provides its jobs as values of [`ScheduledJob`]; the
//! composition root registers them and the worker runs them, configured under
//! `worker.jobs.<name>` (the name with `_` for `-`).

use chrono::{DateTime, Utc};

/// Why a run failed; logged and counted, and the next period tries again.
pub type JobFailure = Box<dyn std::error::Error + Send + Sync>;

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobReport {
    /// What it handled: events exported, accounts locked, tokens expired ...
    pub items: u64,
    /// How far a job that works through a stream has come (the export: the ingest time of
    /// the last event it copied), for the worker's metrics.
    pub position: Option<DateTime<Utc>>,
}

impl JobReport {
    pub fn items(items: u64) -> Self {
        Self {
            items,
            position: None,
        }
    }
}

/// A job of a domain.
#[async_trait::async_trait]
pub trait ScheduledJob: Send + Sync {
    /// Its name in kebab case: `d2-worker --once <name>`, the lock's name, the metrics
    /// label.
    fn name(&self) -> &'static str;

    /// Why it cannot run in this configuration (the export needs ClickHouse), if it
    /// cannot: such a job is never scheduled and refuses to run once.
    fn unavailable(&self) -> Option<&'static str> {
        None
    }

    /// One run. `keep_going` turns false when the process is stopping: a long run checks
    /// it between steps and returns what it has done.
    async fn run(
        &self,
        keep_going: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<JobReport, JobFailure>;
}

/// The key of a job in `worker.jobs`: its name with `_` for `-`.
pub fn config_key(name: &str) -> String {
    name.replace('-', "_")
}
