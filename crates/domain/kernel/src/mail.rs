//! Outgoing mail: the port a domain sends a message through (invitations today), and what a
//! failure to send means for a task that retries it.

use async_trait::async_trait;

/// One message to one recipient: plain text, and HTML when the sender has it.
#[derive(Clone, PartialEq, Eq)]
pub struct Email {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

impl std::fmt::Debug for Email {
    // The body may hold a one-time link: it never goes to a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email")
            .field("to", &self.to)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// Why a message was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// Worth trying again later: the server could not be reached, or answered with a
    /// transient (4xx) refusal.
    #[error("the mail server is unavailable: {0}")]
    Unavailable(String),
    /// Trying again cannot help: the server refused the message or its recipient for good
    /// (5xx), or the message cannot be built (an address that does not parse).
    #[error("the mail server refused the message: {0}")]
    Refused(String),
}

/// Sends mail. Implemented by the SMTP adapter; `None` where the app has no mail server
/// configured (the domain then answers what it would have sent, once, to its caller).
#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    async fn send(&self, email: &Email) -> Result<(), MailError>;
}
