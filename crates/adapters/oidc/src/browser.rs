//! Browser sign-in at the identity provider (OpenID Connect Core §3.1, with PKCE): this
//! server sends the person to the provider's authorization endpoint and redeems the code
//! it comes back with at the provider's token endpoint, then verifies the ID token with
//! the same cached keys as every sign-in token. The same verification makes a person's
//! token from the provider a token exchange's subject ([`PersonTokens`]).

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use d2_kernel::ErrorChain;
use d2_members::IdentityProvider as _;
use d2_oauth::{BrowserSignIn, PersonTokens, SignInError, SignInRequest, SignedInPerson};
use ring::digest::{SHA256, digest};
use secrecy::ExposeSecret as _;
use serde::Deserialize;

use crate::claims::verified_id_token;
use crate::fetch::{self, SignInEndpoints};
use crate::provider::OidcProvider;

/// What the provider's token endpoint answers that matters here.
#[derive(Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
}

impl OidcProvider {
    /// Whether this server has a client at the provider (`auth.idp.client_id`).
    pub fn browser_sign_in_enabled(&self) -> bool {
        self.inner.settings.client_id.is_some()
    }

    /// The endpoints, discovered once and then kept.
    async fn sign_in_endpoints(&self) -> Result<SignInEndpoints, SignInError> {
        let mut endpoints = self.endpoints.lock().await;
        if let Some(known) = endpoints.as_ref() {
            return Ok(known.clone());
        }
        let found = fetch::sign_in_endpoints(&self.inner.client, &self.inner.settings)
            .await
            .map_err(|error| SignInError::Unavailable(ErrorChain(&error).to_string()))?;
        *endpoints = Some(found.clone());
        Ok(found)
    }

    fn client_id(&self) -> Result<&str, SignInError> {
        self.inner
            .settings
            .client_id
            .as_deref()
            .ok_or_else(|| SignInError::Unavailable("`auth.idp.client_id` is not set".into()))
    }
}

#[async_trait]
impl BrowserSignIn for OidcProvider {
    async fn authorization_url(&self, request: &SignInRequest<'_>) -> Result<String, SignInError> {
        let client_id = self.client_id()?;
        let mut url = self.sign_in_endpoints().await?.authorization;
        let challenge = URL_SAFE_NO_PAD.encode(digest(&SHA256, request.code_verifier.as_bytes()));
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", request.redirect_uri)
            .append_pair("scope", "openid email profile")
            .append_pair("state", request.state)
            .append_pair("nonce", request.nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(url.into())
    }

    async fn redeem(
        &self,
        code: &str,
        request: &SignInRequest<'_>,
    ) -> Result<SignedInPerson, SignInError> {
        let client_id = self.client_id()?;
        let token_url = self.sign_in_endpoints().await?.token;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", request.redirect_uri),
            ("code_verifier", request.code_verifier),
        ];
        let mut post = self.inner.client.post(token_url.clone());
        match self.inner.settings.client_secret.as_ref() {
            Some(secret) => post = post.basic_auth(client_id, Some(secret.expose_secret())),
            None => form.push(("client_id", client_id)),
        }
        let body = fetch::body_of(post.form(&form), token_url.as_str())
            .await
            .map_err(|error| match error {
                // The provider refused the code (400 invalid_grant and the like).
                fetch::FetchError::Status { status, .. } if status.is_client_error() => {
                    SignInError::Refused(format!("the provider refused the code ({status})"))
                }
                other => SignInError::Unavailable(ErrorChain(&other).to_string()),
            })?;
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|_| SignInError::Refused("the provider's answer is not JSON".into()))?;
        let id_token = answer
            .id_token
            .ok_or_else(|| SignInError::Refused("the provider answered no ID token".into()))?;
        let payload = self
            .inner
            .verified_payload(&id_token)
            .await
            .map_err(refusal)?;
        let (verified, auth_time) = verified_id_token(
            &payload,
            &self.inner.settings,
            client_id,
            request.nonce,
            self.inner.clock.now(),
        )
        .map_err(refusal)?;
        let identity = verified.identity;
        Ok(SignedInPerson {
            subject: identity.subject,
            email: identity.email,
            email_verified: identity.email_verified,
            name: identity.display_name,
            auth_time,
        })
    }
}

#[async_trait]
impl PersonTokens for OidcProvider {
    async fn person(&self, token: &str) -> Result<SignedInPerson, SignInError> {
        let identity = self.verify(token).await.map_err(refusal)?.identity;
        Ok(SignedInPerson {
            subject: identity.subject,
            email: identity.email,
            email_verified: identity.email_verified,
            name: identity.display_name,
            auth_time: self.inner.clock.now(),
        })
    }
}

fn refusal(error: d2_members::IdentityError) -> SignInError {
    match error {
        d2_members::IdentityError::Unavailable(reason) => SignInError::Unavailable(reason),
        other => SignInError::Refused(other.to_string()),
    }
}
