//! People and members: who is signed in, the accounts they create, and each account's
//! members with their roles.

use actix_web::http::StatusCode;
use actix_web::web::{Data, Path};
use actix_web::{HttpResponse, delete, get, patch, post};
use chrono::{DateTime, Utc};
use d2_kernel::{AccountId, Code, Role, UnknownRole, UserId};
use d2_members::{Me, Member};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use crate::auth::{Auth, Person};
use crate::body::Json;
use crate::error::{ApiError, ApiResult};
use crate::routes::accounts::AccountNameBody;
use crate::state::ApiState;

/// `/v1/users/me`.
pub fn configure_users(cfg: &mut ServiceConfig<'_>) {
    cfg.service(users_me);
}

/// Routes under `/v1/accounts`.
pub fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(create_account)
        .service(list_members)
        .service(change_role)
        .service(remove);
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserBody {
    pub user_id: Uuid,
    pub email: Option<String>,
    /// Whether the identity provider asserted the email verified at the last sign-in.
    pub email_verified: bool,
    pub display_name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_sign_in_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MembershipBody {
    pub account_id: Uuid,
    pub account_name: String,
    /// `owner`, `admin`, `developer` or `member`.
    pub role: &'static str,
    pub joined_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeBody {
    pub user: UserBody,
    /// Every account the person belongs to, oldest membership first. Name one with
    /// `X-Org-ID` on routes without an account in their path.
    pub accounts: Vec<MembershipBody>,
}

impl From<Me> for MeBody {
    fn from(me: Me) -> Self {
        let user = me.user;
        Self {
            user: UserBody {
                user_id: *user.id.as_uuid(),
                display_name: user.label().map(str::to_owned),
                email: user.email,
                email_verified: user.email_verified,
                created_at: user.created_at,
                last_sign_in_at: user.last_sign_in_at,
            },
            accounts: me
                .memberships
                .into_iter()
                .map(|m| MembershipBody {
                    account_id: *m.account_id.as_uuid(),
                    account_name: m.account_name,
                    role: m.role.as_str(),
                    joined_at: m.joined_at,
                })
                .collect(),
        }
    }
}

/// The signed-in person and the accounts they belong to. Identity-provider sessions only.
#[utoipa::path(tag = "members", security(("bearer" = [])), responses(
    (status = 200, body = MeBody),
    (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/me")]
async fn users_me(state: Data<ApiState>, person: Person) -> ApiResult<HttpResponse> {
    let me = state.app.members.me(person.0.user_id).await?;
    Ok(HttpResponse::Ok().json(MeBody::from(me)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NewAccountResult {
    pub account_id: Uuid,
    pub name: String,
    /// `trial`.
    pub plan: &'static str,
    pub trial_expires: Option<DateTime<Utc>>,
    /// `owner`: the creator's role.
    pub role: &'static str,
}

/// Create an account, with the signed-in person as its owner (a trial). Audited as
/// `account.create`. Identity-provider sessions only.
#[utoipa::path(tag = "members", security(("bearer" = [])), request_body = AccountNameBody, responses(
    (status = 201, body = NewAccountResult),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("")]
async fn create_account(
    state: Data<ApiState>,
    person: Person,
    body: Json<AccountNameBody>,
) -> ApiResult<HttpResponse> {
    let account = state
        .app
        .members
        .create_account(person.0.user_id, &body.0.name)
        .await?;
    Ok(
        HttpResponse::build(StatusCode::CREATED).json(NewAccountResult {
            account_id: *account.id.as_uuid(),
            name: account.name.as_str().to_owned(),
            plan: account.plan.as_str(),
            trial_expires: account.trial_expires_at,
            role: Role::Owner.as_str(),
        }),
    )
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberBody {
    pub user_id: Uuid,
    pub email: Option<String>,
    /// The display name, else the full name, else the email.
    pub display_name: Option<String>,
    /// `owner`, `admin`, `developer` or `member`.
    pub role: &'static str,
    pub joined_at: DateTime<Utc>,
    /// `null` until the person first signs in.
    pub last_sign_in_at: Option<DateTime<Utc>>,
}

impl From<Member> for MemberBody {
    fn from(member: Member) -> Self {
        Self {
            user_id: *member.user.id.as_uuid(),
            display_name: member.user.label().map(str::to_owned),
            email: member.user.email,
            role: member.role.as_str(),
            joined_at: member.joined_at,
            last_sign_in_at: member.user.last_sign_in_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MembersBody {
    pub members: Vec<MemberBody>,
}

/// The account's members with their roles, longest-standing first (`members.read`: every
/// role; admin tokens).
#[utoipa::path(tag = "members", security(("bearer" = []), ("api_key" = [])),
    params(("account_id" = Uuid, Path)), responses(
    (status = 200, body = MembersBody),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/{account_id}/members")]
async fn list_members(
    state: Data<ApiState>,
    account_id: Path<AccountId>,
    auth: Auth,
) -> ApiResult<HttpResponse> {
    let members = state.app.members.members(&auth, *account_id).await?;
    Ok(HttpResponse::Ok().json(MembersBody {
        members: members.into_iter().map(MemberBody::from).collect(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    /// `owner`, `admin`, `developer` or `member`.
    #[schema(pattern = "^(owner|admin|developer|member)$", example = "developer")]
    pub role: String,
}

impl RoleBody {
    fn role(&self) -> ApiResult<Role> {
        self.role
            .parse()
            .map_err(|error: UnknownRole| ApiError::new(Code::InvalidRole, error.to_string()))
    }
}

/// Change a member's role (`admin`; only an owner makes, changes or demotes an owner; an
/// account keeps at least one owner). Audited as `member.role_change`.
#[utoipa::path(tag = "members", security(("bearer" = []), ("api_key" = [])), request_body = RoleBody,
    params(("account_id" = Uuid, Path), ("user_id" = Uuid, Path)), responses(
    (status = 200, body = MemberBody),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 409, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[patch("/{account_id}/members/{user_id}")]
async fn change_role(
    state: Data<ApiState>,
    path: Path<(AccountId, UserId)>,
    auth: Auth,
    body: Json<RoleBody>,
) -> ApiResult<HttpResponse> {
    let (account_id, user_id) = path.into_inner();
    let role = body.0.role()?;
    let member = state
        .app
        .members
        .change_role(&auth, account_id, user_id, role)
        .await?;
    Ok(HttpResponse::Ok().json(MemberBody::from(member)))
}

/// Remove a member (`admin`; only an owner removes an owner), or leave (anyone, about
/// themselves). An account keeps at least one owner. Audited as `member.remove`. The
/// removed person's sessions stop at once, on every replica.
#[utoipa::path(tag = "members", security(("bearer" = []), ("api_key" = [])),
    params(("account_id" = Uuid, Path), ("user_id" = Uuid, Path)), responses(
    (status = 204),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 409, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[delete("/{account_id}/members/{user_id}")]
async fn remove(
    state: Data<ApiState>,
    path: Path<(AccountId, UserId)>,
    auth: Auth,
) -> ApiResult<HttpResponse> {
    let (account_id, user_id) = path.into_inner();
    state.app.members.remove(&auth, account_id, user_id).await?;
    Ok(HttpResponse::NoContent().finish())
}
