use actix_web::http::StatusCode;
use actix_web::web::{Data, Path, Query};
use actix_web::{HttpResponse, delete, get, post};
use chrono::{DateTime, Utc};
use d2_policy::{KeyState, ListedKey, PublisherKey};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use super::{Message, person_or_server_token};
use crate::auth::Auth;
use crate::body::Json;
use crate::error::ApiResult;
use crate::state::ApiState;

pub fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(register)
        .service(list)
        .service(revoke)
        .service(approve);
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterKeyBody {
    /// Standard base64 of the 32 raw bytes of an Ed25519 public key.
    pub public_key: String,
    /// Optional: if given, it must equal the id derived from the key.
    pub key_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyRegistered {
    /// `key_added: <key_id>`, or `key_exists: <key_id>` for a repeated registration.
    pub message: String,
    /// `ed_` + hex of BLAKE2s-48 of the key, as the D2 SDK derives it.
    pub key_id: String,
    /// `active`, or `pending` until an admin approves it.
    pub state: KeyStateBody,
}

/// Whether a publisher key authorises publishing: `active`, `pending` (waits for an
/// admin's approval) or `revoked`.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyStateBody {
    Active,
    Pending,
    Revoked,
}

impl From<KeyState> for KeyStateBody {
    fn from(state: KeyState) -> Self {
        match state {
            KeyState::Active => KeyStateBody::Active,
            KeyState::Pending => KeyStateBody::Pending,
            KeyState::Revoked => KeyStateBody::Revoked,
        }
    }
}

/// Registers a publisher key (scope `key.upload`). Registering the same key again answers
/// 200. When the account requires approval of publisher keys and the caller is not an
/// admin, the key is `pending`: it authorises no publish until an admin approves it.
/// Audited as `key.upload`.
#[utoipa::path(tag = "keys", security(("bearer" = []), ("api_key" = [])), request_body = RegisterKeyBody, responses(
    (status = 201, body = KeyRegistered),
    (status = 200, body = KeyRegistered),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 409, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("")]
async fn register(
    state: Data<ApiState>,
    auth: Auth,
    body: Json<RegisterKeyBody>,
) -> ApiResult<HttpResponse> {
    let body = body.0;
    let (key, created) = state
        .app
        .policies
        .publisher_keys()
        .register(&auth, &body.public_key, body.key_id.as_deref())
        .await?;
    let (status, verb) = if created {
        (StatusCode::CREATED, "key_added")
    } else {
        (StatusCode::OK, "key_exists")
    };
    Ok(HttpResponse::build(status).json(KeyRegistered {
        message: format!("{verb}: {}", key.key_id),
        state: key.state().into(),
        key_id: key.key_id,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PublisherKeyBody {
    pub key_id: String,
    /// `ed25519`.
    pub algo: &'static str,
    /// Standard base64.
    pub public_key: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Who registered it (`token:<id>`).
    pub uploaded_by: String,
    pub user_id: Option<Uuid>,
    pub state: KeyStateBody,
    /// When a pending key was approved (null for keys active from the start).
    pub approved_at: Option<DateTime<Utc>>,
    /// Who approved it (`token:<id>`).
    pub approved_by: Option<String>,
}

impl From<PublisherKey> for PublisherKeyBody {
    fn from(key: PublisherKey) -> Self {
        let (approved_at, approved_by) = key
            .approval
            .clone()
            .map(|approval| (approval.at, approval.by))
            .unzip();
        Self {
            public_key: key.public_key_base64(),
            state: key.state().into(),
            key_id: key.key_id,
            algo: "ed25519",
            created_at: key.created_at,
            revoked_at: key.revoked_at,
            uploaded_by: key.uploaded_by,
            user_id: key.user_id.map(Uuid::from),
            approved_at,
            approved_by,
        }
    }
}

/// A key as the list shows it: with the name of the person it was registered for.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListedKeyBody {
    #[serde(flatten)]
    pub key: PublisherKeyBody,
    /// The name of `user_id` (display name, else full name, else email); `Server Token`
    /// for a key registered by a token without a person.
    pub uploaded_by_name: Option<String>,
}

impl From<ListedKey> for ListedKeyBody {
    fn from(listed: ListedKey) -> Self {
        Self {
            uploaded_by_name: person_or_server_token(listed.key.user_id, listed.uploaded_by_name),
            key: listed.key.into(),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListKeysQuery {
    /// Include revoked keys.
    #[serde(default)]
    pub include_revoked: bool,
}

/// The account's publisher keys, newest first, with the names of the people they were
/// registered for (scope `key.upload`).
#[utoipa::path(tag = "keys", security(("bearer" = []), ("api_key" = [])), params(ListKeysQuery), responses(
    (status = 200, body = Vec<ListedKeyBody>),
))]
#[get("")]
async fn list(
    state: Data<ApiState>,
    auth: Auth,
    query: Query<ListKeysQuery>,
) -> ApiResult<HttpResponse> {
    let keys = state
        .app
        .policies
        .publisher_keys()
        .list(&auth, query.include_revoked)
        .await?;
    Ok(HttpResponse::Ok().json(
        keys.into_iter()
            .map(ListedKeyBody::from)
            .collect::<Vec<_>>(),
    ))
}

/// Revokes a publisher key: its signatures no longer authorise publishing. A credential
/// may revoke the keys it registered; revoking another's needs the `admin` scope (403
/// `key_owner_or_admin_required`). Audited as `key.revoke`.
#[utoipa::path(tag = "keys", security(("bearer" = []), ("api_key" = [])), params(("key_id" = String, Path)), responses(
    (status = 202, body = Message),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[delete("/{key_id}")]
async fn revoke(
    state: Data<ApiState>,
    key_id: Path<String>,
    auth: Auth,
) -> ApiResult<HttpResponse> {
    state
        .app
        .policies
        .publisher_keys()
        .revoke(&auth, &key_id)
        .await?;
    Ok(HttpResponse::Accepted().json(Message {
        message: "key_revoked",
    }))
}

/// Approves a pending publisher key of the caller's account (admin): from now on its
/// signatures authorise publishing. Approving an active key changes nothing; a revoked key
/// is 403 `key_revoked`. Audited as `key.approve`.
#[utoipa::path(tag = "keys", security(("bearer" = []), ("api_key" = [])), params(("key_id" = String, Path)), responses(
    (status = 200, body = PublisherKeyBody),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/{key_id}/approve")]
async fn approve(
    state: Data<ApiState>,
    key_id: Path<String>,
    auth: Auth,
) -> ApiResult<HttpResponse> {
    let key = state
        .app
        .policies
        .publisher_keys()
        .approve(&auth, &key_id)
        .await?;
    Ok(HttpResponse::Ok().json(PublisherKeyBody::from(key)))
}
