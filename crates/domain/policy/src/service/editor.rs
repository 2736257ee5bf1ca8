//! The editor's reads and edits: versions, apps, roles, descriptions, bundle patches.

use super::*;

impl PolicyService {
    /// The app's versions and draft, newest first.
    pub async fn versions(
        &self,
        ctx: &AuthContext,
        app: &str,
        page: &PageRequest,
    ) -> Result<Page<PolicyRecord>, PolicyError> {
        ctx.require(Scope::PolicyRead)?;
        let app = AppName::normalise(app);
        Self::within_app(ctx, &app, "published or draft")?;
        if let Some(cursor) = page.after() {
            cursor.id_as::<i64>()?;
        }
        Ok(self.repo.versions(ctx.account_id, &app, page).await?)
    }

    pub async fn list(
        &self,
        ctx: &AuthContext,
        page: &PageRequest,
    ) -> Result<Page<PolicyRecord>, PolicyError> {
        ctx.require(Scope::PolicyRead)?;
        if let Some(cursor) = page.after() {
            cursor.id_as::<PolicyId>()?;
        }
        Ok(self
            .repo
            .list_policies(ctx.account_id, ctx.app_name.as_ref(), page)
            .await?)
    }

    pub async fn get(&self, ctx: &AuthContext, id: PolicyId) -> Result<PolicyRecord, PolicyError> {
        ctx.require(Scope::PolicyRead)?;
        self.find_visible(ctx, id).await
    }

    /// Every app with a draft or a version, and `default`, sorted. A server token bound to
    /// an app sees only that app.
    pub async fn apps(&self, ctx: &AuthContext) -> Result<Vec<AppName>, PolicyError> {
        ctx.require(Scope::PolicyRead)?;
        if let Some(bound) = &ctx.app_name {
            return Ok(vec![bound.clone()]);
        }
        let mut apps = self.repo.apps(ctx.account_id).await?;
        apps.push(AppName::default_app());
        apps.sort();
        apps.dedup();
        Ok(apps)
    }

    /// Roles and permissions of the app's active version (or its draft).
    pub async fn roles_and_permissions(
        &self,
        ctx: &AuthContext,
        app: Option<&str>,
    ) -> Result<Value, PolicyError> {
        ctx.require(Scope::PolicyRead)?;
        let app = Self::resolve_app(ctx, app, "published or draft")?;
        let state = self.repo.app_state(ctx.account_id, &app).await?;
        let record = state
            .active
            .as_ref()
            .or(state.draft.as_ref())
            .ok_or_else(|| PolicyError::NotFound {
                app: app.to_string(),
                what: "published or draft",
            })?;
        let crate::document::RolesAndPermissions {
            roles,
            permissions,
            mappings,
        } = PolicyDocument::check(record.document.clone())
            .0
            .map(|d| d.roles_and_permissions())
            .unwrap_or_default();
        let mappings: serde_json::Map<String, Value> = mappings
            .into_iter()
            .map(|(role, granted)| (role, json!(granted)))
            .collect();
        Ok(
            json!({ "app_name": app.as_str(), "roles": roles, "permissions": permissions, "role_mappings": mappings }),
        )
    }

    /// Changes the description shown beside a version (not part of the signed content).
    /// Audited as `policy.update`.
    pub async fn set_description(
        &self,
        ctx: &AuthContext,
        id: PolicyId,
        description: Option<&str>,
    ) -> Result<PolicyRecord, PolicyError> {
        ctx.require(Scope::PolicyPublish)?;
        let description = d2_kernel::text::optional_label(description, 2000).map_err(|_| {
            PolicyError::Invalid(Report {
                errors: vec![
                    "`description` must be at most 2000 characters without control characters"
                        .into(),
                ],
                warnings: vec![],
            })
        })?;
        if ctx.app_name.is_some() {
            self.find_visible(ctx, id).await?;
        }
        let audit = AuditEntry::by(ctx, AuditAction::PolicyUpdate, self.clock.now())
            .target("policy", id)
            .metadata(json!({ "field": "description" }));
        self.repo
            .set_description(ctx.account_id, id, description.as_deref(), &audit)
            .await?
            .ok_or(PolicyError::IdNotFound)
    }

    /// Replaces a version's content from the editor. A draft is updated; a published
    /// version is never edited: the change is published as a new version, which needs the
    /// same publisher signature as any publish.
    pub async fn update_bundle(
        &self,
        ctx: &AuthContext,
        id: PolicyId,
        body: &[u8],
        key_id: Option<&str>,
        signature: Option<&str>,
    ) -> Result<PolicyRecord, PolicyError> {
        ctx.require(Scope::PolicyPublish)?;
        let target = self.find_visible(ctx, id).await?;
        let value = parse_value(body)?;
        let document = Self::document_of(value)?;
        if document.app_name() != target.app_name {
            return Err(PolicyError::AppMismatch {
                requested: target.app_name.to_string(),
                document: document.app_name().to_string(),
            });
        }
        if target.stage == Stage::Draft {
            return self.save_draft(ctx, document.into_value()).await;
        }
        let entitlement = self.serving_account(ctx).await?;
        let publisher = self
            .keys
            .verify(ctx.account_id, key_id, signature, body)
            .await?;
        self.republish(
            ctx,
            &entitlement,
            document,
            AuditAction::PolicyUpdate,
            json!({ "from_version": target.version, "key_id": publisher.key_id }),
            Some(publisher.key_id.clone()),
        )
        .await
    }
}
