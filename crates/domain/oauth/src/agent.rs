//! An agent: an OAuth client of its account's authorization server (seed 003 §5.1). What an
//! admin registers is an [`AgentSpec`], checked once by [`AgentSpec::validate`]; the
//! secrets that register, activate and authenticate it are secrets of the server's one
//! format, stored as keyed digests.

use chrono::{DateTime, Duration, Utc};
use d2_kernel::{AccountId, Secret, SecretDigest, SecretFormat, UserId};

use crate::error::AgentError;

d2_kernel::typed_id!(
    /// An agent. Its text is the agent's OAuth `client_id`.
    AgentId
);

/// The format of registration tokens: what an admin hands to whoever activates the agent.
#[derive(Debug)]
pub enum RegistrationFormat {}

impl SecretFormat for RegistrationFormat {
    const NAME: &'static str = "RegistrationToken";
    const PREFIX: &'static str = "d2reg_";
}

pub type RegistrationToken = Secret<RegistrationFormat>;

/// The format of client secrets.
#[derive(Debug)]
pub enum ClientSecretFormat {}

impl SecretFormat for ClientSecretFormat {
    const NAME: &'static str = "ClientSecret";
    const PREFIX: &'static str = "d2cs_";
}

pub type ClientSecret = Secret<ClientSecretFormat>;

/// How long a registration token activates its agent.
pub const REGISTRATION_LIFETIME_HOURS: i64 = 24;

d2_kernel::named_values! {
    /// How an agent authenticates at the token endpoint (RFC 7591 §2 names).
    pub enum AuthMethod (unknown: UnknownAuthMethod) {
        /// HTTP Basic with the client id and secret (RFC 6749 §2.3.1).
        ClientSecretBasic = "client_secret_basic",
        /// The client id and secret in the form body.
        ClientSecretPost = "client_secret_post",
        /// A JWT signed with one of the agent's registered keys (RFC 7523).
        PrivateKeyJwt = "private_key_jwt",
        /// None: a public client (RFC 6749 §2.1), named by its `client_id` alone. Only
        /// clients identified by a metadata document are public here; they get tokens by
        /// the authorization code flow (PKCE is always required) and refresh them.
        None = "none",
    }
}

/// An `auth_method` that is none of the three.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown auth_method `{0}`: use client_secret_basic, client_secret_post, private_key_jwt or none"
)]
pub struct UnknownAuthMethod(pub String);

d2_kernel::named_values! {
    /// Where an agent is in its life.
    pub enum AgentState (unknown: UnknownAgentState) {
        /// Registered; its registration token has not been used yet.
        Pending = "pending",
        /// Activated: it authenticates and gets tokens.
        Active = "active",
        /// Turned off by an admin: it authenticates no more, its registration stays.
        Disabled = "disabled",
    }
}

/// A `state` that is none of the three.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown agent state `{0}`: use pending, active or disabled")]
pub struct UnknownAgentState(pub String);

/// The bounds of what an agent may be registered with.
pub mod limits {
    /// Characters of a name.
    pub const NAME_CHARS: usize = 100;
    /// Characters of a description.
    pub const DESCRIPTION_CHARS: usize = 1_000;
    /// Scopes an agent may be allowed.
    pub const SCOPES: usize = 100;
    /// Characters of one scope.
    pub const SCOPE_CHARS: usize = 128;
    /// Redirect URIs of one agent.
    pub const REDIRECT_URIS: usize = 10;
    /// Characters of one redirect URI.
    pub const URI_CHARS: usize = 2_000;
    /// Access tokens live between a minute and a day.
    pub const ACCESS_SECONDS: std::ops::RangeInclusive<u32> = 60..=86_400;
    /// Refresh tokens, when issued at all, between an hour and ninety days.
    pub const REFRESH_SECONDS: std::ops::RangeInclusive<u32> = 3_600..=7_776_000;
    /// Keys in a registered JWKS.
    pub const JWKS_KEYS: usize = 10;
    /// Resources (RFC 8707) an agent's tokens may target.
    pub const RESOURCES: usize = 20;
    /// Attributes of an agent, and characters of one attribute's name.
    pub const ATTRIBUTES: usize = 64;
    pub const ATTRIBUTE_NAME_CHARS: usize = 64;
    /// Bytes of all attributes, as JSON.
    pub const ATTRIBUTES_BYTES: usize = 16_384;
}

/// What an admin registers or updates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentSpec {
    pub name: String,
    pub description: Option<String>,
    /// The scopes the agent may be granted: RFC 6749 §3.3 scope tokens, unique, sorted.
    pub scopes: Vec<String>,
    /// Where the authorization code flow may return to: `https`, or `http` on a loopback
    /// address (RFC 8252 §7.3), without a fragment.
    pub redirect_uris: Vec<String>,
    /// The resources (RFC 8707 §2: absolute URIs without a fragment) the agent's access
    /// tokens may be issued for, each an `aud`. Unique, sorted.
    pub resources: Vec<String>,
    /// What access rules read about the agent (`agent.attributes.<name>`).
    pub attributes: serde_json::Map<String, serde_json::Value>,
    pub auth_method: AuthMethod,
    /// The agent's public keys for `private_key_jwt`: a JWKS document (`{"keys": [...]}`).
    pub jwks: Option<serde_json::Value>,
    /// Or where to fetch them (`https`).
    pub jwks_uri: Option<String>,
    pub access_token_seconds: u32,
    /// `None`: the agent gets no refresh tokens.
    pub refresh_token_seconds: Option<u32>,
}

impl AgentSpec {
    /// The default lifetimes: an hour for access tokens, thirty days for refresh tokens.
    pub const DEFAULT_ACCESS_SECONDS: u32 = 3_600;
    pub const DEFAULT_REFRESH_SECONDS: u32 = 2_592_000;

    /// The spec with its text trimmed and its lists sorted, or the first rule it breaks.
    pub fn validate(mut self) -> Result<Self, AgentError> {
        self.name = self.name.trim().to_owned();
        let name_chars = self.name.chars().count();
        if name_chars == 0 || name_chars > limits::NAME_CHARS {
            return Err(AgentError::invalid(format!(
                "`name` must be 1 to {} characters",
                limits::NAME_CHARS
            )));
        }
        self.description = self
            .description
            .map(|d| d.trim().to_owned())
            .filter(|d| !d.is_empty());
        if self
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > limits::DESCRIPTION_CHARS)
        {
            return Err(AgentError::invalid(format!(
                "`description` must be at most {} characters",
                limits::DESCRIPTION_CHARS
            )));
        }
        if [Some(&self.name), self.description.as_ref()]
            .into_iter()
            .flatten()
            .any(|text| text.chars().any(char::is_control))
        {
            return Err(AgentError::invalid(
                "`name` and `description` must not hold control characters",
            ));
        }
        self.scopes = checked_scopes(self.scopes)?;
        self.redirect_uris = checked_redirect_uris(self.redirect_uris)?;
        self.resources = checked_resources(self.resources)?;
        check_attributes(&self.attributes)?;
        if !limits::ACCESS_SECONDS.contains(&self.access_token_seconds) {
            return Err(AgentError::invalid(format!(
                "`access_token_seconds` must be {} to {}",
                limits::ACCESS_SECONDS.start(),
                limits::ACCESS_SECONDS.end()
            )));
        }
        if self
            .refresh_token_seconds
            .is_some_and(|seconds| !limits::REFRESH_SECONDS.contains(&seconds))
        {
            return Err(AgentError::invalid(format!(
                "`refresh_token_seconds` must be {} to {}, or null for no refresh tokens",
                limits::REFRESH_SECONDS.start(),
                limits::REFRESH_SECONDS.end()
            )));
        }
        self.check_keys()?;
        Ok(self)
    }

    /// Whether `other` says what this spec says of the fields a client metadata document
    /// rules (name, description, redirect URIs, authentication).
    pub fn document_fields_match(&self, other: &AgentSpec) -> bool {
        self.name == other.name
            && self.description == other.description
            && self.redirect_uris == other.redirect_uris
            && self.auth_method == other.auth_method
            && self.jwks == other.jwks
            && self.jwks_uri == other.jwks_uri
    }

    /// Takes the fields a client metadata document rules from `document`, keeping the rest.
    pub fn take_document_fields(&mut self, document: &AgentSpec) {
        self.name.clone_from(&document.name);
        self.description.clone_from(&document.description);
        self.redirect_uris.clone_from(&document.redirect_uris);
        self.auth_method = document.auth_method;
        self.jwks.clone_from(&document.jwks);
        self.jwks_uri.clone_from(&document.jwks_uri);
    }

    /// `private_key_jwt` needs exactly one of `jwks` and `jwks_uri`; the other methods
    /// take neither.
    fn check_keys(&self) -> Result<(), AgentError> {
        match (self.auth_method, &self.jwks, &self.jwks_uri) {
            (AuthMethod::PrivateKeyJwt, Some(jwks), None) => check_jwks(jwks),
            (AuthMethod::PrivateKeyJwt, None, Some(uri)) => {
                let parsed = url::Url::parse(uri)
                    .map_err(|_| AgentError::invalid("`jwks_uri` must be an absolute URL"))?;
                if parsed.scheme() != "https" || uri.len() > limits::URI_CHARS {
                    return Err(AgentError::invalid(format!(
                        "`jwks_uri` must be an https URL of at most {} characters",
                        limits::URI_CHARS
                    )));
                }
                Ok(())
            }
            (AuthMethod::PrivateKeyJwt, _, _) => Err(AgentError::invalid(
                "`private_key_jwt` needs exactly one of `jwks` and `jwks_uri`",
            )),
            (_, None, None) => Ok(()),
            (_, _, _) => Err(AgentError::invalid(
                "`jwks` and `jwks_uri` are for `private_key_jwt` only",
            )),
        }
    }
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
pub(crate) fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

pub(crate) fn checked_scopes(mut scopes: Vec<String>) -> Result<Vec<String>, AgentError> {
    if scopes.len() > limits::SCOPES {
        return Err(AgentError::invalid(format!(
            "at most {} scopes",
            limits::SCOPES
        )));
    }
    if let Some(bad) = scopes
        .iter()
        .find(|s| !is_scope_token(s) || s.len() > limits::SCOPE_CHARS)
    {
        return Err(AgentError::invalid(format!(
            "`{}` is not a scope: printable ASCII without spaces, quotes or backslashes, at most {} characters",
            bad.escape_debug(),
            limits::SCOPE_CHARS
        )));
    }
    scopes.sort();
    scopes.dedup();
    Ok(scopes)
}

pub(crate) fn checked_redirect_uris(mut uris: Vec<String>) -> Result<Vec<String>, AgentError> {
    if uris.len() > limits::REDIRECT_URIS {
        return Err(AgentError::invalid(format!(
            "at most {} redirect URIs",
            limits::REDIRECT_URIS
        )));
    }
    for uri in &uris {
        let allowed = uri.len() <= limits::URI_CHARS
            && url::Url::parse(uri).is_ok_and(|parsed| {
                parsed.fragment().is_none()
                    && match parsed.scheme() {
                        "https" => true,
                        "http" => {
                            matches!(
                                parsed.host(),
                                Some(url::Host::Ipv4(ip)) if ip.is_loopback()
                            ) || matches!(
                                parsed.host(),
                                Some(url::Host::Ipv6(ip)) if ip.is_loopback()
                            )
                        }
                        _ => false,
                    }
            });
        if !allowed {
            return Err(AgentError::invalid(format!(
                "`{}` is not a redirect URI: an absolute https URL (or http on 127.0.0.1 or [::1]) without a fragment",
                uri.escape_debug()
            )));
        }
    }
    uris.sort();
    uris.dedup();
    Ok(uris)
}

pub(crate) fn checked_resources(mut resources: Vec<String>) -> Result<Vec<String>, AgentError> {
    if resources.len() > limits::RESOURCES {
        return Err(AgentError::invalid(format!(
            "at most {} resources",
            limits::RESOURCES
        )));
    }
    if let Some(bad) = resources.iter().find(|resource| !is_resource(resource)) {
        return Err(AgentError::invalid(format!(
            "`{}` is not a resource: an absolute URI without a fragment (RFC 8707), at most {} characters",
            bad.escape_debug(),
            limits::URI_CHARS
        )));
    }
    resources.sort();
    resources.dedup();
    Ok(resources)
}

/// RFC 8707 §2: an absolute URI without a fragment.
pub fn is_resource(resource: &str) -> bool {
    resource.len() <= limits::URI_CHARS
        && url::Url::parse(resource).is_ok_and(|parsed| parsed.fragment().is_none())
}

fn check_attributes(
    attributes: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), AgentError> {
    let too_big = attributes.len() > limits::ATTRIBUTES
        || serde_json::to_vec(attributes)
            .map_or(true, |bytes| bytes.len() > limits::ATTRIBUTES_BYTES);
    if too_big {
        return Err(AgentError::invalid(format!(
            "`attributes` holds at most {} names and {} bytes of JSON",
            limits::ATTRIBUTES,
            limits::ATTRIBUTES_BYTES
        )));
    }
    if let Some(bad) = attributes.keys().find(|name| {
        name.is_empty()
            || name.chars().count() > limits::ATTRIBUTE_NAME_CHARS
            || name.chars().any(char::is_control)
    }) {
        return Err(AgentError::invalid(format!(
            "`{}` is not an attribute name: 1 to {} characters, no control characters",
            bad.escape_debug(),
            limits::ATTRIBUTE_NAME_CHARS
        )));
    }
    Ok(())
}

/// A JWKS document of public keys: `{"keys": [...]}`, each key with a `kty` and no
/// private members.
fn check_jwks(jwks: &serde_json::Value) -> Result<(), AgentError> {
    const PRIVATE: [&str; 6] = ["d", "p", "q", "dp", "dq", "qi"];
    let keys = jwks
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .filter(|keys| !keys.is_empty() && keys.len() <= limits::JWKS_KEYS)
        .ok_or_else(|| {
            AgentError::invalid(format!(
                "`jwks` must be {{\"keys\": [...]}} with 1 to {} keys",
                limits::JWKS_KEYS
            ))
        })?;
    for key in keys {
        let object = key
            .as_object()
            .filter(|k| k.get("kty").is_some_and(serde_json::Value::is_string))
            .ok_or_else(|| AgentError::invalid("each key of `jwks` needs a `kty`"))?;
        if PRIVATE.iter().any(|member| object.contains_key(*member)) {
            return Err(AgentError::invalid(
                "`jwks` must hold public keys only: a private key was sent",
            ));
        }
    }
    Ok(())
}

/// A registered agent, as its account's admins see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    pub id: AgentId,
    pub account_id: AccountId,
    pub spec: AgentSpec,
    pub state: AgentState,
    /// The person who registered it, when a person did.
    pub registered_by: Option<UserId>,
    /// The URL of its client metadata document, when that names it (its OAuth
    /// `client_id` then; see [`crate::client_documents`]).
    pub metadata_url: Option<String>,
    /// Whether the client registered itself (RFC 7591; see [`crate::registration`]).
    pub registered_dynamically: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub activated_at: Option<DateTime<Utc>>,
}

impl Agent {
    pub fn new(
        account_id: AccountId,
        spec: AgentSpec,
        registered_by: Option<UserId>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: AgentId::random(),
            account_id,
            spec,
            state: AgentState::Pending,
            registered_by,
            metadata_url: None,
            registered_dynamically: false,
            created_at: now,
            updated_at: now,
            activated_at: None,
        }
    }

    /// Its OAuth `client_id`: the metadata document's URL, or its id.
    pub fn client_id(&self) -> String {
        self.metadata_url
            .clone()
            .unwrap_or_else(|| self.id.to_string())
    }
}

/// A registration waiting for its token: the token's digest and when it stops working.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRegistration {
    pub digest: SecretDigest,
    pub expires_at: DateTime<Utc>,
}

impl PendingRegistration {
    pub fn new(digest: SecretDigest, now: DateTime<Utc>) -> Self {
        Self {
            digest,
            expires_at: d2_kernel::later(now, Duration::hours(REGISTRATION_LIFETIME_HOURS)),
        }
    }
}

/// The digests of an agent's client secrets: the current one and, during a rotation's
/// grace, the one it replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSecrets {
    pub current: SecretDigest,
    pub previous: Option<(SecretDigest, DateTime<Utc>)>,
}

impl ClientSecrets {
    /// Whether `presented` (a digest) is one of the secrets that authenticate at `now`.
    pub fn accept(&self, presented: &SecretDigest, now: DateTime<Utc>) -> bool {
        let current = self.current.matches(presented);
        let previous = self
            .previous
            .as_ref()
            .is_some_and(|(digest, until)| now < *until && digest.matches(presented));
        current | previous
    }
}
