//! The [`Mailer`] over SMTP: one message per `send`, through a pool of connections.

use std::error::Error;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use d2_kernel::{Email, MailError, Mailer};
use lettre::message::header::{self, ContentType};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::AsyncSmtpTransportBuilder;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use secrecy::ExposeSecret as _;

use crate::settings::{SmtpSettings, redact_url};

/// Why the mailer could not be created. Never contains the password.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// A setting that cannot work; `key` names it (`smtp.url`, `smtp.from`, ...).
    InvalidSetting { key: &'static str, reason: String },
    /// [`SmtpMailer::new`] was called outside a tokio runtime (the connection pool runs a
    /// task on it).
    NoRuntime(tokio::runtime::TryCurrentError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::InvalidSetting { key, reason } => {
                write!(f, "invalid setting `{key}`: {reason}")
            }
            StartError::NoRuntime(_) => {
                f.write_str("the SMTP mailer must be created inside a tokio runtime")
            }
        }
    }
}

impl Error for StartError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            StartError::InvalidSetting { .. } => None,
            StartError::NoRuntime(error) => Some(error),
        }
    }
}

fn invalid(key: &'static str, reason: impl Into<String>) -> StartError {
    StartError::InvalidSetting {
        key,
        reason: reason.into(),
    }
}

/// Sends [`Email`]s through an SMTP server. Connections are opened on demand and kept for
/// the next messages (up to 10, closed after a minute idle). Cheap to share behind an `Arc`.
pub struct SmtpMailer {
    /// The pool of connections; replaced by a fresh one after a send timed out.
    transport: Mutex<AsyncSmtpTransport<Tokio1Executor>>,
    /// What makes a fresh pool.
    builder: AsyncSmtpTransportBuilder,
    /// The whole of one send.
    timeout: Duration,
    from: Mailbox,
    /// The settings, for `Debug` (which never prints the password).
    settings: SmtpSettings,
}

impl SmtpMailer {
    /// Checks the settings and prepares the connection pool; connects only on the first
    /// `send`. Must be called inside a tokio runtime.
    pub fn new(settings: SmtpSettings) -> Result<Self, StartError> {
        let from: Mailbox = settings.from.parse().map_err(|e| {
            invalid(
                "smtp.from",
                format!(
                    "{:?} is not a mailbox such as `D2 <no-reply@example.com>`: {e}",
                    settings.from
                ),
            )
        })?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(&settings.url)
            // lettre's reasons name the part of the URL at fault, never its password.
            .map_err(|e| {
                invalid(
                    "smtp.url",
                    format!(
                        "expected smtp://host[:port][?tls=required|opportunistic] or \
                         smtps://host[:port] ({})",
                        smtp_url_reason(&e)
                    ),
                )
            })?;
        if let Some(query) = settings.url.split_once('?').map(|(_, query)| query) {
            // lettre reads `tls` and ignores anything else: a misspelt key would silently
            // mean no TLS.
            let unknown = query
                .split('&')
                .map(|pair| pair.split_once('=').map_or(pair, |(key, _)| key))
                .find(|key| *key != "tls");
            if let Some(key) = unknown {
                return Err(invalid(
                    "smtp.url",
                    format!("unknown parameter `{key}` (only `tls` is read)"),
                ));
            }
        }
        let username = settings.username.as_deref().filter(|u| !u.is_empty());
        let password = settings
            .password
            .as_ref()
            .map(|p| p.expose_secret())
            .filter(|p| !p.is_empty());
        match (username, password) {
            (Some(username), Some(password)) => {
                builder =
                    builder.credentials(Credentials::new(username.to_owned(), password.to_owned()));
            }
            (Some(_), None) => return Err(invalid("smtp.password", "required with smtp.username")),
            (None, Some(_)) => return Err(invalid("smtp.username", "required with smtp.password")),
            (None, None) => {}
        }
        if settings.timeout_seconds == 0 {
            return Err(invalid("smtp.timeout_seconds", "must be at least 1"));
        }
        let timeout = Duration::from_secs(settings.timeout_seconds);
        // `build` spawns the pool's cleaning task, which panics outside a runtime.
        tokio::runtime::Handle::try_current().map_err(StartError::NoRuntime)?;
        // lettre's timeout bounds connecting only; `send` bounds the rest.
        let builder = builder.timeout(Some(timeout));
        Ok(Self {
            transport: Mutex::new(builder.clone().build()),
            builder,
            timeout,
            from,
            settings,
        })
    }

    /// The message for `email`: plain text, or plain text and HTML as alternatives; UTF-8.
    fn message(&self, email: &Email) -> Result<Message, MailError> {
        let to: Mailbox = email.to.parse().map_err(|e| {
            MailError::Refused(format!(
                "the recipient {:?} is not a mailbox: {e}",
                email.to
            ))
        })?;
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject.as_str())
            .message_id(Some(format!(
                "<{}@{}>",
                uuid::Uuid::new_v4().simple(),
                self.from.email.domain()
            )));
        let built = match &email.html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                email.text.clone(),
                html.clone(),
            )),
            // Not `singlepart`, which ends the body with a blank line meant for a multipart.
            // The end of the data (CRLF . CRLF) ends the last line: the text's own line end
            // would arrive as a blank line.
            None => builder
                .header(header::MIME_VERSION_1_0)
                .header(ContentType::TEXT_PLAIN)
                .body(last_line_end_removed(&email.text).to_owned()),
        };
        // lettre's reasons name a header or an address, never the body.
        built.map_err(|e| MailError::Refused(format!("the message cannot be built: {e}")))
    }
}

fn last_line_end_removed(text: &str) -> &str {
    text.strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text)
}

/// Why lettre refused the URL, from its error and the errors under it.
fn smtp_url_reason(error: &lettre::transport::smtp::Error) -> String {
    let mut reason = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !reason.contains(&text) {
            reason = format!("{reason}: {text}");
        }
        source = cause.source();
    }
    reason
}

/// A failed send as the port's error: 5xx is for good, everything else (4xx, no connection,
/// a timeout, TLS, a garbled answer) may pass. The texts come from the server's answer or the
/// network, never from the message.
fn mail_error(error: &lettre::transport::smtp::Error) -> MailError {
    if error.is_permanent() {
        MailError::Refused(error.to_string())
    } else if error.is_timeout() {
        MailError::Unavailable(format!("timed out: {error}"))
    } else {
        MailError::Unavailable(error.to_string())
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        let message = self.message(email)?;
        // A clone shares the pool; the lock is never held across an await.
        let transport = self
            .transport
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match tokio::time::timeout(self.timeout, transport.send(message)).await {
            Ok(sent) => sent.map(drop).map_err(|e| mail_error(&e)),
            Err(_) => {
                // The connection given up on goes back to its pool in the middle of a
                // command, where the next send would read the answers meant for this one.
                // A fresh pool takes over; the old one closes its connections once the
                // sends still using it are done.
                *self
                    .transport
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = self.builder.clone().build();
                Err(MailError::Unavailable(format!(
                    "no answer within {} s",
                    self.timeout.as_secs()
                )))
            }
        }
    }
}

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("url", &redact_url(&self.settings.url))
            .field("from", &self.settings.from)
            .field("username", &self.settings.username)
            .field(
                "password",
                &self.settings.password.as_ref().map(|_| "<redacted>"),
            )
            .field("timeout_seconds", &self.settings.timeout_seconds)
            .finish_non_exhaustive()
    }
}
