//! Principals: the account's own end users (seed 003's resource owners), on whose behalf
//! agents act. Not the people who operate the account (those are members). What an admin
//! writes is a [`PrincipalSpec`], checked once by [`PrincipalSpec::validate`]; its
//! `attributes` are what access rules read as `principal.attributes.<key>`.

use chrono::{DateTime, Utc};
use d2_kernel::AccountId;
use serde_json::{Map, Value};

use crate::error::PrincipalError;

d2_kernel::typed_id!(
    /// A principal of an account.
    PrincipalId
);

/// The bounds of a principal.
pub mod limits {
    /// Characters of a username.
    pub const USERNAME_CHARS: usize = 200;
    /// Characters of an email address.
    pub const EMAIL_CHARS: usize = 254;
    /// Characters of a display name.
    pub const DISPLAY_NAME_CHARS: usize = 200;
    /// Keys of `attributes`.
    pub const ATTRIBUTE_KEYS: usize = 64;
    /// Characters of one key of `attributes`.
    pub const ATTRIBUTE_KEY_CHARS: usize = 64;
    /// Bytes of `attributes` serialized as JSON.
    pub const ATTRIBUTE_BYTES: usize = 16 * 1024;
}

/// What an admin creates or replaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrincipalSpec {
    /// Unique in the account (exactly, case included), 1 to 200 characters.
    pub username: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    /// A JSON object that access rules read.
    pub attributes: Map<String, Value>,
    /// An inactive principal is kept but gets no tokens (the token endpoint's rule).
    pub active: bool,
}

impl PrincipalSpec {
    /// The spec with its text trimmed, or the first rule it breaks.
    pub fn validate(mut self) -> Result<Self, PrincipalError> {
        self.username = self.username.trim().to_owned();
        let chars = self.username.chars().count();
        if chars == 0 || chars > limits::USERNAME_CHARS {
            return Err(PrincipalError::invalid(format!(
                "`username` must be 1 to {} characters",
                limits::USERNAME_CHARS
            )));
        }
        if self.username.chars().any(char::is_control) {
            return Err(PrincipalError::invalid(
                "`username` must not hold control characters",
            ));
        }
        self.email = trimmed(self.email);
        if let Some(email) = &self.email
            && !is_email(email)
        {
            return Err(PrincipalError::invalid(format!(
                "`email` must look like name@domain (at most {} characters, no spaces)",
                limits::EMAIL_CHARS
            )));
        }
        self.display_name = trimmed(self.display_name);
        if self.display_name.as_ref().is_some_and(|name| {
            name.chars().count() > limits::DISPLAY_NAME_CHARS || name.chars().any(char::is_control)
        }) {
            return Err(PrincipalError::invalid(format!(
                "`display_name` must be at most {} characters, without control characters",
                limits::DISPLAY_NAME_CHARS
            )));
        }
        check_attributes(&self.attributes)?;
        Ok(self)
    }
}

fn trimmed(text: Option<String>) -> Option<String> {
    text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
}

/// Loosely: one `@` between a non-empty name and a domain holding a dot, no spaces or
/// control characters, at most 254 characters. Deliverability is not D2's concern here.
fn is_email(email: &str) -> bool {
    let Some((name, domain)) = email.split_once('@') else {
        return false;
    };
    email.len() <= limits::EMAIL_CHARS
        && !name.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The attributes' bounds: keys, key length, serialized size.
pub(crate) fn check_attributes(attributes: &Map<String, Value>) -> Result<(), PrincipalError> {
    if attributes.len() > limits::ATTRIBUTE_KEYS {
        return Err(PrincipalError::invalid(format!(
            "`attributes` holds at most {} keys",
            limits::ATTRIBUTE_KEYS
        )));
    }
    if let Some(key) = attributes.keys().find(|key| {
        let chars = key.chars().count();
        chars == 0 || chars > limits::ATTRIBUTE_KEY_CHARS || key.chars().any(char::is_control)
    }) {
        return Err(PrincipalError::invalid(format!(
            "`attributes` key `{}` must be 1 to {} characters, without control characters",
            key.escape_debug(),
            limits::ATTRIBUTE_KEY_CHARS
        )));
    }
    let bytes = serde_json::to_vec(attributes)
        .map(|bytes| bytes.len())
        .unwrap_or(usize::MAX);
    if bytes > limits::ATTRIBUTE_BYTES {
        return Err(PrincipalError::invalid(format!(
            "`attributes` must be at most {} bytes as JSON ({bytes} sent)",
            limits::ATTRIBUTE_BYTES
        )));
    }
    Ok(())
}

/// A principal of an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub id: PrincipalId,
    pub account_id: AccountId,
    pub spec: PrincipalSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Principal {
    pub fn new(account_id: AccountId, spec: PrincipalSpec, now: DateTime<Utc>) -> Self {
        Self {
            id: PrincipalId::random(),
            account_id,
            spec,
            created_at: now,
            updated_at: now,
        }
    }
}
