//! Clients named by a URL: Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-
//! document, recommended by the MCP authorization spec). A `client_id` that is an `https`
//! URL names the JSON document served there; the server fetches it (through the
//! [`ClientDocuments`] port, which keeps out of the server's own network and honours cache
//! headers), checks that it names itself, and takes its redirect URIs as the only places
//! the flow may return to.
//!
//! Each such client becomes an agent of the account the first time it asks (grants and
//! tokens name agents), with the scopes and resources the account's [`ClientPolicy`]
//! allows. What the document says (its name, redirect URIs, how it authenticates) follows
//! the document each time it is fetched again; what the policy gave (scopes, resources,
//! lifetimes, attributes, state) is the account's to change afterwards.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::{
    AccountId, AuthContext, CacheSettings, Change, ChangeSubscriber, Clock, CoherentCache, Scope,
    StoreError,
};
use serde::Deserialize;
use serde_json::json;

use crate::agent::{Agent, AgentSpec, AgentState, AuthMethod, limits};
use crate::error::AgentError;
use crate::ports::{AgentRepo, ClientPolicyRepo};
use crate::service::AgentCache;

/// The bounds of a client metadata document.
pub mod document_limits {
    /// Bytes of a document (the draft advises 5 KB).
    pub const BYTES: usize = 5 * 1024;
    /// Seconds a fetch may take.
    pub const FETCH_SECONDS: u64 = 5;
}

/// What an account lets clients that name themselves (by a metadata document) or register
/// themselves (RFC 7591) have.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ClientPolicy {
    /// Whether a `client_id` that is an `https` URL is accepted.
    pub metadata_documents: bool,
    /// Whether clients may register themselves at `{issuer}/register`, with the initial
    /// access token.
    pub dynamic_registration: bool,
    /// The digest of the initial access token registration asks for, once an admin had one
    /// issued (set apart from the rest: see [`ClientPolicyRepo::set_initial_access`]).
    pub initial_access: Option<d2_kernel::SecretDigest>,
    /// The scopes such a client may be granted (those its document's `scope` asks for, of
    /// these; all of these when it asks none). Unique, sorted.
    pub scopes: Vec<String>,
    /// The resources its tokens may target. Unique, sorted.
    pub resources: Vec<String>,
    /// When an admin last set it; `None` for the default (nothing accepted).
    pub updated_at: Option<DateTime<Utc>>,
}

impl ClientPolicy {
    /// The policy with its lists checked as an agent's are, sorted and deduplicated.
    pub fn validate(mut self) -> Result<Self, AgentError> {
        self.scopes = crate::agent::checked_scopes(self.scopes)?;
        self.resources = crate::agent::checked_resources(self.resources)?;
        Ok(self)
    }
}

/// A fetch of a metadata document that did not give a document; the text says why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FetchRefusal(pub String);

/// Fetches client metadata documents: `https` URLs on public addresses only (unless
/// configured for tests), at most [`document_limits::BYTES`], within
/// [`document_limits::FETCH_SECONDS`], following no redirect, cached as the answer's
/// `Cache-Control` says (within bounds), a failure remembered briefly.
#[async_trait]
pub trait ClientDocuments: Send + Sync + 'static {
    async fn document(&self, url: &url::Url) -> Result<Arc<[u8]>, FetchRefusal>;
}

/// Why a `client_id` URL does not name a client the account accepts. The text is shown on
/// the authorization page (it names nothing secret).
#[derive(Debug, thiserror::Error)]
pub enum ClientDocumentError {
    #[error("this account does not accept clients identified by a metadata document")]
    NotAccepted,
    #[error(
        "`client_id` is not a client metadata URL: https, with a path, no fragment, credentials or dot segments, in normal form, at most {} characters",
        limits::URI_CHARS
    )]
    BadUrl,
    #[error("the client metadata document could not be fetched: {0}")]
    Fetch(FetchRefusal),
    #[error("the client metadata document is not valid: {0}")]
    Invalid(String),
    #[error("the client is disabled in this account")]
    Disabled,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The URL a `client_id` names, if it may name a metadata document: `https`, a path other
/// than `/`, no fragment, no user name or password, and written as the URL serializes (no
/// `.` or `..` segment, no default port, a lowercase host), since the document's own
/// `client_id` must be that same text.
pub fn client_id_url(client_id: &str) -> Option<url::Url> {
    if client_id.len() > limits::URI_CHARS {
        return None;
    }
    let url = url::Url::parse(client_id).ok()?;
    let fits = url.scheme() == "https"
        && url.as_str() == client_id
        && url.path() != "/"
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    fits.then_some(url)
}

/// The members of a metadata document this server reads (RFC 7591 §2 names). Others are
/// ignored, except those that would give a public document a shared secret.
#[derive(Debug, Deserialize)]
struct Document {
    client_id: String,
    #[serde(default)]
    client_name: Option<String>,
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    grant_types: Option<Vec<String>>,
    #[serde(default)]
    response_types: Option<Vec<String>>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    client_secret: Option<serde_json::Value>,
    #[serde(default)]
    client_secret_expires_at: Option<serde_json::Value>,
}

/// What a document says, checked: a name, its redirect URIs, and the scopes it asks for
/// (`None`: it asks none in particular).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientDocument {
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub scopes: Option<BTreeSet<String>>,
}

impl ClientDocument {
    /// Parses and checks the document fetched from `url`.
    pub fn parse(url: &url::Url, bytes: &[u8]) -> Result<Self, ClientDocumentError> {
        let invalid = |why: &str| ClientDocumentError::Invalid(why.to_owned());
        let document: Document = serde_json::from_slice(bytes)
            .map_err(|_| invalid("not a JSON object with a `client_id` string"))?;
        if document.client_id != url.as_str() {
            return Err(invalid(
                "its `client_id` is not exactly the URL it was fetched from",
            ));
        }
        if document.client_secret.is_some() || document.client_secret_expires_at.is_some() {
            return Err(invalid("a public document must not hold a client secret"));
        }
        match document.token_endpoint_auth_method.as_deref() {
            None | Some("none") => {}
            Some(_) => {
                return Err(invalid(
                    "`token_endpoint_auth_method` must be `none` (clients named by a URL are public here)",
                ));
            }
        }
        let lists = |list: &Option<Vec<String>>, allowed: &[&str]| {
            list.as_ref()
                .is_none_or(|list| list.iter().all(|item| allowed.contains(&item.as_str())))
        };
        if !lists(
            &document.grant_types,
            &["authorization_code", "refresh_token"],
        ) || !lists(&document.response_types, &["code"])
        {
            return Err(invalid(
                "`grant_types` may hold authorization_code and refresh_token, `response_types` code",
            ));
        }
        if document.redirect_uris.is_empty() {
            return Err(invalid("`redirect_uris` must name at least one URI"));
        }
        let redirect_uris = crate::agent::checked_redirect_uris(document.redirect_uris)
            .map_err(|error| ClientDocumentError::Invalid(error.to_string()))?;
        let name = document
            .client_name
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| url.host_str().unwrap_or_default().to_owned());
        if name.chars().count() > limits::NAME_CHARS || name.chars().any(char::is_control) {
            return Err(invalid(
                "`client_name` must be at most 100 characters, no control characters",
            ));
        }
        let scopes = document
            .scope
            .map(|scope| scope.split_whitespace().map(str::to_owned).collect());
        Ok(Self {
            name,
            redirect_uris,
            scopes,
        })
    }

    /// The agent this document makes of a client the account has not seen: active, public,
    /// with what `policy` allows of the scopes the document asks.
    fn new_agent(
        self,
        account: AccountId,
        url: &url::Url,
        policy: &ClientPolicy,
        now: DateTime<Utc>,
    ) -> Agent {
        let scopes = policy
            .scopes
            .iter()
            .filter(|scope| {
                self.scopes
                    .as_ref()
                    .is_none_or(|asked| asked.contains(*scope))
            })
            .cloned()
            .collect();
        let spec = AgentSpec {
            name: self.name,
            description: None,
            scopes,
            redirect_uris: self.redirect_uris,
            resources: policy.resources.clone(),
            attributes: serde_json::Map::new(),
            auth_method: AuthMethod::None,
            jwks: None,
            jwks_uri: None,
            access_token_seconds: AgentSpec::DEFAULT_ACCESS_SECONDS,
            refresh_token_seconds: Some(AgentSpec::DEFAULT_REFRESH_SECONDS),
        };
        let mut agent = Agent::new(account, spec, None, now);
        agent.metadata_url = Some(url.to_string());
        agent.state = AgentState::Active;
        agent.activated_at = Some(now);
        agent
    }
}

/// The accounts' client policies, as cached; a change made anywhere is seen on every
/// replica through the change feed.
pub struct ClientPolicies {
    repo: Arc<dyn ClientPolicyRepo>,
    clock: Arc<dyn Clock>,
    cache: CoherentCache<AccountId, Arc<ClientPolicy>>,
}

impl std::fmt::Debug for ClientPolicies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientPolicies").finish_non_exhaustive()
    }
}

impl ClientPolicies {
    pub fn new(
        repo: Arc<dyn ClientPolicyRepo>,
        clock: Arc<dyn Clock>,
        cache: CacheSettings,
    ) -> Self {
        Self {
            repo,
            clock,
            cache: CoherentCache::new(cache),
        }
    }

    /// The account's policy (the default, accepting nothing, until an admin sets one).
    pub async fn policy(&self, account: AccountId) -> Result<Arc<ClientPolicy>, StoreError> {
        self.cache
            .get_or_load(&account, || async {
                Ok(Arc::new(
                    self.repo.client_policy(account).await?.unwrap_or_default(),
                ))
            })
            .await
    }

    /// The caller's account's policy (admin).
    pub async fn get(&self, ctx: &AuthContext) -> Result<Arc<ClientPolicy>, AgentError> {
        ctx.require(Scope::Admin)?;
        Ok(self.policy(ctx.account_id).await?)
    }

    /// Replaces the caller's account's policy (admin). Agents it made before keep what they
    /// were given. Audited `oauth.client_policy_update`.
    pub async fn set(
        &self,
        ctx: &AuthContext,
        policy: ClientPolicy,
    ) -> Result<ClientPolicy, AgentError> {
        ctx.require(Scope::Admin)?;
        let now = self.clock.now();
        let current = self.policy(ctx.account_id).await?;
        let policy = ClientPolicy {
            updated_at: Some(now),
            initial_access: current.initial_access,
            ..policy.validate()?
        };
        let audit = AuditEntry::by(ctx, AuditAction::OAuthClientPolicyUpdate, now)
            .target("account", ctx.account_id)
            .metadata(json!({
                "metadata_documents": policy.metadata_documents,
                "dynamic_registration": policy.dynamic_registration,
                "scopes": policy.scopes,
                "resources": policy.resources,
            }));
        self.repo
            .set_client_policy(ctx.account_id, &policy, &audit)
            .await?;
        self.forget(ctx.account_id).await;
        Ok(policy)
    }

    /// Drops the account's cached policy (changed here).
    pub(crate) async fn forget(&self, account: AccountId) {
        self.cache.invalidate(&account).await;
    }
}

impl ChangeSubscriber for ClientPolicies {
    fn on_change(&self, change: &Change) {
        match change {
            Change::OAuth(account) => {
                let account = *account;
                self.cache.invalidate_if(move |key, _| *key == account);
            }
            Change::Resync => self.cache.invalidate_all(),
            _ => {}
        }
    }
}

/// Resolves `client_id` URLs to the account's agents, making or updating them from their
/// documents.
pub struct MetadataClients {
    repo: Arc<dyn AgentRepo>,
    agents: Arc<AgentCache>,
    policies: Arc<ClientPolicies>,
    documents: Arc<dyn ClientDocuments>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for MetadataClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataClients").finish_non_exhaustive()
    }
}

impl MetadataClients {
    pub fn new(
        repo: Arc<dyn AgentRepo>,
        agents: Arc<AgentCache>,
        policies: Arc<ClientPolicies>,
        documents: Arc<dyn ClientDocuments>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            repo,
            agents,
            policies,
            documents,
            clock,
        }
    }

    /// The active agent of `account` that the document at `client_id` describes, as that
    /// document says now: made on its first authorization request, updated when the
    /// document changed. Refused when the account does not accept such clients, the URL or
    /// the document is not valid or cannot be fetched, or an admin disabled the agent.
    pub async fn resolve(
        &self,
        account: AccountId,
        client_id: &str,
    ) -> Result<Arc<Agent>, ClientDocumentError> {
        let policy = self.policies.policy(account).await?;
        if !policy.metadata_documents {
            return Err(ClientDocumentError::NotAccepted);
        }
        let url = client_id_url(client_id).ok_or(ClientDocumentError::BadUrl)?;
        let bytes = self
            .documents
            .document(&url)
            .await
            .map_err(ClientDocumentError::Fetch)?;
        let document = ClientDocument::parse(&url, &bytes)?;
        let candidate = document.new_agent(account, &url, &policy, self.clock.now());
        let agent = match self.agents.metadata_client(account, url.as_str()).await? {
            Some(stored) if stored.spec.document_fields_match(&candidate.spec) => stored,
            _ => {
                let now = candidate.created_at;
                let audit_of = |agent: &Agent, created: bool| {
                    let action = if created {
                        AuditAction::AgentRegister
                    } else {
                        AuditAction::AgentUpdate
                    };
                    AuditEntry::system(account, action, now)
                        .target("agent", agent.id)
                        .metadata(json!({
                            "name": agent.spec.name,
                            "state": agent.state.as_str(),
                            "via": "client_metadata_document",
                            "metadata_url": agent.metadata_url,
                            "scopes": agent.spec.scopes,
                            "redirect_uris": agent.spec.redirect_uris,
                        }))
                };
                let saved = self
                    .repo
                    .save_metadata_client(&candidate, &audit_of)
                    .await?;
                self.agents.forget_account(account);
                Arc::new(saved)
            }
        };
        if agent.state != AgentState::Active {
            return Err(ClientDocumentError::Disabled);
        }
        Ok(agent)
    }
}
