use std::sync::Arc;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use d2_audit::{AuditAction, AuditEntry};
use d2_jwks::{Jwks, JwksError, JwsHeaderExtras, RotationHint, SigningKey};
use d2_kernel::limit::{KeyedLimiter, Rate, RateLimit};
use d2_kernel::{
    AccessError, AccountId, AppName, AuthContext, CacheSettings, Change, ChangeSubscriber, Clock,
    Code, CoherentCache, Entitlement, EntitlementError, Entitlements, ErrorCode, Page, PageError,
    PageRequest, Plan, PolicyId, Scope, StoreError,
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

mod editor;
mod poll;
mod publish;
mod rotation;

/// The substrings the D2 SDK looks for in a 404 to print its hint.
pub const APP_REQUIRED_HINT: &str =
    "app_name required for non-server tokens; server tokens have automatic app resolution";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Entitlement(#[from] EntitlementError),
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

impl PolicyError {
    /// A new app beyond the plan's `max_apps`.
    fn app_limit(entitlement: &Entitlement) -> Self {
        PolicyError::AppLimit {
            max: entitlement.quotas.max_apps,
            plan: entitlement.plan,
        }
    }

    /// Content an earlier version of `app` already had (going back is a revert).
    fn identical_to(app: &AppName, policy_id: PolicyId, version: i64) -> Self {
        PolicyError::IdenticalToVersion {
            app: app.to_string(),
            version,
            policy_id,
        }
    }
}

impl ErrorCode for PolicyError {
    fn code(&self) -> Code {
        match self {
            PolicyError::Access(e) => e.code(),
            PolicyError::Entitlement(e) => e.code(),
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
    entitlements: Arc<dyn Entitlements>,
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

impl ChangeSubscriber for PolicyService {
    fn on_change(&self, change: &Change) {
        match change {
            Change::App(account, app) => self.invalidate_app(*account, app.clone()),
            Change::Keys(account) => self.jwks.invalidate(*account),
            Change::Resync => self.invalidate_all(),
            _ => {}
        }
    }
}

impl PolicyService {
    pub fn new(
        repo: Arc<dyn PolicyRepo>,
        keys: PublisherKeys,
        jwks: Arc<Jwks>,
        entitlements: Arc<dyn Entitlements>,
        clock: Arc<dyn Clock>,
        settings: PolicySettings,
    ) -> Self {
        Self {
            repo,
            keys,
            jwks,
            entitlements,
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

    async fn serving_account(&self, ctx: &AuthContext) -> Result<Entitlement, PolicyError> {
        let entitlement = self.entitlements.entitlement(ctx.account_id).await?;
        if entitlement.is_locked() {
            return Err(PolicyError::Locked);
        }
        Ok(entitlement)
    }

    fn check_tools(
        document: &PolicyDocument,
        entitlement: &Entitlement,
    ) -> Result<u32, PolicyError> {
        let count = document.tools().len();
        let max = entitlement.quotas.max_tools;
        if count > usize::try_from(max).unwrap_or(usize::MAX) {
            return Err(PolicyError::ToolLimit {
                count,
                max,
                plan: entitlement.plan,
            });
        }
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    fn check_size(size: u64, entitlement: &Entitlement) -> Result<(), PolicyError> {
        let max = entitlement.quotas.max_bundle_bytes;
        if size > max {
            return Err(PolicyError::TooLarge {
                size,
                max,
                plan: entitlement.plan,
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
        entitlement: &Entitlement,
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
        Self::check_size(size, entitlement)?;
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
}
