//! Client ID Metadata Documents over HTTPS: the [`ClientDocuments`] port. Clients choose
//! these URLs, so they are fetched like agents' `jwks_uri`s (public addresses only unless
//! configured otherwise, no redirect, no proxy), with the draft's small size limit, and
//! kept as long as the answer's `Cache-Control` says, within bounds: a fleet of clients
//! starting at once makes one fetch, and a client cannot make the server fetch on every
//! request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use d2_kernel::ErrorChain;
use d2_oauth::{ClientDocuments, FetchRefusal, document_limits};
use reqwest::header::{ACCEPT, CACHE_CONTROL, HeaderMap};

use crate::fetch;
use crate::public_address::OutboundFetch;

/// How long a document is kept when its answer says nothing.
const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// Bounds of what `Cache-Control` may ask: at least this (also for `no-store`, so one URL
/// is fetched at most this often) ...
const MIN_TTL: Duration = Duration::from_secs(30);
/// ... and at most a day.
const MAX_TTL: Duration = Duration::from_secs(86_400);
/// How long a failed fetch is remembered.
const FAILURE_TTL: Duration = Duration::from_secs(30);
/// Documents kept in memory.
const CACHED_DOCUMENTS: u64 = 10_000;

/// One fetch: the document or why there is none, and how long to keep the answer.
#[derive(Clone, Debug)]
struct Fetched {
    document: Result<Arc<[u8]>, FetchRefusal>,
    ttl: Duration,
}

/// Each entry lives as long as its own answer said.
struct PerEntry;

impl moka::Expiry<String, Fetched> for PerEntry {
    fn expire_after_create(&self, _: &String, fetched: &Fetched, _: Instant) -> Option<Duration> {
        Some(fetched.ttl)
    }
}

/// The [`ClientDocuments`] of the server: fetched over HTTPS and cached.
pub struct MetadataDocuments {
    client: reqwest::Client,
    fetch: OutboundFetch,
    cache: moka::future::Cache<String, Fetched>,
}

impl std::fmt::Debug for MetadataDocuments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataDocuments").finish_non_exhaustive()
    }
}

impl MetadataDocuments {
    pub fn new(fetch: OutboundFetch) -> Result<Self, reqwest::Error> {
        Self::waiting(fetch, Duration::from_secs(document_limits::FETCH_SECONDS))
    }

    /// As [`Self::new`], with a fetch taking `timeout` at most.
    pub(crate) fn waiting(fetch: OutboundFetch, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = fetch.client(timeout)?;
        Ok(Self {
            client,
            fetch,
            cache: moka::future::Cache::builder()
                .max_capacity(CACHED_DOCUMENTS)
                .expire_after(PerEntry)
                .build(),
        })
    }

    async fn fetch(&self, url: &url::Url) -> Fetched {
        if !self.fetch.allows(url) {
            return refused("its address is not public".to_owned());
        }
        let request = self
            .client
            .get(url.as_str())
            .header(ACCEPT, "application/json");
        match fetch::response_of(request, url.as_str(), document_limits::BYTES).await {
            Ok((headers, body)) => Fetched {
                document: Ok(Arc::from(body)),
                ttl: ttl_of(&headers),
            },
            Err(error) => {
                let reason = ErrorChain(&error).to_string();
                tracing::info!(metadata_url = %url, reason, "a client metadata document could not be fetched");
                refused(reason)
            }
        }
    }
}

fn refused(reason: String) -> Fetched {
    Fetched {
        document: Err(FetchRefusal(reason)),
        ttl: FAILURE_TTL,
    }
}

/// How long an answer with these headers is kept: its `max-age`, within
/// [`MIN_TTL`]..=[`MAX_TTL`]; the minimum for `no-store` or `no-cache`; [`DEFAULT_TTL`]
/// when it says nothing.
fn ttl_of(headers: &HeaderMap) -> Duration {
    let directives: Vec<String> = headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|directive| directive.trim().to_ascii_lowercase())
        .collect();
    if directives
        .iter()
        .any(|d| d == "no-store" || d == "no-cache")
    {
        return MIN_TTL;
    }
    directives
        .iter()
        .find_map(|d| {
            d.strip_prefix("max-age=")?
                .trim_matches('"')
                .parse::<u64>()
                .ok()
        })
        .map_or(DEFAULT_TTL, |seconds| {
            Duration::from_secs(seconds).clamp(MIN_TTL, MAX_TTL)
        })
}

#[async_trait]
impl ClientDocuments for MetadataDocuments {
    async fn document(&self, url: &url::Url) -> Result<Arc<[u8]>, FetchRefusal> {
        self.cache
            .get_with(url.to_string(), self.fetch(url))
            .await
            .document
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(cache_control: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in cache_control {
            headers.append(CACHE_CONTROL, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn cache_headers_set_how_long_a_document_is_kept_within_bounds() {
        assert_eq!(ttl_of(&headers(&[])), DEFAULT_TTL);
        assert_eq!(
            ttl_of(&headers(&["public, max-age=600"])),
            Duration::from_secs(600)
        );
        assert_eq!(ttl_of(&headers(&["max-age=1"])), MIN_TTL);
        assert_eq!(ttl_of(&headers(&["max-age=99999999"])), MAX_TTL);
        assert_eq!(ttl_of(&headers(&["no-store"])), MIN_TTL);
        assert_eq!(ttl_of(&headers(&["public", "No-Cache"])), MIN_TTL);
        assert_eq!(ttl_of(&headers(&["max-age=soon"])), DEFAULT_TTL);
    }
}
