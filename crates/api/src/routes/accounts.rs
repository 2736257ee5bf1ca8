use std::collections::BTreeMap;

use actix_web::web::{Data, Path};
use actix_web::{HttpResponse, get, patch};
use chrono::{DateTime, Utc};
use d2_accounts::{AccountName, AccountOverview, AccountPatch, SampleRate};
use d2_kernel::{AccountId, Grant, Scope};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use crate::auth::Auth;
use crate::body::Json;
use crate::error::{ApiError, ApiResult};
use crate::state::ApiState;

/// `/v1/accounts/me`: fixed paths, matched cheaply, registered early.
pub fn configure_me(cfg: &mut ServiceConfig<'_>) {
    cfg.service(me).service(update_me);
}

/// Routes under `/v1/accounts/{account_id}`.
pub fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(rename).service(scopes);
}

/// The quotas of the caller's effective plan, with the names the D2 SDK reads.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuotasBody {
    /// Seconds between bundle polls.
    pub poll_sec: u32,
    /// Events per ingest request.
    pub event_batch: u32,
    pub max_apps: u32,
    /// Distinct tools a policy may name.
    pub max_tools: u32,
    pub max_members: u32,
    pub current_members: u64,
    /// API tokens that work (neither revoked nor expired) the account may hold.
    pub max_tokens: u32,
    /// Bytes per ingest request.
    pub event_payload_max_bytes: u64,
    /// Seconds between telemetry flushes (the SDK's advised flush interval).
    pub ingest_interval: u32,
    /// Telemetry events the whole account may send per minute (every token and replica
    /// together); over it, ingest answers 429 and counts the refused events.
    pub ingest_events_per_minute: u32,
    /// Agents the account may use in a month (its agent slots).
    pub max_agents: u32,
    /// Model tokens (input and output) the account may use in a month.
    pub monthly_model_tokens: u64,
    /// Credits granted with each paid billing period, lapsing at its end.
    pub included_credits: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountBody {
    pub account_id: Uuid,
    /// The effective plan: an expired trial is `locked`.
    pub plan: String,
    pub trial_expires: Option<DateTime<Utc>>,
    pub quotas: QuotasBody,
    pub metrics_enabled: bool,
    /// Same as `quotas.poll_sec`: the SDK's first poll interval.
    pub poll_seconds: u32,
    /// Sampling rate per event type: defaults, then configuration, then the account's own.
    pub event_sample: BTreeMap<String, f64>,
    /// Publisher keys registered by non-admin credentials wait for an admin's approval
    /// (`POST /v1/keys/{key_id}/approve`) before they authorise publishing.
    pub require_publisher_key_approval: bool,
}

impl From<AccountOverview> for AccountBody {
    fn from(overview: AccountOverview) -> Self {
        let quotas = &overview.quotas;
        Self {
            account_id: *overview.account.id.as_uuid(),
            plan: overview.plan_name().to_owned(),
            trial_expires: overview.account.trial_expires_at,
            quotas: QuotasBody {
                poll_sec: quotas.poll_seconds,
                event_batch: quotas.event_batch,
                max_apps: quotas.max_apps,
                max_tools: quotas.max_tools,
                max_members: quotas.max_members,
                current_members: overview.current_members,
                max_tokens: quotas.max_tokens,
                event_payload_max_bytes: quotas.max_batch_bytes,
                ingest_interval: quotas.ingest_interval_seconds,
                ingest_events_per_minute: quotas.ingest_events_per_minute,
                max_agents: quotas.max_agents,
                monthly_model_tokens: quotas.monthly_model_tokens,
                included_credits: quotas.included_credits,
            },
            metrics_enabled: overview.account.metrics_enabled,
            poll_seconds: quotas.poll_seconds,
            event_sample: overview.event_sample,
            require_publisher_key_approval: overview.account.require_publisher_key_approval,
        }
    }
}

/// The caller's account: plan, quotas and sampling rates. Any valid credential.
#[utoipa::path(tag = "accounts", security(("bearer" = []), ("api_key" = [])), responses(
    (status = 200, body = AccountBody),
    (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/me")]
async fn me(state: Data<ApiState>, auth: Auth) -> ApiResult<HttpResponse> {
    let overview = state.app.accounts.overview(&auth).await?;
    Ok(HttpResponse::Ok().json(AccountBody::from(overview)))
}

/// Settings an administrator may change. Absent fields are kept.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountPatchBody {
    /// 1 to 200 characters, not blank, no control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: Option<String>,
    pub metrics_enabled: Option<bool>,
    /// Per event type: a rate in [0, 1], or `null` to drop the account's own rate.
    #[schema(value_type = Option<BTreeMap<String, Option<f64>>>)]
    pub event_sample: Option<BTreeMap<String, Option<f64>>>,
    /// Whether publisher keys registered by non-admin credentials need an admin's
    /// approval. Keys already active stay active when it is turned on.
    pub require_publisher_key_approval: Option<bool>,
}

impl AccountPatchBody {
    fn into_patch(self) -> ApiResult<AccountPatch> {
        let name = self
            .name
            .as_deref()
            .map(AccountName::parse)
            .transpose()
            .map_err(d2_accounts::AccountError::from)?;
        let event_sample = self
            .event_sample
            .unwrap_or_default()
            .into_iter()
            .map(|(event_type, rate)| {
                let rate = rate
                    .map(SampleRate::new)
                    .transpose()
                    .map_err(d2_accounts::AccountError::from)?;
                Ok((event_type, rate))
            })
            .collect::<Result<BTreeMap<_, _>, ApiError>>()?;
        Ok(AccountPatch {
            name,
            metrics_enabled: self.metrics_enabled,
            event_sample,
            require_publisher_key_approval: self.require_publisher_key_approval,
        })
    }
}

/// Change the caller's account settings (admin). Audited as `account.update`.
#[utoipa::path(tag = "accounts", security(("bearer" = []), ("api_key" = [])), request_body = AccountPatchBody, responses(
    (status = 200, body = AccountBody),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[patch("/me")]
async fn update_me(
    state: Data<ApiState>,
    auth: Auth,
    body: Json<AccountPatchBody>,
) -> ApiResult<HttpResponse> {
    let patch = body.0.into_patch()?;
    let overview = state.app.accounts.update(&auth, &patch).await?;
    Ok(HttpResponse::Ok().json(AccountBody::from(overview)))
}

/// An account's name: to rename one, or to create one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountNameBody {
    /// 1 to 200 characters, not blank, no control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RenameResult {
    /// `account_name_updated`.
    pub message: &'static str,
    pub name: String,
}

/// Rename an account (admin of that account). Audited as `account.update`.
#[utoipa::path(tag = "accounts", security(("bearer" = []), ("api_key" = [])), request_body = AccountNameBody,
    params(("account_id" = Uuid, Path)), responses(
    (status = 200, body = RenameResult),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[patch("/{account_id}/name")]
async fn rename(
    state: Data<ApiState>,
    account_id: Path<AccountId>,
    auth: Auth,
    body: Json<AccountNameBody>,
) -> ApiResult<HttpResponse> {
    auth.require_account(*account_id)?;
    let name = AccountName::parse(&body.0.name).map_err(d2_accounts::AccountError::from)?;
    let patch = AccountPatch {
        name: Some(name),
        ..AccountPatch::default()
    };
    let overview = state.app.accounts.update(&auth, &patch).await?;
    Ok(HttpResponse::Ok().json(RenameResult {
        message: "account_name_updated",
        name: overview.account.name.as_str().to_owned(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScopeBody {
    pub value: &'static str,
    pub label: &'static str,
    pub description: &'static str,
    /// `kind` for token kinds, `scope` for atomic scopes.
    pub category: &'static str,
}

/// The token kinds and scopes that can be granted. Any credential of the account.
#[utoipa::path(tag = "tokens", security(("bearer" = []), ("api_key" = [])),
    params(("account_id" = Uuid, Path)), responses(
    (status = 200, body = Vec<ScopeBody>),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/{account_id}/scopes")]
async fn scopes(auth: Auth, account_id: Path<AccountId>) -> ApiResult<HttpResponse> {
    auth.require_account(*account_id)?;
    let mut body = vec![
        ScopeBody {
            value: Grant::Dev.as_str(),
            label: "Developer",
            description: "CLI and CI: read and publish policies, upload keys, send events.",
            category: "kind",
        },
        ScopeBody {
            value: Grant::Server.as_str(),
            label: "Server",
            description: "An SDK runtime bound to one app: read its bundle and send events.",
            category: "kind",
        },
        ScopeBody {
            value: "admin",
            label: "Administrator",
            description: "Every scope, including account management.",
            category: "kind",
        },
    ];
    body.extend(Scope::ALL.into_iter().map(|scope| ScopeBody {
        value: scope.as_str(),
        label: scope.as_str(),
        description: scope.description(),
        category: "scope",
    }));
    Ok(HttpResponse::Ok().json(body))
}
