use std::time::Duration;

use reqwest::Url;
use secrecy::SecretString;
use serde::Deserialize;

/// The `[auth.idp]` section: which provider's tokens are accepted, for whom, and how its
/// keys are fetched. Environment variables: `D2__AUTH__IDP__ISSUER` and so on.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    /// The provider's issuer URL, compared exactly (a trailing `/` included) with the
    /// discovery document's `issuer` and every token's `iss`.
    pub issuer: String,
    /// The value a token's `aud` (a string or an array) must contain.
    pub audience: String,
    /// Where the provider publishes its JWK set. Unset: the `jwks_uri` of the discovery
    /// document at `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// The claim holding the person's email address.
    #[serde(default = "OidcSettings::default_email_claim")]
    pub email_claim: String,
    /// The claim holding the person's display name.
    #[serde(default = "OidcSettings::default_name_claim")]
    pub name_claim: String,
    /// The claim that caps the role of the person's sessions. Unset: no cap.
    #[serde(default)]
    pub role_claim: Option<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    #[serde(default = "OidcSettings::default_leeway_seconds")]
    pub leeway_seconds: u64,
    /// Period of the background refresh of the key set.
    #[serde(default = "OidcSettings::default_refresh_seconds")]
    pub refresh_seconds: u64,
    /// At most one fetch per this interval is triggered by tokens naming an unknown key
    /// (or arriving while no key set was ever fetched).
    #[serde(default = "OidcSettings::default_refetch_min_seconds")]
    pub refetch_min_seconds: u64,
    /// Whole-request timeout of a discovery or key-set fetch.
    #[serde(default = "OidcSettings::default_timeout_seconds")]
    pub timeout_seconds: u64,
    /// This server's client at the provider, for signing people in in their browser (the
    /// consent pages of the authorization code flow): its `client_id`, an ID token's
    /// audience. Unset: no browser sign-in, and `/oauth/{account_id}/authorize` says so.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Its secret (`client_secret_basic` at the provider's token endpoint). Unset with a
    /// `client_id`: a public client, PKCE alone.
    #[serde(default)]
    pub client_secret: Option<SecretString>,
}

/// A setting out of range; names its key (`auth.idp.…`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting `auth.idp.{key}`: {reason}")]
pub struct SettingsError {
    /// The key within `auth.idp`, e.g. `issuer`.
    pub key: &'static str,
    pub reason: &'static str,
}

impl OidcSettings {
    pub const DEFAULT_EMAIL_CLAIM: &'static str = "email";
    pub const DEFAULT_NAME_CLAIM: &'static str = "name";
    pub const DEFAULT_LEEWAY_SECONDS: u64 = 30;
    pub const DEFAULT_REFRESH_SECONDS: u64 = 300;
    pub const DEFAULT_REFETCH_MIN_SECONDS: u64 = 10;
    pub const DEFAULT_TIMEOUT_SECONDS: u64 = 5;
    /// The largest leeway accepted: more would make `exp` meaningless.
    pub const MAX_LEEWAY_SECONDS: u64 = 600;
    /// The longest interval accepted for the refresh, the refetch limit and the timeout.
    pub const MAX_INTERVAL_SECONDS: u64 = 86_400;

    /// Settings for `issuer` and `audience`, everything else at its default.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            jwks_url: None,
            email_claim: Self::default_email_claim(),
            name_claim: Self::default_name_claim(),
            role_claim: None,
            leeway_seconds: Self::DEFAULT_LEEWAY_SECONDS,
            refresh_seconds: Self::DEFAULT_REFRESH_SECONDS,
            refetch_min_seconds: Self::DEFAULT_REFETCH_MIN_SECONDS,
            timeout_seconds: Self::DEFAULT_TIMEOUT_SECONDS,
            client_id: None,
            client_secret: None,
        }
    }

    fn default_email_claim() -> String {
        Self::DEFAULT_EMAIL_CLAIM.to_owned()
    }

    fn default_name_claim() -> String {
        Self::DEFAULT_NAME_CLAIM.to_owned()
    }

    fn default_leeway_seconds() -> u64 {
        Self::DEFAULT_LEEWAY_SECONDS
    }

    fn default_refresh_seconds() -> u64 {
        Self::DEFAULT_REFRESH_SECONDS
    }

    fn default_refetch_min_seconds() -> u64 {
        Self::DEFAULT_REFETCH_MIN_SECONDS
    }

    fn default_timeout_seconds() -> u64 {
        Self::DEFAULT_TIMEOUT_SECONDS
    }

    /// Checks every setting; the error names the first key out of range.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |key, reason| Err(SettingsError { key, reason });
        let Some(issuer) = http_url(&self.issuer) else {
            return invalid("issuer", "must be an http(s) URL");
        };
        if issuer.query().is_some() || issuer.fragment().is_some() {
            return invalid("issuer", "must have no query or fragment");
        }
        if self.audience.trim().is_empty() {
            return invalid("audience", "must not be empty");
        }
        if let Some(jwks_url) = &self.jwks_url {
            let Some(url) = http_url(jwks_url) else {
                return invalid("jwks_url", "must be an http(s) URL");
            };
            if issuer.scheme() == "https" && url.scheme() != "https" {
                return invalid("jwks_url", "must be https when the issuer is");
            }
        }
        if self.email_claim.is_empty() {
            return invalid("email_claim", "must not be empty");
        }
        if self.name_claim.is_empty() {
            return invalid("name_claim", "must not be empty");
        }
        if self.role_claim.as_deref() == Some("") {
            return invalid(
                "role_claim",
                "must not be empty (leave it unset for no cap)",
            );
        }
        if self
            .client_id
            .as_deref()
            .is_some_and(|id| id.trim().is_empty())
        {
            return invalid(
                "client_id",
                "must not be empty (leave it unset for no browser sign-in)",
            );
        }
        if self.client_secret.is_some() && self.client_id.is_none() {
            return invalid("client_secret", "needs a client_id");
        }
        if self.leeway_seconds > Self::MAX_LEEWAY_SECONDS {
            return invalid("leeway_seconds", "must be at most 600");
        }
        let intervals = [
            ("refresh_seconds", self.refresh_seconds),
            ("refetch_min_seconds", self.refetch_min_seconds),
            ("timeout_seconds", self.timeout_seconds),
        ];
        for (key, seconds) in intervals {
            if seconds == 0 {
                return invalid(key, "must be at least 1");
            }
            if seconds > Self::MAX_INTERVAL_SECONDS {
                return invalid(key, "must be at most 86400 (a day)");
            }
        }
        Ok(())
    }

    /// Where the discovery document is: `{issuer}/.well-known/openid-configuration`, a
    /// trailing `/` of the issuer dropped first (OpenID Connect Discovery, section 4).
    pub(crate) fn discovery_url(&self) -> String {
        format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        )
    }

    pub(crate) fn issuer_is_https(&self) -> bool {
        http_url(&self.issuer).is_some_and(|url| url.scheme() == "https")
    }

    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }

    pub(crate) fn refresh_interval(&self) -> Duration {
        Duration::from_secs(self.refresh_seconds)
    }
}

/// `text` as an absolute http(s) URL with a host.
pub(crate) fn http_url(text: &str) -> Option<Url> {
    let url = Url::parse(text).ok()?;
    let scheme_ok = matches!(url.scheme(), "http" | "https");
    (scheme_ok && url.host_str().is_some_and(|host| !host.is_empty())).then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> OidcSettings {
        OidcSettings::new("https://idp.example.com", "d2")
    }

    #[test]
    fn defaults_apply_to_the_keys_left_out() {
        let settings: OidcSettings = serde_json::from_value(serde_json::json!({
            "issuer": "https://idp.example.com",
            "audience": "d2",
        }))
        .unwrap();
        // Compared as printed: the secret, were there one, prints redacted.
        assert_eq!(format!("{settings:?}"), format!("{:?}", valid()));
        assert_eq!(settings.email_claim, "email");
        assert_eq!(settings.name_claim, "name");
        assert_eq!(settings.role_claim, None);
        assert_eq!(settings.leeway_seconds, 30);
        assert_eq!(settings.refresh_seconds, 300);
        assert_eq!(settings.refetch_min_seconds, 10);
        assert_eq!(settings.timeout_seconds, 5);
        assert_eq!(settings.validate(), Ok(()));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let result = serde_json::from_value::<OidcSettings>(serde_json::json!({
            "issuer": "https://idp.example.com",
            "audience": "d2",
            "audiance": "d2",
        }));
        assert!(result.is_err());
    }

    #[test]
    fn validation_names_the_key() {
        type Change = fn(&mut OidcSettings);
        let cases: [(Change, &str); 12] = [
            (|s| s.issuer = "idp.example.com".into(), "issuer"),
            (|s| s.issuer = "ftp://idp.example.com".into(), "issuer"),
            (
                |s| s.issuer = "https://idp.example.com/?a=b".into(),
                "issuer",
            ),
            (|s| s.audience = " ".into(), "audience"),
            (|s| s.jwks_url = Some("/keys".into()), "jwks_url"),
            (
                |s| s.jwks_url = Some("http://idp.example.com/keys".into()),
                "jwks_url",
            ),
            (|s| s.email_claim = String::new(), "email_claim"),
            (|s| s.role_claim = Some(String::new()), "role_claim"),
            (|s| s.leeway_seconds = 601, "leeway_seconds"),
            (|s| s.refresh_seconds = 0, "refresh_seconds"),
            (|s| s.refetch_min_seconds = 0, "refetch_min_seconds"),
            (|s| s.timeout_seconds = 86_401, "timeout_seconds"),
        ];
        for (change, key) in cases {
            let mut settings = valid();
            change(&mut settings);
            let error = settings.validate().unwrap_err();
            assert_eq!(error.key, key, "{settings:?}");
            assert!(
                error
                    .to_string()
                    .starts_with(&format!("invalid setting `auth.idp.{key}`")),
                "{error}"
            );
        }
        let mut local = OidcSettings::new("http://127.0.0.1:8080", "d2");
        local.jwks_url = Some("http://127.0.0.1:8080/jwks".into());
        assert_eq!(local.validate(), Ok(()));
    }

    #[test]
    fn discovery_is_under_the_issuer() {
        assert_eq!(
            OidcSettings::new("https://idp.example.com/realms/d2/", "d2").discovery_url(),
            "https://idp.example.com/realms/d2/.well-known/openid-configuration"
        );
    }
}
