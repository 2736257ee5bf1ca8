use std::sync::Arc;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use d2_accounts::{AccountError, AccountService, Entitlement};
use d2_audit::{AuditAction, AuditEntry};
use d2_jwks::{Jwks, JwksError, JwsHeaderExtras, RotationHint, SigningKey};
use d2_kernel::limit::{KeyedLimiter, Rate, RateLimit};
use d2_kernel::{
    AccessError, AccountId, AppName, AuthContext, CacheSettings, Clock, Code, CoherentCache,
    ErrorCode, Page, PageError, PageRequest, Plan, PolicyId, Scope, StoreError,
};
use ring::digest::{SHA256, digest};
use serde_json::{Value, json};

use crate::document::{PolicyDocument, Report, Unparseable, parse_value};
use crate::model::{AppState, PolicyRecord, Stage};
use crate::poll::{PollCeiling, PollLimiter};
use crate::ports::{
    DraftOutcome, KeyRotation, PolicyRepo, Publication, PublishOutcome, RotationOutcome,
};
use crate::publisher::{PublisherKeys, SignatureError};

/// The substrings the D2 SDK looks for in a 404 to print its hint.
pub const APP_REQUIRED_HINT: &str =
    "app_name required for non-server tokens; server tokens have automatic app resolution";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Unparseable(#[from] Unparseable),
    #[error("policy validation failed: {}", .0.errors.join("; "))]
    Invalid(Report),
    #[error("the policy is for app `{document}` but the request names `{requested}`")]
    AppMismatch { requested: String, document: String },
    #[error("{}", APP_REQUIRED_HINT)]
    AppRequired,
    #[error("no {what} policy for app `{app}`")]
    NotFound { app: String, what: &'static str },
    #[error("no such policy in this account")]
    IdNotFound,
    #[error("the policy of app `{0}` has been revoked")]
    Revoked(String),
    #[error("that version is already active")]
    AlreadyActive,
    #[error("If-Match does not match the active version's ETag")]
    EtagMismatch,
    #[error("version {requested} is not above the app's highest version {highest}")]
    VersionRollback { requested: i64, highest: i64 },
    #[error(
        "version {requested} is out of range: at most {step} above the app's highest version {highest}, and at most 2^53",
        step = crate::ports::MAX_VERSION_STEP
    )]
    VersionOutOfRange { requested: i64, highest: i64 },
    #[error(
        "the policy is identical to version {version} of app `{app}`; to serve it again, revert to that version: POST /v1/policy/revert with {{\"policy_id\": \"{policy_id}\"}}"
    )]
    IdenticalToVersion {
        app: String,
        version: i64,
        policy_id: PolicyId,
    },
    #[error(
        "the new version drops every deny rule of the active one; publish with force=true to do it anyway"
    )]
    NoDenyRules,
    #[error("the policy names {count} tools; the {plan} plan allows {max}")]
    ToolLimit { count: usize, max: u32, plan: Plan },
    #[error("the {plan} plan serves at most {max} apps")]
    AppLimit { max: u32, plan: Plan },
    #[error("the account is locked (its trial has ended)")]
    Locked,
    #[error("the bundle is {size} bytes; the {plan} plan allows {max}")]
    TooLarge { size: u64, max: u64, plan: Plan },
    #[error("another change to this app happened at the same time; retry")]
    Conflict,
    #[error(
        "this credential polls faster than the ceiling of {} requests at once; retry after {} s",
        .0.limit, .0.retry_after_seconds
    )]
    PollRateLimited(RateLimit),
    #[error(
        "this account has rotated its signing key {} times within the hour; retry after {} s",
        .0.limit, .0.retry_after_seconds
    )]
    RotationRateLimited(RateLimit),
    #[error(transparent)]
    Jwks(#[from] JwksError),
    #[error(transparent)]
    Page(#[from] PageError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for PolicyError {
    fn code(&self) -> Code {
        match self {
            PolicyError::Access(e) => e.code(),
            PolicyError::Account(e) => e.code(),
            PolicyError::Signature(e) => e.code(),
            PolicyError::Unparseable(Unparseable::NulCharacter) => Code::InvalidText,
            PolicyError::Unparseable(_) | PolicyError::Invalid(_) => Code::PolicyInvalid,
            PolicyError::AppMismatch { .. } => Code::AppMismatch,
            PolicyError::AppRequired => Code::AppRequired,
            PolicyError::NotFound { .. } | PolicyError::IdNotFound => Code::PolicyNotFound,
            PolicyError::Revoked(_) => Code::PolicyRevoked,
            PolicyError::AlreadyActive => Code::PolicyAlreadyActive,
            PolicyError::EtagMismatch => Code::EtagMismatch,
            PolicyError::VersionRollback { .. } => Code::VersionRollback,
            PolicyError::VersionOutOfRange { .. } => Code::VersionOutOfRange,
            PolicyError::IdenticalToVersion { .. } => Code::IdenticalToVersion,
            PolicyError::NoDenyRules => Code::NoDenyRules,
            PolicyError::ToolLimit { .. } => Code::ToolLimit,
            PolicyError::AppLimit { .. } => Code::AppLimit,
            PolicyError::Locked => Code::Locked,
            PolicyError::TooLarge { .. } => Code::BundleTooLarge,
            PolicyError::Conflict => Code::Conflict,
            PolicyError::PollRateLimited(_) | PolicyError::RotationRateLimited(_) => {
                Code::RateLimited
            }
            PolicyError::Jwks(e) => e.code(),
            PolicyError::Page(e) => e.code(),
            PolicyError::Store(e) => e.code(),
        }
    }

    fn rate_limit(&self) -> Option<RateLimit> {
        match self {
            PolicyError::PollRateLimited(limit) | PolicyError::RotationRateLimited(limit) => {
                Some(*limit)
            }
            _ => None,
        }
    }
}

/// Timing of signed bundles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicySettings {
    /// The JWS `exp`: how long a signed bundle verifies.
    pub bundle_ttl: Duration,
    /// `metadata.expires` of a published bundle (the SDK's local mode allows at most 7 days).
    pub policy_expiry: Duration,
    /// `iat` is set this far in the past: the SDK refuses a bundle issued "in the future",
    /// so a client clock slightly behind ours must not reject it.
    pub iat_backdate: Duration,
    pub poll_ceiling: PollCeiling,
    /// The bundle cache: its `capacity` is in bytes (see [`AppState::weight`]).
    /// Signing-key rotations an account may ask for per hour (a bucket of this many,
    /// refilled evenly over the hour; per process). Each rotation generates an RSA key and
    /// re-signs every active bundle, so it is the most expensive request an admin can send.
    pub max_rotations_per_hour: u32,
    pub cache: CacheSettings,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            bundle_ttl: Duration::days(365),
            policy_expiry: Duration::days(7),
            iat_backdate: Duration::seconds(30),
            poll_ceiling: PollCeiling::default(),
            max_rotations_per_hour: 10,
            cache: CacheSettings::default(),
        }
    }
}

/// Which row a bundle request wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleStage {
    /// The active version, else the draft.
    Auto,
    Published,
    Draft,
}

impl BundleStage {
    /// Unknown values act as `auto`, as the SDK expects.
    pub fn parse(text: Option<&str>) -> Self {
        match text {
            Some("published") => BundleStage::Published,
            Some("draft") => BundleStage::Draft,
            _ => BundleStage::Auto,
        }
    }
}

/// The answer to a bundle poll.
#[derive(Clone, Debug)]
pub enum Poll {
    NotModified {
        etag: String,
        poll_seconds: u32,
        /// The credential's poll ceiling, after this poll.
        limit: RateLimit,
    },
    Bundle {
        record: Box<PolicyRecord>,
        poll_seconds: u32,
        limit: RateLimit,
    },
}

/// A publish request as received.
#[derive(Clone, Debug, Default)]
pub struct PublishRequest<'a> {
    pub app_name: Option<&'a str>,
    pub body: &'a [u8],
    pub key_id: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub if_match: Option<&'a str>,
    pub version: Option<i64>,
    pub force: bool,
}

/// The result of a key rotation.
#[derive(Clone, Debug)]
pub struct Rotated {
    pub rotation_id: String,
    pub new_key: SigningKey,
    pub previous_kid: Option<String>,
    pub at: DateTime<Utc>,
    pub old_keys_published_until: DateTime<Utc>,
    pub resigned: Vec<PolicyRecord>,
}

/// `W/` and quotes stripped, as ETags come back from clients.
pub fn normalise_etag(value: &str) -> &str {
    let value = value.trim();
    let value = value.strip_prefix("W/").unwrap_or(value);
    value.trim_matches('"')
}

pub(crate) fn hex_sha256(bytes: &[u8]) -> String {
    digest(&SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

type BundleKey = (AccountId, AppName);

#[derive(Clone)]
pub struct PolicyService {
    repo: Arc<dyn PolicyRepo>,
    keys: PublisherKeys,
    jwks: Arc<Jwks>,
    accounts: AccountService,
    clock: Arc<dyn Clock>,
    settings: PolicySettings,
    /// What each app serves; polls are answered from here without touching the store.
    bundles: Arc<CoherentCache<BundleKey, Arc<AppState>>>,
    limiter: Arc<PollLimiter>,
    /// Key rotations per account.
    rotations: Arc<KeyedLimiter<AccountId>>,
}

impl std::fmt::Debug for PolicyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

const MAX_RETRIES: usize = 3;

impl PolicyService {
    pub fn new(
        repo: Arc<dyn PolicyRepo>,
        keys: PublisherKeys,
        jwks: Arc<Jwks>,
        accounts: AccountService,
        clock: Arc<dyn Clock>,
        settings: PolicySettings,
    ) -> Self {
        Self {
            repo,
            keys,
            jwks,
            accounts,
            clock,
            bundles: Arc::new(CoherentCache::weighted(
                settings.cache,
                |_, state: &Arc<AppState>| state.weight(),
            )),
            limiter: Arc::new(PollLimiter::new(settings.poll_ceiling)),
            rotations: Arc::new(KeyedLimiter::default()),
            settings,
        }
    }

    pub fn publisher_keys(&self) -> &PublisherKeys {
        &self.keys
    }

    pub fn jwks(&self) -> &Arc<Jwks> {
        &self.jwks
    }

    /// Forgets what is cached about an app (after a change here or elsewhere).
    pub fn invalidate_app(&self, account_id: AccountId, app: AppName) {
        self.bundles
            .invalidate_if(move |key, _| key.0 == account_id && key.1 == app);
    }

    pub fn invalidate_account(&self, account_id: AccountId) {
        self.bundles
            .invalidate_if(move |key, _| key.0 == account_id);
        self.jwks.invalidate(account_id);
    }

    pub fn invalidate_all(&self) {
        self.bundles.invalidate_all();
        self.jwks.invalidate_all();
    }

    pub fn forget_idle_pollers(&self) {
        self.limiter.forget_idle();
        self.rotations.forget_idle();
    }

    /// The largest body the caller may send to a route that takes a policy document,
    /// checked before the body is read: the route's scope, an account that is served (for
    /// the routes that store), and the plan's `max_bundle_bytes` plus room for the
    /// request's framing (`{"bundle": ...}`, YAML layout). A caller who may not use the
    /// route, or a body over its plan, costs no read.
    pub async fn body_cap(&self, ctx: &AuthContext, scope: Scope) -> Result<usize, PolicyError> {
        const FRAMING: usize = 64 * 1024;
        ctx.require(scope)?;
        let overview = if scope == Scope::PolicyRead {
            self.accounts.entitlement(ctx).await?
        } else {
            self.serving_account(ctx).await?
        };
        Ok(usize::try_from(overview.quotas.max_bundle_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(FRAMING))
    }

    async fn serving_account(&self, ctx: &AuthContext) -> Result<Entitlement, PolicyError> {
        let overview = self.accounts.entitlement(ctx).await?;
        if overview.plan == Plan::Locked {
            return Err(PolicyError::Locked);
        }
        Ok(overview)
    }

    fn check_tools(document: &PolicyDocument, overview: &Entitlement) -> Result<u32, PolicyError> {
        let count = document.tools().len();
        let max = overview.quotas.max_tools;
        if count > usize::try_from(max).unwrap_or(usize::MAX) {
            return Err(PolicyError::ToolLimit {
                count,
                max,
                plan: overview.plan,
            });
        }
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    fn check_size(size: u64, overview: &Entitlement) -> Result<(), PolicyError> {
        let max = overview.quotas.max_bundle_bytes;
        if size > max {
            return Err(PolicyError::TooLarge {
                size,
                max,
                plan: overview.plan,
            });
        }
        Ok(())
    }

    /// The document of a request body: a policy file, or `{"bundle": <policy>}`.
    fn document_of(value: Value) -> Result<PolicyDocument, PolicyError> {
        let value = match value {
            Value::Object(mut map)
                if map.contains_key("bundle") && !map.contains_key("metadata") =>
            {
                map.remove("bundle").unwrap_or(Value::Null)
            }
            other => other,
        };
        match PolicyDocument::check(value) {
            (Some(document), _) => Ok(document),
            (None, report) => Err(PolicyError::Invalid(report)),
        }
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
        let overview = self.serving_account(ctx).await?;
        let document = Self::document_of(value)?;
        let tool_count = Self::check_tools(&document, &overview)?;
        let canonical = serde_json::to_vec(document.as_map()).unwrap_or_default();
        let size = u64::try_from(canonical.len()).unwrap_or(u64::MAX);
        Self::check_size(size, &overview)?;
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
        let max_apps = overview.quotas.max_apps;
        match self.repo.save_draft(&draft, max_apps, &audit_of).await? {
            DraftOutcome::Saved(stored) => {
                self.invalidate_app(ctx.account_id, app);
                Ok(*stored)
            }
            DraftOutcome::AppLimit => Err(PolicyError::AppLimit {
                max: max_apps,
                plan: overview.plan,
            }),
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "a record's fields, assembled in one place"
    )]
    fn record(
        &self,
        ctx: &AuthContext,
        app: &AppName,
        stage: Stage,
        document: &PolicyDocument,
        now: DateTime<Utc>,
        tool_count: u32,
        size: u64,
        etag: String,
    ) -> PolicyRecord {
        let expires_at = document
            .as_map()
            .get("metadata")
            .and_then(|m| m.get("expires"))
            .and_then(Value::as_str)
            .and_then(|e| DateTime::parse_from_rfc3339(e).ok())
            .map(|e| e.with_timezone(&Utc));
        let value = document.to_value();
        PolicyRecord {
            id: PolicyId::random(),
            account_id: ctx.account_id,
            app_name: app.clone(),
            version: 0,
            stage,
            active: stage == Stage::Published,
            content_digest: crate::document::content_digest(&value),
            document: value,
            jws: None,
            etag,
            kid: None,
            tool_count,
            size_bytes: size,
            description: document.description().map(str::to_owned),
            created_at: now,
            published_at: (stage == Stage::Published).then_some(now),
            expires_at,
            revoked_at: None,
            actor: ctx.actor(),
            token_id: ctx.token_id(),
            user_id: ctx.user_id,
            publisher_key_id: None,
            rotation_id: None,
        }
    }

    /// Signs `document` for `app` with `key`: the claims are set last, so nothing in the
    /// document can replace them.
    fn sign(
        &self,
        account_id: AccountId,
        app: &AppName,
        document: &mut PolicyDocument,
        key: &SigningKey,
        extras: &JwsHeaderExtras,
        now: DateTime<Utc>,
    ) -> Result<String, PolicyError> {
        document.set_expires(
            &d2_kernel::later(now, self.settings.policy_expiry)
                .to_rfc3339_opts(SecondsFormat::Secs, true),
        );
        let mut payload = document.as_map().clone();
        payload.insert(
            "iat".into(),
            json!(d2_kernel::earlier(now, self.settings.iat_backdate).timestamp()),
        );
        payload.insert(
            "exp".into(),
            json!(d2_kernel::later(now, self.settings.bundle_ttl).timestamp()),
        );
        payload.insert("iss".into(), json!("d2-policy-service"));
        payload.insert("aud".into(), json!(format!("d2-policy:{account_id}:{app}")));
        let bytes = serde_json::to_vec(&payload).unwrap_or_default();
        Ok(self.jwks.sign(key, extras, &bytes)?)
    }

    /// `document` signed with the account's active key, as a version ready to store.
    async fn signed_version(
        &self,
        ctx: &AuthContext,
        overview: &Entitlement,
        document: &PolicyDocument,
        tool_count: u32,
        publisher_key_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<PolicyRecord, PolicyError> {
        let key = self.signing_key(ctx, now).await?;
        let app = document.app_name();
        let mut signed = document.clone();
        let jws = self.sign(
            ctx.account_id,
            &app,
            &mut signed,
            &key,
            &JwsHeaderExtras::default(),
            now,
        )?;
        let size = u64::try_from(jws.len()).unwrap_or(u64::MAX);
        Self::check_size(size, overview)?;
        let etag = hex_sha256(jws.as_bytes());
        let mut record = self.record(
            ctx,
            &app,
            Stage::Published,
            &signed,
            now,
            tool_count,
            size,
            etag,
        );
        record.jws = Some(jws);
        record.kid = Some(key.kid);
        record.publisher_key_id = publisher_key_id.map(str::to_owned);
        Ok(record)
    }

    async fn signing_key(
        &self,
        ctx: &AuthContext,
        now: DateTime<Utc>,
    ) -> Result<SigningKey, PolicyError> {
        Ok(self
            .jwks
            .active_key(ctx.account_id, |key| {
                AuditEntry::by(ctx, AuditAction::KeyCreate, now)
                    .target("signing_key", &key.kid)
                    .metadata(json!({ "algorithm": "RS256", "reason": "first publish" }))
            })
            .await?)
    }

    /// Publishes the signed body as the app's new active version. Audited as
    /// `policy.publish` (with `force` when deny rules were dropped on purpose).
    pub async fn publish(
        &self,
        ctx: &AuthContext,
        request: PublishRequest<'_>,
    ) -> Result<(PolicyRecord, u32), PolicyError> {
        ctx.require(Scope::PolicyPublish)?;
        let overview = self.serving_account(ctx).await?;
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
        let tool_count = Self::check_tools(&document, &overview)?;
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
                    &overview,
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
                max_apps: overview.quotas.max_apps,
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
                    return Ok((*stored, overview.quotas.poll_seconds));
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
                PublishOutcome::AppLimit => {
                    return Err(PolicyError::AppLimit {
                        max: overview.quotas.max_apps,
                        plan: overview.plan,
                    });
                }
                PublishOutcome::IdenticalTo { id, version } => {
                    return Err(PolicyError::IdenticalToVersion {
                        app: app.to_string(),
                        version,
                        policy_id: id,
                    });
                }
            }
        }
        Err(PolicyError::Conflict)
    }

    /// Fails with `NotFound` when the caller is a server token bound to another app: a
    /// server token sees only its own app, and another app of the account looks the same as
    /// an app that does not exist. Dev and admin tokens see every app of their account.
    fn within_app(ctx: &AuthContext, app: &AppName, what: &'static str) -> Result<(), PolicyError> {
        match &ctx.app_name {
            Some(bound) if bound != app => Err(PolicyError::NotFound {
                app: app.to_string(),
                what,
            }),
            _ => Ok(()),
        }
    }

    /// A stored row, as the caller may see it: another app's row is `IdNotFound` for a
    /// server token bound to an app.
    fn visible(ctx: &AuthContext, record: PolicyRecord) -> Result<PolicyRecord, PolicyError> {
        match &ctx.app_name {
            Some(bound) if *bound != record.app_name => Err(PolicyError::IdNotFound),
            _ => Ok(record),
        }
    }

    /// The row `id` of the caller's account, if the caller may see it.
    async fn find_visible(
        &self,
        ctx: &AuthContext,
        id: PolicyId,
    ) -> Result<PolicyRecord, PolicyError> {
        let record = self
            .repo
            .find_policy(ctx.account_id, id)
            .await?
            .ok_or(PolicyError::IdNotFound)?;
        Self::visible(ctx, record)
    }

    /// Resolves the app of a bundle request: an explicit name, or the server token's app.
    /// A server token naming another app gets `NotFound`.
    fn resolve_app(
        ctx: &AuthContext,
        requested: Option<&str>,
        what: &'static str,
    ) -> Result<AppName, PolicyError> {
        let requested = requested
            .map(AppName::normalise)
            .filter(|a| !a.is_default());
        match (requested, &ctx.app_name) {
            (Some(app), _) => {
                Self::within_app(ctx, &app, what)?;
                Ok(app)
            }
            (None, Some(bound)) => Ok(bound.clone()),
            (None, None) if ctx.scopes.grants().contains(&d2_kernel::Grant::Server) => {
                Ok(AppName::default_app())
            }
            (None, None) => Err(PolicyError::AppRequired),
        }
    }

    async fn state(
        &self,
        account_id: AccountId,
        app: &AppName,
    ) -> Result<Arc<AppState>, PolicyError> {
        let key = (account_id, app.clone());
        self.bundles
            .get_or_load(&key, || async {
                Ok::<_, PolicyError>(Arc::new(self.repo.app_state(account_id, app).await?))
            })
            .await
    }

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
        let overview = self.serving_account(ctx).await?;
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
        let max_tools = overview.quotas.max_tools;
        if record.tool_count > max_tools {
            return Err(PolicyError::ToolLimit {
                count: usize::try_from(record.tool_count).unwrap_or(usize::MAX),
                max: max_tools,
                plan: overview.plan,
            });
        }
        Self::check_size(record.size_bytes, &overview)?;
        let poll_seconds = overview.quotas.poll_seconds;
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
        let overview = self.serving_account(ctx).await?;
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
            &overview,
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
    async fn republish(
        &self,
        ctx: &AuthContext,
        overview: &Entitlement,
        document: PolicyDocument,
        action: AuditAction,
        details: Value,
        publisher_key_id: Option<String>,
    ) -> Result<PolicyRecord, PolicyError> {
        let tool_count = Self::check_tools(&document, overview)?;
        let app = document.app_name();
        for _ in 0..MAX_RETRIES {
            let state = self.repo.app_state(ctx.account_id, &app).await?;
            let now = self.clock.now();
            let record = self
                .signed_version(
                    ctx,
                    overview,
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
                max_apps: overview.quotas.max_apps,
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
                PublishOutcome::AppLimit => {
                    return Err(PolicyError::AppLimit {
                        max: overview.quotas.max_apps,
                        plan: overview.plan,
                    });
                }
                PublishOutcome::IdenticalTo { id, version } => {
                    return Err(PolicyError::IdenticalToVersion {
                        app: app.to_string(),
                        version,
                        policy_id: id,
                    });
                }
            }
        }
        Err(PolicyError::Conflict)
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
        let overview = self.serving_account(ctx).await?;
        let publisher = self
            .keys
            .verify(ctx.account_id, key_id, signature, body)
            .await?;
        self.republish(
            ctx,
            &overview,
            document,
            AuditAction::PolicyUpdate,
            json!({ "from_version": target.version, "key_id": publisher.key_id }),
            Some(publisher.key_id.clone()),
        )
        .await
    }

    /// Replaces the account's signing key and re-signs every active bundle with it, as new
    /// versions whose header tells SDKs to refresh their JWKS. The old key stays published
    /// for the grace period. Audited as `jwks.rotate`. An account may rotate at most
    /// `max_rotations_per_hour` times an hour; past it `RotationRateLimited`.
    pub async fn rotate_signing_key(&self, ctx: &AuthContext) -> Result<Rotated, PolicyError> {
        ctx.require(Scope::Admin)?;
        let hourly = Rate::new(
            self.settings.max_rotations_per_hour,
            std::time::Duration::from_secs(3600),
        );
        self.rotations
            .check(&ctx.account_id, hourly)
            .map_err(PolicyError::RotationRateLimited)?;
        self.rotate_for(
            ctx.account_id,
            AuditEntry::by(ctx, AuditAction::JwksRotate, self.clock.now()),
        )
        .await
    }

    /// The rotation itself, for an authenticated admin or for the operator's command line.
    pub async fn rotate_for(
        &self,
        account_id: AccountId,
        audit: AuditEntry,
    ) -> Result<Rotated, PolicyError> {
        for _ in 0..MAX_RETRIES {
            let now = self.clock.now();
            self.jwks.invalidate(account_id);
            let previous = self.jwks.key_set(account_id).await?.active.clone();
            let new_key = self.jwks.generate(account_id).await?;
            let rotation_id = format!("rot_{}", uuid::Uuid::new_v4().simple());
            let extras = JwsHeaderExtras {
                rotation: Some(RotationHint {
                    rotation_id: rotation_id.clone(),
                    reason: "key_rotation".into(),
                    at: now,
                    new_kid: new_key.kid.clone(),
                }),
            };
            let mut bundles = Vec::new();
            for active in self.repo.active_policies(account_id).await? {
                let (Some(mut document), _) = PolicyDocument::check(active.document.clone()) else {
                    return Err(StoreError::corrupt("a stored policy no longer validates").into());
                };
                let jws = self.sign(
                    account_id,
                    &active.app_name,
                    &mut document,
                    &new_key,
                    &extras,
                    now,
                )?;
                let mut record = active.clone();
                record.id = PolicyId::random();
                record.document = document.into_value();
                record.etag = hex_sha256(jws.as_bytes());
                record.size_bytes = u64::try_from(jws.len()).unwrap_or(u64::MAX);
                record.jws = Some(jws);
                record.kid = Some(new_key.kid.clone());
                record.created_at = now;
                record.published_at = Some(now);
                record.actor.clone_from(&audit.actor);
                record.token_id = audit.token_id;
                record.user_id = audit.user_id;
                record.rotation_id = Some(rotation_id.clone());
                bundles.push((record, active.id));
            }
            let rotation = KeyRotation {
                account_id,
                new_key: new_key.clone(),
                expected_active_kid: previous.as_ref().map(|k| k.kid.clone()),
                at: now,
                bundles,
            };
            let audit = audit.clone().target("signing_key", &new_key.kid).metadata(json!({
                "rotation_id": rotation_id,
                "new_kid": new_key.kid,
                "previous_kid": previous.as_ref().map(|k| &k.kid),
                "resigned": rotation.bundles.iter().map(|(r, _)| r.app_name.as_str()).collect::<Vec<_>>(),
            }));
            match self.repo.rotate_signing_key(&rotation, &audit).await? {
                RotationOutcome::Rotated(resigned) => {
                    self.invalidate_account(account_id);
                    tracing::info!(account.id = %account_id, key.kid = %new_key.kid, resigned = resigned.len(), "signing key rotated");
                    return Ok(Rotated {
                        rotation_id,
                        new_key,
                        previous_kid: previous.map(|k| k.kid),
                        at: now,
                        old_keys_published_until: d2_kernel::later(now, self.jwks.grace()),
                        resigned,
                    });
                }
                RotationOutcome::Conflict => {}
            }
        }
        Err(PolicyError::Conflict)
    }
}
