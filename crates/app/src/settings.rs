//! Configuration: `config/default.toml`, then `config/$D2_ENV.toml`, then environment
//! variables `D2__SECTION__KEY` (for example `D2__HTTP__ADDR`). Validated right after
//! loading; every failure names the key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use config::{Config, Environment, File, FileFormat};
use d2_kernel::PlanCatalog;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The profile named by `D2_ENV`: `dev` (the default) relaxes the secret rules; every other
/// profile (for example `production`) enforces them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile(String);

impl Profile {
    pub const DEV: &'static str = "dev";

    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    pub fn is_dev(&self) -> bool {
        self.0 == Self::DEV
    }

    pub fn name(&self) -> &str {
        &self.0
    }
}

impl Default for Profile {
    fn default() -> Self {
        Self::new(Self::DEV)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(skip)]
    pub profile: Profile,
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub auth: AuthSettings,
    pub accounts: AccountsSettings,
    pub crypto: CryptoSettings,
    pub jwks: JwksSettings,
    pub policy: PolicyConfig,
    pub rate_limit: RateLimitSettings,
    pub redis: RedisSettings,
    pub log: LogSettings,
    pub events: EventSettings,
    pub analytics: AnalyticsSettings,
    pub clickhouse: ClickHouseConfig,
    pub logflare: LogflareConfig,
    pub worker: WorkerSettings,
    pub plans: PlanCatalog,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub addr: String,
    pub workers: usize,
    pub max_body_bytes: usize,
    pub shutdown_timeout_seconds: u64,
    /// Proxies in front of the server, the one connecting to it included; the client
    /// address is then read from `X-Forwarded-For` (0: the header is ignored).
    pub trusted_proxies: usize,
    pub swagger_ui: bool,
    pub cors: CorsSettings,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSettings {
    pub allowed_origins: Vec<String>,
    pub max_age_seconds: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: Option<SecretString>,
    pub auto_migrate: bool,
    pub create_if_missing: bool,
    pub pool: PoolConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub min_size: u32,
    pub max_size: u32,
    pub timeout_seconds: u64,
    pub max_idle_seconds: u64,
    pub max_lifetime_seconds: u64,
    pub statement_timeout_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub control_plane_token: Option<SecretString>,
    pub rotation_grace_seconds: u64,
    pub token_cache: CacheConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    pub ttl_seconds: u64,
    pub capacity: u64,
}

impl CacheConfig {
    pub fn settings(&self) -> d2_kernel::CacheSettings {
        d2_kernel::CacheSettings {
            ttl: Duration::from_secs(self.ttl_seconds),
            capacity: self.capacity,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountsSettings {
    pub cache: CacheConfig,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CryptoSettings {
    pub token_pepper: Option<SecretString>,
    pub jwk_aes_key: Option<SecretString>,
    #[serde(default)]
    pub jwk_aes_previous_keys: Vec<SecretString>,
    /// Whether private keys sealed before accounts were bound (bound to their key id only)
    /// still open. True during the transition; false once `d2ctl rotate-aes-key` has
    /// re-sealed them all.
    pub accept_legacy_seals: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksSettings {
    pub grace_seconds: u64,
    pub cache_max_age_seconds: u64,
    /// Signing-key rotations an account may ask for per hour (`POST /v1/jwks/rotate`).
    pub max_rotations_per_hour: u32,
    pub cache: CacheConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub bundle_ttl_days: u32,
    pub expiry_days: u32,
    pub iat_backdate_seconds: u32,
    pub poll_ceiling_per_second: u32,
    pub poll_ceiling_burst: u32,
    pub cache: ByteCacheConfig,
}

/// A cache bounded by the bytes it holds, for values from bytes to megabytes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByteCacheConfig {
    pub ttl_seconds: u64,
    pub max_bytes: u64,
}

impl ByteCacheConfig {
    pub fn settings(&self) -> d2_kernel::CacheSettings {
        d2_kernel::CacheSettings {
            ttl: Duration::from_secs(self.ttl_seconds),
            capacity: self.max_bytes,
        }
    }
}

/// Where account quotas are counted across replicas.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub url: Option<SecretString>,
    pub timeout_ms: u64,
    pub retry_ms: u64,
    pub key_prefix: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    pub unauthenticated_per_minute: u32,
    pub unauthenticated_burst: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub filter: String,
    /// JSON lines are gathered in memory and written out this often (and whenever 64 KiB
    /// gather); 0 writes each line as it is made.
    pub flush_interval_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    #[serde(default)]
    pub sample: BTreeMap<String, f64>,
    pub max_age_days: u32,
    pub max_future_seconds: u32,
    pub min_body_bytes: usize,
    /// Which app a bundle ETag belongs to.
    pub etag_cache: CacheConfig,
}

impl EventSettings {
    pub fn settings(&self) -> d2_events::EventSettings {
        d2_events::EventSettings {
            max_age: chrono::Duration::days(i64::from(self.max_age_days)),
            max_future: chrono::Duration::seconds(i64::from(self.max_future_seconds)),
            min_body_bytes: self.min_body_bytes,
            cache: self.etag_cache.settings(),
        }
    }
}

/// Where analytics queries are answered.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AnalyticsBackend {
    Postgres,
    Clickhouse,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsSettings {
    pub store: AnalyticsBackend,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConfig {
    pub url: Option<String>,
    pub database: String,
    pub user: Option<String>,
    pub password: Option<SecretString>,
    pub timeout_seconds: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogflareConfig {
    pub url: Option<String>,
    pub api_key: Option<SecretString>,
    pub source: Option<String>,
    pub queue_capacity: usize,
    pub batch_size: usize,
    pub flush_interval_ms: u64,
    pub timeout_seconds: u64,
    pub max_attempts: u32,
}

/// One scheduled job of the worker.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    pub enabled: bool,
    pub interval_seconds: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportJobConfig {
    pub enabled: bool,
    pub interval_seconds: u64,
    /// Events per ClickHouse insert.
    pub batch_size: u32,
    /// Batches per run at most, so one run cannot hold the lock for ever.
    pub max_batches: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionJobConfig {
    pub enabled: bool,
    pub interval_seconds: u64,
    /// Exported events older than this are deleted from PostgreSQL.
    pub keep_days: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerJobs {
    pub analytics_export: ExportJobConfig,
    pub trial_locker: JobConfig,
    pub token_expiry: JobConfig,
    pub key_pruning: JobConfig,
    pub retention: RetentionJobConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Where the worker serves `/metrics`, `/healthz` and `/readyz`.
    pub addr: String,
    pub jobs: WorkerJobs,
}

/// Configuration that cannot be used; the message names the key and its variable.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot load configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("{key} (environment variable {var}) is required in the `{profile}` profile")]
    Missing {
        key: &'static str,
        var: &'static str,
        profile: String,
    },
    #[error("{key} (environment variable {var}) is invalid: {reason}")]
    Invalid {
        key: &'static str,
        var: &'static str,
        reason: String,
    },
}

const EMBEDDED: [(&str, &str); 3] = [
    ("default", include_str!("../../../config/default.toml")),
    ("dev", include_str!("../../../config/dev.toml")),
    (
        "production",
        include_str!("../../../config/production.toml"),
    ),
];

/// A file of the config directory, or the copy built into the binary when the directory
/// does not hold it (so the binaries run from anywhere).
fn layer(
    dir: &std::path::Path,
    name: &str,
    required: bool,
) -> Result<Option<File<config::FileSourceString, FileFormat>>, SettingsError> {
    let path = dir.join(format!("{name}.toml"));
    if let Ok(text) = std::fs::read_to_string(&path) {
        return Ok(Some(File::from_str(&text, FileFormat::Toml)));
    }
    match EMBEDDED.iter().find(|(embedded, _)| *embedded == name) {
        Some((_, text)) => Ok(Some(File::from_str(text, FileFormat::Toml))),
        None if required => Err(SettingsError::Invalid {
            key: "D2_ENV",
            var: "D2_ENV",
            reason: format!("no configuration file {}", path.display()),
        }),
        None => Ok(None),
    }
}

impl Settings {
    /// Loads from the process environment: `D2_ENV` (default `dev`), `D2_CONFIG_DIR`
    /// (default `config`) and the `D2__...` variables.
    pub fn load() -> Result<Self, SettingsError> {
        let profile = std::env::var("D2_ENV").unwrap_or_else(|_| Profile::DEV.to_owned());
        let dir =
            std::env::var("D2_CONFIG_DIR").map_or_else(|_| PathBuf::from("config"), PathBuf::from);
        let mut settings = Self::load_with(Profile::new(profile), &dir, None)?;
        if settings.profile.is_dev()
            && (settings.crypto.token_pepper.is_none()
                || settings.auth.control_plane_token.is_none()
                || settings.crypto.jwk_aes_key.is_none())
        {
            let dev = crate::dev_secrets::load_or_create(&crate::dev_secrets::data_dir()).map_err(
                |e| SettingsError::Invalid {
                    key: "crypto.token_pepper",
                    var: "D2__CRYPTO__TOKEN_PEPPER",
                    reason: e.to_string(),
                },
            )?;
            settings.crypto.token_pepper.get_or_insert(dev.token_pepper);
            settings
                .auth
                .control_plane_token
                .get_or_insert(dev.control_plane_token);
            settings.crypto.jwk_aes_key.get_or_insert(dev.jwk_aes_key);
            settings.validate()?;
        }
        Ok(settings)
    }

    /// Loads a profile with the given variables instead of the process environment (tests
    /// and embedders).
    pub fn load_with(
        profile: Profile,
        dir: &std::path::Path,
        variables: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Self, SettingsError> {
        let mut builder = Config::builder();
        if let Some(default) = layer(dir, "default", true)? {
            builder = builder.add_source(default);
        }
        if let Some(profile_file) = layer(dir, profile.name(), !profile.is_dev())? {
            builder = builder.add_source(profile_file);
        }
        let environment = Environment::with_prefix("D2")
            .prefix_separator("__")
            .separator("__")
            .list_separator(",")
            .with_list_parse_key("http.cors.allowed_origins")
            .with_list_parse_key("crypto.jwk_aes_previous_keys")
            .try_parsing(true)
            .source(variables);
        let mut settings: Settings = builder.add_source(environment).build()?.try_deserialize()?;
        settings.profile = profile;
        // An empty value unsets a secret (so an environment can switch a feature off).
        for secret in [
            &mut settings.auth.control_plane_token,
            &mut settings.crypto.token_pepper,
            &mut settings.crypto.jwk_aes_key,
            &mut settings.database.url,
            &mut settings.clickhouse.password,
            &mut settings.logflare.api_key,
            &mut settings.redis.url,
        ] {
            if secret
                .as_ref()
                .is_some_and(|s| s.expose_secret().trim().is_empty())
            {
                *secret = None;
            }
        }
        for value in [
            &mut settings.clickhouse.url,
            &mut settings.clickhouse.user,
            &mut settings.logflare.url,
            &mut settings.logflare.source,
        ] {
            if value.as_ref().is_some_and(|v| v.trim().is_empty()) {
                *value = None;
            }
        }
        if settings.profile.is_dev() && settings.database.url.is_none() {
            settings.database.url = Some(SecretString::from(default_dev_database()));
        }
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        if self.http.addr.parse::<std::net::SocketAddr>().is_err() && !self.http.addr.contains(':')
        {
            return Err(SettingsError::Invalid {
                key: "http.addr",
                var: "D2__HTTP__ADDR",
                reason: "expected host:port".into(),
            });
        }
        if self.database.url.is_none() {
            return Err(SettingsError::Missing {
                key: "database.url",
                var: "D2__DATABASE__URL",
                profile: self.profile.name().to_owned(),
            });
        }
        let pool = &self.database.pool;
        if pool.max_size == 0 || pool.min_size > pool.max_size {
            return Err(SettingsError::Invalid {
                key: "database.pool.max_size",
                var: "D2__DATABASE__POOL__MAX_SIZE",
                reason: "must be at least 1 and at least database.pool.min_size".into(),
            });
        }
        if !self.profile.is_dev() {
            self.token_pepper_bytes()?
                .ok_or_else(|| SettingsError::Missing {
                    key: "crypto.token_pepper",
                    var: "D2__CRYPTO__TOKEN_PEPPER",
                    profile: self.profile.name().to_owned(),
                })?;
        } else {
            self.token_pepper_bytes()?;
        }
        let aes = self.jwk_aes_keys()?;
        if aes.is_none() && !self.profile.is_dev() {
            return Err(SettingsError::Missing {
                key: "crypto.jwk_aes_key",
                var: "D2__CRYPTO__JWK_AES_KEY",
                profile: self.profile.name().to_owned(),
            });
        }
        if let Some(token) = &self.auth.control_plane_token
            && token.expose_secret().len() < 16
        {
            return Err(SettingsError::Invalid {
                key: "auth.control_plane_token",
                var: "D2__AUTH__CONTROL_PLANE_TOKEN",
                reason: "must be at least 16 characters".into(),
            });
        }
        if self.analytics.store == AnalyticsBackend::Clickhouse && self.clickhouse.url.is_none() {
            return Err(SettingsError::Missing {
                key: "clickhouse.url",
                var: "D2__CLICKHOUSE__URL",
                profile: format!("{} (analytics.store = clickhouse)", self.profile.name()),
            });
        }
        let logflare = [
            self.logflare.url.is_some(),
            self.logflare.api_key.is_some(),
            self.logflare.source.is_some(),
        ];
        if logflare.contains(&true) && logflare.contains(&false) {
            return Err(SettingsError::Invalid {
                key: "logflare.url",
                var: "D2__LOGFLARE__URL",
                reason: "set logflare.url, logflare.api_key and logflare.source together, or none"
                    .into(),
            });
        }
        if self.rate_limit.unauthenticated_per_minute == 0
            || self.rate_limit.unauthenticated_burst == 0
        {
            return Err(SettingsError::Invalid {
                key: "rate_limit.unauthenticated_per_minute",
                var: "D2__RATE_LIMIT__UNAUTHENTICATED_PER_MINUTE",
                reason: "the rate and the burst must be at least 1".into(),
            });
        }
        if self.jwks.max_rotations_per_hour == 0 {
            return Err(SettingsError::Invalid {
                key: "jwks.max_rotations_per_hour",
                var: "D2__JWKS__MAX_ROTATIONS_PER_HOUR",
                reason: "must be at least 1".into(),
            });
        }
        if self.policy.poll_ceiling_per_second == 0 || self.policy.poll_ceiling_burst == 0 {
            return Err(SettingsError::Invalid {
                key: "policy.poll_ceiling_per_second",
                var: "D2__POLICY__POLL_CEILING_PER_SECOND",
                reason: "the ceiling and its burst must be at least 1".into(),
            });
        }
        let plans = &self.plans;
        for (quotas, key, var) in [
            (
                &plans.trial,
                "plans.trial.ingest_events_per_minute",
                "D2__PLANS__TRIAL__INGEST_EVENTS_PER_MINUTE",
            ),
            (
                &plans.essentials,
                "plans.essentials.ingest_events_per_minute",
                "D2__PLANS__ESSENTIALS__INGEST_EVENTS_PER_MINUTE",
            ),
            (
                &plans.pro,
                "plans.pro.ingest_events_per_minute",
                "D2__PLANS__PRO__INGEST_EVENTS_PER_MINUTE",
            ),
            (
                &plans.enterprise,
                "plans.enterprise.ingest_events_per_minute",
                "D2__PLANS__ENTERPRISE__INGEST_EVENTS_PER_MINUTE",
            ),
            (
                &plans.locked,
                "plans.locked.ingest_events_per_minute",
                "D2__PLANS__LOCKED__INGEST_EVENTS_PER_MINUTE",
            ),
        ] {
            if quotas.ingest_events_per_minute < quotas.event_batch {
                return Err(SettingsError::Invalid {
                    key,
                    var,
                    reason: "must be at least the plan's event_batch, or no full batch could ever be accepted".into(),
                });
            }
        }
        if let Some(url) = &self.redis.url
            && !url.expose_secret().starts_with("redis://")
        {
            return Err(SettingsError::Invalid {
                key: "redis.url",
                var: "D2__REDIS__URL",
                reason: "must be a redis:// URL (TLS to Redis is not supported yet)".into(),
            });
        }
        Ok(())
    }

    /// The configured pepper, decoded; `None` when unset.
    pub fn token_pepper_bytes(&self) -> Result<Option<Vec<u8>>, SettingsError> {
        let Some(pepper) = &self.crypto.token_pepper else {
            return Ok(None);
        };
        let invalid = |reason: &str| SettingsError::Invalid {
            key: "crypto.token_pepper",
            var: "D2__CRYPTO__TOKEN_PEPPER",
            reason: reason.to_owned(),
        };
        let bytes = lenient_base64()
            .decode(pepper.expose_secret().trim())
            .map_err(|_| invalid("not URL-safe base64"))?;
        if bytes.len() < d2_tokens::Pepper::MIN_BYTES {
            return Err(invalid(
                "must decode to at least 32 bytes (generate one with `d2ctl generate-secret`)",
            ));
        }
        Ok(Some(bytes))
    }

    /// The configured AES keys of signing keys, decoded: the current one and the previous
    /// ones; `None` when no current key is set.
    pub fn jwk_aes_keys(&self) -> Result<Option<AesKeyBytes>, SettingsError> {
        let decode = |secret: &SecretString, key: &'static str, var: &'static str| {
            let bytes = lenient_base64()
                .decode(secret.expose_secret().trim())
                .map_err(|_| SettingsError::Invalid {
                    key,
                    var,
                    reason: "not URL-safe base64".into(),
                })?;
            if bytes.len() != 32 {
                return Err(SettingsError::Invalid {
                    key,
                    var,
                    reason: "must decode to exactly 32 bytes (generate one with `d2ctl generate-aes-key`)".into(),
                });
            }
            Ok(bytes)
        };
        let Some(current) = &self.crypto.jwk_aes_key else {
            return Ok(None);
        };
        let current = decode(current, "crypto.jwk_aes_key", "D2__CRYPTO__JWK_AES_KEY")?;
        let previous = self
            .crypto
            .jwk_aes_previous_keys
            .iter()
            // An empty variable means none.
            .filter(|k| !k.expose_secret().trim().is_empty())
            .map(|k| {
                decode(
                    k,
                    "crypto.jwk_aes_previous_keys",
                    "D2__CRYPTO__JWK_AES_PREVIOUS_KEYS",
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(AesKeyBytes { current, previous }))
    }

    pub fn database_url(&self) -> &str {
        self.database
            .url
            .as_ref()
            .map_or("", ExposeSecret::expose_secret)
    }

    pub fn pool_settings(&self, application_name: &str) -> d2_postgres::PoolSettings {
        let pool = &self.database.pool;
        let mut settings = d2_postgres::PoolSettings::new(self.database_url());
        settings.min_idle = pool.min_size;
        settings.max_size = pool.max_size;
        settings.acquire_timeout = Duration::from_secs(pool.timeout_seconds);
        settings.idle_timeout = Duration::from_secs(pool.max_idle_seconds);
        settings.max_lifetime = Duration::from_secs(pool.max_lifetime_seconds);
        settings.statement_timeout = Duration::from_millis(pool.statement_timeout_ms);
        application_name.clone_into(&mut settings.application_name);
        settings
    }
}

/// The dev profile's database when none is configured: `sqlite://<data dir>/d2.sqlite`
/// (`D2_DATA_DIR`, default `./data`), created on first start.
pub fn default_dev_database() -> String {
    format!(
        "sqlite://{}",
        crate::dev_secrets::data_dir().join("d2.sqlite").display()
    )
}

/// The decoded AES keys of signing keys.
pub struct AesKeyBytes {
    pub current: Vec<u8>,
    pub previous: Vec<Vec<u8>>,
}

impl fmt::Debug for AesKeyBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AesKeyBytes(redacted, {} previous)", self.previous.len())
    }
}

/// URL-safe base64 with or without padding.
pub fn lenient_base64() -> GeneralPurpose {
    GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    )
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use super::*;

    fn load(profile: &str, vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        Settings::load_with(Profile::new(profile), &dir, Some(vars))
    }

    const PEPPER: &str = "c2VjcmV0LXBlcHBlci10aGF0LWlzLWxvbmctZW5vdWdoLTMyYg";
    /// 32 bytes.
    const AES: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY";

    #[test]
    fn the_plan_table_in_default_toml_is_the_built_in_one() {
        let settings = load("dev", &[]).unwrap();
        assert_eq!(settings.plans, PlanCatalog::default());
    }

    #[test]
    fn environment_variables_override_files() {
        let settings = load(
            "dev",
            &[
                ("D2__HTTP__ADDR", "0.0.0.0:9999"),
                ("D2__PLANS__PRO__MAX_TOOLS", "300"),
                (
                    "D2__HTTP__CORS__ALLOWED_ORIGINS",
                    "https://a.test,https://b.test",
                ),
                ("D2__EVENTS__SAMPLE__JWKS_FETCH", "0.5"),
                ("D2__CRYPTO__ACCEPT_LEGACY_SEALS", "false"),
            ],
        )
        .unwrap();
        assert_eq!(settings.http.addr, "0.0.0.0:9999");
        assert_eq!(settings.plans.pro.max_tools, 300);
        assert_eq!(settings.plans.pro.max_apps, 25);
        assert_eq!(
            settings.http.cors.allowed_origins,
            ["https://a.test", "https://b.test"]
        );
        assert_eq!(settings.events.sample["jwks_fetch"], 0.5);
        assert!(!settings.crypto.accept_legacy_seals);
        assert!(settings.database.auto_migrate);
    }

    #[test]
    fn production_names_each_missing_secret() {
        let error = load("production", &[]).unwrap_err().to_string();
        assert!(error.contains("D2__DATABASE__URL"), "{error}");
        let error = load("production", &[("D2__DATABASE__URL", "postgres://x@y/z")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("D2__CRYPTO__TOKEN_PEPPER"), "{error}");
        let short = load(
            "production",
            &[
                ("D2__DATABASE__URL", "postgres://x@y/z"),
                ("D2__CRYPTO__TOKEN_PEPPER", "c2hvcnQ"),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(short.contains("at least 32 bytes"), "{short}");
        let no_aes = load(
            "production",
            &[
                ("D2__DATABASE__URL", "postgres://x@y/z"),
                ("D2__CRYPTO__TOKEN_PEPPER", PEPPER),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(no_aes.contains("D2__CRYPTO__JWK_AES_KEY"), "{no_aes}");
        let wrong_aes = load(
            "production",
            &[
                ("D2__DATABASE__URL", "postgres://x@y/z"),
                ("D2__CRYPTO__TOKEN_PEPPER", PEPPER),
                ("D2__CRYPTO__JWK_AES_KEY", PEPPER),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(wrong_aes.contains("exactly 32 bytes"), "{wrong_aes}");
        let ok = load(
            "production",
            &[
                ("D2__DATABASE__URL", "postgres://x@y/z"),
                ("D2__CRYPTO__TOKEN_PEPPER", PEPPER),
                ("D2__CRYPTO__JWK_AES_KEY", AES),
                ("D2__CRYPTO__JWK_AES_PREVIOUS_KEYS", &format!("{AES},{AES}")),
            ],
        )
        .unwrap();
        assert_eq!(ok.jwk_aes_keys().unwrap().unwrap().previous.len(), 2);
        assert!(
            ok.crypto.accept_legacy_seals,
            "keys sealed before the upgrade open until re-sealed"
        );
        assert!(!format!("{ok:?}").contains(AES));
        assert!(!ok.database.auto_migrate);
        assert_eq!(ok.log.format, LogFormat::Json);
        assert!(
            !format!("{ok:?}").contains(PEPPER),
            "secrets never appear in Debug output"
        );
    }

    #[test]
    fn unknown_keys_and_profiles_are_refused() {
        assert!(load("dev", &[("D2__HTTP__ADRESS", "x")]).is_err());
        assert!(
            load("staging", &[])
                .unwrap_err()
                .to_string()
                .contains("staging")
        );
    }
}
