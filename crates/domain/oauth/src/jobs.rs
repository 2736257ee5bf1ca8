//! The scheduled jobs of the authorization server.

use std::sync::Arc;

use chrono::Duration;
use d2_kernel::{JobFailure, JobReport, ScheduledJob};

use crate::TokenIssuer;

/// Deletes the tokens of grants that have been wholly expired for longer than `keep`.
#[derive(Debug)]
pub struct TokenPruning {
    pub issuer: Arc<TokenIssuer>,
    pub keep: Duration,
}

#[async_trait::async_trait]
impl ScheduledJob for TokenPruning {
    fn name(&self) -> &'static str {
        "oauth-token-pruning"
    }

    async fn run(
        &self,
        keep_going: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<JobReport, JobFailure> {
        Ok(JobReport::items(
            self.issuer.prune_expired(self.keep, keep_going).await?,
        ))
    }
}

/// Deletes dynamically registered agents nobody used (see
/// [`crate::registration::DynamicClients::reap_unused`]), a thousand per batch while the
/// run may go on.
#[derive(Debug)]
pub struct ClientReaping {
    pub clients: Arc<crate::DynamicClients>,
}

/// Agents a batch of [`ClientReaping`] deletes at most.
const REAPED_PER_BATCH: u32 = 1_000;

#[async_trait::async_trait]
impl ScheduledJob for ClientReaping {
    fn name(&self) -> &'static str {
        "oauth-client-reaping"
    }

    async fn run(
        &self,
        keep_going: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<JobReport, JobFailure> {
        let mut reaped = 0u64;
        loop {
            let batch = self.clients.reap_unused(REAPED_PER_BATCH).await?;
            reaped = reaped.saturating_add(batch);
            if batch < u64::from(REAPED_PER_BATCH) || !keep_going() {
                return Ok(JobReport::items(reaped));
            }
        }
    }
}
