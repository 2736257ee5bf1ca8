//! The keys agents registered for `private_key_jwt` (RFC 7523): a JWK set given inline,
//! parsed once per registration, or the set at the agent's `jwks_uri`, fetched and cached.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use d2_kernel::{Clock, ErrorChain};
use d2_oauth::{Agent, AgentId, AssertionVerifier, assertion_limits};
use reqwest::Url;
use serde_json::{Map, Value};

use crate::fetch;
use crate::keys::{Choice, KeySet};
use crate::public_address::OutboundFetch;
use crate::token;

/// How long a fetched key set is used.
const REMOTE_TTL: Duration = Duration::from_secs(300);
/// A set is fetched again, for a token naming an unknown key or after a failed fetch, at
/// most this often.
const REFETCH_AFTER_SECONDS: i64 = 30;
/// Agents' and URLs' sets kept in memory.
const CACHED_SETS: u64 = 10_000;
/// How long fetching a `jwks_uri` may take (the token request waits for it).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// One fetch of a `jwks_uri`: its keys, or `None` when it failed (remembered, so that
/// assertions naming an unreachable URL do not each make the server fetch it).
struct Fetched {
    keys: Option<KeySet>,
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
    fetch: OutboundFetch,
}

impl std::fmt::Debug for AgentKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentKeys").finish_non_exhaustive()
    }
}

impl AgentKeys {
    /// Fetches `jwks_uri`s with a client that follows no redirect, uses no proxy, waits
    /// five seconds at most, reads 1 MiB at most, and connects to the addresses `fetch`
    /// allows (tenants choose these URLs: [`crate::Reach::Public`] keeps them out of the server's
    /// own network).
    pub fn new(clock: Arc<dyn Clock>, fetch: OutboundFetch) -> Result<Self, reqwest::Error> {
        let client = fetch.client(FETCH_TIMEOUT)?;
        Ok(Self {
            client,
            clock,
            inline: moka::sync::Cache::new(CACHED_SETS),
            remote: moka::future::Cache::builder()
                .max_capacity(CACHED_SETS)
                .time_to_live(REMOTE_TTL)
                .build(),
            fetch,
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

    /// The set at `uri`: as cached, or fetched when it is not, or when it is older than
    /// [`REFETCH_AFTER_SECONDS`] and `refetch_if_stale` says the cached one cannot serve.
    async fn remote_keys(
        &self,
        uri: &str,
        refetch_if_stale: impl Fn(&Fetched) -> bool,
    ) -> Arc<Fetched> {
        let cached = self.remote_fetch(uri).await;
        let stale = cached.at < self.clock.now() - TimeDelta::seconds(REFETCH_AFTER_SECONDS);
        if !(stale && refetch_if_stale(&cached)) {
            return cached;
        }
        self.remote.invalidate(uri).await;
        self.remote_fetch(uri).await
    }

    async fn remote_fetch(&self, uri: &str) -> Arc<Fetched> {
        self.remote
            .get_with(uri.to_owned(), async {
                let keys = match Url::parse(uri) {
                    Ok(url) if !self.fetch.allows(&url) => {
                        Err("its address is not public".to_owned())
                    }
                    Ok(url) => fetch::key_set(&self.client, &url)
                        .await
                        .map_err(|e| ErrorChain(&e).to_string()),
                    Err(_) => Err("not a URL".to_owned()),
                };
                let keys = keys
                    .inspect_err(|error| {
                        tracing::warn!(
                            jwks_uri = uri,
                            error,
                            "an agent's key set could not be fetched"
                        );
                    })
                    .ok();
                Arc::new(Fetched {
                    keys,
                    at: self.clock.now(),
                })
            })
            .await
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
        let signature = compact.signature().map_err(|_| "malformed assertion")?;
        match (&agent.spec.jwks, &agent.spec.jwks_uri) {
            (Some(document), _) => {
                let keys = self.inline_keys(agent, document)?;
                keys.1.verify_signature(&compact, &header, &signature)?;
            }
            (None, Some(uri)) => {
                // Fetched again when the last fetch failed, or when the set does not hold
                // the key named (the agent may have rotated its keys).
                let fetched = self
                    .remote_keys(uri, |fetched| {
                        fetched.keys.as_ref().is_none_or(|keys| {
                            matches!(
                                keys.choose(header.alg, header.kid.as_deref()),
                                Choice::UnknownKid
                            )
                        })
                    })
                    .await;
                let keys = fetched
                    .keys
                    .as_ref()
                    .ok_or("the agent's jwks_uri could not be fetched")?;
                keys.verify_signature(&compact, &header, &signature)?;
            }
            (None, None) => return Err("the agent registered no keys"),
        }
        let payload = compact.payload().map_err(|_| "malformed assertion")?;
        // serde reads a map from an object only.
        serde_json::from_slice(&payload).map_err(|_| "the assertion's claims are not an object")
    }
}
