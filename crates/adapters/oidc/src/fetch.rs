//! The provider's documents over HTTP: the discovery document and the JWK set.

use reqwest::header::ACCEPT;
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use crate::keys::{JwksError, KeySet};
use crate::settings::{OidcSettings, http_url};

/// Larger discovery documents and key sets are refused (real ones are a few KiB).
pub(crate) const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Why the provider's keys could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum FetchError {
    #[error("request to {url} failed")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}")]
    Status { url: String, status: StatusCode },
    #[error("{url} answered more than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge { url: String },
    #[error("the discovery document at {url} is not valid")]
    Discovery {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the discovery document names the issuer {found:?}, not the configured {expected:?}")]
    IssuerMismatch { expected: String, found: String },
    #[error(
        "the discovery document's jwks_uri {0:?} is not an http(s) URL (https for an https issuer)"
    )]
    JwksUri(String),
    #[error("the JWK set at {url} is not valid")]
    Jwks {
        url: String,
        #[source]
        source: JwksError,
    },
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// Reads the discovery document and returns its `jwks_uri`, after checking that its
/// `issuer` is exactly the configured one.
pub(crate) async fn discover(
    client: &reqwest::Client,
    settings: &OidcSettings,
) -> Result<Url, FetchError> {
    let url = settings.discovery_url();
    let body = get(client, &url).await?;
    let discovery: Discovery =
        serde_json::from_slice(&body).map_err(|source| FetchError::Discovery { url, source })?;
    if discovery.issuer != settings.issuer {
        return Err(FetchError::IssuerMismatch {
            expected: settings.issuer.clone(),
            found: discovery.issuer,
        });
    }
    match http_url(&discovery.jwks_uri) {
        Some(jwks) if jwks.scheme() == "https" || !settings.issuer_is_https() => Ok(jwks),
        _ => Err(FetchError::JwksUri(discovery.jwks_uri)),
    }
}

/// Fetches and parses the JWK set at `url`.
pub(crate) async fn key_set(client: &reqwest::Client, url: &Url) -> Result<KeySet, FetchError> {
    let body = get(client, url.as_str()).await?;
    KeySet::parse(&body).map_err(|source| FetchError::Jwks {
        url: url.to_string(),
        source,
    })
}

/// The body of a 2xx answer to `GET url`, at most `MAX_DOCUMENT_BYTES`.
async fn get(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, FetchError> {
    let request_error = |source: reqwest::Error| FetchError::Request {
        url: url.to_owned(),
        source: source.without_url(),
    };
    let mut response = client
        .get(url)
        .header(ACCEPT, "application/json")
        .send()
        .await
        .map_err(request_error)?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::Status {
            url: url.to_owned(),
            status,
        });
    }
    let too_large = || FetchError::TooLarge {
        url: url.to_owned(),
    };
    let announced = response.content_length().unwrap_or(0);
    if usize::try_from(announced).map_or(true, |length| length > MAX_DOCUMENT_BYTES) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(request_error)? {
        if body.len().saturating_add(chunk.len()) > MAX_DOCUMENT_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
