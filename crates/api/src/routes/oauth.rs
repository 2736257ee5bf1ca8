//! Each account's authorization server for its agents (seed 003): discovery (RFC 8414 and
//! OpenID), the JWKS, the token endpoint (client credentials, refresh with rotation),
//! introspection (RFC 7662) and revocation (RFC 7009), under `/oauth/{account_id}`. Errors
//! on these endpoints are RFC 6749 §5.2 JSON, never problem documents.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderMap};
use actix_web::web::{Bytes, Data, Path};
use actix_web::{HttpRequest, HttpResponse, get, post};
use base64::Engine as _;
use d2_kernel::{AccountId, Code};
use d2_oauth::{
    Agent, AuthMethod, CLIENT_ASSERTION_TYPE, ClientMetadata, GrantType, Introspection,
    TokenRequest, TokenResponse, ToolCheck, issuer_url,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use super::secret_response;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::state::ApiState;

/// `/v1/agents/me`.
pub fn configure_agents(cfg: &mut ServiceConfig<'_>) {
    cfg.service(agents_me);
}

pub fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(token)
        .service(introspect)
        .service(revoke)
        .service(authorization_server_metadata)
        .service(openid_configuration)
        .service(jwks)
        .service(revocations)
        .service(agentinfo)
        .service(verify)
        .service(verify_tool_access)
        .service(check_token_access)
        .service(register);
}

/// Parameters that may be given more than once (RFC 8707 §2: `resource`).
const REPEATABLE: [&str; 1] = ["resource"];

/// A form body of an OAuth endpoint (`application/x-www-form-urlencoded`), each parameter
/// given at most once (RFC 6749 §3.2), except `resource`.
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(request: &HttpRequest, body: &[u8]) -> ApiResult<Self> {
        let form_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(crate::headers::text)
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !form_type {
            return Err(invalid_request(
                "the body must be application/x-www-form-urlencoded",
            ));
        }
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !REPEATABLE.contains(&name.as_str())
                && pairs.iter().skip(i + 1).any(|(other, _)| other == name)
            {
                return Err(invalid_request(&format!(
                    "`{}` is given more than once",
                    name.escape_debug()
                )));
            }
        }
        Ok(Self(pairs))
    }

    /// The parameter's value; an empty one counts as absent (RFC 6749 §3.1).
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.clone())
            .collect()
    }
}

fn invalid_request(detail: &str) -> ApiError {
    ApiError::new(Code::InvalidOAuthRequest, detail).for_oauth()
}

/// The account of an issuer's path; another path segment is an RFC 6749 error too, as
/// everything these endpoints answer.
fn issuer_account_id(segment: &str) -> ApiResult<AccountId> {
    segment.parse().map_err(|_| {
        invalid_request("no issuer has this path: `/oauth/` is followed by an account id")
    })
}

fn invalid_client() -> ApiError {
    ApiError::new(Code::InvalidClient, "client authentication failed").for_oauth()
}

/// How the client presented itself.
enum Presented {
    /// Its id and secret (`client_secret_basic` or `client_secret_post`).
    Secret {
        client_id: String,
        secret: String,
        method: AuthMethod,
    },
    /// A JWT it signed (`private_key_jwt`, RFC 7523 §2.2), and the `client_id` it may name.
    Assertion {
        client_id: Option<String>,
        assertion: String,
    },
    /// Its `client_id` alone: a public client (`none`).
    Public { client_id: String },
}

/// RFC 6749 §2.3.1: HTTP Basic with the form-encoded client id and secret, or both in the
/// body; or RFC 7521 §4.2: a `client_assertion` of the JWT type. Never two ways at once.
fn presented_client(headers: &HeaderMap, form: &Form) -> ApiResult<Presented> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(crate::headers::text)
        .and_then(|v| {
            v.split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        })
        .map(|(_, encoded)| encoded.trim().to_owned());
    let form_secret = form.get("client_secret");
    let one_way = || {
        invalid_request(
            "authenticate the client one way: HTTP Basic, client_secret in the body or a client_assertion",
        )
    };
    let assertion_type = form.get("client_assertion_type");
    if let Some(assertion) = form.get("client_assertion") {
        if basic.is_some() || form_secret.is_some() {
            return Err(one_way());
        }
        if assertion_type != Some(CLIENT_ASSERTION_TYPE) {
            return Err(invalid_request(&format!(
                "`client_assertion_type` must be {CLIENT_ASSERTION_TYPE}"
            )));
        }
        return Ok(Presented::Assertion {
            client_id: form.get("client_id").map(str::to_owned),
            assertion: assertion.to_owned(),
        });
    }
    if assertion_type.is_some() {
        return Err(invalid_request(
            "`client_assertion_type` needs its `client_assertion`",
        ));
    }
    match (basic, form_secret) {
        (Some(_), Some(_)) => Err(one_way()),
        (Some(encoded), None) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(invalid_client)?;
            let (id, secret) = decoded.split_once(':').ok_or_else(invalid_client)?;
            let decode = |text: &str| {
                url::form_urlencoded::parse(format!("v={text}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            let client_id = decode(id);
            if form
                .get("client_id")
                .is_some_and(|other| other != client_id)
            {
                return Err(invalid_request(
                    "`client_id` in the body differs from the one authenticated",
                ));
            }
            Ok(Presented::Secret {
                client_id,
                secret: decode(secret),
                method: AuthMethod::ClientSecretBasic,
            })
        }
        (None, Some(secret)) => Ok(Presented::Secret {
            client_id: form
                .get("client_id")
                .ok_or_else(|| invalid_request("`client_secret` needs its `client_id`"))?
                .to_owned(),
            secret: secret.to_owned(),
            method: AuthMethod::ClientSecretPost,
        }),
        (None, None) => form
            .get("client_id")
            .map(|client_id| Presented::Public {
                client_id: client_id.to_owned(),
            })
            .ok_or_else(invalid_client),
    }
}

/// Where a client authenticates: the token endpoint holds it to its registered method,
/// the other endpoints take its secret either way. A public client may get tokens and
/// revoke its own (RFC 7009 §5), nothing else.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Token,
    Revocation,
    Other,
}

/// The agent of `account` the request authenticates, or `invalid_client`. A client
/// assertion's `aud` may name the issuer, its token endpoint or the endpoint called.
async fn authenticated_agent(
    state: &ApiState,
    account: AccountId,
    request: &HttpRequest,
    form: &Form,
    endpoint: Endpoint,
) -> ApiResult<Arc<Agent>> {
    let clients = &state.app.oauth.clients;
    let agent = match presented_client(request.headers(), form)? {
        Presented::Assertion {
            client_id,
            assertion,
        } => {
            let issuer = issuer_of(state, account);
            let audiences = [
                format!("{issuer}/token"),
                format!(
                    "{}{}",
                    state.public_base.trim_end_matches('/'),
                    request.path()
                ),
                issuer,
            ];
            clients
                .authenticate_assertion(client_id.as_deref(), &assertion, &audiences)
                .await
        }
        Presented::Secret {
            client_id,
            secret,
            method,
        } => match endpoint {
            Endpoint::Token => {
                clients
                    .authenticate_secret(&client_id, &secret, method)
                    .await
            }
            Endpoint::Revocation | Endpoint::Other => {
                clients
                    .authenticate_secret_any_way(&client_id, &secret)
                    .await
            }
        },
        Presented::Public { client_id } => match endpoint {
            Endpoint::Token | Endpoint::Revocation => {
                clients.authenticate_public(account, &client_id).await
            }
            Endpoint::Other => return Err(invalid_client()),
        },
    }
    .map_err(|error| ApiError::from(error).for_oauth())?;
    // An agent authenticates at its own account's issuer only.
    if agent.account_id != account {
        return Err(invalid_client());
    }
    Ok(agent)
}

/// The authenticated agent of an introspection or revocation, and the `token` it names.
async fn client_and_token(
    state: &ApiState,
    account: AccountId,
    request: &HttpRequest,
    body: &[u8],
    endpoint: Endpoint,
) -> ApiResult<(Arc<Agent>, String)> {
    let form = Form::parse(request, body)?;
    let agent = authenticated_agent(state, account, request, &form, endpoint).await?;
    let text = form
        .get("token")
        .ok_or_else(|| invalid_request("`token` is required"))?;
    Ok((agent, text.to_owned()))
}

fn issuer_of(state: &ApiState, account: AccountId) -> String {
    issuer_url(&state.public_base, account)
}

/// The token endpoint: `grant_type=client_credentials` (with `scope`, `resource`,
/// `task_id`, `parent_task_id`, `delegation_id`), `authorization_code` (with `code`,
/// `redirect_uri` and the PKCE `code_verifier`; a code is spent once, and presented again
/// revokes what it brought), `urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693)
/// or `refresh_token` (rotated on every use; a spent one
/// presented again after `oauth.refresh_replay_seconds` revokes its whole family). The
/// client authenticates with HTTP Basic (`client_secret_basic`), in the body
/// (`client_secret_post`) or with a signed JWT (`private_key_jwt`, RFC 7523: `client_assertion`
/// and its `client_assertion_type`; its `jti` is accepted once); a public client (one named
/// by its metadata document, or registered with `none`) by its `client_id` alone, for the
/// code and refresh grants only. Errors are RFC 6749 §5.2 JSON. Audited as `oauth.token_issue`,
/// `oauth.token_refresh`, `oauth.refresh_reuse`, `oauth.token_deny`.
#[utoipa::path(tag = "oauth", security(()), params(("account_id" = Uuid, Path)),
    request_body(content = String, content_type = "application/x-www-form-urlencoded"),
    responses(
    (status = 200, body = TokenResponseBody),
    (status = 400, body = crate::error::OAuthError),
    (status = 401, body = crate::error::OAuthError),
))]
#[post("/oauth/{account_id}/token")]
async fn token(
    state: Data<ApiState>,
    account_id: Path<String>,
    request: HttpRequest,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    let account = issuer_account_id(&account_id)?;
    let form = Form::parse(&request, &body)?;
    let grant_type = match form.get("grant_type") {
        None => return Err(invalid_request("`grant_type` is required")),
        Some(text) => text.parse::<GrantType>().map_err(|error| {
            ApiError::new(Code::UnsupportedGrantType, error.to_string()).for_oauth()
        })?,
    };
    let agent = authenticated_agent(&state, account, &request, &form, Endpoint::Token).await?;
    let mut proofs = request.headers().get_all("dpop");
    let dpop = match (proofs.next(), proofs.next()) {
        (None, _) => None,
        (Some(proof), None) => Some(
            crate::headers::text(proof)
                .ok_or_else(|| invalid_request("the DPoP header is not text"))?
                .to_owned(),
        ),
        (Some(_), Some(_)) => {
            return Err(invalid_request("one DPoP header at most (RFC 9449 §4.3)"));
        }
    };
    let token_request = TokenRequest {
        dpop,
        grant_type: Some(grant_type),
        scope: form.get("scope").map(str::to_owned),
        resources: form.all("resource"),
        refresh_token: form.get("refresh_token").map(str::to_owned),
        task_id: form.get("task_id").map(str::to_owned),
        parent_task_id: form.get("parent_task_id").map(str::to_owned),
        delegation_id: form.get("delegation_id").map(str::to_owned),
        may_act: form.get("may_act").map(str::to_owned),
        subject_token: form.get("subject_token").map(str::to_owned),
        subject_token_type: form.get("subject_token_type").map(str::to_owned),
        actor_token: form.get("actor_token").map(str::to_owned),
        actor_token_type: form.get("actor_token_type").map(str::to_owned),
        requested_token_type: form.get("requested_token_type").map(str::to_owned),
        code: form.get("code").map(str::to_owned),
        redirect_uri: form.get("redirect_uri").map(str::to_owned),
        code_verifier: form.get("code_verifier").map(str::to_owned),
    };
    let response = state
        .app
        .oauth
        .issuer
        .token(&agent, &issuer_of(&state, account), token_request)
        .await
        .map_err(|error| ApiError::from(error).for_oauth())?;
    Ok(secret_response(
        actix_web::http::StatusCode::OK,
        &TokenResponseBody::from(response),
    ))
}

/// RFC 6749 §5.1, with the token's id and task lineage.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponseBody {
    /// An RS256 JWT (RFC 9068 `at+jwt`), verifiable with the account's `jwks_uri`.
    pub access_token: String,
    /// `Bearer`.
    pub token_type: String,
    pub expires_in: u32,
    pub scope: String,
    /// For agents issued refresh tokens; each is spent by its first use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The access token's `jti`.
    pub token_id: Uuid,
    pub task_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_task_id: Option<String>,
    /// RFC 8693: `urn:ietf:params:oauth:token-type:access_token`, on a token exchange's
    /// answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<String>,
    /// OpenID Connect: on an authorization code's answer when `openid` was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

impl From<TokenResponse> for TokenResponseBody {
    fn from(response: TokenResponse) -> Self {
        Self {
            access_token: response.access_token,
            token_type: response.token_type,
            expires_in: response.expires_in,
            scope: response.scope,
            refresh_token: response.refresh_token,
            token_id: *response.token_id.as_uuid(),
            task_id: response.task_id,
            parent_task_id: response.parent_task_id,
            issued_token_type: response.issued_token_type,
            id_token: response.id_token,
        }
    }
}

/// RFC 7662 §2.2: an active token's claims and lineage, or only `active: false`.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct IntrospectionBody {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The resources the token is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<Uuid>,
    /// `access_token` or `refresh_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_task_id: Option<String>,
    /// The token this one was derived from (the refresh token spent for it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_token_id: Option<Uuid>,
    /// The tokens issued together and refreshed from each other.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_type: Option<&'static str>,
    /// RFC 8693 §4.1, for a token acting for its `sub`: the acting agent (`sub`), each
    /// earlier one nested inside (`act`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub act: Option<serde_json::Value>,
    /// RFC 8693 §4.4: the one agent that may exchange the token to act next.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub may_act: Option<serde_json::Value>,
    /// The delegation grant the token's agent acts under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delegation_id: Option<Uuid>,
    /// How many agents deep the token acts for its `sub` (0: an agent for itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depth: Option<usize>,
    /// The principal the token acts for, when its delegation starts with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<Uuid>,
    /// RFC 9449 §6.2: `{"jkt": …}`, the key a DPoP-bound token is bound to.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub cnf: Option<serde_json::Value>,
    /// With `active: false`, for a token of the caller's own account that was revoked: why
    /// (`client`, `admin`, `reuse`, `code_reuse`, `delegation_revoked`,
    /// `principal_inactive`), so a resource server can tell a withdrawn consent from an
    /// expired session. Nothing is said of unknown tokens or of another account's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
    /// When it was revoked (with `revoked_by`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl IntrospectionBody {
    /// The answer about a token: its claims and lineage while it works, else only
    /// `{"active": false}`.
    pub(crate) fn of(found: Option<d2_oauth::Introspected>) -> Self {
        match found {
            None => IntrospectionBody::default(),
            Some(found) => {
                let record = found.record;
                IntrospectionBody {
                    active: true,
                    scope: Some(record.scope()),
                    client_id: Some(found.client_id),
                    sub: Some(record.subject.clone()),
                    aud: Some(record.audience.clone()),
                    iss: Some(found.issuer),
                    exp: Some(record.expires_at.timestamp()),
                    iat: Some(record.issued_at.timestamp()),
                    jti: Some(*record.id.as_uuid()),
                    token_type: Some(token_type(record.kind)),
                    task_id: Some(record.task_id.clone()),
                    parent_task_id: record.parent_task_id.clone(),
                    parent_token_id: record.parent_id.map(|id| *id.as_uuid()),
                    family_id: Some(*record.family_id.as_uuid()),
                    grant_type: Some(record.grant_type.as_str()),
                    act: d2_oauth::actor_claim(&record.chain),
                    may_act: record
                        .may_act
                        .map(|next| serde_json::json!({ "sub": next })),
                    delegation_id: record.delegation_id().map(|id| *id.as_uuid()),
                    depth: Some(record.depth()),
                    principal_id: record.principal_id.map(|id| *id.as_uuid()),
                    cnf: record
                        .dpop_jkt
                        .as_ref()
                        .map(|jkt| serde_json::json!({ "jkt": jkt })),
                    revoked_by: None,
                    revoked_at: None,
                }
            }
        }
    }
}

/// RFC 7662 introspection, for the account's agents (client-authenticated by their secret,
/// by HTTP Basic or in the body): `token` (and an optional `token_type_hint`, which only hints) answers its
/// claims and lineage while it works, else `{"active": false}`: unknown, expired, revoked,
/// another account's, or its agent disabled or deleted; a revoked token of the account
/// also says why (`revoked_by`) and when (`revoked_at`). Served from memory; a revocation
/// reaches every replica within a second.
#[utoipa::path(tag = "oauth", security(()), params(("account_id" = Uuid, Path)),
    request_body(content = String, content_type = "application/x-www-form-urlencoded"),
    responses(
    (status = 200, body = IntrospectionBody),
    (status = 400, body = crate::error::OAuthError),
    (status = 401, body = crate::error::OAuthError),
))]
#[post("/oauth/{account_id}/introspect")]
async fn introspect(
    state: Data<ApiState>,
    account_id: Path<String>,
    request: HttpRequest,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    let account = issuer_account_id(&account_id)?;
    let (agent, text) = client_and_token(&state, account, &request, &body, Endpoint::Other).await?;
    let found = state
        .app
        .oauth
        .issuer
        .introspect_as(&agent, &issuer_of(&state, account), &text)
        .await
        .map_err(|error| ApiError::from(error).for_oauth())?;
    let body = match found {
        Introspection::Active(found) => IntrospectionBody::of(Some(found)),
        Introspection::Revoked { at, reason } => IntrospectionBody {
            revoked_by: Some(reason),
            revoked_at: Some(at),
            ..IntrospectionBody::default()
        },
        Introspection::Inactive => IntrospectionBody::default(),
    };
    Ok(secret_response(actix_web::http::StatusCode::OK, &body))
}

/// RFC 7009 revocation, for the account's agents (client-authenticated): a refresh token
/// is revoked with every token of its grant, an access token with every token derived from
/// it. Always 200, also for a token that is unknown or another client's (which stays as
/// it is), as the RFC answers. Audited as `oauth.token_revoke`.
#[utoipa::path(tag = "oauth", security(()), params(("account_id" = Uuid, Path)),
    request_body(content = String, content_type = "application/x-www-form-urlencoded"),
    responses(
    (status = 200),
    (status = 400, body = crate::error::OAuthError),
    (status = 401, body = crate::error::OAuthError),
))]
#[post("/oauth/{account_id}/revoke")]
async fn revoke(
    state: Data<ApiState>,
    account_id: Path<String>,
    request: HttpRequest,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    let account = issuer_account_id(&account_id)?;
    let (agent, text) =
        client_and_token(&state, account, &request, &body, Endpoint::Revocation).await?;
    state
        .app
        .oauth
        .issuer
        .revoke(&agent, &text)
        .await
        .map_err(|error| ApiError::from(error).for_oauth())?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}

/// 404 `account_not_found` (as RFC 6749 JSON) unless the account exists.
async fn existing_issuer(state: &ApiState, account: AccountId) -> ApiResult<()> {
    let oauth = |error: ApiError| error.for_oauth();
    if !state
        .app
        .accounts
        .exists(account)
        .await
        .map_err(|e| oauth(e.into()))?
    {
        return Err(oauth(ApiError::new(
            Code::AccountNotFound,
            "no issuer has this path: the account does not exist",
        )));
    }
    Ok(())
}

/// The account's authorization server metadata (RFC 8414), also its OpenID discovery
/// document; 404 for an account that does not exist.
async fn metadata(state: &ApiState, account: AccountId, openid: bool) -> ApiResult<Value> {
    let oauth = |error: ApiError| error.for_oauth();
    existing_issuer(state, account).await?;
    let scopes: Vec<String> = state
        .app
        .oauth
        .scopes
        .known(account)
        .await
        .map_err(|e| oauth(e.into()))?
        .iter()
        .map(|known| known.scope.spec.name.clone())
        .collect();
    let client_policy = state
        .app
        .oauth
        .client_policies
        .policy(account)
        .await
        .map_err(|e| oauth(e.into()))?;
    let issuer = issuer_of(state, account);
    let signing = state.app.oauth.keys.algorithm().as_str();
    let auth_methods = [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    ];
    // Public clients get tokens and revoke their own; they introspect nothing.
    let public_auth_methods = [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
        "none",
    ];
    // What a client assertion may be signed with (RFC 8414 §2).
    let assertion_algs = ["RS256", "ES256", "EdDSA"];
    let mut document = json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "introspection_endpoint": format!("{issuer}/introspect"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        // D2's signed revocation list, for verifying access tokens offline.
        "revocation_list_uri": format!("{issuer}/revocations"),
        "authorization_endpoint": format!("{issuer}/authorize"),
        "grant_types_supported": [
            "client_credentials",
            "authorization_code",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:token-exchange"
        ],
        "token_endpoint_auth_methods_supported": public_auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": public_auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "introspection_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "revocation_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "code_challenge_methods_supported": ["S256"],
        "dpop_signing_alg_values_supported": d2_oauth::DPOP_ALGORITHMS,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        // RFC 9207: every authorization response names its issuer.
        "authorization_response_iss_parameter_supported": true,
        // A `client_id` may be the https URL of the client's metadata document, when the
        // account's client policy accepts them.
        "client_id_metadata_document_supported": client_policy.metadata_documents,
        "scopes_supported": scopes,
        "access_token_signing_alg_values_supported": [signing],
    });
    if client_policy.dynamic_registration
        && let Some(object) = document.as_object_mut()
    {
        object.insert(
            "registration_endpoint".into(),
            json!(format!("{issuer}/register")),
        );
    }
    if openid && let Some(object) = document.as_object_mut() {
        object.insert("subject_types_supported".into(), json!(["public"]));
        object.insert(
            "id_token_signing_alg_values_supported".into(),
            json!([signing]),
        );
        object.insert(
            "userinfo_endpoint".into(),
            json!(format!("{issuer}/agentinfo")),
        );
    }
    Ok(document)
}

/// The account's authorization server metadata (RFC 8414 §3, the well-known URI with the
/// issuer's path inserted): every endpoint, grant type and client authentication method.
#[utoipa::path(tag = "oauth", security(()), params(("account_id" = Uuid, Path)), responses(
    (status = 200, body = Object),
    (status = 404, body = crate::error::OAuthError),
))]
#[get("/.well-known/oauth-authorization-server/oauth/{account_id}")]
async fn authorization_server_metadata(
    state: Data<ApiState>,
    account_id: Path<AccountId>,
) -> ApiResult<HttpResponse> {
    Ok(public_json(&metadata(&state, *account_id, false).await?))
}

/// The same metadata as an OpenID discovery document.
#[utoipa::path(tag = "oauth", security(()), params(("account_id" = Uuid, Path)), responses(
    (status = 200, body = Object),
    (status = 404, body = crate::error::OAuthError),
))]
#[get("/oauth/{account_id}/.well-known/openid-configuration")]
async fn openid_configuration(
    state: Data<ApiState>,
    account_id: Path<AccountId>,
) -> ApiResult<HttpResponse> {
    Ok(public_json(&metadata(&state, *account_id, true).await?))
}

fn public_json(body: &Value) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(body)
}

/// The account's public keys that verify its access tokens offline: its bundle keys (RS256),
/// or its EC P-256 keys when `oauth.signing_algorithm` is `ES256`. Keys retired by a
/// rotation stay for `jwks.grace_seconds`.
#[utoipa::path(tag = "oauth", security(()), params(("account_id" = Uuid, Path)), responses(
    (status = 200, body = Object),
))]
#[get("/oauth/{account_id}/jwks")]
async fn jwks(state: Data<ApiState>, account_id: Path<AccountId>) -> ApiResult<HttpResponse> {
    let set = state
        .app
        .oauth
        .keys
        .key_set(*account_id)
        .await
        .map_err(|error| ApiError::from(error).for_oauth())?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, state.jwks_cache_control.clone()))
        .insert_header((header::ETAG, set.document.etag.clone()))
        .content_type("application/json")
        .body(set.document.body.to_vec()))
}

/// The account's signed revocation list.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevocationListBody {
    /// A compact JWS (header `typ: revocations+jwt`) signed with the key that signs the
    /// account's access tokens, verifiable at its `jwks_uri`: `{iss, iat, revoked_tokens:
    /// [{jti, exp}], revoked_delegations: [{delegation_id, exp}]}`, the access tokens and
    /// delegation grants revoked before their expiry and not expired yet.
    pub jws: String,
    /// Unquoted; the `ETag` header carries it quoted.
    pub etag: String,
}

/// The account's signed revocation list, for resource servers and SDKs that verify access
/// tokens offline: refuse a token whose `jti`, or whose `delegation_id`, the list names.
/// Served from memory; a revocation reaches it on every replica within a second. Poll
/// with `If-None-Match`: 304 while nothing was revoked or expired since. Anyone may read
/// it (anonymous requests count against the per-IP limit); a fleet polls with an API token
/// of the account, which is verified (401 if it is not one, 403 if another account's).
#[utoipa::path(tag = "oauth", security((), ("bearer" = []), ("api_key" = [])), params(("account_id" = Uuid, Path)), responses(
    (status = 200, body = RevocationListBody, headers(("ETag" = String, description = "The list's entity tag, quoted"))),
    (status = 304, description = "Not modified: `If-None-Match` names the list"),
    (status = 400, body = crate::error::OAuthError),
    (status = 401, body = crate::error::OAuthError),
    (status = 403, body = crate::error::OAuthError, description = "`account_mismatch`"),
    (status = 404, body = crate::error::OAuthError, description = "`account_not_found`"),
))]
#[get("/oauth/{account_id}/revocations")]
async fn revocations(
    state: Data<ApiState>,
    account_id: Path<String>,
    request: HttpRequest,
) -> ApiResult<HttpResponse> {
    let oauth = |error: ApiError| error.for_oauth();
    let account = issuer_account_id(&account_id)?;
    if crate::auth::has_credential(&request) {
        // A fleet polls with a credential of the account (its server token), which keeps
        // it clear of the per-IP limit on anonymous requests: so it is verified here.
        <Auth as actix_web::FromRequest>::from_request(
            &request,
            &mut actix_web::dev::Payload::None,
        )
        .await
        .map_err(ApiError::for_oauth)?;
    }
    existing_issuer(&state, account).await?;
    let list = state
        .app
        .oauth
        .revocations
        .list(account, &issuer_of(&state, account))
        .await
        .map_err(|e| oauth(e.into()))?;
    let etag = format!("\"{}\"", list.etag);
    let unchanged = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(crate::headers::text)
        .is_some_and(|value| {
            value
                .split(',')
                .any(|tag| d2_policy::normalise_etag(tag) == list.etag)
        });
    let mut response = if unchanged {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    Ok(if unchanged {
        response.finish()
    } else {
        response.json(RevocationListBody {
            jws: list.jws.clone(),
            etag: list.etag.clone(),
        })
    })
}

/// An agent as its own access token shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentInfoBody {
    pub client_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub account_id: Uuid,
    /// The scopes of the token presented.
    pub scope: String,
    pub aud: Vec<String>,
    pub task_id: String,
    pub parent_task_id: Option<String>,
    pub token_id: Uuid,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

fn bearer(request: &HttpRequest) -> Option<&str> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(crate::headers::text)
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, text)| text.trim())
}

async fn agent_info(
    state: &ApiState,
    account: AccountId,
    request: &HttpRequest,
) -> ApiResult<HttpResponse> {
    let refused = || ApiError::new(Code::InvalidToken, "the access token does not work");
    let text = bearer(request).ok_or_else(refused)?;
    let (agent, record) = state
        .app
        .oauth
        .issuer
        .bearer(account, text)
        .await?
        .ok_or_else(refused)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(AgentInfoBody {
            client_id: *agent.id.as_uuid(),
            name: agent.spec.name.clone(),
            description: agent.spec.description.clone(),
            account_id: *agent.account_id.as_uuid(),
            scope: record.scope(),
            aud: record.audience.clone(),
            task_id: record.task_id.clone(),
            parent_task_id: record.parent_task_id.clone(),
            token_id: *record.id.as_uuid(),
            expires_at: record.expires_at,
        }))
}

/// The agent an access token of this account was issued to, and the token's grant
/// (`Authorization: Bearer <access token>`). 401 `invalid_token` when it does not work.
#[utoipa::path(tag = "oauth", security(("bearer" = [])), params(("account_id" = Uuid, Path)), responses(
    (status = 200, body = AgentInfoBody),
    (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/oauth/{account_id}/agentinfo")]
async fn agentinfo(
    state: Data<ApiState>,
    account_id: Path<AccountId>,
    request: HttpRequest,
) -> ApiResult<HttpResponse> {
    agent_info(&state, *account_id, &request).await
}

/// The calling agent, by its own access token (`Authorization: Bearer <access token>`,
/// the account named by its `iss`, or `X-Org-ID`). 401 `invalid_token` when it does not
/// work.
#[utoipa::path(tag = "agents", security(("bearer" = [])), responses(
    (status = 200, body = AgentInfoBody),
    (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/me")]
async fn agents_me(state: Data<ApiState>, request: HttpRequest) -> ApiResult<HttpResponse> {
    let refused = || ApiError::new(Code::InvalidToken, "the access token does not work");
    let account = bearer(&request)
        .and_then(|text| issuer_account(&state.public_base, text))
        .ok_or_else(refused)?;
    agent_info(&state, account, &request).await
}

/// The account whose issuer the JWT `jwt` claims to be from (the token's row
/// decides whether it is).
fn issuer_account(base: &str, jwt: &str) -> Option<AccountId> {
    let payload = jwt.split('.').nth(1)?;
    if payload.len() > 8_192 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let iss = claims.get("iss")?.as_str()?;
    let prefix = format!("{base}/oauth/");
    iss.strip_prefix(&prefix)?.parse().ok()
}

/// One problem of a token or its lineage.
#[derive(Debug, Serialize, ToSchema)]
pub struct LineageProblemBody {
    /// `revoked`, `expired`, `agent_inactive`, `missing_parent`, `broken_lineage`, or
    /// `unknown_token` (no token of this account has this text).
    pub problem: &'static str,
    /// The token the problem is with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<Uuid>,
}

/// A token a verified token was derived from.
#[derive(Debug, Serialize, ToSchema)]
pub struct LineageEntryBody {
    pub jti: Uuid,
    /// `access_token` or `refresh_token`.
    pub token_type: &'static str,
    pub grant_type: &'static str,
    pub scope: String,
    pub task_id: String,
    pub parent_task_id: Option<String>,
    pub issued_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A token and its lineage, verified.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerificationBody {
    /// The token works and every token it was derived from is recorded, unrevoked, of
    /// its family and task.
    pub valid: bool,
    /// What introspection says of the token itself.
    pub token: IntrospectionBody,
    /// The tokens it was derived from, nearest first.
    pub lineage: Vec<LineageEntryBody>,
    /// Whether the lineage goes on beyond the 100 tokens read.
    pub lineage_truncated: bool,
    pub problems: Vec<LineageProblemBody>,
}

impl VerificationBody {
    /// The answer for text that is no token of the account.
    pub(crate) fn unknown() -> Self {
        VerificationBody {
            valid: false,
            token: IntrospectionBody::default(),
            lineage: Vec::new(),
            lineage_truncated: false,
            problems: vec![LineageProblemBody {
                problem: "unknown_token",
                token_id: None,
            }],
        }
    }

    /// The answer for a token of the account `issuer` names, with its lineage.
    pub(crate) fn of(verification: &d2_oauth::Verification, issuer: String) -> Self {
        // The token itself works unless a problem is its own (or its agent's).
        let own = verification.record.id;
        let active = !verification
            .problems
            .iter()
            .any(|p| p.token().is_none_or(|id| id == own));
        VerificationBody {
            valid: verification.valid(),
            token: IntrospectionBody::of(verification.client_id.clone().filter(|_| active).map(
                |client_id| d2_oauth::Introspected {
                    record: verification.record.clone(),
                    issuer,
                    client_id,
                },
            )),
            lineage: verification
                .lineage
                .iter()
                .map(|record| LineageEntryBody {
                    jti: *record.id.as_uuid(),
                    token_type: token_type(record.kind),
                    grant_type: record.grant_type.as_str(),
                    scope: record.scope(),
                    task_id: record.task_id.clone(),
                    parent_task_id: record.parent_task_id.clone(),
                    issued_at: record.issued_at,
                    expires_at: record.expires_at,
                    revoked_at: record.revoked_at,
                })
                .collect(),
            lineage_truncated: verification.truncated,
            problems: verification
                .problems
                .iter()
                .map(|problem| LineageProblemBody {
                    problem: problem.as_str(),
                    token_id: problem.token().map(|id| *id.as_uuid()),
                })
                .collect(),
        }
    }
}

pub(crate) fn token_type(kind: d2_oauth::TokenKind) -> &'static str {
    match kind {
        d2_oauth::TokenKind::Access => "access_token",
        d2_oauth::TokenKind::Refresh => "refresh_token",
    }
}

/// Verifies a token and its lineage (seed 003's `verify`), for the account's agents
/// (client-authenticated as for introspection): `token` answers whether it works and
/// whether every token it was derived from (the refresh tokens spent for it, up to its
/// first grant) is recorded, unrevoked and of its family and task, with that lineage.
#[utoipa::path(tag = "oauth", security(()), params(("account_id" = Uuid, Path)),
    request_body(content = String, content_type = "application/x-www-form-urlencoded"),
    responses(
    (status = 200, body = VerificationBody),
    (status = 400, body = crate::error::OAuthError),
    (status = 401, body = crate::error::OAuthError),
))]
#[post("/oauth/{account_id}/verify")]
async fn verify(
    state: Data<ApiState>,
    account_id: Path<String>,
    request: HttpRequest,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    let account = issuer_account_id(&account_id)?;
    let (agent, text) = client_and_token(&state, account, &request, &body, Endpoint::Other).await?;
    let issuer = issuer_of(&state, account);
    let issuing = &state.app.oauth.issuer;
    let found = issuing
        .verify(agent.account_id, &text)
        .await
        .map_err(|error| ApiError::from(error).for_oauth())?;
    let body = match found {
        None => VerificationBody::unknown(),
        Some(verification) => VerificationBody::of(&verification, issuer),
    };
    Ok(secret_response(actix_web::http::StatusCode::OK, &body))
}

/// An access rule, named.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleNameBody {
    pub id: Uuid,
    pub name: String,
}

/// Whether a token may call a tool.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolAccessBody {
    pub allowed: bool,
    pub tool: String,
    /// `allowed`, `inactive_token`, `unknown_tool`, `tool_inactive`, `not_bound`,
    /// `missing_scopes` or `denied_by_rule`.
    pub reason: &'static str,
    /// The access rule that decided, when one did.
    pub decided_by: Option<RuleNameBody>,
    /// Scopes the tool requires that the token does not carry.
    pub missing_scopes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
}

async fn tool_access(
    state: &ApiState,
    account_id: &str,
    request: &HttpRequest,
    body: &[u8],
) -> ApiResult<HttpResponse> {
    let account = issuer_account_id(account_id)?;
    let form = Form::parse(request, body)?;
    let agent = authenticated_agent(state, account, request, &form, Endpoint::Other).await?;
    let text = form
        .get("token")
        .ok_or_else(|| invalid_request("`token` is required"))?;
    let tool = form
        .get("tool")
        .ok_or_else(|| invalid_request("`tool` is required: the tool's name"))?;
    let found = state
        .app
        .oauth
        .issuer
        .tool_access(agent.account_id, text, tool)
        .await
        .map_err(|error| ApiError::from(error).for_oauth())?;
    let body = match found {
        None => ToolAccessBody {
            allowed: false,
            tool: tool.to_owned(),
            reason: "inactive_token",
            decided_by: None,
            missing_scopes: Vec::new(),
            client_id: None,
            task_id: None,
        },
        Some(ToolCheck {
            record,
            client_id,
            access,
        }) => ToolAccessBody {
            allowed: access.allowed,
            tool: tool.to_owned(),
            reason: access.reason.as_str(),
            decided_by: access.decided_by.map(|rule| RuleNameBody {
                id: *rule.id.as_uuid(),
                name: rule.name.to_string(),
            }),
            missing_scopes: access.missing_scopes,
            client_id: Some(client_id),
            task_id: Some(record.task_id.clone()),
        },
    };
    Ok(secret_response(actix_web::http::StatusCode::OK, &body))
}

/// May this access token call this tool now (seed 003's `verify-tool-access`), for the
/// account's agents (client-authenticated as for introspection): `token` and `tool` (its
/// name). Allowed when the token works, the tool is the account's, active and bound to the
/// token's agent, the token carries every scope the tool requires, and the access rules,
/// asked about this tool with the token's scopes, neither deny it nor narrow a required
/// scope away; the answer names the rule that decided.
#[utoipa::path(tag = "oauth", security(()), params(("account_id" = Uuid, Path)),
    request_body(content = String, content_type = "application/x-www-form-urlencoded"),
    responses(
    (status = 200, body = ToolAccessBody),
    (status = 400, body = crate::error::OAuthError),
    (status = 401, body = crate::error::OAuthError),
))]
#[post("/oauth/{account_id}/verify-tool-access")]
async fn verify_tool_access(
    state: Data<ApiState>,
    account_id: Path<String>,
    request: HttpRequest,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    tool_access(&state, &account_id, &request, &body).await
}

/// The same as `verify-tool-access`, under seed 003's older name.
#[utoipa::path(tag = "oauth", security(()), params(("account_id" = Uuid, Path)),
    request_body(content = String, content_type = "application/x-www-form-urlencoded"),
    responses(
    (status = 200, body = ToolAccessBody),
    (status = 400, body = crate::error::OAuthError),
    (status = 401, body = crate::error::OAuthError),
))]
#[post("/oauth/{account_id}/check_token_access")]
async fn check_token_access(
    state: Data<ApiState>,
    account_id: Path<String>,
    request: HttpRequest,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    tool_access(&state, &account_id, &request, &body).await
}

/// RFC 7591 §2: the metadata a client registers itself with. Members not listed are
/// ignored.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct ClientRegistrationBody {
    /// `https`, or `http` on a loopback address; at least one for the code flow.
    pub redirect_uris: Vec<String>,
    /// `client_secret_basic` (the default), `client_secret_post`, `private_key_jwt` or
    /// `none`.
    pub token_endpoint_auth_method: Option<String>,
    /// `authorization_code` (the default), `refresh_token`, and `client_credentials` for a
    /// confidential client.
    pub grant_types: Option<Vec<String>>,
    /// `code` only.
    pub response_types: Option<Vec<String>>,
    pub client_name: Option<String>,
    /// The scopes it would ask, space-separated: it is given those the account's client
    /// policy allows.
    pub scope: Option<String>,
    /// `private_key_jwt`: its public keys, `{"keys": [...]}`.
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<Value>,
    /// `private_key_jwt`: or an `https` URL serving them.
    pub jwks_uri: Option<String>,
    pub software_id: Option<String>,
    pub software_version: Option<String>,
}

/// RFC 7591 §3.2.1: the registered client, its secret shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisteredClientBody {
    pub client_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// When it registered (seconds since the epoch).
    pub client_id_issued_at: i64,
    /// 0: the secret does not expire (present with a secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_expires_at: Option<i64>,
    pub client_name: String,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<&'static str>,
    pub response_types: Vec<&'static str>,
    pub token_endpoint_auth_method: &'static str,
    /// The scopes it was given, space-separated.
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
}

/// Dynamic client registration (RFC 7591), when the account's client policy turns it on:
/// `Authorization: Bearer` the account's initial access token, the client's metadata as
/// JSON. A client registers as an active agent at once with the policy's scopes (of those
/// it asks) and resources; one that holds no shared secret (`none`, `private_key_jwt`)
/// registering the same metadata again gets the same `client_id`. Errors are RFC 7591
/// JSON: 400 `invalid_redirect_uri`, `invalid_client_metadata`; 401 `invalid_token`; 403
/// `registration_disabled`. Audited as `agent.register`.
#[utoipa::path(tag = "oauth", security(("bearer" = [])), params(("account_id" = Uuid, Path)),
    request_body = ClientRegistrationBody,
    responses(
    (status = 201, body = RegisteredClientBody),
    (status = 400, body = crate::error::OAuthError),
    (status = 401, body = crate::error::OAuthError),
    (status = 403, body = crate::error::OAuthError),
))]
#[post("/oauth/{account_id}/register")]
async fn register(
    state: Data<ApiState>,
    account_id: Path<String>,
    request: HttpRequest,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    let account = issuer_account_id(&account_id)?;
    let metadata_error =
        |detail: &str| ApiError::new(Code::InvalidClientMetadata, detail).for_oauth();
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(crate::headers::text)
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    if !is_json {
        return Err(metadata_error(
            "the client metadata is a JSON object (application/json)",
        ));
    }
    if body.len() > d2_oauth::registration::registration_limits::BYTES {
        return Err(metadata_error("the client metadata is larger than 64 KiB"));
    }
    let metadata: ClientRegistrationBody = serde_json::from_slice(&body).map_err(|_| {
        metadata_error("the client metadata is not a JSON object of RFC 7591 members")
    })?;
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(crate::headers::text)
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, credential)| credential.trim().to_owned());
    let registered = state
        .app
        .oauth
        .dynamic_clients
        .register(
            account,
            bearer.as_deref(),
            ClientMetadata {
                redirect_uris: metadata.redirect_uris,
                token_endpoint_auth_method: metadata.token_endpoint_auth_method,
                grant_types: metadata.grant_types,
                response_types: metadata.response_types,
                client_name: metadata.client_name,
                scope: metadata.scope,
                jwks: metadata.jwks,
                jwks_uri: metadata.jwks_uri,
                software_id: metadata.software_id,
                software_version: metadata.software_version,
            },
        )
        .await
        .map_err(|error| ApiError::from(error).for_oauth())?;
    let agent = registered.agent;
    let has_secret = registered.secret.is_some();
    let body = RegisteredClientBody {
        client_id: agent.client_id(),
        client_secret: registered.secret.map(|s| s.expose().to_owned()),
        client_id_issued_at: agent.created_at.timestamp(),
        client_secret_expires_at: has_secret.then_some(0),
        client_name: agent.spec.name,
        redirect_uris: agent.spec.redirect_uris,
        grant_types: registered.grant_types,
        response_types: vec!["code"],
        token_endpoint_auth_method: agent.spec.auth_method.as_str(),
        scope: agent.spec.scopes.join(" "),
        jwks: agent.spec.jwks,
        jwks_uri: agent.spec.jwks_uri,
    };
    Ok(secret_response(actix_web::http::StatusCode::CREATED, &body))
}
