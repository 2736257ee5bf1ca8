//! The scope catalog of each account: its scopes, what each implies, and the expansion the
//! token endpoint asks for, served from a per-account cache that every replica keeps
//! coherent through the change feed.

use std::collections::BTreeSet;
use std::sync::Arc;

use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::{
    AccountId, AuthContext, CacheSettings, Change, ChangeSubscriber, Clock, CoherentCache, Scope,
    StoreError,
};
use serde_json::json;

use super::defaults::DefaultScopes;
use super::error::CatalogError;
use super::ports::ScopeRepo;
use super::scope::{KnownScope, KnownScopes, OAuthScope, ScopeChange, ScopePatch, ScopeSpec};
use super::text::limits;

/// The scope catalogs of every account.
///
/// An account's catalog starts from the [`DefaultScopes`]: on its first use (any read or
/// write of its scopes, or of a tool's required scopes) they are stored as the account's
/// own rows, once (concurrent first uses seed once), and are ordinary scopes from then on.
pub struct ScopeCatalog {
    repo: Arc<dyn ScopeRepo>,
    clock: Arc<dyn Clock>,
    defaults: Arc<DefaultScopes>,
    cache: CoherentCache<AccountId, Arc<KnownScopes>>,
}

impl std::fmt::Debug for ScopeCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopeCatalog")
            .field("defaults", &self.defaults.len())
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

fn scope_audit(
    ctx: &AuthContext,
    action: AuditAction,
    scope: &ScopeSpec,
    now: chrono::DateTime<chrono::Utc>,
) -> AuditEntry {
    AuditEntry::by(ctx, action, now)
        .target("scope", &scope.name)
        .metadata(json!({
            "name": scope.name,
            "category": scope.category,
            "implies": scope.implies,
        }))
}

impl ScopeCatalog {
    pub fn new(
        repo: Arc<dyn ScopeRepo>,
        clock: Arc<dyn Clock>,
        defaults: DefaultScopes,
        cache: CacheSettings,
    ) -> Self {
        Self {
            repo,
            clock,
            defaults: Arc::new(defaults),
            cache: CoherentCache::new(cache),
        }
    }

    /// The account's whole catalog: every scope by name, each with its expanded set. Served
    /// from memory once loaded; a change of the catalog through any replica drops it.
    /// Seeds the account's catalog with the defaults on its first use.
    pub async fn known(&self, account: AccountId) -> Result<Arc<KnownScopes>, CatalogError> {
        self.cache
            .get_or_load(&account, || self.load(account))
            .await
    }

    /// `names` and every scope they imply, sorted (what a token carrying `names` may do).
    /// Refused with every name the account's catalog does not hold.
    pub async fn expand<'a>(
        &self,
        account: AccountId,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<BTreeSet<String>, CatalogError> {
        self.known(account)
            .await?
            .expand(names)
            .map_err(CatalogError::UnknownScopes)
    }

    async fn load(&self, account: AccountId) -> Result<Arc<KnownScopes>, CatalogError> {
        if let Some(scopes) = self.repo.scopes(account).await? {
            return Ok(Arc::new(KnownScopes::new(scopes)));
        }
        let now = self.clock.now();
        let defaults: Vec<OAuthScope> = self
            .defaults
            .specs()
            .iter()
            .map(|spec| OAuthScope::new(account, spec.clone(), now))
            .collect();
        let names: Vec<&str> = defaults.iter().map(OAuthScope::name).collect();
        let audit = AuditEntry::system(account, AuditAction::ScopeSeed, now)
            .metadata(json!({"scopes": names}));
        if self.repo.seed_scopes(account, &defaults, &audit).await? {
            tracing::info!(account.id = %account, scopes = defaults.len(), "scope catalog seeded");
        }
        let scopes =
            self.repo.scopes(account).await?.ok_or_else(|| {
                StoreError::corrupt("a seeded scope catalog reads as never seeded")
            })?;
        Ok(Arc::new(KnownScopes::new(scopes)))
    }

    /// The caller's catalog (`GET /v1/scopes`, `GET /v1/scopes/registry`).
    pub async fn list(&self, ctx: &AuthContext) -> Result<Arc<KnownScopes>, CatalogError> {
        ctx.require(Scope::Admin)?;
        self.known(ctx.account_id).await
    }

    pub async fn get(&self, ctx: &AuthContext, name: &str) -> Result<KnownScope, CatalogError> {
        ctx.require(Scope::Admin)?;
        self.known(ctx.account_id)
            .await?
            .get(name)
            .cloned()
            .ok_or_else(|| CatalogError::ScopeNotFound(name.to_owned()))
    }

    /// `POST /v1/scopes/expand`.
    pub async fn expand_for(
        &self,
        ctx: &AuthContext,
        names: &[String],
    ) -> Result<BTreeSet<String>, CatalogError> {
        ctx.require(Scope::Admin)?;
        self.expand(ctx.account_id, names.iter().map(String::as_str))
            .await
    }

    /// Adds a scope: its name new in the account, what it implies known, no cycle. Audited
    /// `scope.create`.
    pub async fn create(
        &self,
        ctx: &AuthContext,
        spec: ScopeSpec,
    ) -> Result<OAuthScope, CatalogError> {
        ctx.require(Scope::Admin)?;
        let spec = spec.validate()?;
        let account = ctx.account_id;
        self.known(account).await?;
        let now = self.clock.now();
        let plan = |current: &[OAuthScope]| {
            if current.iter().any(|s| s.spec.name == spec.name) {
                return Err(CatalogError::ScopeNameTaken(spec.name.clone()));
            }
            if current.len() >= limits::SCOPES {
                return Err(CatalogError::ScopeLimit(limits::SCOPES));
            }
            KnownScopes::new(current.to_vec()).check(&spec)?;
            let entry = scope_audit(ctx, AuditAction::ScopeCreate, &spec, now);
            Ok((
                ScopeChange::Create(OAuthScope::new(account, spec.clone(), now)),
                entry,
            ))
        };
        let change = self.repo.change_scopes(account, &plan).await?;
        self.cache.invalidate(&account).await;
        match change? {
            ScopeChange::Create(scope) => Ok(scope),
            _ => Err(StoreError::corrupt("a scope creation stored something else").into()),
        }
    }

    /// Replaces a scope's description, category and implied scopes (its name stays): what
    /// it implies known, no cycle. Audited `scope.update`.
    pub async fn update(
        &self,
        ctx: &AuthContext,
        name: &str,
        patch: ScopePatch,
    ) -> Result<OAuthScope, CatalogError> {
        ctx.require(Scope::Admin)?;
        let spec = ScopeSpec {
            name: name.to_owned(),
            description: patch.description,
            category: patch.category,
            implies: patch.implies,
        };
        // An invalid name cannot be stored: it is not found, not invalid.
        if !super::text::is_scope_name(name) {
            return Err(CatalogError::ScopeNotFound(name.to_owned()));
        }
        let spec = spec.validate()?;
        let account = ctx.account_id;
        self.known(account).await?;
        let now = self.clock.now();
        let plan = |current: &[OAuthScope]| {
            let existing = current
                .iter()
                .find(|s| s.spec.name == spec.name)
                .ok_or_else(|| CatalogError::ScopeNotFound(spec.name.clone()))?;
            KnownScopes::new(current.to_vec()).check(&spec)?;
            let entry = scope_audit(ctx, AuditAction::ScopeUpdate, &spec, now);
            Ok((
                ScopeChange::Update(OAuthScope {
                    account_id: account,
                    spec: spec.clone(),
                    created_at: existing.created_at,
                    updated_at: now,
                }),
                entry,
            ))
        };
        let change = self.repo.change_scopes(account, &plan).await?;
        self.cache.invalidate(&account).await;
        match change? {
            ScopeChange::Update(scope) => Ok(scope),
            _ => Err(StoreError::corrupt("a scope update stored something else").into()),
        }
    }

    /// Deletes a scope no other scope implies. Tools that require it keep requiring it (and
    /// cannot be called until it exists again). Audited `scope.delete`.
    pub async fn delete(&self, ctx: &AuthContext, name: &str) -> Result<(), CatalogError> {
        ctx.require(Scope::Admin)?;
        let account = ctx.account_id;
        self.known(account).await?;
        let now = self.clock.now();
        let plan = |current: &[OAuthScope]| {
            let existing = current
                .iter()
                .find(|s| s.spec.name == name)
                .ok_or_else(|| CatalogError::ScopeNotFound(name.to_owned()))?;
            let implied_by: Vec<String> = current
                .iter()
                .filter(|s| s.spec.name != name && s.spec.implies.iter().any(|i| i == name))
                .map(|s| s.spec.name.clone())
                .collect();
            if !implied_by.is_empty() {
                return Err(CatalogError::ScopeImplied {
                    scope: name.to_owned(),
                    implied_by,
                });
            }
            let entry = scope_audit(ctx, AuditAction::ScopeDelete, &existing.spec, now);
            Ok((ScopeChange::Delete(name.to_owned()), entry))
        };
        let change = self.repo.change_scopes(account, &plan).await?;
        self.cache.invalidate(&account).await;
        change?;
        Ok(())
    }
}

impl ChangeSubscriber for ScopeCatalog {
    fn on_change(&self, change: &Change) {
        match change {
            Change::Catalog(account) => {
                let account = *account;
                self.cache.invalidate_if(move |key, _| *key == account);
            }
            Change::Resync => self.cache.invalidate_all(),
            _ => {}
        }
    }
}
