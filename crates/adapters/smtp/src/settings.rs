//! What the adapter needs to know: where the server is, who the mail is from, who we are.

use std::fmt;

use secrecy::SecretString;
use serde::Deserialize;

/// How to reach the SMTP server; the `[smtp]` table of the configuration.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    /// The server: `smtp://host:port` (plain, port 25 by default),
    /// `smtp://host:port?tls=required` (STARTTLS, or fail; port 587 by default),
    /// `smtp://host:port?tls=opportunistic` (STARTTLS when offered) or `smtps://host:port`
    /// (TLS from the first byte; port 465 by default). A path names the client in `EHLO`
    /// (`smtp://host/mail.example.com`); without one the client is `[127.0.0.1]`. The URL may
    /// carry `user:password@`, which `username` and `password` override.
    pub url: String,
    /// The sender mailbox of every message, e.g. `D2 <no-reply@example.com>`.
    pub from: String,
    /// Sent with `password` as SMTP AUTH when both are set (blank counts as unset).
    #[serde(default)]
    pub username: Option<String>,
    /// Never printed.
    #[serde(default)]
    pub password: Option<SecretString>,
    /// One send at most this long: connecting, the conversation, the message. A send that
    /// runs out of time is `Unavailable`, and its connection is not used again.
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u64,
}

fn default_timeout_seconds() -> u64 {
    SmtpSettings::DEFAULT_TIMEOUT_SECONDS
}

impl SmtpSettings {
    /// The default of `timeout_seconds`.
    pub const DEFAULT_TIMEOUT_SECONDS: u64 = 10;

    /// Settings without credentials and with [`Self::DEFAULT_TIMEOUT_SECONDS`].
    pub fn new(url: impl Into<String>, from: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            from: from.into(),
            username: None,
            password: None,
            timeout_seconds: Self::DEFAULT_TIMEOUT_SECONDS,
        }
    }
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("url", &redact_url(&self.url))
            .field("from", &self.from)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout_seconds", &self.timeout_seconds)
            .finish()
    }
}

/// The URL with the password of its user information, if any, replaced.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // The last `@` ends the user information: a password may hold an unencoded `@`.
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:<redacted>@{host}{tail}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password() {
        for (url, redacted) in [
            ("smtp://127.0.0.1:2525", "smtp://127.0.0.1:2525"),
            ("smtps://mail.example.com", "smtps://mail.example.com"),
            (
                "smtp://user:hunter2@mail.example.com:587?tls=required",
                "smtp://user:<redacted>@mail.example.com:587?tls=required",
            ),
            (
                "smtps://user:hun@ter2@mail.example.com/ehlo",
                "smtps://user:<redacted>@mail.example.com/ehlo",
            ),
            (
                "smtp://user@mail.example.com",
                "smtp://user@mail.example.com",
            ),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), redacted);
        }
    }

    #[test]
    fn deserializes_with_a_default_timeout() {
        let settings: SmtpSettings = serde_json::from_value(serde_json::json!({
            "url": "smtp://127.0.0.1:2525",
            "from": "D2 <no-reply@example.com>",
        }))
        .unwrap();
        assert_eq!(
            settings.timeout_seconds,
            SmtpSettings::DEFAULT_TIMEOUT_SECONDS
        );
        assert!(settings.username.is_none() && settings.password.is_none());

        let unknown = serde_json::from_value::<SmtpSettings>(serde_json::json!({
            "url": "smtp://127.0.0.1:2525",
            "from": "D2 <no-reply@example.com>",
            "pasword": "typo",
        }));
        assert!(unknown.is_err());
    }

    #[test]
    fn debug_hides_the_password() {
        let mut settings = SmtpSettings::new(
            "smtp://mailer:urlsecret@mail.example.com:587?tls=required",
            "D2 <no-reply@example.com>",
        );
        settings.username = Some("mailer".to_owned());
        settings.password = Some("hunter2".into());
        let printed = format!("{settings:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("urlsecret"), "{printed}");
        assert!(printed.contains("mailer"), "{printed}");
    }
}
