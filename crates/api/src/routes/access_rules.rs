//! Access rules: what each account's authorization server decides at token issuance.
//! Rules are sent as JSON or YAML documents, checked when written; `explain` answers what
//! the account's rules decide for a request, rule by rule.

use std::collections::BTreeSet;

use actix_web::http::StatusCode;
use actix_web::web::{Data, Path, Payload};
use actix_web::{HttpRequest, HttpResponse, delete, get, post, put};
use chrono::{DateTime, Utc};
use d2_kernel::{Code, Scope};
use d2_oauth::{
    AccessRequest, AccessRule, AgentFacts, AgentId, Decision, Format, PrincipalFacts, PrincipalId,
    RuleId, RuleRef, RuleSpec, rules,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use super::{PageQuery, paged};
use crate::auth::Auth;
use crate::body::{Json, is_json, read_capped};
use crate::error::{ApiError, ApiResult};
use crate::state::ApiState;

/// `explain` first: a fixed path before the ones with a rule id.
pub fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(explain_rules)
        .service(create_rule)
        .service(list_rules)
        .service(show_rule)
        .service(replace_rule)
        .service(delete_rule);
}

/// The rule language, for the API description (the server reads the document itself, to
/// point at the offending node of a bad one). See docs/oauth.md.
#[derive(Debug, ToSchema)]
#[expect(dead_code, reason = "describes the document in OpenAPI only")]
pub struct RuleDocument {
    /// Unique in the account.
    #[schema(min_length = 1, max_length = 100, example = "no exports at night")]
    name: String,
    #[schema(max_length = 1000)]
    description: Option<String>,
    /// Lower first; ties by name. Default 0.
    #[schema(minimum = -1_000_000, maximum = 1_000_000)]
    priority: Option<i32>,
    /// Default `true`.
    enabled: Option<bool>,
    /// `allow`, `deny` or `narrow`.
    #[schema(pattern = "^(allow|deny|narrow)$", example = "deny")]
    effect: String,
    /// `narrow` only: the scopes to keep.
    scopes: Option<Vec<String>>,
    /// The condition: `{"all": [...]}`, `{"any": [...]}`, `{"not": {...}}` or
    /// `{"attr": "<path>", "op": "<op>", "value": ...}`; absent, the rule applies to every
    /// request.
    #[schema(value_type = Option<Object>, example = json!({"all": [
        {"attr": "request.scopes", "op": "contains", "value": "reports.export"},
        {"attr": "time.hour", "op": "lt", "value": 6}]}))]
    when: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleView {
    pub rule_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub priority: i32,
    pub enabled: bool,
    /// `allow`, `deny` or `narrow`.
    pub effect: &'static str,
    /// `narrow` rules: the scopes kept (empty for the other effects).
    pub scopes: Vec<String>,
    /// The condition, `null` for a rule that applies to every request.
    #[schema(value_type = Option<Object>)]
    pub when: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<AccessRule> for RuleView {
    fn from(rule: AccessRule) -> Self {
        Self {
            rule_id: *rule.id.as_uuid(),
            when: rule.spec.when.as_ref().map(d2_oauth::Condition::to_json),
            name: rule.spec.name,
            description: rule.spec.description,
            priority: rule.spec.priority,
            enabled: rule.spec.enabled,
            effect: rule.spec.effect.as_str(),
            scopes: rule.spec.scopes.into_iter().collect(),
            created_at: rule.created_at,
            updated_at: rule.updated_at,
        }
    }
}

/// The rule document of the request: JSON (`application/json`, or no type) or YAML
/// (`application/yaml`, `application/x-yaml`, `text/yaml`), read once the caller is known
/// to be an admin, and at most 64 KiB.
async fn rule_body(auth: &Auth, req: &HttpRequest, payload: Payload) -> ApiResult<RuleSpec> {
    auth.require(Scope::Admin)?;
    let format = if is_json(req) {
        Format::Json
    } else if is_yaml(req) {
        Format::Yaml
    } else {
        return Err(ApiError::new(
            Code::UnsupportedMediaType,
            "send the rule as JSON (application/json) or YAML (application/yaml)",
        ));
    };
    let body = read_capped(
        payload,
        rules::rule::limits::DOCUMENT_BYTES,
        Code::PayloadTooLarge,
    )
    .await?;
    Ok(RuleSpec::parse(&body, format).map_err(d2_oauth::AccessRuleError::from)?)
}

fn is_yaml(req: &HttpRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(crate::headers::text)
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|essence| {
            matches!(
                essence.as_str(),
                "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml"
            )
        })
}

/// Create an access rule (`admin`), sent as JSON or YAML. A rule that does not parse or
/// breaks the language is 400 `invalid_access_rule`, its `detail` pointing at the node
/// (``at `/when/all/1/op`: ...``); 409 `access_rule_name_taken`, 409 `access_rule_limit`
/// past 200 rules. Audited as `access_rule.create`.
#[utoipa::path(tag = "oauth", security(("bearer" = []), ("api_key" = [])),
    request_body(content((RuleDocument = "application/json"), (RuleDocument = "application/yaml"))), responses(
    (status = 201, body = RuleView),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 409, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 413, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 415, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("")]
async fn create_rule(
    state: Data<ApiState>,
    auth: Auth,
    req: HttpRequest,
    payload: Payload,
) -> ApiResult<HttpResponse> {
    let spec = rule_body(&auth, &req, payload).await?;
    let rule = state.app.oauth.rules.create(&auth, spec).await?;
    Ok(HttpResponse::build(StatusCode::CREATED).json(RuleView::from(rule)))
}

/// The account's access rules, newest first, a page at a time (`admin`).
#[utoipa::path(tag = "oauth", security(("bearer" = []), ("api_key" = [])), params(PageQuery), responses(
    (status = 200, body = Vec<RuleView>, headers(("X-Next-Cursor" = String, description = "Present when another page follows"))),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("")]
async fn list_rules(
    state: Data<ApiState>,
    auth: Auth,
    query: actix_web::web::Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let page = query.parse()?;
    let rules = state.app.oauth.rules.list(&auth, &page).await?;
    Ok(paged(rules, RuleView::from))
}

/// One access rule of the account (`admin`); another account's is 404
/// `access_rule_not_found`.
#[utoipa::path(tag = "oauth", security(("bearer" = []), ("api_key" = [])),
    params(("rule_id" = Uuid, Path)), responses(
    (status = 200, body = RuleView),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/{rule_id}")]
async fn show_rule(state: Data<ApiState>, id: Path<RuleId>, auth: Auth) -> ApiResult<HttpResponse> {
    let rule = state.app.oauth.rules.get(&auth, *id).await?;
    Ok(HttpResponse::Ok().json(RuleView::from(rule)))
}

/// Replace an access rule with the document sent (JSON or YAML). Every replica decides
/// with it within a second. Audited as `access_rule.update`.
#[utoipa::path(tag = "oauth", security(("bearer" = []), ("api_key" = [])),
    params(("rule_id" = Uuid, Path)),
    request_body(content((RuleDocument = "application/json"), (RuleDocument = "application/yaml"))), responses(
    (status = 200, body = RuleView),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 409, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 413, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 415, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[put("/{rule_id}")]
async fn replace_rule(
    state: Data<ApiState>,
    id: Path<RuleId>,
    auth: Auth,
    req: HttpRequest,
    payload: Payload,
) -> ApiResult<HttpResponse> {
    let spec = rule_body(&auth, &req, payload).await?;
    let rule = state.app.oauth.rules.update(&auth, *id, spec).await?;
    Ok(HttpResponse::Ok().json(RuleView::from(rule)))
}

/// Delete an access rule. Audited as `access_rule.delete`.
#[utoipa::path(tag = "oauth", security(("bearer" = []), ("api_key" = [])),
    params(("rule_id" = Uuid, Path)), responses(
    (status = 204),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[delete("/{rule_id}")]
async fn delete_rule(
    state: Data<ApiState>,
    id: Path<RuleId>,
    auth: Auth,
) -> ApiResult<HttpResponse> {
    state.app.oauth.rules.delete(&auth, *id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The agent of an access request to explain.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentInput {
    /// The agent's client id (a uuid).
    pub id: String,
    /// Absent: the registered agent's name (404 `agent_not_found` when the account has no
    /// agent with this id).
    pub name: Option<String>,
    /// What rules read as `agent.attributes.<key>`. Default `{}`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
}

/// The principal of an access request to explain.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrincipalInput {
    /// The principal's id (a uuid).
    pub id: String,
    /// Absent: the stored principal's attributes (404 `principal_not_found` when the
    /// account has no principal with this id).
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Map<String, Value>>,
}

/// An access request, as the token endpoint would decide it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainBody {
    pub agent: AgentInput,
    pub principal: Option<PrincipalInput>,
    /// The scopes asked for.
    #[serde(default)]
    #[schema(max_items = 100)]
    pub scopes: Vec<String>,
    #[serde(default)]
    #[schema(max_items = 100)]
    pub tools: Vec<String>,
    pub resource: Option<String>,
    /// Default `client_credentials`.
    pub grant_type: Option<String>,
    pub task_id: Option<String>,
    pub parent_task_id: Option<String>,
    /// When the request is decided (RFC 3339); default now.
    pub now: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleRefView {
    pub rule_id: Uuid,
    pub name: String,
}

impl From<&RuleRef> for RuleRefView {
    fn from(rule: &RuleRef) -> Self {
        Self {
            rule_id: *rule.id.as_uuid(),
            name: rule.name.to_string(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TraceView {
    pub rule_id: Uuid,
    pub name: String,
    pub priority: i32,
    /// `allow`, `deny` or `narrow`.
    pub effect: &'static str,
    /// `matched`, `not_matched`, or `not_reached` (an earlier rule decided).
    pub step: &'static str,
    /// Whether the rule's condition held (false when not reached).
    pub matched: bool,
    /// A matching `narrow` rule: the scopes it removed.
    pub removed: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionView {
    pub allowed: bool,
    /// The scopes granted (none when denied).
    pub scopes: Vec<String>,
    /// `no_rule_matched`, `allowed`, `narrowed`, `denied` or `narrowed_to_nothing`.
    pub reason: &'static str,
    /// The rule that decided; `null` when no rule matched.
    pub decided_by: Option<RuleRefView>,
    /// Every enabled rule in evaluation order (priority, then name).
    pub trace: Vec<TraceView>,
    /// The instant the request was decided at.
    pub now: DateTime<Utc>,
}

impl DecisionView {
    fn of(decision: Decision, now: DateTime<Utc>) -> Self {
        Self {
            allowed: decision.allowed,
            scopes: decision.scopes.into_iter().collect(),
            reason: decision.reason.as_str(),
            decided_by: decision.decided_by.as_ref().map(RuleRefView::from),
            trace: decision
                .trace
                .into_iter()
                .map(|t| TraceView {
                    rule_id: *t.rule.id.as_uuid(),
                    name: t.rule.name.to_string(),
                    priority: t.priority,
                    effect: t.effect.as_str(),
                    step: t.step.as_str(),
                    matched: t.step == d2_oauth::Step::Matched,
                    removed: t.removed.into_iter().collect(),
                })
                .collect(),
            now,
        }
    }
}

fn invalid_request(detail: impl Into<String>) -> ApiError {
    ApiError::from(d2_oauth::AccessRuleError::InvalidRequest(detail.into()))
}

/// Up to 100 texts of at most 1,024 characters, as a set.
fn text_set(field: &str, items: Vec<String>) -> ApiResult<BTreeSet<String>> {
    if items.len() > 100 || items.iter().any(|item| item.chars().count() > 1_024) {
        return Err(invalid_request(format!(
            "`{field}` holds at most 100 texts of at most 1024 characters"
        )));
    }
    Ok(items.into_iter().collect())
}

/// What the account's enabled rules decide for an access request, with the trace of every
/// rule (`admin`; nothing is issued or stored). Ids that are not uuids, a bad `now` or
/// oversized lists are 400 `invalid_access_request`.
#[utoipa::path(tag = "oauth", security(("bearer" = []), ("api_key" = [])), request_body = ExplainBody, responses(
    (status = 200, body = DecisionView),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/explain")]
async fn explain_rules(
    state: Data<ApiState>,
    auth: Auth,
    body: Json<ExplainBody>,
) -> ApiResult<HttpResponse> {
    auth.require(Scope::Admin)?;
    let body = body.0;
    let oauth = &state.app.oauth;
    let agent_id: AgentId = body
        .agent
        .id
        .parse()
        .map_err(|_| invalid_request("`agent.id` must be an agent's client id (a uuid)"))?;
    let name = match body.agent.name {
        Some(name) => name,
        None => oauth.agents.get(&auth, agent_id).await?.spec.name,
    };
    let principal = match body.principal {
        None => None,
        Some(input) => {
            let id: PrincipalId = input
                .id
                .parse()
                .map_err(|_| invalid_request("`principal.id` must be a principal's id (a uuid)"))?;
            let attributes = match input.attributes {
                Some(attributes) => attributes,
                None => oauth.principals.get(&auth, id).await?.spec.attributes,
            };
            Some(PrincipalFacts { id, attributes })
        }
    };
    let now = match body.now {
        None => state.app.clock.now(),
        Some(text) => DateTime::parse_from_rfc3339(&text)
            .map_err(|_| invalid_request("`now` must be an RFC 3339 instant"))?
            .with_timezone(&Utc),
    };
    let request = AccessRequest {
        agent: AgentFacts {
            id: agent_id,
            name,
            attributes: body.agent.attributes,
        },
        principal,
        scopes: text_set("scopes", body.scopes)?,
        tools: text_set("tools", body.tools)?,
        resource: body.resource,
        grant_type: body
            .grant_type
            .unwrap_or_else(|| "client_credentials".to_owned()),
        task_id: body.task_id,
        parent_task_id: body.parent_task_id,
        now,
    };
    let decision = oauth.rules.explain(&auth, &request).await?;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(DecisionView::of(decision, now)))
}
