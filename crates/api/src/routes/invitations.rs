//! Invitations (seed 001 §5.6): admins invite people by email; the acceptance page reads
//! an invitation by its token, and the invited person accepts it signed in.

use actix_web::http::StatusCode;
use actix_web::web::{Data, Path};
use actix_web::{HttpResponse, delete, get, post};
use chrono::{DateTime, Utc};
use d2_kernel::{Code, Role, UnknownRole};
use d2_members::{Invitation, InvitationId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use crate::auth::{Auth, Person};
use crate::body::Json;
use crate::error::{ApiError, ApiResult};
use crate::routes::secret_response;
use crate::state::ApiState;

pub fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(invite).service(pending).service(cancel);
}

/// The public routes, under `/public` (any origin, no credentials in CORS).
pub fn configure_public(cfg: &mut ServiceConfig<'_>) {
    cfg.service(show).service(accept);
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteBody {
    /// Where the invitation goes; the person accepting must have this email, verified by
    /// their identity provider.
    #[schema(
        min_length = 3,
        max_length = 254,
        pattern = "^\\s*[^@\\s\\u0000-\\u001F\\u007F-\\u009F]+@[^@\\s\\u0000-\\u001F\\u007F-\\u009F]+\\s*$",
        example = "ada@example.com"
    )]
    pub email: String,
    /// `owner` (owners only), `admin`, `developer` or `member`.
    #[schema(pattern = "^(owner|admin|developer|member)$", example = "developer")]
    pub role: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationBody {
    pub invitation_id: Uuid,
    pub email: String,
    pub role: &'static str,
    pub invited_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl From<&Invitation> for InvitationBody {
    fn from(invitation: &Invitation) -> Self {
        Self {
            invitation_id: *invitation.id.as_uuid(),
            email: invitation.email.clone(),
            role: invitation.role.as_str(),
            invited_by: invitation.invited_by.map(Uuid::from),
            created_at: invitation.created_at,
            expires_at: invitation.expires_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvitedBody {
    #[serde(flatten)]
    pub invitation: InvitationBody,
    /// Whether the invitation is mailed (a mail server is configured). Otherwise `token`
    /// and `accept_url` are answered here, once: pass them on yourself.
    pub mailed: bool,
    /// The token that accepts the invitation, once (only when not mailed).
    pub token: Option<String>,
    /// The acceptance page's link (`members.invitation_link` + token), once (only when not
    /// mailed).
    pub accept_url: Option<String>,
}

/// Invite someone by email to the account (the credential's, or a session's `X-Org-ID`)
/// with a role (`admin`; only owners invite owners). Mailed after it commits when a mail
/// server is configured; otherwise the link is answered once. Members and pending
/// invitations count against the plan's `max_members` (402 `member_limit`). Audited as
/// `invitation.create`.
#[utoipa::path(tag = "members", security(("bearer" = []), ("api_key" = [])), request_body = InviteBody, responses(
    (status = 201, body = InvitedBody),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 402, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 409, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("")]
async fn invite(
    state: Data<ApiState>,
    auth: Auth,
    body: Json<InviteBody>,
) -> ApiResult<HttpResponse> {
    let role: Role = body
        .0
        .role
        .parse()
        .map_err(|error: UnknownRole| ApiError::new(Code::InvalidRole, error.to_string()))?;
    let invited = state
        .app
        .invitations
        .invite(&auth, &body.0.email, role)
        .await?;
    let link = &state.app.settings.members.invitation_link;
    let body = InvitedBody {
        invitation: InvitationBody::from(&invited.invitation),
        mailed: invited.token.is_none(),
        accept_url: invited
            .token
            .as_ref()
            .map(|token| format!("{link}{}", token.expose())),
        token: invited.token.map(|token| token.expose().to_owned()),
    };
    Ok(secret_response(StatusCode::CREATED, &body))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationsBody {
    pub invitations: Vec<InvitationBody>,
}

/// The account's pending invitations, newest first (`admin`).
#[utoipa::path(tag = "members", security(("bearer" = []), ("api_key" = [])), responses(
    (status = 200, body = InvitationsBody),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("")]
async fn pending(state: Data<ApiState>, auth: Auth) -> ApiResult<HttpResponse> {
    let pending = state.app.invitations.pending(&auth).await?;
    Ok(HttpResponse::Ok().json(InvitationsBody {
        invitations: pending.iter().map(InvitationBody::from).collect(),
    }))
}

/// Cancel a pending invitation of the account (`admin`): its token stops working. Audited
/// as `invitation.cancel`.
#[utoipa::path(tag = "members", security(("bearer" = []), ("api_key" = [])),
    params(("invitation_id" = Uuid, Path)), responses(
    (status = 204),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[delete("/{invitation_id}")]
async fn cancel(
    state: Data<ApiState>,
    id: Path<InvitationId>,
    auth: Auth,
) -> ApiResult<HttpResponse> {
    state.app.invitations.cancel(&auth, *id).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PublicInvitationBody {
    pub account_name: String,
    /// The inviter's display name, `null` when a token invited.
    pub inviter_name: Option<String>,
    pub role: &'static str,
    pub expires_at: DateTime<Utc>,
}

/// What an invitation's acceptance page shows: the account, the inviter, the role and the
/// expiry, nothing else. Public; 404 for an unknown token, 410 for a used or expired one.
#[utoipa::path(tag = "members", params(("token" = String, Path)), responses(
    (status = 200, body = PublicInvitationBody),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 410, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/public/invitations/{token}")]
async fn show(state: Data<ApiState>, token: Path<String>) -> ApiResult<HttpResponse> {
    let details = state.app.invitations.show(&token).await?;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(PublicInvitationBody {
            account_name: details.account_name,
            inviter_name: details.inviter_name,
            role: details.invitation.role.as_str(),
            expires_at: details.invitation.expires_at,
        }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptBody {
    #[schema(min_length = 1, max_length = 200)]
    pub token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedBody {
    pub account_id: Uuid,
    pub account_name: String,
    pub role: &'static str,
}

/// Accept an invitation: the signed-in person, whose email (verified by their identity
/// provider) is the invited one, becomes a member with its role. Single use. Audited as
/// `invitation.accept`.
#[utoipa::path(tag = "members", security(("bearer" = [])), request_body = AcceptBody, responses(
    (status = 200, body = AcceptedBody),
    (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 409, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 410, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/public/invitations/accept")]
async fn accept(
    state: Data<ApiState>,
    person: Person,
    body: Json<AcceptBody>,
) -> ApiResult<HttpResponse> {
    let (details, role) = state
        .app
        .invitations
        .accept(person.0.user_id, &body.0.token)
        .await?;
    Ok(HttpResponse::Ok().json(AcceptedBody {
        account_id: *details.invitation.account_id.as_uuid(),
        account_name: details.account_name,
        role: role.as_str(),
    }))
}
