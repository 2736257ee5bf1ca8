//! The scheduled job of the authorization server.

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
