use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::web::{Data, Path, Payload, Query};
use actix_web::{HttpRequest, HttpResponse, get, patch, post, put};
use chrono::{DateTime, Utc};
use d2_kernel::{Code, PolicyId, Scope};
use d2_policy::{BundleStage, PolicyRecord, Poll, PublishRequest, Stage};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use super::{PageQuery, paged};
use crate::auth::Auth;
use crate::body::{Json, content_length, json_of, read_capped};
use crate::error::{ApiError, ApiResult, with_rate_limit};
use crate::headers::{KEY_ID, POLL_SECONDS, SIGNATURE};
use crate::state::ApiState;

/// Routes under `/v1/policy`: the fixed paths first, as `/{policy_id}` would match them.
pub fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(bundle)
        .service(draft)
        .service(publish)
        .service(revoke)
        .service(revert)
        .service(versions)
        .service(list)
        .service(apps)
        .service(roles_permissions)
        .service(validate)
        .service(get_policy)
        .service(patch_description)
        .service(patch_bundle);
}

/// Bodies larger than this are parsed a few at a time (see [`policy_body`]).
const LARGE_BODY: usize = 64 * 1024;

/// A policy route's body, read only once the caller may use the route: the scope and the
/// plan are checked first, a `Content-Length` over the plan's cap is refused unread, and
/// a body is read up to that cap. A large body holds one of a few parse permits (one per
/// core) for as long as the route works on it, so no number of concurrent uploads can cost
/// more than a small multiple of the plan's cap in memory and CPU.
async fn policy_body(
    state: &ApiState,
    auth: &Auth,
    req: &HttpRequest,
    payload: Payload,
    scope: Scope,
) -> ApiResult<(
    actix_web::web::Bytes,
    Option<tokio::sync::OwnedSemaphorePermit>,
)> {
    let cap = state.app.policies.body_cap(auth, scope).await?;
    if content_length(req).is_some_and(|length| length > cap) {
        return Err(ApiError::new(
            Code::BundleTooLarge,
            format!("the request body is larger than your plan's policies allow ({cap} bytes)"),
        ));
    }
    let body = read_capped(payload, cap, Code::BundleTooLarge).await?;
    let permit = if body.len() > LARGE_BODY {
        Some(
            state
                .large_bodies
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| {
                    ApiError::new(Code::ServiceUnavailable, "the server is shutting down")
                })?,
        )
    } else {
        None
    };
    Ok((body, permit))
}

fn header(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    headers.get(name).and_then(crate::headers::text)
}

/// The response of a bundle poll (all four members always present).
#[derive(Debug, Serialize, ToSchema)]
pub struct BundleBody {
    /// The signed bundle (compact JWS, RS256); null for a draft.
    pub jws: Option<String>,
    pub version: i64,
    /// Unquoted; the `ETag` header carries it quoted.
    pub etag: String,
    /// The draft document; null for a published bundle.
    pub bundle: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BundleQuery {
    /// The app; omitted (or `default`) means the server token's app.
    pub app_name: Option<String>,
    /// `auto` (default: active, else draft), `published` or `draft`.
    pub stage: Option<String>,
}

/// `etag` between double quotes, as the `ETag` header carries it.
fn quoted(etag: &str) -> String {
    let mut value = String::with_capacity(etag.len().saturating_add(2));
    value.push('"');
    value.push_str(etag);
    value.push('"');
    value
}

/// The `Cache-Control` of a poll's answers: an SDK revalidates before each use.
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");

fn with_poll_headers(
    mut response: actix_web::HttpResponseBuilder,
    etag: &str,
    poll_seconds: u32,
) -> actix_web::HttpResponseBuilder {
    response
        .insert_header((header::ETAG, quoted(etag)))
        .insert_header((POLL_SECONDS, poll_seconds))
        .insert_header((header::CACHE_CONTROL, NO_CACHE));
    response
}

/// The SDK's poll: the app's signed bundle, or 304 when `If-None-Match` names it.
/// 304 and 200 both carry `ETag`, `X-D2-Poll-Seconds` (the plan's advised interval) and
/// the credential's poll ceiling in `X-RateLimit-*`.
#[utoipa::path(tag = "policy", security(("bearer" = []), ("api_key" = [])), params(BundleQuery), responses(
    (status = 200, body = BundleBody, headers(("X-RateLimit-Limit" = u32, description = "The bucket's capacity"), ("X-RateLimit-Remaining" = u32, description = "Units left"), ("X-RateLimit-Reset" = u64, description = "Seconds until the bucket is full"))),
    (status = 304, description = "Not modified", headers(("X-RateLimit-Limit" = u32, description = "The bucket's capacity"), ("X-RateLimit-Remaining" = u32, description = "Units left"), ("X-RateLimit-Reset" = u64, description = "Seconds until the bucket is full"))),
    (status = 402, body = crate::error::Problem, content_type = "application/problem+json", description = "`locked` or `tool_limit`"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 410, body = crate::error::Problem, content_type = "application/problem+json", description = "`policy_revoked`"),
    (status = 429, body = crate::error::Problem, content_type = "application/problem+json", description = "Over the poll ceiling of the credential", headers(("Retry-After" = u64, description = "Seconds to wait"), ("X-RateLimit-Limit" = u32), ("X-RateLimit-Remaining" = u32), ("X-RateLimit-Reset" = u64))),
))]
#[get("/bundle")]
async fn bundle(
    state: Data<ApiState>,
    auth: Auth,
    req: HttpRequest,
    query: Query<BundleQuery>,
) -> ApiResult<HttpResponse> {
    let if_none_match = header(req.headers(), header::IF_NONE_MATCH);
    let stage = BundleStage::parse(query.stage.as_deref());
    let poll = state
        .app
        .policies
        .poll(&auth, query.app_name.as_deref(), stage, if_none_match)
        .await?;
    Ok(match poll {
        Poll::NotModified {
            etag,
            poll_seconds,
            limit,
        } => {
            let mut response = with_poll_headers(HttpResponse::NotModified(), &etag, poll_seconds);
            with_rate_limit(&mut response, &limit);
            response.finish()
        }
        Poll::Bundle {
            record,
            poll_seconds,
            limit,
        } => {
            let body = BundleBody {
                bundle: (record.stage == Stage::Draft).then(|| record.document.clone()),
                jws: record.jws.clone(),
                version: record.version,
                etag: record.etag.clone(),
            };
            let mut response = with_poll_headers(HttpResponse::Ok(), &record.etag, poll_seconds);
            with_rate_limit(&mut response, &limit);
            response.json(body)
        }
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DraftSaved {
    pub message: String,
    pub policy_id: Uuid,
    pub app_name: String,
    pub version: i64,
    pub tool_count: u32,
}

/// Stores the app's draft: `{"bundle": <policy>}` (the app is `metadata.name`). Audited as
/// `policy.draft`.
#[utoipa::path(tag = "policy", security(("bearer" = []), ("api_key" = [])), request_body = Object, responses(
    (status = 200, body = DraftSaved),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 402, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[put("/draft")]
async fn draft(
    state: Data<ApiState>,
    auth: Auth,
    req: HttpRequest,
    payload: Payload,
) -> ApiResult<HttpResponse> {
    let (body, _permit) = policy_body(&state, &auth, &req, payload, Scope::PolicyPublish).await?;
    let value: serde_json::Value = json_of(&body)?;
    let stored = state.app.policies.save_draft(&auth, value).await?;
    Ok(HttpResponse::Ok().json(DraftSaved {
        message: format!(
            "draft saved for app {} as version {}",
            stored.app_name, stored.version
        ),
        policy_id: *stored.id.as_uuid(),
        app_name: stored.app_name.to_string(),
        version: stored.version,
        tool_count: stored.tool_count,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PublishQuery {
    /// Must match the document's `metadata.name` (both normalised).
    pub app_name: Option<String>,
    /// Publish even though every deny rule of the active version is dropped (audited).
    #[serde(default)]
    pub force: bool,
    /// An explicit new version: above every existing one, at most 1,000,000 above the
    /// highest, and at most 2^53.
    #[param(minimum = 1, maximum = 9007199254740992_i64)]
    pub version: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Published {
    pub jws: String,
    pub version: i64,
    pub policy_id: Uuid,
    pub app_name: String,
    pub etag: String,
}

/// Publishes the request body (the policy file, YAML or JSON, or `{"bundle": ...}`) as
/// the app's new signed version. `X-D2-Signature` (standard base64 Ed25519 over the exact
/// body) and `X-D2-Key-Id` (a registered publisher key, not revoked nor waiting for
/// approval) are required; `If-Match` is `*` or the active ETag. The content of an earlier
/// version other than the active one is refused (409 `identical_to_version`): going back is
/// `POST /v1/policy/revert`. Audited as `policy.publish`.
#[utoipa::path(tag = "policy", security(("bearer" = []), ("api_key" = [])), params(PublishQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"), responses(
    (status = 200, body = Published),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 402, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 409, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 413, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/publish")]
async fn publish(
    state: Data<ApiState>,
    auth: Auth,
    req: HttpRequest,
    query: Query<PublishQuery>,
    payload: Payload,
) -> ApiResult<HttpResponse> {
    let (body, _permit) = policy_body(&state, &auth, &req, payload, Scope::PolicyPublish).await?;
    let headers = req.headers();
    let request = PublishRequest {
        app_name: query.app_name.as_deref(),
        body: &body,
        key_id: header(headers, KEY_ID),
        signature: header(headers, SIGNATURE),
        if_match: header(headers, header::IF_MATCH),
        version: query.version,
        force: query.force,
    };
    let (record, poll_seconds) = state.app.policies.publish(&auth, request).await?;
    let body = Published {
        jws: record.jws.clone().unwrap_or_default(),
        version: record.version,
        policy_id: *record.id.as_uuid(),
        app_name: record.app_name.to_string(),
        etag: record.etag.clone(),
    };
    Ok(with_poll_headers(HttpResponse::Ok(), &record.etag, poll_seconds).json(body))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AppQuery {
    pub app_name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    pub message: &'static str,
    pub app_name: String,
    pub revoked_versions: u64,
}

/// Stops serving an app (scope `policy.revoke`): polls get 410 until the next publish.
/// Audited as `policy.revoke`.
#[utoipa::path(tag = "policy", security(("bearer" = []), ("api_key" = [])), params(AppQuery), responses(
    (status = 202, body = Revoked),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/revoke")]
async fn revoke(
    state: Data<ApiState>,
    auth: Auth,
    query: Query<AppQuery>,
) -> ApiResult<HttpResponse> {
    let revoked = state.app.policies.revoke(&auth, &query.app_name).await?;
    Ok(HttpResponse::Accepted().json(Revoked {
        message: "policy_revoked",
        app_name: d2_kernel::AppName::normalise(&query.app_name).to_string(),
        revoked_versions: revoked,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevertBody {
    /// The published version to serve again.
    pub policy_id: Uuid,
}

/// Serves an earlier version again, as a new version signed with the current key (scope
/// `policy.revert`). Audited as `policy.revert`.
#[utoipa::path(tag = "policy", security(("bearer" = []), ("api_key" = [])), request_body = RevertBody, responses(
    (status = 200, body = PolicySummary),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 409, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/revert")]
async fn revert(
    state: Data<ApiState>,
    auth: Auth,
    body: Json<RevertBody>,
) -> ApiResult<HttpResponse> {
    let record = state
        .app
        .policies
        .revert(&auth, PolicyId::from(body.0.policy_id))
        .await?;
    Ok(HttpResponse::Ok().json(PolicySummary::of(record, true)))
}

/// A version or draft of an app's policy.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicySummary {
    pub id: Uuid,
    pub app_name: String,
    pub version: i64,
    /// `draft` or `published`.
    pub stage: &'static str,
    pub active: bool,
    pub is_draft: bool,
    pub is_revoked: bool,
    pub etag: String,
    pub tool_count: u32,
    pub size_bytes: u64,
    pub description: Option<String>,
    /// The signing key of a published version.
    pub kid: Option<String>,
    /// Who made it: `token:<id>`, or `system`.
    pub published_by: String,
    pub publisher_key_id: Option<String>,
    pub rotation_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    pub expires: Option<DateTime<Utc>>,
    pub revocation_time: Option<DateTime<Utc>>,
    /// The document (when asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle: Option<serde_json::Value>,
    /// The signed bundle of a published version (when asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jws: Option<String>,
}

impl PolicySummary {
    fn of(record: PolicyRecord, with_bundle: bool) -> Self {
        Self {
            id: *record.id.as_uuid(),
            app_name: record.app_name.to_string(),
            version: record.version,
            stage: record.stage.as_str(),
            active: record.active,
            is_draft: record.stage == Stage::Draft,
            is_revoked: record.is_revoked(),
            etag: record.etag,
            tool_count: record.tool_count,
            size_bytes: record.size_bytes,
            description: record.description,
            kid: record.kid,
            published_by: record.actor,
            publisher_key_id: record.publisher_key_id,
            rotation_id: record.rotation_id,
            created_at: record.created_at,
            published_at: record.published_at,
            expires: record.expires_at,
            revocation_time: record.revoked_at,
            bundle: with_bundle.then_some(record.document),
            jws: None,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VersionsQuery {
    pub app_name: String,
    /// Include each version's document.
    #[serde(default)]
    pub include_bundle: bool,
    /// Include each published version's signed bundle (compact JWS).
    #[serde(default)]
    pub include_jws: bool,
    /// Items per page, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// The `X-Next-Cursor` of the previous page.
    pub cursor: Option<String>,
}

/// An app's versions and draft, newest first, a page at a time; documents and signed
/// bundles only when asked.
#[utoipa::path(tag = "policy", security(("bearer" = []), ("api_key" = [])), params(VersionsQuery), responses(
    (status = 200, body = Vec<PolicySummary>, headers(("X-Next-Cursor" = String, description = "Present when another page follows"))),
))]
#[get("/versions")]
async fn versions(
    state: Data<ApiState>,
    auth: Auth,
    query: Query<VersionsQuery>,
) -> ApiResult<HttpResponse> {
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor.clone(),
    }
    .parse()?;
    let records = state
        .app
        .policies
        .versions(&auth, &query.app_name, &page)
        .await?;
    let (with_document, with_jws) = (query.include_bundle, query.include_jws);
    Ok(paged(records, |record| {
        let jws = with_jws.then(|| record.jws.clone()).flatten();
        PolicySummary {
            jws,
            ..PolicySummary::of(record, with_document)
        }
    }))
}

/// Every draft and version of the account, newest first.
#[utoipa::path(tag = "policy", security(("bearer" = []), ("api_key" = [])), params(PageQuery), responses(
    (status = 200, body = Vec<PolicySummary>, headers(("X-Next-Cursor" = String, description = "Present when another page follows"))),
))]
#[get("/list")]
async fn list(
    state: Data<ApiState>,
    auth: Auth,
    query: Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let page = query.parse()?;
    let records = state.app.policies.list(&auth, &page).await?;
    Ok(paged(records, |r| PolicySummary::of(r, false)))
}

/// The account's apps (with `default`), sorted.
#[utoipa::path(tag = "policy", security(("bearer" = []), ("api_key" = [])), responses((status = 200, body = Vec<String>)))]
#[get("/apps")]
async fn apps(state: Data<ApiState>, auth: Auth) -> ApiResult<HttpResponse> {
    let apps = state.app.policies.apps(&auth).await?;
    Ok(HttpResponse::Ok().json(apps.iter().map(ToString::to_string).collect::<Vec<_>>()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OptionalAppQuery {
    pub app_name: Option<String>,
}

/// Roles, permissions and what each role grants, from the app's active version (or draft).
#[utoipa::path(tag = "policy", security(("bearer" = []), ("api_key" = [])), params(OptionalAppQuery), responses(
    (status = 200, body = Object),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/roles-permissions")]
async fn roles_permissions(
    state: Data<ApiState>,
    auth: Auth,
    query: Query<OptionalAppQuery>,
) -> ApiResult<HttpResponse> {
    let body = state
        .app
        .policies
        .roles_and_permissions(&auth, query.app_name.as_deref())
        .await?;
    Ok(HttpResponse::Ok().json(body))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Validation {
    pub valid: bool,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// `name`, `description`, `expires` as given.
    pub metadata: serde_json::Value,
}

/// Checks a policy (`{"bundle": ...}` or the document) without storing it.
#[utoipa::path(tag = "policy", security(("bearer" = []), ("api_key" = [])), request_body = Object, responses(
    (status = 200, body = Validation),
))]
#[post("/validate")]
async fn validate(
    state: Data<ApiState>,
    auth: Auth,
    req: HttpRequest,
    payload: Payload,
) -> ApiResult<HttpResponse> {
    let (body, _permit) = policy_body(&state, &auth, &req, payload, Scope::PolicyRead).await?;
    let value: serde_json::Value = json_of(&body)?;
    if !value.is_object() {
        // The document says `Object`: anything else is a malformed request, not a policy
        // that fails validation.
        return Err(ApiError::new(
            Code::InvalidBody,
            "the body must be a JSON object: the policy document or {\"bundle\": ...}",
        ));
    }
    let (report, metadata) = state.app.policies.validate(&auth, value)?;
    Ok(HttpResponse::Ok().json(Validation {
        valid: report.is_valid(),
        errors: report.errors,
        warnings: report.warnings,
        metadata,
    }))
}

/// One version or draft, with its document.
#[utoipa::path(tag = "policy", security(("bearer" = []), ("api_key" = [])), params(("policy_id" = Uuid, Path)), responses(
    (status = 200, body = PolicySummary),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/{policy_id}")]
async fn get_policy(
    state: Data<ApiState>,
    id: Path<PolicyId>,
    auth: Auth,
) -> ApiResult<HttpResponse> {
    let record = state.app.policies.get(&auth, *id).await?;
    Ok(HttpResponse::Ok().json(PolicySummary::of(record, true)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DescriptionBody {
    /// At most 2000 characters; null or empty clears it.
    #[schema(max_length = 2000, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub description: Option<String>,
}

/// Changes the description shown beside a version (not part of the signed bundle).
/// Audited as `policy.update`.
#[utoipa::path(tag = "policy", security(("bearer" = []), ("api_key" = [])), params(("policy_id" = Uuid, Path)),
    request_body = DescriptionBody, responses(
    (status = 200, body = PolicySummary),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[patch("/{policy_id}/description")]
async fn patch_description(
    state: Data<ApiState>,
    id: Path<PolicyId>,
    auth: Auth,
    body: Json<DescriptionBody>,
) -> ApiResult<HttpResponse> {
    let record = state
        .app
        .policies
        .set_description(&auth, *id, body.0.description.as_deref())
        .await?;
    Ok(HttpResponse::Ok().json(PolicySummary::of(record, false)))
}

/// Replaces a version's content. A draft is updated; a published version is never edited:
/// the change is published as a new signed version and needs `X-D2-Signature` and
/// `X-D2-Key-Id` like any publish. Audited as `policy.draft` or `policy.update`.
#[utoipa::path(tag = "policy", security(("bearer" = []), ("api_key" = [])), params(("policy_id" = Uuid, Path)),
    request_body = Object, responses(
    (status = 200, body = PolicySummary),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[patch("/{policy_id}/bundle")]
async fn patch_bundle(
    state: Data<ApiState>,
    id: Path<PolicyId>,
    auth: Auth,
    req: HttpRequest,
    payload: Payload,
) -> ApiResult<HttpResponse> {
    let (body, _permit) = policy_body(&state, &auth, &req, payload, Scope::PolicyPublish).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            Code::InvalidBody,
            "the new policy is required",
        ));
    }
    let headers = req.headers();
    let record = state
        .app
        .policies
        .update_bundle(
            &auth,
            *id,
            &body,
            header(headers, KEY_ID),
            header(headers, SIGNATURE),
        )
        .await?;
    Ok(HttpResponse::Ok().json(PolicySummary::of(record, true)))
}
