use std::fmt;
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use d2_kernel::{Clock, ErrorChain, later};
use d2_members::{IdentityError, IdentityProvider, VerifiedIdentity};
use reqwest::Url;
use tokio::sync::Mutex;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::instrument::WithSubscriber as _;

use crate::claims::verified_identity;
use crate::fetch::{self, FetchError};
use crate::keys::{Choice, KeySet};
use crate::settings::{OidcSettings, SettingsError};
use crate::token;

/// Why the provider could not be built. An unreachable identity provider is not one of
/// them: [`OidcProvider::connect`] starts without keys and fetches them later.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("cannot build the identity provider's HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("the OpenID provider must be connected inside a tokio runtime")]
    NoRuntime(#[source] tokio::runtime::TryCurrentError),
}

/// The [`IdentityProvider`] of an OpenID provider: verifies its signed JWTs (ID tokens or
/// JWT access tokens) against its published keys, cached in memory and refreshed in the
/// background. Dropping it stops the refresh.
pub struct OidcProvider {
    pub(crate) inner: Arc<Inner>,
    /// The authorization and token endpoints for browser sign-in, once discovered.
    pub(crate) endpoints: Mutex<Option<crate::fetch::SignInEndpoints>>,
    _refresh: DropGuard,
}

pub(crate) struct Inner {
    pub(crate) settings: OidcSettings,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) client: reqwest::Client,
    cache: RwLock<Cache>,
    /// Held for every fetch: one in flight at a time, shared by every caller waiting.
    fetch: Mutex<FetchState>,
}

#[derive(Default)]
struct Cache {
    /// `None` until a fetch succeeds; then the last key set fetched.
    keys: Option<Arc<KeySet>>,
    /// Counts the successful fetches: a caller that saw generation `n` and finds `n + 1`
    /// after waiting for the fetch lock knows someone fetched meanwhile.
    generation: u64,
    /// Why the last fetch failed, while no fetch has succeeded since.
    last_error: Option<String>,
}

#[derive(Default)]
struct FetchState {
    /// The discovery document's `jwks_uri`, once read (forgotten when fetching it fails).
    discovered: Option<Url>,
    /// When a token last triggered a fetch (an unknown `kid`, or no key set yet).
    last_on_demand: Option<DateTime<Utc>>,
}

/// Why a fetch happened, for the logs.
#[derive(Clone, Copy)]
enum Trigger {
    Start,
    Refresh,
    OnDemand,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::Refresh => "refresh",
            Trigger::OnDemand => "on_demand",
        }
    }
}

impl OidcProvider {
    /// Validates `settings`, fetches the discovery document (unless `jwks_url` is set) and
    /// the key set once, and starts the background refresh (every `refresh_seconds`) on the
    /// current tokio runtime.
    ///
    /// A provider that cannot be reached, answers an error or a document that does not fit
    /// (the discovery's `issuer` included) does not fail the start: a warning is logged and
    /// the provider starts without keys. Tokens then trigger a fetch (at most one per
    /// `refetch_min_seconds`) and are answered [`IdentityError::Unavailable`] while no key
    /// set was ever fetched. The application starts while its identity provider is down,
    /// and API tokens keep working meanwhile.
    pub async fn connect(
        settings: OidcSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<OidcProvider, ConnectError> {
        settings.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(ConnectError::NoRuntime)?;
        // reqwest is built without a crypto provider: install ring (a no-op when one is).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(settings.timeout())
            .connect_timeout(settings.timeout())
            .build()
            .map_err(ConnectError::Client)?;
        let period = settings.refresh_interval();
        let inner = Arc::new(Inner {
            settings,
            clock,
            client,
            cache: RwLock::new(Cache::default()),
            fetch: Mutex::new(FetchState::default()),
        });
        inner.fetch_now(Trigger::Start).await;

        let stop = CancellationToken::new();
        runtime.spawn(
            refresh_loop(Arc::downgrade(&inner), period, stop.clone()).with_current_subscriber(),
        );
        Ok(OidcProvider {
            inner,
            endpoints: Mutex::new(None),
            _refresh: stop.drop_guard(),
        })
    }

    /// The configured issuer.
    pub fn issuer(&self) -> &str {
        &self.inner.settings.issuer
    }

    /// How many usable keys are cached (`None` before the first successful fetch).
    pub fn cached_keys(&self) -> Option<usize> {
        self.inner.cached().0.map(|keys| keys.len())
    }
}

impl fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcProvider")
            .field("issuer", &self.inner.settings.issuer)
            .field("audience", &self.inner.settings.audience)
            .field("cached_keys", &self.cached_keys())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl IdentityProvider for OidcProvider {
    async fn verify(&self, token: &str) -> Result<VerifiedIdentity, IdentityError> {
        let result = self.inner.verify(token).await;
        if let Err(error) = &result {
            // Never the token; the caller logs the refusal at its edge.
            tracing::debug!(
                error = %error,
                idp.issuer = %self.inner.settings.issuer,
                "sign-in token refused"
            );
        }
        result
    }
}

/// Every `period`, refreshes the key set of the provider `inner` points to, until `stop`
/// is cancelled or the provider is gone.
async fn refresh_loop(inner: Weak<Inner>, period: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = inner.fetch_now(Trigger::Refresh) => {}
        }
    }
}

impl Inner {
    fn cached(&self) -> (Option<Arc<KeySet>>, u64) {
        let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
        (cache.keys.clone(), cache.generation)
    }

    async fn verify(&self, token: &str) -> Result<VerifiedIdentity, IdentityError> {
        let payload = self.verified_payload(token).await?;
        verified_identity(&payload, &self.settings, self.clock.now())
    }

    /// The claims of `token` once its signature is verified by the provider's keys.
    pub(crate) async fn verified_payload(&self, token: &str) -> Result<Vec<u8>, IdentityError> {
        let compact = token::split(token)?;
        let header = compact.header()?;
        // A malformed signature is refused before any key is fetched for it.
        let signature = compact.signature()?;

        let (mut cached, mut generation) = self.cached();
        if cached.is_none() {
            self.fetch_on_demand(generation).await;
            (cached, generation) = self.cached();
        }
        let mut keys = cached.ok_or_else(|| self.unavailable())?;
        let kid = header.kid.as_deref();
        if matches!(keys.choose(header.alg, kid), Choice::UnknownKid) {
            // The provider may have rotated its keys since they were fetched.
            self.fetch_on_demand(generation).await;
            keys = self.cached().0.unwrap_or(keys);
        }
        keys.verify_signature(&compact, &header, &signature)
            .map_err(IdentityError::Invalid)?;
        compact.payload()
    }

    fn unavailable(&self) -> IdentityError {
        let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
        let reason = cache.last_error.as_deref().unwrap_or("not fetched yet");
        IdentityError::Unavailable(format!(
            "no signing keys of {}: {reason}",
            self.settings.issuer
        ))
    }

    /// A fetch for a token the cached keys cannot decide, unless another caller fetched
    /// since the caller read generation `seen`, or a token triggered one less than
    /// `refetch_min_seconds` ago. Concurrent callers wait for the one fetch in flight.
    async fn fetch_on_demand(&self, seen: u64) {
        let mut state = self.fetch.lock().await;
        if self.cached().1 != seen {
            return;
        }
        let now = self.clock.now();
        let min = TimeDelta::try_seconds(
            i64::try_from(self.settings.refetch_min_seconds).unwrap_or(i64::MAX),
        )
        .unwrap_or(TimeDelta::MAX);
        if let Some(last) = state.last_on_demand
            && now < later(last, min)
            && now >= last
        {
            tracing::debug!(
                idp.issuer = %self.settings.issuer,
                "key fetch skipped: a token triggered one less than refetch_min_seconds ago"
            );
            return;
        }
        state.last_on_demand = Some(now);
        self.fetch_locked(&mut state, Trigger::OnDemand).await;
    }

    /// Fetches the key set now (after any fetch in flight).
    async fn fetch_now(&self, trigger: Trigger) {
        let mut state = self.fetch.lock().await;
        self.fetch_locked(&mut state, trigger).await;
    }

    async fn fetch_locked(&self, state: &mut FetchState, trigger: Trigger) {
        match self.fetch_key_set(state).await {
            Ok(keys) => self.store(keys, trigger),
            Err(error) => {
                let cached = self.cached().0;
                tracing::warn!(
                    idp.issuer = %self.settings.issuer,
                    idp.fetch = trigger.as_str(),
                    idp.cached_keys = cached.as_ref().map(|keys| keys.len()),
                    error.cause = %ErrorChain(&error),
                    "fetching the identity provider's keys failed; {}",
                    if cached.is_some() { "the cached keys stay in use" } else { "no keys yet" },
                );
                let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
                if cache.keys.is_none() {
                    cache.last_error = Some(ErrorChain(&error).to_string());
                }
            }
        }
    }

    async fn fetch_key_set(&self, state: &mut FetchState) -> Result<KeySet, FetchError> {
        let url = match (&self.settings.jwks_url, &state.discovered) {
            (Some(configured), _) => Url::parse(configured).map_err(|_| {
                // Validated at start; kept an error rather than a panic.
                FetchError::JwksUri(configured.clone())
            })?,
            (None, Some(discovered)) => discovered.clone(),
            (None, None) => {
                let discovered = fetch::discover(&self.client, &self.settings).await?;
                state.discovered = Some(discovered.clone());
                discovered
            }
        };
        let result = fetch::key_set(&self.client, &url).await;
        if result.is_err() {
            // The provider may have moved its keys: read the discovery document again.
            state.discovered = None;
        }
        result
    }

    fn store(&self, keys: KeySet, trigger: Trigger) {
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        let changed = cache
            .keys
            .as_ref()
            .is_none_or(|cached| cached.kids() != keys.kids());
        if changed {
            tracing::info!(
                idp.issuer = %self.settings.issuer,
                idp.fetch = trigger.as_str(),
                idp.kids = ?keys.kids(),
                "identity provider keys updated"
            );
        } else {
            tracing::debug!(
                idp.issuer = %self.settings.issuer,
                idp.fetch = trigger.as_str(),
                "identity provider keys unchanged"
            );
        }
        cache.keys = Some(Arc::new(keys));
        cache.generation = cache.generation.wrapping_add(1);
        cache.last_error = None;
    }
}
