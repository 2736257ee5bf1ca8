//! The routes. Each module owns one group of endpoints and its wire types.
//!
//! Handlers take `Path` before `Auth`: extractors run in order and the first error stops
//! the rest, so a path that does not parse is answered before any credential lookup
//! starts (a lookup dropped half way would be work thrown away, and on SQLite a query
//! cancelled on a request thread).

mod access_rules;
mod accounts;
mod admin;
mod agents;
mod analytics;
mod audit;
mod authorize;
mod billing;
mod bootstrap;
mod delegations;
mod events;
mod health;
mod invitations;
mod jwks;
mod keys;
mod members;
mod notices;
mod oauth;
mod policy;
mod principals;
mod scopes;
mod tokens;
mod tools;
mod usage;

use actix_web::HttpResponse;
use actix_web::http::header;
use d2_kernel::{Code, Page, PageRequest, UserId};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;
use utoipa_actix_web::scope;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::error::{ApiError, ApiResult};

pub use authorize::page_routes;
pub use health::{health_routes, not_found};

/// Every documented API route. actix tries an app's routes (and a scope's) one after the
/// other, at the cost of a regex match for each with a path parameter: a route behind the
/// 130 others spent 40 % of its instructions being found. So the `/v1` routes are grouped
/// in a scope per resource (its prefix, one string comparison, stands for all of them),
/// and the hot paths come first: probes, the JWKS, the bundle poll, the account overview,
/// event ingest, eligibility and usage, then the OAuth token endpoint and introspection.
/// Within a scope the fixed paths come before the ones with a parameter that would match
/// them. A path under a scope that none of its routes matches is answered by the app's
/// default service, as any other unknown path.
pub fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.configure(health::configure)
        .configure(jwks::configure_document)
        .service(scope("/v1/policy").configure(policy::configure))
        .service(
            scope("/v1/accounts")
                .configure(accounts::configure_me)
                .configure(members::configure)
                .configure(accounts::configure)
                .configure(tokens::configure),
        )
        .service(scope("/v1/events").configure(events::configure))
        .service(
            scope("/v1/billing")
                .configure(usage::configure)
                .configure(billing::configure)
                .configure(notices::configure),
        )
        .service(
            scope("/v1/agents")
                .configure(oauth::configure_agents)
                .configure(agents::configure)
                .configure(tools::configure_agent_tools),
        )
        .service(scope("/v1/metrics").configure(analytics::configure))
        .service(scope("/v1/jwks").configure(jwks::configure))
        .service(scope("/v1/user-token").configure(bootstrap::configure))
        .service(scope("/v1/audit").configure(audit::configure))
        .service(scope("/v1/keys").configure(keys::configure))
        .service(
            scope("/v1/users")
                .configure(members::configure_users)
                .configure(principals::configure),
        )
        .service(scope("/v1/delegations").configure(delegations::configure))
        .service(scope("/v1/access-rules").configure(access_rules::configure))
        .service(scope("/v1/invitations").configure(invitations::configure))
        .service(scope("/v1/admin").configure(admin::configure))
        .service(scope("/v1/tools").configure(tools::configure))
        .service(scope("/v1/scopes").configure(scopes::configure))
        .configure(oauth::configure)
        .configure(invitations::configure_public);
}

/// `limit` and `cursor` of every list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The `X-Next-Cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    pub fn parse(&self) -> ApiResult<PageRequest> {
        PageRequest::parse(self.limit, self.cursor.as_deref()).map_err(ApiError::from)
    }
}

/// A page as a JSON array, with `X-Next-Cursor` when another page follows.
pub fn paged<T, D: Serialize>(page: Page<T>, to_wire: impl FnMut(T) -> D) -> HttpResponse {
    let next = page.next.as_ref().map(d2_kernel::Cursor::encode);
    let items: Vec<D> = page.items.into_iter().map(to_wire).collect();
    let mut response = HttpResponse::Ok();
    if let Some(next) = next {
        response.insert_header((crate::headers::NEXT_CURSOR, next));
    }
    response.insert_header((header::CACHE_CONTROL, "no-store"));
    response.json(items)
}

/// A JSON response that must never be cached (it carries a secret).
pub fn secret_response(status: actix_web::http::StatusCode, body: &impl Serialize) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body)
}

/// How lists name the credential where no person is involved: a token without a creator
/// (issued by the control plane for nobody), and what such a token did.
pub const SERVER_TOKEN: &str = "Server Token";

/// How a list names the person `user`: their label (display name, else full name, else
/// email, as the store read it), or [`SERVER_TOKEN`] when no person is involved.
pub fn person_or_server_token(user: Option<UserId>, label: Option<String>) -> Option<String> {
    match user {
        Some(_) => label,
        None => Some(SERVER_TOKEN.to_owned()),
    }
}

/// `{"message": ...}` acknowledgements.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Message {
    pub message: &'static str,
}

pub fn invalid_query(detail: impl Into<String>) -> ApiError {
    ApiError::new(Code::InvalidQuery, detail)
}
