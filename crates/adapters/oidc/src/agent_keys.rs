//! The keys agents registered for `private_key_jwt` (RFC 7523): a JWK set given inline,
//! parsed once per registration, or the set at the agent's `jwks_uri`, fetched and cached.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use d2_kernel::Clock;
use d2_oauth::{Agent, AgentId, AssertionVerifier, assertion_limits};
use reqwest::Url;
use serde_json::{Map, Value};

use crate::fetch;
use crate::keys::{Choice, KeySet};
use crate::token;

/// How long a fetched key set is used.
const REMOTE_TTL: Duration = Duration::from_secs(300);
/// A token naming an unknown key refetches a set at most this often.
const REFETCH_AFTER_SECONDS: i64 = 30;
/// Agents' and URLs' sets kept in memory.
const CACHED_SETS: u64 = 10_000;
/// How long fetching a `jwks_uri` may take (the token request waits for it).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// One fetch of a `jwks_uri`.
struct Fetched {
    keys: KeySet,
    at: DateTime<Utc>,
}

/// The [`AssertionVerifier`] over agents' registered keys.
pub struct AgentKeys {
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
    /// Inline sets by agent, with the document each was parsed from: an update of the
    /// agent's `jwks` is seen at its next assertion.
    inline: moka::sync::Cache<AgentId, Arc<(Value, KeySet)>>,
    remote: moka::future::Cache<String, Arc<Fetched>>,
}

impl std::fmt::Debug for AgentKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentKeys").finish_non_exhaustive()
    }
}

impl AgentKeys {
    /// Fetches `jwks_uri`s with a client that follows no redirect, waits five seconds at
    /// most and reads 1 MiB at most.
    pub fn new(clock: Arc<dyn Clock>) -> Result<Self, reqwest::Error> {
        // reqwest is built without a crypto provider: install ring (a no-op when one is).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            client,
            clock,
            inline: moka::sync::Cache::new(CACHED_SETS),
            remote: moka::future::Cache::builder()
                .max_capacity(CACHED_SETS)
                .time_to_live(REMOTE_TTL)
                .build(),
        })
    }

    fn inline_keys(
        &self,
        agent: &Agent,
        document: &Value,
    ) -> Result<Arc<(Value, KeySet)>, &'static str> {
        if let Some(cached) = self.inline.get(&agent.id)
            && cached.0 == *document
        {
            return Ok(cached);
        }
        let bytes = serde_json::to_vec(document).map_err(|_| "the agent's jwks is not valid")?;
        let keys = KeySet::parse(&bytes).map_err(|_| "the agent's jwks is not valid")?;
        let parsed = Arc::new((document.clone(), keys));
        self.inline.insert(agent.id, parsed.clone());
        Ok(parsed)
    }

    async fn remote_keys(&self, uri: &str, fresh: bool) -> Result<Arc<Fetched>, &'static str> {
        if fresh {
            self.remote.invalidate(uri).await;
        }
        self.remote
            .try_get_with(uri.to_owned(), async {
                let url = Url::parse(uri).map_err(|_| "the agent's jwks_uri is not a URL")?;
                let keys = fetch::key_set(&self.client, &url).await.map_err(|error| {
                    tracing::warn!(jwks_uri = uri, error = %error, "an agent's key set could not be fetched");
                    "the agent's jwks_uri could not be fetched"
                })?;
                Ok(Arc::new(Fetched {
                    keys,
                    at: self.clock.now(),
                }))
            })
            .await
            .map_err(|error: Arc<&'static str>| *error)
    }
}

#[async_trait]
impl AssertionVerifier for AgentKeys {
    async fn verified_claims(
        &self,
        agent: &Agent,
        assertion: &str,
    ) -> Result<Map<String, Value>, &'static str> {
        if assertion.len() > assertion_limits::BYTES {
            return Err("assertion too long");
        }
        let compact = token::split(assertion).map_err(|_| "malformed assertion")?;
        let header = compact
            .header()
            .map_err(|_| "unsupported assertion header")?;
        match (&agent.spec.jwks, &agent.spec.jwks_uri) {
            (Some(document), _) => {
                let keys = self.inline_keys(agent, document)?;
                keys.1.verify_signature(&compact, &header)?;
            }
            (None, Some(uri)) => {
                let mut fetched = self.remote_keys(uri, false).await?;
                let stale =
                    fetched.at < self.clock.now() - TimeDelta::seconds(REFETCH_AFTER_SECONDS);
                if stale
                    && matches!(
                        fetched.keys.choose(header.alg, header.kid.as_deref()),
                        Choice::UnknownKid
                    )
                {
                    // The agent may have rotated its keys since they were fetched.
                    fetched = self.remote_keys(uri, true).await?;
                }
                fetched.keys.verify_signature(&compact, &header)?;
            }
            (None, None) => return Err("the agent registered no keys"),
        }
        let payload = compact.payload().map_err(|_| "malformed assertion")?;
        // serde reads a map from an object only.
        serde_json::from_slice(&payload).map_err(|_| "the assertion's claims are not an object")
    }
}
