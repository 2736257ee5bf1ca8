//! The HTTP client: one POST per statement, errors mapped to [`StoreError`].

use std::fmt;
use std::time::Duration;

use d2_kernel::StoreError;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::settings::{ClickHouseSettings, DatabaseName, redact_url};

/// The ClickHouse adapter: an [`AnalyticsSink`](d2_events::AnalyticsSink) and an
/// [`AnalyticsStore`](d2_events::AnalyticsStore) over the HTTP interface. Cheap to clone.
#[derive(Clone)]
pub struct ClickHouse {
    client: reqwest::Client,
    url: reqwest::Url,
    pub(crate) database: DatabaseName,
    user: Option<String>,
    has_password: bool,
    timeout: Duration,
}

impl fmt::Debug for ClickHouse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouse")
            .field("url", &redact_url(self.url.as_str()))
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.has_password.then_some("<redacted>"))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A result in ClickHouse's `JSON` format: the rows, and the `WITH TOTALS` row if asked.
#[derive(Debug, Deserialize)]
pub(crate) struct Answer<T> {
    pub data: Vec<T>,
    #[serde(default = "Option::default")] // not `default`: that would bound `T: Default`
    pub totals: Option<T>,
}

/// ClickHouse answered with an error status. Carries the error code and the first clause
/// of the message, never the statement or the rows sent.
#[derive(Debug)]
pub(crate) struct ServerError {
    operation: &'static str,
    status: u16,
    code: Option<u32>,
    summary: String,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ClickHouse refused {} (HTTP {}",
            self.operation, self.status
        )?;
        if let Some(code) = self.code {
            write!(f, ", Code: {code}")?;
        }
        write!(f, "): {}", self.summary)
    }
}

impl std::error::Error for ServerError {}

impl ServerError {
    /// Reads `Code: 62, e.displayText() = DB::Exception: Syntax error: failed at ...` (18.x)
    /// or `Code: 62. DB::Exception: Syntax error: ... (SYNTAX_ERROR) (version ...)` (current)
    /// down to `62` and `Syntax error` (plus `SYNTAX_ERROR` when named). The rest of the
    /// message may quote the statement or the rows, so it is left out.
    fn parse(operation: &'static str, status: u16, body: &str) -> Self {
        let code = body.find("Code: ").and_then(|at| {
            let digits: String = body
                .get(at + "Code: ".len()..)
                .unwrap_or_default()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        });
        let message = body
            .find("Exception: ")
            .and_then(|at| body.get(at + "Exception: ".len()..))
            .unwrap_or(body);
        let mut summary: String = message
            .chars()
            .take_while(|c| !matches!(c, ':' | '.' | ',' | '(' | '\n' | '\'' | '"'))
            .take(120)
            .collect::<String>()
            .trim()
            .to_owned();
        if let Some(name) = error_name(body) {
            summary = format!("{summary} ({name})");
        }
        Self {
            operation,
            status,
            code,
            summary,
        }
    }
}

/// The `(UPPER_CASE_NAME)` current servers put after the message.
fn error_name(body: &str) -> Option<&str> {
    body.match_indices('(').find_map(|(at, _)| {
        let rest = body.get(at + 1..)?;
        let end = rest.find(')')?;
        let name = rest.get(..end)?;
        let is_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        is_name.then_some(name)
    })
}

fn header(name: &'static str, value: &str, sensitive: bool) -> Result<HeaderValue, StoreError> {
    let mut value = HeaderValue::from_str(value).map_err(|_| {
        StoreError::internal(format!(
            "the ClickHouse {name} is not a valid HTTP header value"
        ))
    })?;
    value.set_sensitive(sensitive);
    Ok(value)
}

impl ClickHouse {
    /// Checks the settings and builds the HTTP client. Does not contact the server.
    pub fn new(settings: ClickHouseSettings) -> Result<Self, StoreError> {
        let url = reqwest::Url::parse(&settings.url)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https"))
            .ok_or_else(|| StoreError::internal("the ClickHouse URL must be an http(s) URL"))?;
        let database = DatabaseName::parse(&settings.database).ok_or_else(|| {
            StoreError::internal(
                "the ClickHouse database name must be 1-64 ASCII letters, digits or `_`",
            )
        })?;
        let mut headers = HeaderMap::new();
        if let Some(user) = &settings.user {
            headers.insert(
                HeaderName::from_static("x-clickhouse-user"),
                header("user", user, false)?,
            );
        }
        if let Some(password) = &settings.password {
            headers.insert(
                HeaderName::from_static("x-clickhouse-key"),
                header("password", password, true)?,
            );
        }
        // reqwest is built without a crypto provider; this fails only when one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .build()
            .map_err(|e| StoreError::internal(e.without_url()))?;
        Ok(Self {
            client,
            url,
            database,
            user: settings.user,
            has_password: settings.password.is_some(),
            timeout: settings.timeout,
        })
    }

    /// The qualified, quoted name of the table of events, one row each.
    pub(crate) fn rows_table(&self) -> String {
        format!("{}.`event_rows`", self.database.quoted())
    }

    /// The qualified, quoted name of the table of hourly counts (and export marks).
    pub(crate) fn counts_table(&self) -> String {
        format!("{}.`event_counts`", self.database.quoted())
    }

    /// Runs `INSERT ... FORMAT JSONEachRow` + `rows` rows as one block, so that the rows
    /// of one partition land in one part, committed whole or not at all.
    pub(crate) async fn insert(
        &self,
        operation: &'static str,
        body: Vec<u8>,
        rows: usize,
    ) -> Result<(), StoreError> {
        let block = rows.max(1_048_576).to_string();
        self.execute_with(
            operation,
            body,
            &[("max_insert_block_size", block.as_str())],
        )
        .await
    }

    /// Runs a statement that answers nothing (DDL, `INSERT ... FORMAT JSONEachRow` + rows).
    pub(crate) async fn execute(
        &self,
        operation: &'static str,
        body: impl Into<reqwest::Body>,
    ) -> Result<(), StoreError> {
        self.execute_with(operation, body, &[]).await
    }

    /// [`Self::execute`] with ClickHouse settings for this statement only.
    pub(crate) async fn execute_with(
        &self,
        operation: &'static str,
        body: impl Into<reqwest::Body>,
        settings: &[(&str, &str)],
    ) -> Result<(), StoreError> {
        let response = self.post(operation, body.into(), settings).await?;
        // Drain the answer so the connection goes back to the pool.
        response
            .bytes()
            .await
            .map_err(|e| transport(operation, e))?;
        Ok(())
    }

    /// Runs a query ending in `FORMAT JSON` and decodes its rows.
    pub(crate) async fn query<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        sql: String,
    ) -> Result<Answer<T>, StoreError> {
        let response = self.post(operation, sql.into(), &[]).await?;
        let body = response
            .bytes()
            .await
            .map_err(|e| transport(operation, e))?;
        serde_json::from_slice(&body).map_err(|e| {
            tracing::warn!(clickhouse.operation = operation, error = %e, "unexpected ClickHouse answer");
            StoreError::internal(e)
        })
    }

    async fn post(
        &self,
        operation: &'static str,
        body: reqwest::Body,
        settings: &[(&str, &str)],
    ) -> Result<reqwest::Response, StoreError> {
        let max_execution_time = self.timeout.as_secs().max(1).to_string();
        let response = self
            .client
            .post(self.url.clone())
            .query(&[
                // Buffer the answer, so a failure mid-query is an error status, not a
                // truncated 200.
                ("wait_end_of_query", "1"),
                ("output_format_json_quote_64bit_integers", "0"),
                ("max_execution_time", max_execution_time.as_str()),
            ])
            .query(settings)
            .body(body)
            .send()
            .await
            .map_err(|e| transport(operation, e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let error = ServerError::parse(operation, status.as_u16(), &text);
        tracing::warn!(
            clickhouse.operation = operation,
            http.status = status.as_u16(),
            clickhouse.code = error.code,
            error = %error,
            "ClickHouse request failed"
        );
        Err(StoreError::internal(error))
    }
}

/// A failure to talk to the server at all (refused, reset, timed out) is `Unavailable`.
fn transport(operation: &'static str, error: reqwest::Error) -> StoreError {
    let error = error.without_url();
    tracing::warn!(clickhouse.operation = operation, error = ?error, "ClickHouse unreachable");
    if error.is_builder() || error.is_decode() {
        StoreError::internal(error)
    } else {
        StoreError::Unavailable(Box::new(error))
    }
}

/// Numbers as ClickHouse may write them: as JSON numbers or, for 64-bit integers and
/// depending on the server's settings, as strings.
pub(crate) mod number {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw<T> {
        Number(T),
        Text(String),
    }

    fn parse<'de, D, T>(raw: Raw<T>) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: std::str::FromStr,
    {
        match raw {
            Raw::Number(n) => Ok(n),
            Raw::Text(text) => text
                .parse()
                .map_err(|_| D::Error::custom(format!("not a number: {text:?}"))),
        }
    }

    pub(crate) fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        parse::<D, u64>(Raw::deserialize(d)?)
    }

    pub(crate) fn i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        parse::<D, i64>(Raw::deserialize(d)?)
    }

    /// `null` (an empty aggregate) is zero.
    pub(crate) fn u64_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match Option::<Raw<u64>>::deserialize(d)? {
            Some(raw) => parse::<D, u64>(raw),
            None => Ok(0),
        }
    }

    pub(crate) fn f64_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        match Option::<Raw<f64>>::deserialize(d)? {
            Some(raw) => parse::<D, f64>(raw).map(|v| v.is_finite().then_some(v)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_keep_the_code_and_drop_the_statement() {
        let old = "Code: 62, e.displayText() = DB::Exception: Syntax error: failed at position 1: SELEC 'secret'. Expected one of: ..., e.what() = DB::Exception\n";
        let error = ServerError::parse("summary", 400, old);
        assert_eq!(error.code, Some(62));
        assert_eq!(
            error.to_string(),
            "ClickHouse refused summary (HTTP 400, Code: 62): Syntax error"
        );
        let new = "Code: 81. DB::Exception: Database nodb does not exist. (UNKNOWN_DATABASE) (version 24.8.1.1)\n";
        let error = ServerError::parse("top", 404, new);
        assert_eq!(
            error.to_string(),
            "ClickHouse refused top (HTTP 404, Code: 81): Database nodb does not exist (UNKNOWN_DATABASE)"
        );
        let error = ServerError::parse("write", 502, "Bad Gateway");
        assert_eq!(
            error.to_string(),
            "ClickHouse refused write (HTTP 502): Bad Gateway"
        );
    }
}
