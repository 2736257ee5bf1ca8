//! Configuration: `config/default.toml`, then `config/$D2_ENV.toml`, then environment
//! variables `D2__SECTION__KEY` (for example `D2__HTTP__ADDR`). Validated right after
//! loading; every failure names the key and its variable.
//!
//! The sections of the process (HTTP, database, log, Redis, keys, the worker's schedule)
//! are here; each domain's own sections are declared in its module of
//! [`crate::domains`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use config::{Config, Environment, File, FileFormat};
use d2_kernel::PlanCatalog;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

use crate::domains::{accounts, billing, events, members, oauth, policy, tokens};

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

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(skip)]
    pub profile: Profile,
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub crypto: CryptoSettings,
    pub redis: RedisSettings,
    pub rate_limit: RateLimitSettings,
    pub log: LogSettings,
    pub worker: WorkerSettings,
    pub plans: PlanCatalog,
    // The domains' sections.
    pub auth: tokens::AuthSettings,
    pub accounts: accounts::AccountsSettings,
    pub members: members::MembersSettings,
    /// Outgoing mail (invitations), when `smtp.url` is set.
    #[serde(default)]
    pub smtp: Option<d2_smtp::SmtpSettings>,
    pub oauth: oauth::OAuthSettings,
    pub billing: billing::BillingSettings,
    pub jwks: policy::JwksSettings,
    pub policy: policy::PolicyConfig,
    pub events: events::EventSettings,
    pub analytics: events::AnalyticsSettings,
    pub clickhouse: events::ClickHouseConfig,
    pub logflare: events::LogflareConfig,
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
    /// The server's public URL, each account's issuer being `{public_base_url}/oauth/{id}`;
    /// unset, `http://` and the address the server listens on.
    #[serde(default, deserialize_with = "blank_is_none")]
    pub public_base_url: Option<String>,
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
    #[serde(default, deserialize_with = "blank_is_none")]
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

/// The server's own keys: of secret digests, and of the seals of signing keys.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CryptoSettings {
    #[serde(default, deserialize_with = "blank_is_none")]
    pub token_pepper: Option<SecretString>,
    #[serde(default, deserialize_with = "blank_is_none")]
    pub jwk_aes_key: Option<SecretString>,
    #[serde(default)]
    pub jwk_aes_previous_keys: Vec<SecretString>,
    /// Whether private keys sealed before accounts were bound (bound to their key id only)
    /// still open. True during the transition; false once `d2ctl rotate-aes-key` has
    /// re-sealed them all.
    pub accept_legacy_seals: bool,
}

/// Where account quotas are counted across replicas.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    #[serde(default, deserialize_with = "blank_is_none")]
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

/// A cache bounded by its number of entries.
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
pub struct WorkerSettings {
    /// Where the worker serves `/metrics`, `/healthz` and `/readyz`.
    pub addr: String,
    /// Each scheduled job by its key (its name with `_` for `-`).
    pub jobs: BTreeMap<String, JobSettings>,
    pub tasks: TaskSettings,
}

/// How the worker works through the task queue.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSettings {
    pub enabled: bool,
    /// How often an idle worker looks for due tasks (a busy one goes on at once).
    pub poll_interval_ms: u64,
    /// Tasks claimed at a time.
    pub batch: u32,
    /// How long a claimed task is the worker's: past it, another worker may claim it.
    pub lease_seconds: u64,
    /// Attempts before a task is dead.
    pub max_attempts: u32,
    /// The wait after a first failure; it doubles after each one, up to the maximum.
    pub first_retry_seconds: u64,
    pub max_retry_seconds: u64,
}

impl TaskSettings {
    pub fn retry_policy(&self) -> d2_kernel::RetryPolicy {
        d2_kernel::RetryPolicy {
            max_attempts: self.max_attempts.max(1),
            first_delay: Duration::from_secs(self.first_retry_seconds),
            max_delay: Duration::from_secs(self.max_retry_seconds),
        }
    }
}

/// The schedule of one job, and the options it reads itself.
#[derive(Clone, Debug, Deserialize)]
pub struct JobSettings {
    pub enabled: bool,
    pub interval_seconds: u64,
    #[serde(flatten)]
    pub options: serde_json::Map<String, serde_json::Value>,
}

impl WorkerSettings {
    /// The schedule of the job called `name`.
    pub fn job(&self, name: &str) -> Result<&JobSettings, SettingsError> {
        let key = d2_kernel::job::config_key(name);
        self.jobs.get(&key).ok_or_else(|| {
            SettingsError::invalid(
                format!("worker.jobs.{key}"),
                "missing: every job needs `enabled` and `interval_seconds`",
            )
        })
    }

    /// The options of the job called `name` beside its schedule (with none at all, an
    /// empty struct), refusing unknown keys.
    pub fn options<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, SettingsError> {
        let options = self.job(name)?.options.clone();
        serde_json::from_value(serde_json::Value::Object(options)).map_err(|e| {
            SettingsError::invalid(
                format!("worker.jobs.{}", d2_kernel::job::config_key(name)),
                e.to_string(),
            )
        })
    }
}

/// Configuration that cannot be used; the message names the key and its variable.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot load configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("{key} (environment variable {var}) is required in the `{profile}` profile", var = env_var(key))]
    Missing { key: String, profile: String },
    #[error("{key} (environment variable {var}) is invalid: {reason}", var = env_var(key))]
    Invalid { key: String, reason: String },
}

impl SettingsError {
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }

    pub fn missing(key: impl Into<String>, profile: impl fmt::Display) -> Self {
        Self::Missing {
            key: key.into(),
            profile: profile.to_string(),
        }
    }
}

/// The environment variable of a key: `http.cors.max_age_seconds` is
/// `D2__HTTP__CORS__MAX_AGE_SECONDS`.
pub fn env_var(key: &str) -> String {
    format!("D2__{}", key.to_ascii_uppercase().replace('.', "__"))
}

/// An optional value where an empty one means unset, so an environment can switch a feature
/// off (`D2__REDIS__URL=`).
pub(crate) fn blank_is_none<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: From<String>,
{
    let value = Option::<String>::deserialize(deserializer)?;
    Ok(value.filter(|v| !v.trim().is_empty()).map(T::from))
}

const EMBEDDED: [(&str, &str); 3] = [
    ("default", include_str!("../../../config/default.toml")),
    ("dev", include_str!("../../../config/dev.toml")),
    (
        "production",
        include_str!("../../../config/production.toml"),
    ),
];

/// A data file the settings name (`key`): `configured` (absolute, or relative to the config
/// directory `dir`); unset, the directory's `default_name`, else `shipped`, the copy built
/// into the binary. Answers where the text came from and the text; a configured file that
/// cannot be read is an error naming the key.
pub(crate) fn config_file(
    dir: &Path,
    key: &str,
    configured: Option<&str>,
    default_name: &str,
    shipped: &str,
) -> Result<(String, String), SettingsError> {
    match configured {
        Some(file) => {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                SettingsError::invalid(key, format!("cannot read {}: {e}", path.display()))
            })?;
            Ok((path.display().to_string(), text))
        }
        None => {
            let path = dir.join(default_name);
            Ok(match std::fs::read_to_string(&path) {
                Ok(text) => (path.display().to_string(), text),
                Err(_) => (format!("the built-in {default_name}"), shipped.to_owned()),
            })
        }
    }
}

/// Keys whose environment variable is a comma-separated list.
const LIST_KEYS: [&str; 6] = [
    "http.cors.allowed_origins",
    "crypto.jwk_aes_previous_keys",
    "billing.webhook_secrets",
    "billing.prices.essentials",
    "billing.prices.pro",
    "billing.prices.enterprise",
];

/// A file of the config directory, or the copy built into the binary when the directory
/// does not hold it (so the binaries run from anywhere).
fn layer(
    dir: &Path,
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
            key: "D2_ENV".into(),
            reason: format!("no configuration file {}", path.display()),
        }),
        None => Ok(None),
    }
}

impl Settings {
    /// Loads from the process environment: `D2_ENV` (default `dev`), `D2_CONFIG_DIR`
    /// (default `config`) and the `D2__...` variables. In the dev profile, missing secrets
    /// come from the data directory's `dev-secrets.json` (created on first start).
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
            let dev = crate::dev_secrets::load_or_create(&crate::dev_secrets::data_dir())
                .map_err(|e| SettingsError::invalid("crypto.token_pepper", e.to_string()))?;
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
        dir: &Path,
        variables: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Self, SettingsError> {
        let mut builder = Config::builder();
        if let Some(default) = layer(dir, "default", true)? {
            builder = builder.add_source(default);
        }
        if let Some(profile_file) = layer(dir, profile.name(), !profile.is_dev())? {
            builder = builder.add_source(profile_file);
        }
        let environment = LIST_KEYS.into_iter().fold(
            Environment::with_prefix("D2")
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .try_parsing(true)
                .source(variables),
            Environment::with_list_parse_key,
        );
        let mut settings: Settings = builder.add_source(environment).build()?.try_deserialize()?;
        settings.profile = profile;
        settings.oauth.load_default_scopes(dir)?;
        settings.billing.load_price_table(dir)?;
        settings.oauth.load_outbound_fetch(dir)?;
        if settings.profile.is_dev() && settings.database.url.is_none() {
            settings.database.url = Some(SecretString::from(default_dev_database()));
        }
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let profile = &self.profile;
        if self.http.addr.parse::<std::net::SocketAddr>().is_err() && !self.http.addr.contains(':')
        {
            return Err(SettingsError::invalid("http.addr", "expected host:port"));
        }
        if self.database.url.is_none() {
            return Err(SettingsError::missing("database.url", profile));
        }
        let pool = &self.database.pool;
        if pool.max_size == 0 || pool.min_size > pool.max_size {
            return Err(SettingsError::invalid(
                "database.pool.max_size",
                "must be at least 1 and at least database.pool.min_size",
            ));
        }
        if self.token_pepper_bytes()?.is_none() && !profile.is_dev() {
            return Err(SettingsError::missing("crypto.token_pepper", profile));
        }
        if self.jwk_aes_keys()?.is_none() && !profile.is_dev() {
            return Err(SettingsError::missing("crypto.jwk_aes_key", profile));
        }
        if self.rate_limit.unauthenticated_per_minute == 0
            || self.rate_limit.unauthenticated_burst == 0
        {
            return Err(SettingsError::invalid(
                "rate_limit.unauthenticated_per_minute",
                "the rate and the burst must be at least 1",
            ));
        }
        for (key, quotas) in self.plans.every_quotas() {
            if quotas.ingest_events_per_minute < quotas.event_batch {
                return Err(SettingsError::invalid(
                    format!("plans.{key}.ingest_events_per_minute"),
                    "must be at least the plan's event_batch, or no full batch could ever be accepted",
                ));
            }
        }
        if let Some(url) = &self.redis.url
            && !url.expose_secret().starts_with("redis://")
        {
            return Err(SettingsError::invalid(
                "redis.url",
                "must be a redis:// URL (TLS to Redis is not supported yet)",
            ));
        }
        let tasks = &self.worker.tasks;
        if tasks.lease_seconds == 0 || tasks.batch == 0 {
            return Err(SettingsError::invalid(
                "worker.tasks.lease_seconds",
                "the lease and the batch must be at least 1",
            ));
        }
        if let Some(base) = &self.http.public_base_url
            && (!(base.starts_with("https://") || base.starts_with("http://"))
                || base.contains(['?', '#']))
        {
            return Err(SettingsError::invalid(
                "http.public_base_url",
                "must be an http(s) URL without a query or fragment",
            ));
        }
        self.auth.validate()?;
        self.members.validate()?;
        self.oauth.validate()?;
        self.billing.validate()?;
        self.jwks.validate()?;
        self.policy.validate()?;
        events::validate(self)
    }

    /// The configured pepper, decoded; `None` when unset.
    pub fn token_pepper_bytes(&self) -> Result<Option<Vec<u8>>, SettingsError> {
        let Some(pepper) = &self.crypto.token_pepper else {
            return Ok(None);
        };
        let invalid = |reason: &str| SettingsError::invalid("crypto.token_pepper", reason);
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
        let decode = |secret: &SecretString, key: &str| {
            let bytes = lenient_base64()
                .decode(secret.expose_secret().trim())
                .map_err(|_| SettingsError::invalid(key, "not URL-safe base64"))?;
            if bytes.len() != 32 {
                return Err(SettingsError::invalid(
                    key,
                    "must decode to exactly 32 bytes (generate one with `d2ctl generate-aes-key`)",
                ));
            }
            Ok(bytes)
        };
        let Some(current) = &self.crypto.jwk_aes_key else {
            return Ok(None);
        };
        let current = decode(current, "crypto.jwk_aes_key")?;
        let previous = self
            .crypto
            .jwk_aes_previous_keys
            .iter()
            // An empty variable means none.
            .filter(|k| !k.expose_secret().trim().is_empty())
            .map(|k| decode(k, "crypto.jwk_aes_previous_keys"))
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
    fn the_default_scopes_come_from_the_config_directory_or_the_binary() {
        let shipped =
            d2_oauth::DefaultScopes::from_yaml(crate::domains::oauth::SHIPPED_DEFAULT_SCOPES)
                .unwrap();
        assert!(shipped.len() >= 10);
        assert_eq!(load("dev", &[]).unwrap().oauth.default_scopes, shipped);
        // A directory without scopes.yml: the copy built into the binary.
        let empty = std::env::temp_dir().join(format!("d2-no-scopes-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        let settings =
            Settings::load_with(Profile::new("dev"), &empty, Some(HashMap::new())).unwrap();
        assert_eq!(settings.oauth.default_scopes, shipped);
        // A configured file, relative to the config directory.
        std::fs::write(empty.join("mine.yml"), "scopes:\n  - name: only\n").unwrap();
        let vars = HashMap::from([(
            "D2__OAUTH__DEFAULT_SCOPES_FILE".to_owned(),
            "mine.yml".to_owned(),
        )]);
        let settings = Settings::load_with(Profile::new("dev"), &empty, Some(vars)).unwrap();
        assert_eq!(settings.oauth.default_scopes.len(), 1);
        // A bad file stops the start, naming the key, the file and the problem.
        std::fs::write(
            empty.join("cycle.yml"),
            "scopes:\n  - name: a\n    implies: [b]\n  - name: b\n    implies: [a]\n",
        )
        .unwrap();
        for (file, problem) in [("cycle.yml", "a -> b -> a"), ("missing.yml", "cannot read")] {
            let vars =
                HashMap::from([("D2__OAUTH__DEFAULT_SCOPES_FILE".to_owned(), file.to_owned())]);
            let error = Settings::load_with(Profile::new("dev"), &empty, Some(vars))
                .unwrap_err()
                .to_string();
            assert!(error.contains("oauth.default_scopes_file"), "{error}");
            assert!(error.contains(file) && error.contains(problem), "{error}");
        }
        std::fs::remove_dir_all(&empty).unwrap();
    }

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
                ("D2__PLANS__LOCKED__MAX_MEMBERS", "3"),
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
        assert_eq!(settings.plans.locked.max_members, 3);
        assert_eq!(
            settings.http.cors.allowed_origins,
            ["https://a.test", "https://b.test"]
        );
        assert_eq!(settings.events.sample["jwks_fetch"], 0.5);
        assert!(!settings.crypto.accept_legacy_seals);
        assert!(settings.database.auto_migrate);
    }

    #[test]
    fn the_locked_quotas_are_validated_under_their_key() {
        let error = load(
            "dev",
            &[("D2__PLANS__LOCKED__INGEST_EVENTS_PER_MINUTE", "10")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("plans.locked.ingest_events_per_minute"),
            "{error}"
        );
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
    fn variables_are_named_after_keys() {
        assert_eq!(
            env_var("http.cors.max_age_seconds"),
            "D2__HTTP__CORS__MAX_AGE_SECONDS"
        );
        let error = load("dev", &[("D2__JWKS__MAX_ROTATIONS_PER_HOUR", "0")])
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("jwks.max_rotations_per_hour (environment variable D2__JWKS__MAX_ROTATIONS_PER_HOUR) is invalid"),
            "{error}"
        );
    }

    #[test]
    fn an_empty_variable_unsets_an_optional_value() {
        let settings = load(
            "dev",
            &[
                ("D2__REDIS__URL", ""),
                ("D2__CLICKHOUSE__URL", " "),
                ("D2__AUTH__CONTROL_PLANE_TOKEN", ""),
            ],
        )
        .unwrap();
        assert!(settings.redis.url.is_none());
        assert!(settings.clickhouse.url.is_none());
        assert!(settings.auth.control_plane_token.is_none());
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
