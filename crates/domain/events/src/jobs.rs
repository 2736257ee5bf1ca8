//! The scheduled jobs of events: both need an export target.

use d2_kernel::{JobFailure, JobReport, ScheduledJob};

use crate::Exporter;

const NEEDS_EXPORT: &str = "needs clickhouse.url";

/// Copies new events to the analytics sink, batch by batch.
#[derive(Debug)]
pub struct AnalyticsExport(pub Option<Exporter>);

#[async_trait::async_trait]
impl ScheduledJob for AnalyticsExport {
    fn name(&self) -> &'static str {
        "analytics-export"
    }

    fn unavailable(&self) -> Option<&'static str> {
        self.0.is_none().then_some(NEEDS_EXPORT)
    }

    async fn run(
        &self,
        keep_going: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<JobReport, JobFailure> {
        let Some(exporter) = &self.0 else {
            return Err(NEEDS_EXPORT.into());
        };
        exporter.prepare().await?;
        let report = exporter.run(keep_going).await?;
        Ok(JobReport {
            items: report.events,
            position: report.checkpoint.map(|c| c.ingested_at),
        })
    }
}

/// Deletes stored events once exported and older than `keep`: only exported events are
/// ever deleted.
#[derive(Debug)]
pub struct Retention {
    pub exporter: Option<Exporter>,
    pub keep: chrono::Duration,
}

#[async_trait::async_trait]
impl ScheduledJob for Retention {
    fn name(&self) -> &'static str {
        "retention"
    }

    fn unavailable(&self) -> Option<&'static str> {
        self.exporter.is_none().then_some(NEEDS_EXPORT)
    }

    async fn run(&self, _: &(dyn Fn() -> bool + Send + Sync)) -> Result<JobReport, JobFailure> {
        let Some(exporter) = &self.exporter else {
            return Err(NEEDS_EXPORT.into());
        };
        Ok(JobReport::items(exporter.prune_exported(self.keep).await?))
    }
}
