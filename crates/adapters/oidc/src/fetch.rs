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
    #[error("{url} answered more than {limit} bytes")]
    TooLarge { url: String, limit: usize },
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
    #[error(
        "the discovery document names no usable authorization or token endpoint ({0:?}): http(s) URLs, https for an https issuer"
    )]
    Endpoint(String),
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
    #[serde(default)]
    authorization_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint: Option<String>,
}

/// Where a browser signs in, from the discovery document.
#[derive(Clone, Debug)]
pub(crate) struct SignInEndpoints {
    pub authorization: Url,
    pub token: Url,
}

/// The discovery document, after checking that its `issuer` is exactly the configured
/// one.
async fn discovery(
    client: &reqwest::Client,
    settings: &OidcSettings,
) -> Result<Discovery, FetchError> {
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
    Ok(discovery)
}

/// The discovery document's authorization and token endpoints: http(s) URLs, https for
/// an https issuer.
pub(crate) async fn sign_in_endpoints(
    client: &reqwest::Client,
    settings: &OidcSettings,
) -> Result<SignInEndpoints, FetchError> {
    let discovery = discovery(client, settings).await?;
    let endpoint = |text: Option<String>| {
        let text = text.unwrap_or_default();
        match http_url(&text) {
            Some(url) if url.scheme() == "https" || !settings.issuer_is_https() => Ok(url),
            _ => Err(FetchError::Endpoint(text)),
        }
    };
    Ok(SignInEndpoints {
        authorization: endpoint(discovery.authorization_endpoint)?,
        token: endpoint(discovery.token_endpoint)?,
    })
}

/// Reads the discovery document and returns its `jwks_uri`.
pub(crate) async fn discover(
    client: &reqwest::Client,
    settings: &OidcSettings,
) -> Result<Url, FetchError> {
    let discovery = discovery(client, settings).await?;
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
    let request = client.get(url).header(ACCEPT, "application/json");
    let (_, body) = response_of(request, url, MAX_DOCUMENT_BYTES).await?;
    Ok(body)
}

/// The body of a 2xx answer to `request` (to `url`), at most `MAX_DOCUMENT_BYTES`.
pub(crate) async fn body_of(
    request: reqwest::RequestBuilder,
    url: &str,
) -> Result<Vec<u8>, FetchError> {
    let (_, body) = response_of(request, url, MAX_DOCUMENT_BYTES).await?;
    Ok(body)
}

/// The headers and body of a 2xx answer to `request` (to `url`), at most `limit` bytes:
/// a larger announced length is refused before the body is read, a longer body as soon
/// as it passes the limit.
pub(crate) async fn response_of(
    request: reqwest::RequestBuilder,
    url: &str,
    limit: usize,
) -> Result<(reqwest::header::HeaderMap, Vec<u8>), FetchError> {
    let request_error = |source: reqwest::Error| FetchError::Request {
        url: url.to_owned(),
        source: source.without_url(),
    };
    let mut response = request.send().await.map_err(request_error)?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::Status {
            url: url.to_owned(),
            status,
        });
    }
    let too_large = || FetchError::TooLarge {
        url: url.to_owned(),
        limit,
    };
    let announced = response.content_length().unwrap_or(0);
    if usize::try_from(announced).map_or(true, |length| length > limit) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(request_error)? {
        if body.len().saturating_add(chunk.len()) > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok((response.headers().clone(), body))
}
