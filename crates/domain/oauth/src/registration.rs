//! Dynamic client registration (RFC 7591): a client registers itself at
//! `{issuer}/register` when the account's [`ClientPolicy`] lets it, presenting the account's
//! initial access token (shown once to an admin, kept as a keyed digest). It becomes an
//! active agent at once, with the scopes and resources the policy allows.
//!
//! Clients that register on every connect would leave an agent behind each time: a client
//! that holds no shared secret (`none`, `private_key_jwt`) registering the same metadata
//! again gets the agent it got before (its metadata's digest is unique per account), and
//! the worker's `oauth-client-reaping` job deletes dynamically registered agents nobody
//! used: no token of theirs left and no grant in force, a day after they registered.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::Duration;
use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::{
    AccountId, AuthContext, Clock, Code, ErrorCode, Pepper, Scope, Secret, SecretFormat, StoreError,
};
use serde_json::{Value, json};

use crate::agent::{Agent, AgentSpec, AgentState, AuthMethod, ClientSecret};
use crate::client_documents::ClientPolicies;
use crate::error::AgentError;
use crate::ports::{AgentRepo, ClientPolicyRepo};
use crate::service::AgentCache;

/// The format of initial access tokens: what an admin hands to those allowed to register
/// clients.
#[derive(Debug)]
pub enum InitialAccessFormat {}

impl SecretFormat for InitialAccessFormat {
    const NAME: &'static str = "InitialAccessToken";
    const PREFIX: &'static str = "d2iat_";
}

pub type InitialAccessToken = Secret<InitialAccessFormat>;

/// How long a dynamically registered agent may stay unused before it is reaped.
pub const UNUSED_HOURS: i64 = 24;

/// RFC 7591 §2: what a client says of itself, as it sent it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientMetadata {
    pub redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: Option<String>,
    pub grant_types: Option<Vec<String>>,
    pub response_types: Option<Vec<String>>,
    pub client_name: Option<String>,
    pub scope: Option<String>,
    pub jwks: Option<Value>,
    pub jwks_uri: Option<String>,
    pub software_id: Option<String>,
    pub software_version: Option<String>,
}

/// Why a registration was refused: each an RFC 7591 §3.2.2 `error`, or the token's.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("this account does not let clients register themselves")]
    Disabled,
    #[error("the initial access token is missing or not this account's")]
    InvalidToken,
    #[error("{0}")]
    RedirectUri(String),
    #[error("{0}")]
    Metadata(String),
    #[error(transparent)]
    Randomness(#[from] d2_kernel::secret::RandomnessUnavailable),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for RegistrationError {
    fn code(&self) -> Code {
        match self {
            RegistrationError::Disabled => Code::RegistrationDisabled,
            RegistrationError::InvalidToken => Code::InvalidToken,
            RegistrationError::RedirectUri(_) => Code::InvalidRedirectUri,
            RegistrationError::Metadata(_) => Code::InvalidClientMetadata,
            RegistrationError::Randomness(_) => Code::Internal,
            RegistrationError::Store(error) => error.code(),
        }
    }
}

/// A registered client: its agent, its secret (shown once, for a client that
/// authenticates with one and registered anew), and the grant and response types it may
/// use.
#[derive(Debug)]
pub struct Registered {
    pub agent: Agent,
    pub secret: Option<ClientSecret>,
    pub grant_types: Vec<&'static str>,
}

/// The checked form of a client's metadata.
struct Checked {
    spec: AgentSpec,
    grant_types: Vec<&'static str>,
}

fn metadata_error(text: impl Into<String>) -> RegistrationError {
    RegistrationError::Metadata(text.into())
}

impl ClientMetadata {
    /// The agent this metadata asks for, within `policy_scopes` and `resources`: RFC 7591's
    /// defaults (`client_secret_basic`, the code grant) where it says nothing.
    fn check(
        self,
        policy_scopes: &[String],
        resources: &[String],
    ) -> Result<Checked, RegistrationError> {
        let auth_method = match self.token_endpoint_auth_method.as_deref() {
            None => AuthMethod::ClientSecretBasic,
            Some(text) => text
                .parse::<AuthMethod>()
                .map_err(|error| metadata_error(error.to_string()))?,
        };
        let mut grant_types = Vec::new();
        for grant in self
            .grant_types
            .unwrap_or_else(|| vec!["authorization_code".to_owned()])
        {
            let known = match grant.as_str() {
                "authorization_code" => "authorization_code",
                "refresh_token" => "refresh_token",
                "client_credentials" if auth_method != AuthMethod::None => "client_credentials",
                _ => {
                    return Err(metadata_error(format!(
                        "grant type `{}` is not one this client may register: authorization_code, refresh_token, and client_credentials for a confidential client",
                        grant.escape_debug()
                    )));
                }
            };
            if !grant_types.contains(&known) {
                grant_types.push(known);
            }
        }
        if self
            .response_types
            .as_ref()
            .is_some_and(|types| types.iter().any(|t| t != "code"))
        {
            return Err(metadata_error("`response_types` may hold `code` only"));
        }
        let code_flow = grant_types.contains(&"authorization_code");
        if code_flow && self.redirect_uris.is_empty() {
            return Err(RegistrationError::RedirectUri(
                "the authorization code grant needs at least one redirect URI".into(),
            ));
        }
        let redirect_uris = crate::agent::checked_redirect_uris(self.redirect_uris)
            .map_err(|error| RegistrationError::RedirectUri(error.to_string()))?;
        let asked: Option<BTreeSet<&str>> = self
            .scope
            .as_deref()
            .map(|s| s.split_whitespace().collect());
        let scopes = policy_scopes
            .iter()
            .filter(|scope| {
                asked
                    .as_ref()
                    .is_none_or(|asked| asked.contains(scope.as_str()))
            })
            .cloned()
            .collect();
        let spec = AgentSpec {
            name: self
                .client_name
                .map(|name| name.trim().to_owned())
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| "Dynamically registered client".to_owned()),
            description: self.software_id.map(|id| match self.software_version {
                Some(version) => format!("{id} {version}"),
                None => id,
            }),
            scopes,
            redirect_uris,
            resources: resources.to_vec(),
            attributes: serde_json::Map::new(),
            auth_method,
            jwks: self.jwks,
            jwks_uri: self.jwks_uri,
            access_token_seconds: AgentSpec::DEFAULT_ACCESS_SECONDS,
            refresh_token_seconds: grant_types
                .contains(&"refresh_token")
                .then_some(AgentSpec::DEFAULT_REFRESH_SECONDS),
        };
        let spec = spec
            .validate()
            .map_err(|error| metadata_error(error.to_string()))?;
        Ok(Checked { spec, grant_types })
    }
}

/// What identifies a registration that holds no shared secret: the same text twice is the
/// same client, registering again.
fn fingerprint(spec: &AgentSpec, grant_types: &[&str]) -> String {
    json!({
        "name": spec.name,
        "description": spec.description,
        "redirect_uris": spec.redirect_uris,
        "auth_method": spec.auth_method.as_str(),
        "jwks": spec.jwks,
        "jwks_uri": spec.jwks_uri,
        "scopes": spec.scopes,
        "grant_types": grant_types,
    })
    .to_string()
}

/// Registers clients that register themselves, and the admins' initial access tokens.
pub struct DynamicClients {
    repo: Arc<dyn AgentRepo>,
    policy_repo: Arc<dyn ClientPolicyRepo>,
    policies: Arc<ClientPolicies>,
    agents: Arc<AgentCache>,
    pepper: Arc<Pepper>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for DynamicClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamicClients").finish_non_exhaustive()
    }
}

impl DynamicClients {
    pub fn new(
        repo: Arc<dyn AgentRepo>,
        policy_repo: Arc<dyn ClientPolicyRepo>,
        policies: Arc<ClientPolicies>,
        agents: Arc<AgentCache>,
        pepper: Arc<Pepper>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            repo,
            policy_repo,
            policies,
            agents,
            pepper,
            clock,
        }
    }

    /// A new initial access token for the caller's account (admin), shown once; the one it
    /// replaces stops working. Audited `oauth.initial_access_issue`.
    pub async fn issue_initial_access(
        &self,
        ctx: &AuthContext,
    ) -> Result<InitialAccessToken, AgentError> {
        ctx.require(Scope::Admin)?;
        let token = InitialAccessToken::generate()?;
        let now = self.clock.now();
        let audit = AuditEntry::by(ctx, AuditAction::OAuthInitialAccessIssue, now)
            .target("account", ctx.account_id);
        self.policy_repo
            .set_initial_access(ctx.account_id, &self.pepper.digest(&token), now, &audit)
            .await?;
        self.policies.forget(ctx.account_id).await;
        Ok(token)
    }

    /// Registers the client `metadata` describes in `account`, if the account lets clients
    /// register and `bearer` is its initial access token. A client without a shared secret
    /// that registered the same metadata before gets the same agent. Audited
    /// `agent.register` (`via: dynamic_registration`).
    pub async fn register(
        &self,
        account: AccountId,
        bearer: Option<&str>,
        metadata: ClientMetadata,
    ) -> Result<Registered, RegistrationError> {
        // A credential is asked first: a request without one learns nothing of the account.
        let Some(bearer) = bearer else {
            return Err(RegistrationError::InvalidToken);
        };
        let policy = self.policies.policy(account).await?;
        if !policy.dynamic_registration {
            return Err(RegistrationError::Disabled);
        }
        // The digest is computed whatever happens next, so a wrong token costs what a right
        // one does.
        let presented = self.pepper.digest_text(bearer);
        let well_formed = InitialAccessToken::check_format(bearer).is_ok();
        let known = policy
            .initial_access
            .as_ref()
            .is_some_and(|digest| digest.matches(&presented));
        if !(well_formed && known) {
            return Err(RegistrationError::InvalidToken);
        }
        let Checked { spec, grant_types } = metadata.check(&policy.scopes, &policy.resources)?;
        let now = self.clock.now();
        let mut agent = Agent::new(account, spec, None, now);
        agent.state = AgentState::Active;
        agent.activated_at = Some(now);
        agent.registered_dynamically = true;
        let shares_secret = matches!(
            agent.spec.auth_method,
            AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost
        );
        let secret = shares_secret.then(ClientSecret::generate).transpose()?;
        let fingerprint = (!shares_secret).then(|| {
            self.pepper
                .digest_text(&fingerprint(&agent.spec, &grant_types))
        });
        let audit = AuditEntry::system(account, AuditAction::AgentRegister, now)
            .target("agent", agent.id)
            .metadata(json!({
                "name": agent.spec.name,
                "state": agent.state.as_str(),
                "via": "dynamic_registration",
                "scopes": agent.spec.scopes,
                "auth_method": agent.spec.auth_method.as_str(),
                "redirect_uris": agent.spec.redirect_uris,
            }));
        let stored = self
            .repo
            .register_dynamic(
                &agent,
                secret.as_ref().map(|s| self.pepper.digest(s)).as_ref(),
                fingerprint.as_ref(),
                &audit,
            )
            .await?;
        let again = stored.id != agent.id;
        if !again {
            self.agents.forget_account(account);
        }
        tracing::info!(agent.id = %stored.id, account.id = %account, again, "client registered itself");
        Ok(Registered {
            agent: stored,
            secret,
            grant_types,
        })
    }

    /// Deletes dynamically registered agents registered more than [`UNUSED_HOURS`] ago
    /// that nobody used: no token of theirs is stored and no grant to them is in force
    /// (at most `limit` per call). Each deletion is audited `agent.delete`
    /// (`reason: unused`). Returns how many went.
    pub async fn reap_unused(&self, limit: u32) -> Result<u64, StoreError> {
        let now = self.clock.now();
        let audit_of = |agent: &Agent| {
            AuditEntry::system(agent.account_id, AuditAction::AgentDelete, now)
                .target("agent", agent.id)
                .metadata(json!({"name": agent.spec.name, "reason": "unused"}))
        };
        let reaped = self
            .repo
            .reap_dynamic(
                d2_kernel::earlier(now, Duration::hours(UNUSED_HOURS)),
                now,
                limit,
                &audit_of,
            )
            .await?;
        for account in reaped.iter().collect::<BTreeSet<_>>() {
            self.agents.forget_account(*account);
        }
        Ok(u64::try_from(reaped.len()).unwrap_or(u64::MAX))
    }
}

/// The bounds of a registration request.
pub mod registration_limits {
    /// Bytes of a registration request's JSON.
    pub const BYTES: usize = 64 * 1024;
}
