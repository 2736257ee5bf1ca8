//! What the adapter needs to know: where the server is, which database, who we are.

use std::fmt;
use std::time::Duration;

/// How to reach ClickHouse.
#[derive(Clone)]
pub struct ClickHouseSettings {
    /// The HTTP interface, e.g. `http://127.0.0.1:8123` (`https://` works too).
    pub url: String,
    /// The database holding the `events` table: 1-64 ASCII letters, digits or `_`.
    pub database: String,
    /// Sent as `X-ClickHouse-User` when set.
    pub user: Option<String>,
    /// Sent as `X-ClickHouse-Key` when set. Never printed.
    pub password: Option<String>,
    /// The whole of one request (connect, send, answer). Reads also pass it to the server as
    /// `max_execution_time`, so a query the client gave up on does not run on.
    pub timeout: Duration,
}

impl ClickHouseSettings {
    /// The default timeout of [`ClickHouseSettings::new`].
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// Settings without credentials and with [`Self::DEFAULT_TIMEOUT`].
    pub fn new(url: impl Into<String>, database: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            database: database.into(),
            user: None,
            password: None,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

impl fmt::Debug for ClickHouseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseSettings")
            .field("url", &redact_url(&self.url))
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The URL without a password in its user information.
pub(crate) fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Only fails for URLs that cannot carry a password, which this one does.
            let _ = parsed.set_password(Some("redacted"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<not a URL>".to_owned(),
    }
}

/// A database name that is safe to put between backticks in SQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DatabaseName(String);

impl DatabaseName {
    pub(crate) fn parse(name: &str) -> Option<Self> {
        let valid = (1..=64).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        valid.then(|| Self(name.to_owned()))
    }

    /// The name itself (safe inside single quotes too).
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The name quoted for SQL.
    pub(crate) fn quoted(&self) -> String {
        format!("`{}`", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_plain_identifiers() {
        assert_eq!(
            DatabaseName::parse("d2_analytics").map(|n| n.quoted()),
            Some("`d2_analytics`".to_owned())
        );
        for bad in ["", "a-b", "a`b", "a b", "é", &"x".repeat(65)] {
            assert_eq!(DatabaseName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let mut settings = ClickHouseSettings::new("http://u:urlsecret@h:8123", "d2");
        settings.password = Some("hunter2".into());
        let printed = format!("{settings:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("urlsecret"), "{printed}");
    }
}
