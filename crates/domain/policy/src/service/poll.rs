//! The SDK's poll: the bundle of an app, or 304, from memory.

use super::*;

impl PolicyService {
    /// The SDK's poll: the app's bundle, or 304 when `If-None-Match` names it.
    pub async fn poll(
        &self,
        ctx: &AuthContext,
        app: Option<&str>,
        stage: BundleStage,
        if_none_match: Option<&str>,
    ) -> Result<Poll, PolicyError> {
        ctx.require(Scope::PolicyRead)?;
        // The ceiling first, so a flood costs as little as possible.
        let limit = self
            .limiter
            .check((ctx.account_id, ctx.token_id()))
            .map_err(PolicyError::PollRateLimited)?;
        let what = if stage == BundleStage::Draft {
            "draft"
        } else {
            "published"
        };
        let app = Self::resolve_app(ctx, app, what)?;
        let entitlement = self.serving_account(ctx).await?;
        let state = self.state(ctx.account_id, &app).await?;
        let record = match stage {
            BundleStage::Auto => state.active.as_ref().or(state.draft.as_ref()),
            BundleStage::Published => state.active.as_ref(),
            BundleStage::Draft => state.draft.as_ref(),
        };
        let Some(record) = record else {
            if state.revoked && stage != BundleStage::Draft {
                return Err(PolicyError::Revoked(app.to_string()));
            }
            return Err(PolicyError::NotFound {
                app: app.to_string(),
                what,
            });
        };
        let max_tools = entitlement.quotas.max_tools;
        if record.tool_count > max_tools {
            return Err(PolicyError::ToolLimit {
                count: usize::try_from(record.tool_count).unwrap_or(usize::MAX),
                max: max_tools,
                plan: entitlement.plan,
            });
        }
        Self::check_size(record.size_bytes, &entitlement)?;
        let poll_seconds = entitlement.quotas.poll_seconds;
        if if_none_match.map(normalise_etag) == Some(record.etag.as_str()) {
            return Ok(Poll::NotModified {
                etag: record.etag.clone(),
                poll_seconds,
                limit,
            });
        }
        Ok(Poll::Bundle {
            record: Box::new(record.clone()),
            poll_seconds,
            limit,
        })
    }
}
