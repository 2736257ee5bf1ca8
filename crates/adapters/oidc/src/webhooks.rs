//! Posting to URLs an account chose (its billing notice endpoint), through the same guard
//! as every other fetch of a tenant's URL: no redirect followed, no proxy, public
//! addresses only unless the deployment allows private ones.

use std::time::Duration;

use async_trait::async_trait;
use d2_billing::{PostError, WebhookPoster};
use reqwest::Url;

use crate::public_address::OutboundFetch;

/// How long one delivery may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Posts webhooks with the reach of an [`OutboundFetch`].
#[derive(Clone)]
pub struct WebhookPosts {
    fetch: OutboundFetch,
    client: reqwest::Client,
}

impl std::fmt::Debug for WebhookPosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookPosts")
            .field("reach", &self.fetch.reach())
            .finish_non_exhaustive()
    }
}

impl WebhookPosts {
    pub fn new(fetch: OutboundFetch) -> Result<Self, reqwest::Error> {
        let client = fetch.client(TIMEOUT)?;
        Ok(Self { fetch, client })
    }
}

#[async_trait]
impl WebhookPoster for WebhookPosts {
    async fn post(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: Vec<u8>,
    ) -> Result<u16, PostError> {
        let url = Url::parse(url).map_err(|e| PostError::Refused(format!("not a URL: {e}")))?;
        if !self.fetch.allows(&url) {
            return Err(PostError::Refused(
                "the endpoint names an address inside the server's network".into(),
            ));
        }
        let mut request = self.client.post(url).body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request
            .send()
            .await
            .map_err(|e| PostError::Failed(without_url(&e)))?;
        Ok(response.status().as_u16())
    }
}

/// A request error's description without its URL (whose query might carry a token).
fn without_url(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    match std::error::Error::source(error) {
        Some(source) => format!("{kind}: {source}"),
        None => kind.to_owned(),
    }
}
