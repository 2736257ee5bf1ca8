#![doc = include_str!("../README.md")]
#![deny(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::panic
)]

use std::time::Duration;

use async_trait::async_trait;
use d2_billing::{CheckoutSessions, ProviderUnavailable};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

/// How long one call to the provider may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The provider's API, called with a secret key.
pub struct StripeApi {
    client: reqwest::Client,
    base: url::Url,
    key: SecretString,
}

impl std::fmt::Debug for StripeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeApi")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// Why the adapter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    #[error("not an absolute http(s) URL: {0}")]
    Url(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

impl StripeApi {
    /// `base`: the API's origin (`https://api.stripe.com`, or a test's server).
    pub fn new(base: &str, key: SecretString) -> Result<Self, StripeError> {
        let base = url::Url::parse(base).map_err(|e| StripeError::Url(e.to_string()))?;
        if !matches!(base.scheme(), "https" | "http") || base.cannot_be_a_base() {
            return Err(StripeError::Url(base.to_string()));
        }
        // reqwest is built without a crypto provider: install ring (a no-op when one is).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { client, base, key })
    }
}

#[async_trait]
impl CheckoutSessions for StripeApi {
    async fn checkout_session(&self, id: &str) -> Result<Option<Value>, ProviderUnavailable> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ProviderUnavailable("the API URL cannot take a path".into()))?
            .pop_if_empty()
            .extend(["v1", "checkout", "sessions", id]);
        let response = self
            .client
            .get(url)
            .bearer_auth(self.key.expose_secret())
            .send()
            .await
            .map_err(|e| {
                ProviderUnavailable(if e.is_timeout() {
                    "the payment provider did not answer in time".into()
                } else {
                    "the payment provider could not be reached".into()
                })
            })?;
        match response.status().as_u16() {
            200 => response.json::<Value>().await.map(Some).map_err(|_| {
                ProviderUnavailable("the payment provider answered a body that is not JSON".into())
            }),
            404 => Ok(None),
            status => Err(ProviderUnavailable(format!(
                "the payment provider answered {status}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;

    #[tokio::test]
    async fn a_session_is_read_with_the_key_and_an_unknown_one_is_none() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v1/checkout/sessions/cs_test_1"))
            .and(header("authorization", "Bearer sk_test_key"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(serde_json::json!({"id": "cs_test_1"})),
            )
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/v1/checkout/sessions/cs_test_down"))
            .respond_with(ResponseTemplate::new(500))
            .mount(&server)
            .await;
        let api = StripeApi::new(&server.uri(), SecretString::from("sk_test_key")).unwrap();
        let session = api.checkout_session("cs_test_1").await.unwrap().unwrap();
        assert_eq!(session["id"], "cs_test_1");
        assert_eq!(api.checkout_session("cs_test_2").await.unwrap(), None);
        let down = api.checkout_session("cs_test_down").await.unwrap_err();
        assert!(down.0.contains("500"), "{down}");
        assert!(!down.0.contains("sk_test"), "the key is never told");
        let other = StripeApi::new(&server.uri(), SecretString::from("sk_test_other")).unwrap();
        assert_eq!(
            other.checkout_session("cs_test_1").await.unwrap(),
            None,
            "another key is not answered this session"
        );
    }

    #[test]
    fn the_base_must_be_an_http_url() {
        assert!(StripeApi::new("ftp://x", SecretString::from("k")).is_err());
        assert!(StripeApi::new("not a url", SecretString::from("k")).is_err());
    }
}
