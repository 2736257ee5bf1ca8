//! Managing agents (an account's admins) and authenticating them as OAuth clients.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::{
    AccountId, AuthContext, CacheSettings, Change, ChangeSubscriber, Clock, CoherentCache, Page,
    PageRequest, Pepper, Scope, StoreError,
};
use serde_json::json;

use crate::agent::{
    Agent, AgentId, AgentSpec, AgentState, AuthMethod, ClientSecret, ClientSecrets,
    PendingRegistration, RegistrationToken,
};
use crate::assertion::{AssertionVerifier, check_claims, unverified_subject};
use crate::error::{AgentError, ClientAuthError, ClientRefusal};
use crate::ports::AgentRepo;

/// How long a rotated-out client secret still authenticates, unless configured.
pub const DEFAULT_SECRET_GRACE_SECONDS: i64 = 86_400;

/// An agent's new client secret, shown once, and until when the one it replaced still
/// authenticates.
#[derive(Debug)]
pub struct RotatedSecret {
    pub agent: Agent,
    pub secret: ClientSecret,
    pub previous_valid_until: DateTime<Utc>,
}

pub struct AgentService {
    repo: Arc<dyn AgentRepo>,
    cache: Arc<AgentCache>,
    pepper: Arc<Pepper>,
    clock: Arc<dyn Clock>,
    secret_grace: Duration,
}

impl std::fmt::Debug for AgentService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentService")
            .field("secret_grace", &self.secret_grace)
            .finish_non_exhaustive()
    }
}

/// The record of `action` on `agent` by `ctx`, naming the agent and its state, with `details`
/// (an object) beside them.
fn audit(
    ctx: &AuthContext,
    action: AuditAction,
    agent: &Agent,
    now: DateTime<Utc>,
    details: serde_json::Value,
) -> AuditEntry {
    let mut metadata = json!({"name": agent.spec.name, "state": agent.state.as_str()});
    if let (Some(all), serde_json::Value::Object(details)) = (metadata.as_object_mut(), details) {
        all.extend(details);
    }
    AuditEntry::by(ctx, action, now)
        .target("agent", agent.id)
        .metadata(metadata)
}

impl AgentService {
    pub fn new(
        repo: Arc<dyn AgentRepo>,
        cache: Arc<AgentCache>,
        pepper: Arc<Pepper>,
        clock: Arc<dyn Clock>,
        secret_grace: Duration,
    ) -> Self {
        Self {
            repo,
            cache,
            pepper,
            clock,
            secret_grace,
        }
    }

    /// Registers a pending agent in the caller's account and returns it with its
    /// registration token, shown once. Audited `agent.register`.
    pub async fn register(
        &self,
        ctx: &AuthContext,
        spec: AgentSpec,
    ) -> Result<(Agent, RegistrationToken), AgentError> {
        ctx.require(Scope::Admin)?;
        let spec = spec.validate()?;
        let now = self.clock.now();
        let agent = Agent::new(ctx.account_id, spec, ctx.user_id, now);
        let token = RegistrationToken::generate()?;
        let registration = PendingRegistration::new(self.pepper.digest(&token), now);
        let entry = audit(
            ctx,
            AuditAction::AgentRegister,
            &agent,
            now,
            json!({
                "scopes": agent.spec.scopes,
                "auth_method": agent.spec.auth_method.as_str(),
                "registration_expires_at": registration.expires_at,
            }),
        );
        self.repo.register(&agent, &registration, &entry).await?;
        tracing::info!(agent.id = %agent.id, account.id = %agent.account_id, "agent registered");
        Ok((agent, token))
    }

    /// Activates the agent `registration` names, once: it becomes active and gets its
    /// first client secret, shown once. Anyone holding the token may do it (that is what
    /// the token is for); unknown, used and expired tokens get the same answer. Audited
    /// `agent.activate`.
    pub async fn activate(&self, registration: &str) -> Result<(Agent, ClientSecret), AgentError> {
        let registration = RegistrationToken::parse(registration)?;
        let secret = ClientSecret::generate()?;
        let now = self.clock.now();
        let audit_of = |agent: &Agent| {
            AuditEntry::system(agent.account_id, AuditAction::AgentActivate, now)
                .target("agent", agent.id)
                .metadata(json!({"name": agent.spec.name, "via": "registration_token"}))
        };
        let agent = self
            .repo
            .activate(
                &self.pepper.digest(&registration),
                &self.pepper.digest(&secret),
                now,
                &audit_of,
            )
            .await?
            .ok_or(AgentError::RegistrationNotFound)?;
        self.cache.forget_account(agent.account_id);
        tracing::info!(agent.id = %agent.id, account.id = %agent.account_id, "agent activated");
        Ok((agent, secret))
    }

    pub async fn get(&self, ctx: &AuthContext, id: AgentId) -> Result<Agent, AgentError> {
        ctx.require(Scope::Admin)?;
        self.repo
            .agent(ctx.account_id, id)
            .await?
            .ok_or(AgentError::NotFound)
    }

    pub async fn list(
        &self,
        ctx: &AuthContext,
        page: &PageRequest,
    ) -> Result<Page<Agent>, AgentError> {
        ctx.require(Scope::Admin)?;
        Ok(self.repo.agents(ctx.account_id, page).await?)
    }

    /// Replaces the agent's spec and, when `state` is given, turns it on or off (a pending
    /// agent is activated by its registration token only). Audited `agent.update`.
    pub async fn update(
        &self,
        ctx: &AuthContext,
        id: AgentId,
        spec: AgentSpec,
        state: Option<AgentState>,
    ) -> Result<Agent, AgentError> {
        ctx.require(Scope::Admin)?;
        let spec = spec.validate()?;
        if state == Some(AgentState::Pending) {
            return Err(AgentError::invalid(
                "`state` is `active` or `disabled`: an agent is pending until its registration token is used",
            ));
        }
        let current = self
            .repo
            .agent(ctx.account_id, id)
            .await?
            .ok_or(AgentError::NotFound)?;
        let spec = match current.metadata_url {
            // Its document rules what it says of itself; the update sets the rest.
            Some(_) => AgentSpec {
                name: current.spec.name,
                description: current.spec.description,
                redirect_uris: current.spec.redirect_uris,
                auth_method: current.spec.auth_method,
                jwks: current.spec.jwks,
                jwks_uri: current.spec.jwks_uri,
                ..spec
            },
            None => spec,
        };
        let now = self.clock.now();
        let audit_of = |agent: &Agent| audit(ctx, AuditAction::AgentUpdate, agent, now, json!({}));
        let agent = self
            .repo
            .update(ctx.account_id, id, &spec, state, now, &audit_of)
            .await?
            .ok_or(AgentError::NotFound)?;
        self.cache.forget_account(ctx.account_id);
        Ok(agent)
    }

    /// Deletes the agent: it authenticates no more. Audited `agent.delete`.
    pub async fn delete(&self, ctx: &AuthContext, id: AgentId) -> Result<(), AgentError> {
        ctx.require(Scope::Admin)?;
        let now = self.clock.now();
        let entry = AuditEntry::by(ctx, AuditAction::AgentDelete, now).target("agent", id);
        if !self.repo.delete(ctx.account_id, id, &entry).await? {
            return Err(AgentError::NotFound);
        }
        self.cache.forget_account(ctx.account_id);
        tracing::info!(agent.id = %id, account.id = %ctx.account_id, "agent deleted");
        Ok(())
    }

    /// A new client secret for an active agent, shown once; the one it replaces still
    /// authenticates for the grace period (so agents can be redeployed with the new one).
    /// Audited `agent.secret_rotate`.
    pub async fn rotate_secret(
        &self,
        ctx: &AuthContext,
        id: AgentId,
    ) -> Result<RotatedSecret, AgentError> {
        ctx.require(Scope::Admin)?;
        let secret = ClientSecret::generate()?;
        let now = self.clock.now();
        let previous_valid_until = d2_kernel::later(now, self.secret_grace);
        let audit_of = |agent: &Agent| {
            audit(
                ctx,
                AuditAction::AgentSecretRotate,
                agent,
                now,
                json!({"previous_valid_until": previous_valid_until}),
            )
        };
        let agent = self
            .repo
            .rotate_secret(
                ctx.account_id,
                id,
                &self.pepper.digest(&secret),
                previous_valid_until,
                &audit_of,
            )
            .await?
            .ok_or(AgentError::NotFound)?;
        self.cache.forget_account(ctx.account_id);
        if agent.state != AgentState::Active {
            return Err(AgentError::NotActive(agent.state));
        }
        Ok(RotatedSecret {
            agent,
            secret,
            previous_valid_until,
        })
    }
}

/// Authenticates agents at the token endpoint by their client id and secret, or by a
/// client assertion signed with their key.
pub struct ClientAuthenticator {
    repo: Arc<dyn AgentRepo>,
    cache: Arc<AgentCache>,
    pepper: Arc<Pepper>,
    assertions: Arc<dyn AssertionVerifier>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for ClientAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuthenticator")
            .finish_non_exhaustive()
    }
}

impl ClientAuthenticator {
    pub fn new(
        repo: Arc<dyn AgentRepo>,
        cache: Arc<AgentCache>,
        pepper: Arc<Pepper>,
        assertions: Arc<dyn AssertionVerifier>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            repo,
            cache,
            pepper,
            assertions,
            clock,
        }
    }

    /// The active `private_key_jwt` agent that signed `assertion` (RFC 7523 §3): its `sub`
    /// names the agent (and matches `client_id` when one is given), one of the agent's keys
    /// signed it, its claims pass [`check_claims`] with `audiences` (the issuer and the
    /// endpoint called), and its `jti` was never spent. Every refusal is the same
    /// `invalid_client`; the reason goes to the log only.
    pub async fn authenticate_assertion(
        &self,
        client_id: Option<&str>,
        assertion: &str,
        audiences: &[String],
    ) -> Result<Arc<Agent>, ClientAuthError> {
        let subject = unverified_subject(assertion)
            .ok_or_else(|| refuse(ClientRefusal::Assertion("malformed assertion")))?;
        if client_id.is_some_and(|id| id != subject) {
            return Err(refuse(ClientRefusal::Assertion(
                "client_id differs from the assertion's sub",
            )));
        }
        let Ok(id) = subject.parse::<AgentId>() else {
            return Err(refuse(ClientRefusal::UnknownClient));
        };
        let signer = |client: Option<&CachedClient>| {
            let agent = &client.ok_or(ClientRefusal::UnknownClient)?.agent;
            if agent.state != AgentState::Active {
                return Err(ClientRefusal::NotActive);
            }
            if agent.spec.auth_method != AuthMethod::PrivateKeyJwt {
                return Err(ClientRefusal::WrongMethod);
            }
            Ok(agent.clone())
        };
        let agent = self.decide(id, signer).await?;
        let claims = self
            .assertions
            .verified_claims(&agent, assertion)
            .await
            .map_err(|reason| refuse(ClientRefusal::Assertion(reason)))?;
        let now = self.clock.now();
        let spendable = check_claims(&claims, &subject, audiences, now)
            .map_err(|reason| refuse(ClientRefusal::Assertion(reason)))?;
        if !self
            .repo
            .spend_assertion(agent.id, &spendable.jti, spendable.expires_at, now)
            .await?
        {
            return Err(refuse(ClientRefusal::AssertionReplayed));
        }
        Ok(agent)
    }

    /// What `decide` makes of the agent `id` as cached; when it refuses a known agent, what
    /// it makes of the agent read again (activated, rotated or re-enabled meanwhile on
    /// another replica, before the change feed reached this one).
    async fn decide(
        &self,
        id: AgentId,
        decide: impl Fn(Option<&CachedClient>) -> Result<Arc<Agent>, ClientRefusal>,
    ) -> Result<Arc<Agent>, ClientAuthError> {
        let cached = self.cache.client(id).await?;
        match decide(cached.as_deref()) {
            Ok(agent) => Ok(agent),
            Err(ClientRefusal::UnknownClient) => Err(refuse(ClientRefusal::UnknownClient)),
            Err(_) => decide(self.cache.fresh_client(id).await?.as_deref()).map_err(refuse),
        }
    }

    /// The active public agent (`auth_method: none`) of `account` that `client_id` names:
    /// by its id, or by its metadata document's URL. Every refusal is the same
    /// `invalid_client`; the reason goes to the log only.
    pub async fn authenticate_public(
        &self,
        account: AccountId,
        client_id: &str,
    ) -> Result<Arc<Agent>, ClientAuthError> {
        let id = match client_id.parse::<AgentId>() {
            Ok(id) => Some(id),
            Err(_) => self
                .cache
                .metadata_client(account, client_id)
                .await?
                .map(|agent| agent.id),
        };
        let Some(id) = id else {
            return Err(refuse(ClientRefusal::UnknownClient));
        };
        let public = |client: Option<&CachedClient>| {
            let agent = &client.ok_or(ClientRefusal::UnknownClient)?.agent;
            if agent.account_id != account {
                return Err(ClientRefusal::UnknownClient);
            }
            if agent.state != AgentState::Active {
                return Err(ClientRefusal::NotActive);
            }
            if agent.spec.auth_method != AuthMethod::None {
                return Err(ClientRefusal::WrongMethod);
            }
            Ok(agent.clone())
        };
        self.decide(id, public).await
    }

    /// The active agent `client_id` names, if `secret` is its current secret (or the one
    /// it replaced, within the rotation's grace) and it authenticates by `method`. Every
    /// refusal is the same `invalid_client`; the reason goes to the log only.
    pub async fn authenticate_secret(
        &self,
        client_id: &str,
        secret: &str,
        method: AuthMethod,
    ) -> Result<Arc<Agent>, ClientAuthError> {
        self.authenticate(client_id, secret, Some(method)).await
    }

    /// As [`Self::authenticate_secret`], for the endpoints beside the token endpoint
    /// (introspection, revocation): an agent registered with a client secret may present it
    /// either way there (clients such as authlib default to HTTP Basic on them), as RFC 7591
    /// ties the registered method to the token endpoint only.
    pub async fn authenticate_secret_any_way(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<Arc<Agent>, ClientAuthError> {
        self.authenticate(client_id, secret, None).await
    }

    async fn authenticate(
        &self,
        client_id: &str,
        secret: &str,
        method: Option<AuthMethod>,
    ) -> Result<Arc<Agent>, ClientAuthError> {
        // The digest is computed whatever happens next, so an unknown client costs what a
        // known one does.
        let presented = self.pepper.digest_text(secret);
        let Ok(id) = client_id.parse::<AgentId>() else {
            return Err(refuse(ClientRefusal::UnknownClient));
        };
        let well_formed = ClientSecret::check_format(secret).is_ok();
        let now = self.clock.now();
        let holder = |client: Option<&CachedClient>| {
            let client = client.ok_or(ClientRefusal::UnknownClient)?;
            let agent = &client.agent;
            let secrets = client
                .secrets
                .as_ref()
                .filter(|_| agent.state == AgentState::Active)
                .ok_or(ClientRefusal::NotActive)?;
            let method_fits = match method {
                Some(method) => agent.spec.auth_method == method,
                None => agent.spec.auth_method != AuthMethod::PrivateKeyJwt,
            };
            if !method_fits {
                return Err(ClientRefusal::WrongMethod);
            }
            if !well_formed || !secrets.accept(&presented, now) {
                return Err(ClientRefusal::WrongSecret);
            }
            Ok(agent.clone())
        };
        self.decide(id, holder).await
    }
}

/// The refusal of a client, logged with its reason.
fn refuse(reason: ClientRefusal) -> ClientAuthError {
    tracing::info!(?reason, "client authentication failed");
    ClientAuthError::InvalidClient(reason)
}

/// An agent as the token endpoint authenticates it: with its secrets (none before
/// activation).
#[derive(Debug)]
pub(crate) struct CachedClient {
    agent: Arc<Agent>,
    secrets: Option<ClientSecrets>,
}

/// Agents by id, with their secrets, as client authentication, introspection and
/// `agentinfo` read them: every token request of a fleet would otherwise read its agent
/// from the store. A change of an account's agents (registration, activation, update,
/// rotation, deletion) drops its entries at once in the process that made it and on every
/// other replica through the change feed; a refusal decided on a cached entry is decided
/// again on a fresh read, so a secret rotated or an agent activated elsewhere works at once.
pub struct AgentCache {
    repo: Arc<dyn AgentRepo>,
    clients: CoherentCache<AgentId, Option<Arc<CachedClient>>>,
    /// The agents of metadata document URLs, by account and URL.
    by_url: CoherentCache<(AccountId, String), Option<AgentId>>,
}

impl std::fmt::Debug for AgentCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCache").finish_non_exhaustive()
    }
}

impl AgentCache {
    pub fn new(repo: Arc<dyn AgentRepo>, cache: CacheSettings) -> Self {
        Self {
            repo,
            clients: CoherentCache::new(cache),
            by_url: CoherentCache::new(cache),
        }
    }

    /// The account's agent named by the metadata document at `url`, if it has one.
    pub async fn metadata_client(
        &self,
        account: AccountId,
        url: &str,
    ) -> Result<Option<Arc<Agent>>, StoreError> {
        let key = (account, url.to_owned());
        let id = self
            .by_url
            .get_or_load(&key, || async {
                self.repo.metadata_client_id(account, url).await
            })
            .await?;
        match id {
            Some(id) => self.agent(account, id).await,
            None => Ok(None),
        }
    }

    /// The account's agent `id`, if it exists.
    pub async fn agent(
        &self,
        account: AccountId,
        id: AgentId,
    ) -> Result<Option<Arc<Agent>>, StoreError> {
        Ok(self
            .client(id)
            .await?
            .filter(|client| client.agent.account_id == account)
            .map(|client| client.agent.clone()))
    }

    /// The agent `id` of any account, with its secrets.
    pub(crate) async fn client(
        &self,
        id: AgentId,
    ) -> Result<Option<Arc<CachedClient>>, StoreError> {
        self.clients
            .get_or_load(&id, || async {
                Ok(self.repo.client(id).await?.map(|(agent, secrets)| {
                    Arc::new(CachedClient {
                        agent: Arc::new(agent),
                        secrets,
                    })
                }))
            })
            .await
    }

    /// The agent `id` read from the store again.
    pub(crate) async fn fresh_client(
        &self,
        id: AgentId,
    ) -> Result<Option<Arc<CachedClient>>, StoreError> {
        self.clients.invalidate(&id).await;
        self.client(id).await
    }

    /// Forgets the account's agents (and every agent not found).
    /// Spends a DPoP proof's `jti` of `agent` (namespaced apart from its assertions'),
    /// remembered until `until`: `false` when spent before.
    pub(crate) async fn spend_proof(
        &self,
        agent: AgentId,
        jti: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.repo.spend_assertion(agent, jti, until, now).await
    }

    pub fn forget_account(&self, account: AccountId) {
        self.clients.invalidate_if(move |_, client| {
            client
                .as_ref()
                .is_none_or(|c| c.agent.account_id == account)
        });
        self.by_url.invalidate_if(move |key, _| key.0 == account);
    }
}

impl ChangeSubscriber for AgentCache {
    fn on_change(&self, change: &Change) {
        match change {
            Change::OAuth(account) => self.forget_account(*account),
            Change::Resync => {
                self.clients.invalidate_all();
                self.by_url.invalidate_all();
            }
            _ => {}
        }
    }
}
