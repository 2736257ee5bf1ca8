//! Agents: the OAuth clients of an account's authorization server (seed 003 §5.1).
//! Registration answers a one-time registration token; activation with it answers the
//! client id and secret, once.

use actix_web::http::StatusCode;
use actix_web::web::{Data, Path, Query};
use actix_web::{HttpResponse, delete, get, post, put};
use chrono::{DateTime, Utc};
use d2_oauth::{Agent, AgentId, AgentSpec, AgentState, AuthMethod, ClientPolicy, RotatedSecret};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use super::{PageQuery, paged, secret_response};
use crate::auth::Auth;
use crate::body::Json;
use crate::error::{ApiError, ApiResult};
use crate::state::ApiState;

pub fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(register)
        .service(activate)
        .service(get_client_policy)
        .service(set_client_policy)
        .service(issue_initial_access)
        .service(list)
        .service(get_one)
        .service(update)
        .service(remove)
        .service(rotate_secret);
}

fn default_access_seconds() -> u32 {
    AgentSpec::DEFAULT_ACCESS_SECONDS
}

#[expect(
    clippy::unnecessary_wraps,
    reason = "serde's `default` must give the field's type"
)]
fn default_refresh_seconds() -> Option<u32> {
    Some(AgentSpec::DEFAULT_REFRESH_SECONDS)
}

/// How an agent authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethodBody {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
}

impl From<AuthMethodBody> for AuthMethod {
    fn from(method: AuthMethodBody) -> Self {
        match method {
            AuthMethodBody::ClientSecretBasic => AuthMethod::ClientSecretBasic,
            AuthMethodBody::ClientSecretPost => AuthMethod::ClientSecretPost,
            AuthMethodBody::PrivateKeyJwt => AuthMethod::PrivateKeyJwt,
        }
    }
}

/// What an agent is registered with, or updated to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSpecBody {
    /// 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    #[schema(max_length = 1000)]
    pub description: Option<String>,
    /// The scopes the agent may be granted (RFC 6749 scope tokens).
    #[serde(default)]
    #[schema(max_items = 100)]
    pub scopes: Vec<String>,
    /// `https` URLs, or `http` on 127.0.0.1 or [::1], without a fragment.
    #[serde(default)]
    #[schema(max_items = 10)]
    pub redirect_uris: Vec<String>,
    /// The resources (RFC 8707: absolute URIs) its access tokens may be issued for.
    #[serde(default)]
    #[schema(max_items = 20)]
    pub resources: Vec<String>,
    /// What access rules read about the agent: a JSON object, at most 64 names.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub auth_method: AuthMethodBody,
    /// `private_key_jwt`: the agent's public keys, `{"keys": [...]}`.
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<serde_json::Value>,
    /// `private_key_jwt`: or an `https` URL serving them.
    pub jwks_uri: Option<String>,
    /// 60 to 86400 (default 3600).
    #[serde(default = "default_access_seconds")]
    #[schema(minimum = 60, maximum = 86400)]
    pub access_token_seconds: u32,
    /// 3600 to 7776000 (default 2592000); `null`: no refresh tokens.
    #[serde(default = "default_refresh_seconds")]
    #[schema(minimum = 3600, maximum = 7_776_000)]
    pub refresh_token_seconds: Option<u32>,
}

impl From<AgentSpecBody> for AgentSpec {
    fn from(body: AgentSpecBody) -> Self {
        AgentSpec {
            name: body.name,
            description: body.description,
            scopes: body.scopes,
            redirect_uris: body.redirect_uris,
            resources: body.resources,
            attributes: body.attributes,
            auth_method: body.auth_method.into(),
            jwks: body.jwks,
            jwks_uri: body.jwks_uri,
            access_token_seconds: body.access_token_seconds,
            refresh_token_seconds: body.refresh_token_seconds,
        }
    }
}

/// An agent as its account's admins see it. Never a secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentBody {
    /// The agent's OAuth `client_id`.
    pub client_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    /// `pending` (not activated yet), `active` or `disabled`.
    pub state: &'static str,
    pub scopes: Vec<String>,
    pub redirect_uris: Vec<String>,
    pub resources: Vec<String>,
    #[schema(value_type = Object)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
    pub auth_method: &'static str,
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<serde_json::Value>,
    pub jwks_uri: Option<String>,
    pub access_token_seconds: u32,
    pub refresh_token_seconds: Option<u32>,
    /// The person who registered it, when a person did.
    pub registered_by: Option<Uuid>,
    /// For a client named by its metadata document: the document's URL, which is then its
    /// OAuth `client_id` (`client_id` here still names it in this API). Its name, redirect
    /// URIs and authentication (`none`) follow the document.
    pub metadata_url: Option<String>,
    /// Whether the client registered itself (RFC 7591, `{issuer}/register`).
    pub registered_dynamically: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub activated_at: Option<DateTime<Utc>>,
}

impl From<Agent> for AgentBody {
    fn from(agent: Agent) -> Self {
        let spec = agent.spec;
        Self {
            client_id: *agent.id.as_uuid(),
            name: spec.name,
            description: spec.description,
            state: agent.state.as_str(),
            scopes: spec.scopes,
            redirect_uris: spec.redirect_uris,
            resources: spec.resources,
            attributes: spec.attributes,
            auth_method: spec.auth_method.as_str(),
            jwks: spec.jwks,
            jwks_uri: spec.jwks_uri,
            access_token_seconds: spec.access_token_seconds,
            refresh_token_seconds: spec.refresh_token_seconds,
            registered_by: agent.registered_by.map(Uuid::from),
            metadata_url: agent.metadata_url,
            registered_dynamically: agent.registered_dynamically,
            created_at: agent.created_at,
            updated_at: agent.updated_at,
            activated_at: agent.activated_at,
        }
    }
}

/// A registered agent and its registration token, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisteredAgentBody {
    #[serde(flatten)]
    pub agent: AgentBody,
    /// Activates the agent once (`POST /v1/agents/activate`), within 24 hours.
    pub registration_token: String,
    pub registration_expires_at: DateTime<Utc>,
}

/// Register an agent (admin): it is pending until its registration token, answered here
/// once, activates it. Audited as `agent.register`.
#[utoipa::path(tag = "agents", security(("bearer" = []), ("api_key" = [])), request_body = AgentSpecBody,
    responses(
    (status = 201, body = RegisteredAgentBody),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/register")]
async fn register(
    state: Data<ApiState>,
    auth: Auth,
    body: Json<AgentSpecBody>,
) -> ApiResult<HttpResponse> {
    let (agent, token) = state
        .app
        .oauth
        .agents
        .register(&auth, body.0.into())
        .await?;
    let expires_at = d2_kernel::later(
        agent.created_at,
        chrono::Duration::hours(d2_oauth::REGISTRATION_LIFETIME_HOURS),
    );
    Ok(secret_response(
        StatusCode::CREATED,
        &RegisteredAgentBody {
            agent: agent.into(),
            registration_token: token.expose().to_owned(),
            registration_expires_at: expires_at,
        },
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivateBody {
    /// The `registration_token` registration answered.
    pub registration_token: String,
}

/// An activated agent with its OAuth client credentials; the secret is shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActivatedAgentBody {
    #[serde(flatten)]
    pub agent: AgentBody,
    pub client_secret: String,
}

/// Activate an agent with its registration token, once (no other credential: the token
/// is it). Answers the client id and secret; an unknown, used or expired token is 404
/// `registration_not_found`. Audited as `agent.activate`.
#[utoipa::path(tag = "agents", security(()), request_body = ActivateBody, responses(
    (status = 200, body = ActivatedAgentBody),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/activate")]
async fn activate(state: Data<ApiState>, body: Json<ActivateBody>) -> ApiResult<HttpResponse> {
    let (agent, secret) = state
        .app
        .oauth
        .agents
        .activate(&body.0.registration_token)
        .await?;
    Ok(secret_response(
        StatusCode::OK,
        &ActivatedAgentBody {
            agent: agent.into(),
            client_secret: secret.expose().to_owned(),
        },
    ))
}

/// The account's agents, newest first (admin).
#[utoipa::path(tag = "agents", security(("bearer" = []), ("api_key" = [])), params(PageQuery),
    responses(
    (status = 200, body = Vec<AgentBody>, headers(("X-Next-Cursor" = String, description = "Present when another page follows"))),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("")]
async fn list(
    state: Data<ApiState>,
    auth: Auth,
    query: Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let page = query.parse()?;
    let agents = state.app.oauth.agents.list(&auth, &page).await?;
    Ok(paged(agents, AgentBody::from))
}

/// One agent of the account (admin); another account's is 404 `agent_not_found`.
#[utoipa::path(tag = "agents", security(("bearer" = []), ("api_key" = [])),
    params(("client_id" = Uuid, Path)), responses(
    (status = 200, body = AgentBody),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/{client_id}")]
async fn get_one(
    state: Data<ApiState>,
    client_id: Path<AgentId>,
    auth: Auth,
) -> ApiResult<HttpResponse> {
    let agent = state.app.oauth.agents.get(&auth, *client_id).await?;
    Ok(HttpResponse::Ok().json(AgentBody::from(agent)))
}

/// An agent's new spec, and optionally its state.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAgentBody {
    #[serde(flatten)]
    pub spec: AgentSpecBody,
    /// `active` or `disabled` (a disabled agent authenticates no more); absent, unchanged.
    pub state: Option<String>,
}

/// Replace an agent's spec (admin), and turn it on or off with `state`. Audited as
/// `agent.update`.
#[utoipa::path(tag = "agents", security(("bearer" = []), ("api_key" = [])),
    params(("client_id" = Uuid, Path)), request_body = UpdateAgentBody, responses(
    (status = 200, body = AgentBody),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[put("/{client_id}")]
async fn update(
    state: Data<ApiState>,
    client_id: Path<AgentId>,
    auth: Auth,
    body: Json<UpdateAgentBody>,
) -> ApiResult<HttpResponse> {
    let UpdateAgentBody {
        spec,
        state: wanted,
    } = body.0;
    let wanted = wanted
        .map(|text| text.parse::<AgentState>())
        .transpose()
        .map_err(|error| ApiError::new(d2_kernel::Code::InvalidAgent, error.to_string()))?;
    let agent = state
        .app
        .oauth
        .agents
        .update(&auth, *client_id, spec.into(), wanted)
        .await?;
    Ok(HttpResponse::Ok().json(AgentBody::from(agent)))
}

/// Delete an agent (admin): it authenticates no more and every token issued to it is
/// revoked. Audited as `agent.delete`.
#[utoipa::path(tag = "agents", security(("bearer" = []), ("api_key" = [])),
    params(("client_id" = Uuid, Path)), responses(
    (status = 204),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[delete("/{client_id}")]
async fn remove(
    state: Data<ApiState>,
    client_id: Path<AgentId>,
    auth: Auth,
) -> ApiResult<HttpResponse> {
    state.app.oauth.agents.delete(&auth, *client_id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A new client secret, shown once, and until when the one it replaced still
/// authenticates.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedSecretBody {
    pub client_id: Uuid,
    pub client_secret: String,
    pub previous_secret_valid_until: DateTime<Utc>,
}

impl From<RotatedSecret> for RotatedSecretBody {
    fn from(rotated: RotatedSecret) -> Self {
        Self {
            client_id: *rotated.agent.id.as_uuid(),
            client_secret: rotated.secret.expose().to_owned(),
            previous_secret_valid_until: rotated.previous_valid_until,
        }
    }
}

/// Rotate an active agent's client secret (admin): the new one is answered once; the old
/// one keeps authenticating for `oauth.secret_grace_seconds`. A pending or disabled agent is
/// 409 `agent_not_active`. Audited as `agent.secret_rotate`.
#[utoipa::path(tag = "agents", security(("bearer" = []), ("api_key" = [])),
    params(("client_id" = Uuid, Path)), responses(
    (status = 200, body = RotatedSecretBody),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 409, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/{client_id}/rotate-secret")]
async fn rotate_secret(
    state: Data<ApiState>,
    client_id: Path<AgentId>,
    auth: Auth,
) -> ApiResult<HttpResponse> {
    let rotated = state
        .app
        .oauth
        .agents
        .rotate_secret(&auth, *client_id)
        .await?;
    Ok(secret_response(
        StatusCode::OK,
        &RotatedSecretBody::from(rotated),
    ))
}

/// What an account lets clients that name themselves (by a metadata document) or register
/// themselves (RFC 7591) have.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientPolicyBody {
    /// Whether a `client_id` that is the `https` URL of a client metadata document is
    /// accepted at the authorization endpoint.
    pub metadata_documents: bool,
    /// Whether clients may register themselves at `{issuer}/register` (with the account's
    /// initial access token).
    #[serde(default)]
    pub dynamic_registration: bool,
    /// The scopes such a client's agent may be granted: those its document's `scope` asks
    /// for, of these (all of these when it asks none).
    #[serde(default)]
    #[schema(max_items = 100)]
    pub scopes: Vec<String>,
    /// The resources (RFC 8707) its tokens may target.
    #[serde(default)]
    #[schema(max_items = 20)]
    pub resources: Vec<String>,
}

/// The account's client policy, as set.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientPolicyView {
    pub metadata_documents: bool,
    pub dynamic_registration: bool,
    /// Whether an initial access token was issued (`POST
    /// /v1/agents/client-policy/initial-access-token`); the token itself is shown once.
    pub initial_access_token_set: bool,
    pub scopes: Vec<String>,
    pub resources: Vec<String>,
    /// When an admin last set it; null for the default (nothing accepted).
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<&ClientPolicy> for ClientPolicyView {
    fn from(policy: &ClientPolicy) -> Self {
        Self {
            metadata_documents: policy.metadata_documents,
            dynamic_registration: policy.dynamic_registration,
            initial_access_token_set: policy.initial_access.is_some(),
            scopes: policy.scopes.clone(),
            resources: policy.resources.clone(),
            updated_at: policy.updated_at,
        }
    }
}

/// The account's policy for clients named by a metadata document (admin): until one is
/// set, none is accepted.
#[utoipa::path(tag = "agents", security(("bearer" = []), ("api_key" = [])), responses(
    (status = 200, body = ClientPolicyView),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/client-policy")]
async fn get_client_policy(state: Data<ApiState>, auth: Auth) -> ApiResult<HttpResponse> {
    let policy = state.app.oauth.client_policies.get(&auth).await?;
    Ok(HttpResponse::Ok().json(ClientPolicyView::from(&*policy)))
}

/// Replace the account's policy for clients named by a metadata document (admin). Such a
/// client becomes an agent of the account at its first authorization request, with the
/// scopes and resources allowed then; agents made earlier keep theirs (change them, or
/// disable them, as any agent). Audited as `oauth.client_policy_update`.
#[utoipa::path(tag = "agents", security(("bearer" = []), ("api_key" = [])),
    request_body = ClientPolicyBody, responses(
    (status = 200, body = ClientPolicyView),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[put("/client-policy")]
async fn set_client_policy(
    state: Data<ApiState>,
    auth: Auth,
    body: Json<ClientPolicyBody>,
) -> ApiResult<HttpResponse> {
    let body = body.0;
    let policy = ClientPolicy {
        metadata_documents: body.metadata_documents,
        dynamic_registration: body.dynamic_registration,
        initial_access: None,
        scopes: body.scopes,
        resources: body.resources,
        updated_at: None,
    };
    let policy = state.app.oauth.client_policies.set(&auth, policy).await?;
    Ok(HttpResponse::Ok().json(ClientPolicyView::from(&policy)))
}

/// A new initial access token, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct InitialAccessBody {
    /// What a client presents (`Authorization: Bearer`) to register itself at
    /// `{issuer}/register` while the policy's `dynamic_registration` is on.
    pub initial_access_token: String,
}

/// Issue the account's initial access token for dynamic client registration (admin): shown
/// once, kept as a keyed digest; the one it replaces stops working. Audited as
/// `oauth.initial_access_issue`.
#[utoipa::path(tag = "agents", security(("bearer" = []), ("api_key" = [])), responses(
    (status = 201, body = InitialAccessBody),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/client-policy/initial-access-token")]
async fn issue_initial_access(state: Data<ApiState>, auth: Auth) -> ApiResult<HttpResponse> {
    let token = state
        .app
        .oauth
        .dynamic_clients
        .issue_initial_access(&auth)
        .await?;
    Ok(secret_response(
        StatusCode::CREATED,
        &InitialAccessBody {
            initial_access_token: token.expose().to_owned(),
        },
    ))
}
