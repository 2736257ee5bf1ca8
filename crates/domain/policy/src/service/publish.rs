//! Drafts, validation, publishing, and going back: revoke and revert.

use super::*;

impl PolicyService {
    /// The largest body the caller may send to a route that takes a policy document,
    /// checked before the body is read: the route's scope, an account that is served (for
    /// the routes that store), and the plan's `max_bundle_bytes` plus room for the
    /// request's framing (`{"bundle": ...}`, YAML layout). A caller who may not use the
    /// route, or a body over its plan, costs no read.
    pub async fn body_cap(&self, ctx: &AuthContext, scope: Scope) -> Result<usize, PolicyError> {
        const FRAMING: usize = 64 * 1024;
        ctx.require(scope)?;
        let entitlement = if scope == Scope::PolicyRead {
            self.entitlements.entitlement(ctx.account_id).await?
        } else {
            self.serving_account(ctx).await?
        };
        Ok(usize::try_from(entitlement.quotas.max_bundle_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(FRAMING))
    }

    /// The editor's check: errors and warnings, never a failure for a bad document.
    pub fn validate(
        &self,
        ctx: &AuthContext,
        value: Value,
    ) -> Result<(Report, Value), PolicyError> {
        ctx.require(Scope::PolicyRead)?;
        let value = match value {
            Value::Object(mut map)
                if map.contains_key("bundle") && !map.contains_key("metadata") =>
            {
                map.remove("bundle").unwrap_or(Value::Null)
            }
            other => other,
        };
        let metadata = value.get("metadata").cloned().unwrap_or(Value::Null);
        let summary = json!({
            "name": metadata.get("name"),
            "description": metadata.get("description"),
            "expires": metadata.get("expires"),
        });
        let (_, report) = PolicyDocument::check(value);
        Ok((report, summary))
    }

    /// Stores the app's draft (unsigned). Audited as `policy.draft`.
    pub async fn save_draft(
        &self,
        ctx: &AuthContext,
        value: Value,
    ) -> Result<PolicyRecord, PolicyError> {
        ctx.require(Scope::PolicyPublish)?;
        let entitlement = self.serving_account(ctx).await?;
        let document = Self::document_of(value)?;
        let tool_count = Self::check_tools(&document, &entitlement)?;
        let canonical = serde_json::to_vec(document.as_map()).unwrap_or_default();
        let size = u64::try_from(canonical.len()).unwrap_or(u64::MAX);
        Self::check_size(size, &entitlement)?;
        let app = document.app_name();
        Self::within_app(ctx, &app, "draft")?;
        let now = self.clock.now();
        let draft = self.record(
            ctx,
            &app,
            Stage::Draft,
            &document,
            now,
            tool_count,
            size,
            hex_sha256(&canonical),
        );
        let audit_of = |stored: &PolicyRecord| {
            AuditEntry::by(ctx, AuditAction::PolicyDraft, now)
                .target("policy", stored.id)
                .metadata(json!({ "app_name": stored.app_name.as_str(), "version": stored.version, "tool_count": tool_count }))
        };
        let max_apps = entitlement.quotas.max_apps;
        match self.repo.save_draft(&draft, max_apps, &audit_of).await? {
            DraftOutcome::Saved(stored) => {
                self.invalidate_app(ctx.account_id, app);
                Ok(*stored)
            }
            DraftOutcome::AppLimit => Err(PolicyError::app_limit(&entitlement)),
        }
    }

    /// Publishes the signed body as the app's new active version. Audited as
    /// `policy.publish` (with `force` when deny rules were dropped on purpose).
    pub async fn publish(
        &self,
        ctx: &AuthContext,
        request: PublishRequest<'_>,
    ) -> Result<(PolicyRecord, u32), PolicyError> {
        ctx.require(Scope::PolicyPublish)?;
        let entitlement = self.serving_account(ctx).await?;
        let publisher = self
            .keys
            .verify(
                ctx.account_id,
                request.key_id,
                request.signature,
                request.body,
            )
            .await?;
        let document = Self::document_of(parse_value(request.body)?)?;
        let app = document.app_name();
        Self::within_app(ctx, &app, "published")?;
        if let Some(requested) = request.app_name.map(AppName::normalise)
            && requested != app
        {
            return Err(PolicyError::AppMismatch {
                requested: requested.to_string(),
                document: app.to_string(),
            });
        }
        let tool_count = Self::check_tools(&document, &entitlement)?;
        for _ in 0..MAX_RETRIES {
            let state = self.repo.app_state(ctx.account_id, &app).await?;
            if let Some(expected) = request.if_match.map(normalise_etag).filter(|e| *e != "*")
                && state
                    .active
                    .as_ref()
                    .is_none_or(|active| active.etag != expected)
            {
                return Err(PolicyError::EtagMismatch);
            }
            let active_document = state
                .active
                .as_ref()
                .and_then(|a| PolicyDocument::check(a.document.clone()).0);
            let drops_denies =
                active_document.is_some_and(|a| a.has_deny_rules()) && !document.has_deny_rules();
            if drops_denies && !request.force {
                return Err(PolicyError::NoDenyRules);
            }
            let now = self.clock.now();
            let record = self
                .signed_version(
                    ctx,
                    &entitlement,
                    &document,
                    tool_count,
                    Some(&publisher.key_id),
                    now,
                )
                .await?;
            let publication = Publication {
                record,
                expected_active: state.active.as_ref().map(|a| a.id),
                requested_version: request.version,
                max_apps: entitlement.quotas.max_apps,
                refuse_earlier_content: true,
            };
            let forced = drops_denies && request.force;
            let audit_of = |stored: &PolicyRecord| {
                AuditEntry::by(ctx, AuditAction::PolicyPublish, now)
                    .target("policy", stored.id)
                    .metadata(json!({
                        "app_name": stored.app_name.as_str(),
                        "version": stored.version,
                        "key_id": publisher.key_id,
                        "kid": stored.kid,
                        "signature_verified": true,
                        "bundle_size": stored.size_bytes,
                        "tool_count": stored.tool_count,
                        "force": forced,
                    }))
            };
            match self.repo.publish(&publication, &audit_of).await? {
                PublishOutcome::Published(stored) => {
                    self.invalidate_app(ctx.account_id, app);
                    return Ok((*stored, entitlement.quotas.poll_seconds));
                }
                PublishOutcome::Conflict => {
                    if request.if_match.is_some_and(|m| normalise_etag(m) != "*") {
                        return Err(PolicyError::EtagMismatch);
                    }
                }
                PublishOutcome::VersionRollback { highest } => {
                    return Err(PolicyError::VersionRollback {
                        requested: request.version.unwrap_or_default(),
                        highest,
                    });
                }
                PublishOutcome::VersionOutOfRange { highest } => {
                    return Err(PolicyError::VersionOutOfRange {
                        requested: request.version.unwrap_or_default(),
                        highest,
                    });
                }
                PublishOutcome::AppLimit => return Err(PolicyError::app_limit(&entitlement)),
                PublishOutcome::IdenticalTo { id, version } => {
                    return Err(PolicyError::identical_to(&app, id, version));
                }
            }
        }
        Err(PolicyError::Conflict)
    }

    /// Stops serving the app: every published version is revoked; polls get 410 until a
    /// new version is published. Audited as `policy.revoke`.
    pub async fn revoke(&self, ctx: &AuthContext, app: &str) -> Result<u64, PolicyError> {
        ctx.require(Scope::PolicyRevoke)?;
        let app = AppName::normalise(app);
        Self::within_app(ctx, &app, "active")?;
        let now = self.clock.now();
        let audit = AuditEntry::by(ctx, AuditAction::PolicyRevoke, now)
            .target("app", &app)
            .metadata(json!({ "app_name": app.as_str() }));
        let revoked = self
            .repo
            .revoke_app(ctx.account_id, &app, now, &audit)
            .await?;
        self.invalidate_app(ctx.account_id, app.clone());
        if revoked == 0 {
            return Err(PolicyError::NotFound {
                app: app.to_string(),
                what: "active",
            });
        }
        Ok(revoked)
    }

    /// Serves an earlier version again, as a new version signed with the current key.
    /// Audited as `policy.revert`.
    pub async fn revert(
        &self,
        ctx: &AuthContext,
        id: PolicyId,
    ) -> Result<PolicyRecord, PolicyError> {
        ctx.require(Scope::PolicyRevert)?;
        let entitlement = self.serving_account(ctx).await?;
        let target = self.find_visible(ctx, id).await?;
        if target.stage != Stage::Published {
            return Err(PolicyError::IdNotFound);
        }
        if target.active {
            return Err(PolicyError::AlreadyActive);
        }
        let (Some(document), _) = PolicyDocument::check(target.document.clone()) else {
            return Err(StoreError::corrupt("a stored policy no longer validates").into());
        };
        let from_version = target.version;
        self.republish(
            ctx,
            &entitlement,
            document,
            AuditAction::PolicyRevert,
            json!({ "from_version": from_version }),
            None,
        )
        .await
    }

    /// Publishes `document` as a new version on the system's authority (revert, editor
    /// changes already authorised): signed with the current key, checked against the plan.
    /// Only a revert may bring back an earlier version's content.
    pub(super) async fn republish(
        &self,
        ctx: &AuthContext,
        entitlement: &Entitlement,
        document: PolicyDocument,
        action: AuditAction,
        details: Value,
        publisher_key_id: Option<String>,
    ) -> Result<PolicyRecord, PolicyError> {
        let tool_count = Self::check_tools(&document, entitlement)?;
        let app = document.app_name();
        for _ in 0..MAX_RETRIES {
            let state = self.repo.app_state(ctx.account_id, &app).await?;
            let now = self.clock.now();
            let record = self
                .signed_version(
                    ctx,
                    entitlement,
                    &document,
                    tool_count,
                    publisher_key_id.as_deref(),
                    now,
                )
                .await?;
            let publication = Publication {
                record,
                expected_active: state.active.as_ref().map(|a| a.id),
                requested_version: None,
                max_apps: entitlement.quotas.max_apps,
                refuse_earlier_content: action != AuditAction::PolicyRevert,
            };
            let audit_of = |stored: &PolicyRecord| {
                let mut metadata =
                    json!({ "app_name": stored.app_name.as_str(), "version": stored.version });
                if let (Some(target), Some(extra)) = (metadata.as_object_mut(), details.as_object())
                {
                    target.extend(extra.clone());
                }
                AuditEntry::by(ctx, action, now)
                    .target("policy", stored.id)
                    .metadata(metadata)
            };
            match self.repo.publish(&publication, &audit_of).await? {
                PublishOutcome::Published(stored) => {
                    self.invalidate_app(ctx.account_id, app);
                    return Ok(*stored);
                }
                PublishOutcome::Conflict => {}
                PublishOutcome::VersionRollback { .. } => return Err(PolicyError::Conflict),
                PublishOutcome::VersionOutOfRange { highest } => {
                    return Err(PolicyError::VersionOutOfRange {
                        requested: highest.saturating_add(1),
                        highest,
                    });
                }
                PublishOutcome::AppLimit => return Err(PolicyError::app_limit(entitlement)),
                PublishOutcome::IdenticalTo { id, version } => {
                    return Err(PolicyError::identical_to(&app, id, version));
                }
            }
        }
        Err(PolicyError::Conflict)
    }
}
