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
use utoipa_actix_web::service_config::ServiceConfig;

use crate::error::{ApiError, ApiResult};

pub use authorize::page_routes;
pub use health::{health_routes, not_found};

/// Every documented API route. The router tries routes in this order, and each route with
/// a path parameter costs a regex match, so the hot paths come first: probes, the JWKS,
/// the bundle poll, the account overview, event ingest, then the OAuth token endpoint and
/// introspection (the agents' hot path: a profile of the token endpoint behind the
/// management routes spent 8 % of its user CPU matching them).
pub fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.configure(health::configure)
        .configure(jwks::configure)
        .configure(accounts::configure_me)
        .configure(policy::configure)
        .configure(events::configure)
        .configure(oauth::configure)
        .configure(analytics::configure)
        .configure(bootstrap::configure)
        .configure(audit::configure)
        .configure(keys::configure)
        .configure(accounts::configure)
        .configure(members::configure)
        // After `members`: `/v1/users/me` comes before `/v1/users/{principal_id}`.
        .configure(principals::configure)
        .configure(delegations::configure)
        .configure(access_rules::configure)
        .configure(invitations::configure)
        .configure(invitations::configure_public)
        .configure(tokens::configure)
        .configure(billing::configure)
        .configure(usage::configure)
        .configure(notices::configure)
        .configure(admin::configure)
        .configure(agents::configure)
        .configure(tools::configure)
        .configure(scopes::configure)
        .configure(policy::configure_by_id);
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
