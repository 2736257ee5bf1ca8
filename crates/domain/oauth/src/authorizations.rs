//! The consent step of the authorization code flow: checking what an agent asks, finding
//! the person's principal, remembering and withdrawing consents, and issuing codes. The
//! pages and the sign-in around it are the HTTP layer's; see [`crate::authorization`] for
//! the model.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use d2_kernel::{AccountId, Clock, Pepper};

use crate::agent::{Agent, AgentId, AgentState, is_resource};
use crate::authorization::{
    AuthorizationCode, AuthorizationCodeSecret, AuthorizationRequest, AuthorizeError,
    AuthorizeParams, CONSENT_SECONDS, Prompt, ReturnTo, authorize_errors, authorize_limits,
    checked_challenge, requested_scopes,
};
use crate::client_documents::{ClientDocumentError, MetadataClients};
use crate::delegation::{Delegation, DelegationId, DelegationSpec, Grantor};
use crate::delegations::DelegationService;
use crate::entitlement::{ConsentItems, Entitlements};
use crate::error::{DelegationError, GrantError};
use crate::ports::{AuthorizationCodeRepo, PrincipalRepo};
use crate::principal::{Principal, PrincipalId};
use crate::service::AgentCache;

/// The consents a person's page lists at most.
pub const CONSENTS_LISTED: u32 = 100;

/// A person signed in through the identity provider, as the consent pages know them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedInPerson {
    /// The provider's `sub`.
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    /// When they signed in there.
    pub auth_time: DateTime<Utc>,
}

/// What the consent page shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsentView {
    pub agent_name: String,
    pub agent_description: Option<String>,
    /// The host the answer goes back to, shown plainly.
    pub redirect_host: String,
    /// For a client named by a metadata document, the host that publishes it: its name is
    /// its own claim, this is what vouches for it.
    pub metadata_host: Option<String>,
    pub items: ConsentItems,
}

/// Why the signed-in person cannot answer for anyone in the account.
#[derive(Debug, thiserror::Error)]
pub enum PrincipalRefusal {
    #[error("the identity provider does not vouch for an email address of yours")]
    NoVerifiedEmail,
    #[error("you are not a user of this account")]
    NotAUser,
    #[error("several users of this account have your email address: ask its admin")]
    Ambiguous,
}

pub struct Authorizations {
    agents: Arc<AgentCache>,
    principals: Arc<dyn PrincipalRepo>,
    delegations: Arc<DelegationService>,
    codes: Arc<dyn AuthorizationCodeRepo>,
    entitlements: Arc<Entitlements>,
    pepper: Arc<Pepper>,
    clock: Arc<dyn Clock>,
    /// Clients named by a metadata document's URL, when accepted at all.
    metadata_clients: Option<Arc<MetadataClients>>,
}

impl std::fmt::Debug for Authorizations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizations").finish_non_exhaustive()
    }
}

fn store(error: impl Into<GrantError>) -> AuthorizeError {
    match error.into() {
        GrantError::Store(error) => AuthorizeError::Store(error),
        other => AuthorizeError::redirect(authorize_errors::SERVER_ERROR, other.to_string()),
    }
}

impl Authorizations {
    pub fn new(
        agents: Arc<AgentCache>,
        principals: Arc<dyn PrincipalRepo>,
        delegations: Arc<DelegationService>,
        codes: Arc<dyn AuthorizationCodeRepo>,
        entitlements: Arc<Entitlements>,
        pepper: Arc<Pepper>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            agents,
            principals,
            delegations,
            codes,
            entitlements,
            pepper,
            clock,
            metadata_clients: None,
        }
    }

    /// Accepts clients named by the URL of their metadata document, as `clients` resolves
    /// them.
    pub fn with_metadata_clients(mut self, clients: Arc<MetadataClients>) -> Self {
        self.metadata_clients = Some(clients);
        self
    }

    /// Checks an authorization request to `account`: first what proves where to answer
    /// (an active agent of the account, one of its redirect URIs exactly), refused without
    /// a redirect; then the rest, refused with where to answer.
    pub async fn check(
        &self,
        account: AccountId,
        params: &AuthorizeParams,
    ) -> Result<(AuthorizationRequest, Arc<Agent>), (AuthorizeError, Option<ReturnTo>)> {
        let (agent, redirect_uri) = self.client(account, params).await.map_err(|e| (e, None))?;
        let return_to = ReturnTo {
            account_id: account,
            redirect_uri: redirect_uri.clone(),
            state: params.state.clone(),
        };
        self.checked(account, params, agent, redirect_uri)
            .await
            .map_err(|error| (error, Some(return_to)))
    }

    /// The active agent of the request and its redirect URI, exactly one it registered.
    async fn client(
        &self,
        account: AccountId,
        params: &AuthorizeParams,
    ) -> Result<(Arc<Agent>, String), AuthorizeError> {
        let unredirectable = |code, description: &str| AuthorizeError::Unredirectable {
            code,
            description: description.to_owned(),
        };
        let client_id = params.client_id.as_deref().unwrap_or_default();
        let agent = match client_id.parse::<AgentId>() {
            Ok(agent_id) => self
                .agents
                .agent(account, agent_id)
                .await
                .map_err(store)?
                .filter(|agent| agent.state == AgentState::Active)
                .ok_or_else(|| {
                    unredirectable(
                        "invalid_client",
                        "no active agent of this account has this `client_id`",
                    )
                })?,
            Err(_) if client_id.starts_with("https://") => {
                let Some(documents) = &self.metadata_clients else {
                    return Err(unredirectable(
                        "invalid_client",
                        &ClientDocumentError::NotAccepted.to_string(),
                    ));
                };
                documents
                    .resolve(account, client_id)
                    .await
                    .map_err(|error| match error {
                        ClientDocumentError::Store(error) => AuthorizeError::Store(error),
                        refused => unredirectable("invalid_client", &refused.to_string()),
                    })?
            }
            Err(_) => {
                return Err(unredirectable(
                    "invalid_client",
                    "`client_id` must name an agent of this account, or be the https URL of a client metadata document",
                ));
            }
        };
        let redirect_uri = params
            .redirect_uri
            .as_deref()
            .filter(|uri| agent.spec.redirect_uris.iter().any(|r| r == uri))
            .ok_or_else(|| {
                unredirectable(
                    "invalid_redirect_uri",
                    "`redirect_uri` must be one the agent registered, exactly",
                )
            })?
            .to_owned();
        Ok((agent, redirect_uri))
    }

    async fn checked(
        &self,
        account: AccountId,
        params: &AuthorizeParams,
        agent: Arc<Agent>,
        redirect_uri: String,
    ) -> Result<(AuthorizationRequest, Arc<Agent>), AuthorizeError> {
        if params.response_type.as_deref() != Some("code") {
            return Err(AuthorizeError::redirect(
                authorize_errors::UNSUPPORTED_RESPONSE_TYPE,
                "`response_type` must be code",
            ));
        }
        let code_challenge = checked_challenge(
            params.code_challenge.as_deref(),
            params.code_challenge_method.as_deref(),
        )?;
        let (scopes, openid) = requested_scopes(params.scope.as_deref())?;
        let resources: BTreeSet<String> = params.resources.iter().cloned().collect();
        if let Some(refused) = resources
            .iter()
            .find(|r| !is_resource(r) || !agent.spec.resources.contains(*r))
        {
            return Err(AuthorizeError::redirect(
                authorize_errors::INVALID_TARGET,
                format!(
                    "the agent may not target the resource `{}`",
                    refused.escape_debug()
                ),
            ));
        }
        for (name, value) in [("state", &params.state), ("nonce", &params.nonce)] {
            if value.as_ref().is_some_and(|v| {
                v.is_empty()
                    || v.chars().count() > authorize_limits::STATE_CHARS
                    || v.chars().any(char::is_control)
            }) {
                return Err(AuthorizeError::redirect(
                    authorize_errors::INVALID_REQUEST,
                    format!(
                        "`{name}` must be 1 to {} characters, without control characters",
                        authorize_limits::STATE_CHARS
                    ),
                ));
            }
        }
        let prompt = match params.prompt.as_deref() {
            None => Prompt::Auto,
            Some("consent") => Prompt::Consent,
            Some("login") => Prompt::Login,
            Some("none") => Prompt::None,
            Some(_) => {
                return Err(AuthorizeError::redirect(
                    authorize_errors::INVALID_REQUEST,
                    "`prompt` must be none, login or consent",
                ));
            }
        };
        let request = AuthorizationRequest {
            account_id: account,
            agent_id: agent.id,
            redirect_uri,
            scopes,
            openid,
            resources: resources.into_iter().collect(),
            state: params.state.clone(),
            nonce: params.nonce.clone(),
            code_challenge,
            prompt,
        };
        // Scopes the agent may not have are refused before anyone is asked.
        self.view_of(&request, &agent).await?;
        Ok((request, agent))
    }

    /// What the consent page shows for `request` of `agent`.
    pub async fn view_of(
        &self,
        request: &AuthorizationRequest,
        agent: &Agent,
    ) -> Result<ConsentView, AuthorizeError> {
        let items = self
            .entitlements
            .consent_items(agent, &request.scopes)
            .await
            .map_err(store)?
            .map_err(|refused| {
                AuthorizeError::redirect(
                    authorize_errors::INVALID_SCOPE,
                    format!(
                        "the agent may not have the scope `{}`",
                        refused.escape_debug()
                    ),
                )
            })?;
        Ok(ConsentView {
            agent_name: agent.spec.name.clone(),
            agent_description: agent.spec.description.clone(),
            redirect_host: url::Url::parse(&request.redirect_uri)
                .ok()
                .and_then(|url| url.host_str().map(str::to_owned))
                .unwrap_or_default(),
            metadata_host: agent
                .metadata_url
                .as_deref()
                .and_then(|url| url::Url::parse(url).ok())
                .and_then(|url| url.host_str().map(str::to_owned)),
            items,
        })
    }

    /// The agent `request` is from, if it is still active.
    pub async fn agent_of(
        &self,
        request: &AuthorizationRequest,
    ) -> Result<Option<Arc<Agent>>, AuthorizeError> {
        Ok(self
            .agents
            .agent(request.account_id, request.agent_id)
            .await
            .map_err(store)?
            .filter(|agent| agent.state == AgentState::Active))
    }

    /// The active principal of `account` the signed-in person is: the one whose email is
    /// the email the identity provider vouches for.
    pub async fn principal_of(
        &self,
        account: AccountId,
        person: &SignedInPerson,
    ) -> Result<Result<Principal, PrincipalRefusal>, AuthorizeError> {
        Ok(principal_of(&*self.principals, account, person).await?)
    }

    /// The consent `principal` already gave that covers `request`: its newest grant to the
    /// agent in force, naming every scope and resource asked and no task.
    pub async fn remembered(
        &self,
        request: &AuthorizationRequest,
        principal: PrincipalId,
    ) -> Result<Option<Delegation>, AuthorizeError> {
        let now = self.clock.now();
        let Some(grant) = self
            .delegations
            .newest_between(
                request.account_id,
                Grantor::Principal(principal),
                request.agent_id,
                now,
            )
            .await
            .map_err(delegation_failure)?
        else {
            return Ok(None);
        };
        let covers = !request.scopes.is_empty()
            && request.scopes.iter().all(|s| grant.scopes.contains(s))
            && (grant.resources.is_empty()
                || request
                    .resources
                    .iter()
                    .all(|r| grant.resources.contains(r)))
            && grant.task_id.is_none();
        if !covers || self.delegations.check_in_force(&grant, now).await.is_err() {
            return Ok(None);
        }
        Ok(Some(grant))
    }

    /// The person left `scopes` and `tools` checked on the consent page of `request`: a
    /// grant from `principal` to the agent, audited as theirs, naming those tools when the
    /// page offered any (the person chose among them), else none (any the scopes allow).
    /// Anything not offered is refused; no scope approved is a denial.
    pub async fn approve(
        &self,
        request: &AuthorizationRequest,
        principal: PrincipalId,
        scopes: BTreeSet<String>,
        tools: BTreeSet<String>,
    ) -> Result<Delegation, AuthorizeError> {
        let agent = self.agent_of(request).await?.ok_or_else(|| {
            AuthorizeError::redirect(
                authorize_errors::UNAUTHORIZED_CLIENT,
                "the agent is no longer active",
            )
        })?;
        let view = self.view_of(request, &agent).await?;
        let offered = |list: &[(String, Option<String>)], name: &String| {
            list.iter().any(|(offered, _)| offered == name)
        };
        if scopes.is_empty() {
            return Err(AuthorizeError::redirect(
                authorize_errors::ACCESS_DENIED,
                "no scope was approved",
            ));
        }
        if scopes.iter().any(|s| !offered(&view.items.scopes, s))
            || tools.iter().any(|t| !offered(&view.items.tools, t))
        {
            return Err(AuthorizeError::redirect(
                authorize_errors::INVALID_REQUEST,
                "the approval names what was not asked",
            ));
        }
        let spec = DelegationSpec {
            grantor: Grantor::Principal(principal),
            agent_id: request.agent_id,
            scopes,
            tools: (!view.items.tools.is_empty()).then_some(tools),
            resources: request.resources.iter().cloned().collect(),
            task_id: None,
            max_depth: 1,
            expires_in_seconds: CONSENT_SECONDS,
        };
        self.delegations
            .create_as_principal(request.account_id, principal, spec)
            .await
            .map_err(|error| match error {
                DelegationError::Store(error) => AuthorizeError::Store(error),
                other => {
                    AuthorizeError::redirect(authorize_errors::ACCESS_DENIED, other.to_string())
                }
            })
    }

    /// A code for `request`, answered by `principal` under `grant` (made or found for it):
    /// the scopes asked that the grant names (all the grant names when none were asked).
    /// Its text, shown once.
    pub async fn issue_code(
        &self,
        request: &AuthorizationRequest,
        principal: PrincipalId,
        grant: &Delegation,
        auth_time: DateTime<Utc>,
    ) -> Result<String, AuthorizeError> {
        let secret = AuthorizationCodeSecret::generate().map_err(|error| {
            AuthorizeError::redirect(authorize_errors::SERVER_ERROR, error.to_string())
        })?;
        let mut code =
            AuthorizationCode::new(request, principal, grant.id, auth_time, self.clock.now());
        code.scopes = if request.scopes.is_empty() {
            grant.scopes.iter().cloned().collect()
        } else {
            request
                .scopes
                .iter()
                .filter(|scope| grant.scopes.contains(*scope))
                .cloned()
                .collect()
        };
        if !self
            .codes
            .create_code(&code, &self.pepper.digest(&secret))
            .await?
        {
            return Err(AuthorizeError::redirect(
                authorize_errors::ACCESS_DENIED,
                "the agent, the user or the consent is gone",
            ));
        }
        Ok(secret.expose().to_owned())
    }

    /// The consents `principal` gave in `account` that are in force, newest first.
    pub async fn consents(
        &self,
        account: AccountId,
        principal: PrincipalId,
    ) -> Result<Vec<(Delegation, Option<Arc<Agent>>)>, AuthorizeError> {
        let grants = self
            .delegations
            .granted_by(account, principal, CONSENTS_LISTED)
            .await
            .map_err(delegation_failure)?;
        let mut listed = Vec::with_capacity(grants.len());
        for grant in grants {
            let agent = self
                .agents
                .agent(account, grant.agent_id)
                .await
                .map_err(store)?;
            listed.push((grant, agent));
        }
        Ok(listed)
    }

    /// `principal` withdraws its consent `id`: the grant is revoked with every token
    /// derived from it. `false` when it is no consent of theirs.
    pub async fn withdraw(
        &self,
        account: AccountId,
        principal: PrincipalId,
        id: DelegationId,
    ) -> Result<bool, AuthorizeError> {
        match self.delegations.withdraw(account, principal, id).await {
            Ok(_) => Ok(true),
            Err(DelegationError::NotFound) => Ok(false),
            Err(error) => Err(delegation_failure(error)),
        }
    }
}

/// The active principal of `account` whose email is the one the identity provider vouches
/// for (`email_verified`), compared without case; nobody, or several, is a refusal.
pub(crate) async fn principal_of(
    principals: &dyn PrincipalRepo,
    account: AccountId,
    person: &SignedInPerson,
) -> Result<Result<Principal, PrincipalRefusal>, d2_kernel::StoreError> {
    let Some(email) = person.email.as_deref().filter(|_| person.email_verified) else {
        return Ok(Err(PrincipalRefusal::NoVerifiedEmail));
    };
    let mut found = principals
        .active_principals_by_email(account, email, 2)
        .await?;
    Ok(match (found.pop(), found.is_empty()) {
        (Some(principal), true) => Ok(principal),
        (Some(_), false) => Err(PrincipalRefusal::Ambiguous),
        (None, _) => Err(PrincipalRefusal::NotAUser),
    })
}

fn delegation_failure(error: DelegationError) -> AuthorizeError {
    match error {
        DelegationError::Store(error) => AuthorizeError::Store(error),
        other => AuthorizeError::redirect(authorize_errors::SERVER_ERROR, other.to_string()),
    }
}
