//! Usage: reports of model tokens and agent invocations, paid in credits from the price
//! table, and the account's usage window by window.

use actix_web::web::{Data, Path, Query};
use actix_web::{HttpResponse, delete, get, post, put};
use chrono::{DateTime, Utc};
use d2_billing::{
    Allowed, Ask, Bucket, Budget, CreditForecast, Meter, MeterKind, PriceVersion, RecordFilter,
    Recording, Totals, UsageQuery, UsageRecord, UsageReport, UsageWindows, Window,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::Auth;
use crate::body::Json;
use crate::error::{ApiError, ApiResult};
use crate::state::ApiState;

pub fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(record_usage)
        .service(get_usage)
        .service(usage_records)
        .service(get_prices)
        .service(check_eligibility)
        .service(get_forecast)
        .service(list_budgets)
        .service(set_budget)
        .service(delete_budget);
}

/// What one report measured.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum MeterBody {
    /// A model's tokens, priced per million input and output tokens.
    Model {
        /// A model of the price table.
        model: String,
        #[serde(default)]
        #[schema(maximum = 1_000_000_000_000_u64)]
        input_tokens: u64,
        #[serde(default)]
        #[schema(maximum = 1_000_000_000_000_u64)]
        output_tokens: u64,
    },
    /// An agent's invocations of an operation, priced per invocation.
    Agent {
        /// The agent (an OAuth client id, or the caller's own name for it).
        agent: String,
        /// An operation of the price table.
        operation: String,
        #[schema(minimum = 1, maximum = 1_000_000_000_000_u64)]
        invocations: u64,
    },
}

impl From<MeterBody> for Meter {
    fn from(body: MeterBody) -> Self {
        match body {
            MeterBody::Model {
                model,
                input_tokens,
                output_tokens,
            } => Meter::Model {
                model,
                input_tokens,
                output_tokens,
            },
            MeterBody::Agent {
                agent,
                operation,
                invocations,
            } => Meter::Agent {
                agent,
                operation,
                invocations,
            },
        }
    }
}

impl From<&Meter> for MeterBody {
    fn from(meter: &Meter) -> Self {
        match meter.clone() {
            Meter::Model {
                model,
                input_tokens,
                output_tokens,
            } => MeterBody::Model {
                model,
                input_tokens,
                output_tokens,
            },
            Meter::Agent {
                agent,
                operation,
                invocations,
            } => MeterBody::Agent {
                agent,
                operation,
                invocations,
            },
        }
    }
}

/// One usage report.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    /// The caller's key of this report, 1 to 255 characters: a retry with it is answered
    /// with the first record and charges nothing again.
    #[schema(min_length = 1, max_length = 255)]
    pub idempotency_key: String,
    pub usage: MeterBody,
}

/// A batch of usage reports.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportsBody {
    /// 1 to 1000 reports, each key once.
    #[schema(min_items = 1, max_items = 1000)]
    pub reports: Vec<ReportBody>,
}

/// A report recorded.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageRecordView {
    pub record_id: String,
    /// The ledger entry that paid for it, with the rest of its batch.
    pub entry_id: String,
    pub idempotency_key: String,
    pub usage: MeterBody,
    /// What it cost.
    pub credits: u64,
    /// The version of its price it was charged at.
    pub price_version: u32,
    /// The credential that reported it (`token:<id>`, `user:<id>`).
    pub credential: String,
    pub recorded_at: DateTime<Utc>,
}

impl From<&UsageRecord> for UsageRecordView {
    fn from(record: &UsageRecord) -> Self {
        Self {
            record_id: record.id.to_string(),
            entry_id: record.entry_id.to_string(),
            idempotency_key: record.idempotency_key.clone(),
            usage: MeterBody::from(&record.meter),
            credits: record.credits,
            price_version: record.price_version,
            credential: record.credential.clone(),
            recorded_at: record.recorded_at,
        }
    }
}

/// A report of a batch, recorded now or before.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordView {
    #[serde(flatten)]
    pub record: UsageRecordView,
    /// A retry: the first report's record, nothing charged again.
    pub replayed: bool,
}

/// What a batch came to.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordedView {
    /// Each report, in the batch's order.
    pub reports: Vec<RecordView>,
    /// Credits charged by this request (retries charge nothing).
    pub charged: u64,
    /// Credits that may be spent now.
    pub balance: u64,
}

impl From<Recording> for RecordedView {
    fn from(recording: Recording) -> Self {
        let charged = recording.entry.as_ref().map_or(0, |entry| entry.amount);
        Self {
            reports: recording
                .reports
                .iter()
                .map(|recorded| RecordView {
                    record: UsageRecordView::from(&recorded.record),
                    replayed: recorded.replayed,
                })
                .collect(),
            charged,
            balance: recording.balance,
        }
    }
}

/// Report usage (scope `usage.report`): a batch of up to 1000 reports of model tokens or
/// agent invocations, each priced from the price table's version in force and paid in
/// credits from the ledger, all or nothing (402 `insufficient_credits` naming the batch's
/// cost and the balance, nothing written). A report's key answers its retries with the
/// first record (200 when every report is a retry); a key used for other usage or a spend
/// is 409 `idempotency_key_reused`. A model or operation without a price is 400
/// `unknown_model` / `unknown_operation`. Audited once per batch as
/// `billing.usage_record`.
#[utoipa::path(tag = "billing", security(("bearer" = []), ("api_key" = [])),
    request_body = ReportsBody, responses(
    (status = 201, body = RecordedView),
    (status = 200, body = RecordedView, description = "Every report a retry"),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 402, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 409, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/usage")]
async fn record_usage(
    state: Data<ApiState>,
    auth: Auth,
    body: Json<ReportsBody>,
) -> ApiResult<HttpResponse> {
    let reports = body
        .0
        .reports
        .into_iter()
        .map(|report| UsageReport {
            idempotency_key: report.idempotency_key,
            meter: report.usage.into(),
        })
        .collect();
    let recording = state.app.billing.usage.record(&auth, reports).await?;
    let replays_only = recording.entry.is_none();
    Ok(super::billing::made_or_replayed(replays_only).json(RecordedView::from(recording)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    /// `hour`, `day` (default) or `month` (UTC).
    #[param(pattern = "^(hour|day|month)$")]
    pub window: Option<String>,
    /// The first window: the one this time is in (default: 48 hours, 30 days or 365 days
    /// before `to`).
    pub from: Option<DateTime<Utc>>,
    /// The end, excluded (default now). At most 31 days after `from` by hour, 400 by day,
    /// three years by month.
    pub to: Option<DateTime<Utc>>,
    /// Only this model's or agent's usage.
    pub subject: Option<String>,
    /// Only what this credential reported (`token:<id>`).
    pub credential: Option<String>,
}

/// Sums of usage.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotalsView {
    pub reports: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub invocations: u64,
    pub credits: u64,
}

impl From<&Totals> for TotalsView {
    fn from(totals: &Totals) -> Self {
        Self {
            reports: totals.reports,
            input_tokens: totals.input_tokens,
            output_tokens: totals.output_tokens,
            invocations: totals.invocations,
            credits: totals.credits,
        }
    }
}

/// One model or agent operation of a window, as one credential reported it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DimensionView {
    /// `model` or `agent`.
    pub kind: String,
    /// The model, or the agent.
    pub subject: String,
    /// The agent's operation (absent for a model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    pub credential: String,
    #[serde(flatten)]
    pub totals: TotalsView,
}

/// One window of usage.
#[derive(Debug, Serialize, ToSchema)]
pub struct BucketView {
    pub start: DateTime<Utc>,
    pub totals: TotalsView,
    pub by: Vec<DimensionView>,
}

impl From<&Bucket> for BucketView {
    fn from(bucket: &Bucket) -> Self {
        Self {
            start: bucket.start,
            totals: TotalsView::from(&bucket.totals),
            by: bucket
                .by
                .iter()
                .map(|(dimension, totals)| DimensionView {
                    kind: dimension.kind.clone(),
                    subject: dimension.subject.clone(),
                    operation: Some(dimension.operation.clone()).filter(|op| !op.is_empty()),
                    credential: dimension.credential.clone(),
                    totals: TotalsView::from(totals),
                })
                .collect(),
        }
    }
}

/// The account's usage over a span.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageView {
    /// `hour`, `day` or `month`.
    pub window: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub totals: TotalsView,
    /// The windows with usage, oldest first.
    pub buckets: Vec<BucketView>,
}

impl From<&UsageWindows> for UsageView {
    fn from(usage: &UsageWindows) -> Self {
        Self {
            window: window_name(usage.window).to_owned(),
            from: usage.from,
            to: usage.to,
            totals: TotalsView::from(&usage.totals),
            buckets: usage.buckets.iter().map(BucketView::from).collect(),
        }
    }
}

fn window_name(window: Window) -> &'static str {
    match window {
        Window::Hour => "hour",
        Window::Day => "day",
        Window::Month => "month",
    }
}

/// The account's usage (admin), window by window (hour, day or month, UTC): what each
/// model and agent operation consumed and cost, by the credential that reported it.
#[utoipa::path(tag = "billing", security(("bearer" = []), ("api_key" = [])),
    params(UsageParams), responses(
    (status = 200, body = UsageView),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/usage")]
async fn get_usage(
    state: Data<ApiState>,
    auth: Auth,
    query: Query<UsageParams>,
) -> ApiResult<HttpResponse> {
    let query = query.into_inner();
    let window = match query.window.as_deref() {
        None | Some("day") => Window::Day,
        Some("hour") => Window::Hour,
        Some("month") => Window::Month,
        Some(_) => {
            return Err(ApiError::new(
                d2_kernel::Code::InvalidQuery,
                "`window` is hour, day or month",
            ));
        }
    };
    let usage = state
        .app
        .billing
        .usage
        .usage(
            &auth,
            UsageQuery {
                window,
                from: query.from,
                to: query.to,
                subject: query.subject,
                credential: query.credential,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(UsageView::from(&usage)))
}

/// Which usage records to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RecordsQuery {
    /// Items per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The `X-Next-Cursor` of the previous page.
    pub cursor: Option<String>,
    /// `model` or `agent`.
    #[param(pattern = "^(model|agent)$")]
    pub kind: Option<String>,
    /// Only this model's or agent's records.
    pub subject: Option<String>,
    /// Only what this credential reported (`token:<id>`).
    pub credential: Option<String>,
    /// From this instant (inclusive, RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Before this instant (exclusive, RFC 3339).
    pub until: Option<DateTime<Utc>>,
}

/// The account's usage reports as recorded (admin), newest first, a page at a time: what
/// each measured, what it cost at which price version, and which credential sent it.
#[utoipa::path(tag = "billing", security(("bearer" = []), ("api_key" = [])),
    params(RecordsQuery), responses(
    (status = 200, body = Vec<UsageRecordView>, headers(("X-Next-Cursor" = String, description = "Present when another page follows"))),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/usage/records")]
async fn usage_records(
    state: Data<ApiState>,
    auth: Auth,
    query: Query<RecordsQuery>,
) -> ApiResult<HttpResponse> {
    let query = query.into_inner();
    crate::time::check_instants(&[("since", query.since), ("until", query.until)])?;
    let page = super::PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    }
    .parse()?;
    let kind = query
        .kind
        .as_deref()
        .map(str::parse::<MeterKind>)
        .transpose()
        .map_err(|e| super::invalid_query(e.to_string()))?;
    let filter = RecordFilter {
        kind,
        subject: query.subject,
        credential: query.credential,
        since: query.since,
        until: query.until,
    };
    let records = state
        .app
        .billing
        .usage
        .records(&auth, &filter, &page)
        .await?;
    Ok(super::paged(records, |record| {
        UsageRecordView::from(&record)
    }))
}

/// One version of a price.
#[derive(Debug, Serialize, ToSchema)]
pub struct PriceView {
    pub version: u32,
    pub from: DateTime<Utc>,
    pub input_per_million: u64,
    pub output_per_million: u64,
    pub per_invocation: u64,
}

impl From<PriceVersion> for PriceView {
    fn from(price: PriceVersion) -> Self {
        Self {
            version: price.version,
            from: price.from,
            input_per_million: price.input_per_million,
            output_per_million: price.output_per_million,
            per_invocation: price.per_invocation,
        }
    }
}

/// The prices in force now.
#[derive(Debug, Serialize, ToSchema)]
pub struct PricesView {
    /// Each model's price: credits per million input and output tokens.
    pub models: std::collections::BTreeMap<String, PriceView>,
    /// Each agent operation's price: credits per invocation.
    pub operations: std::collections::BTreeMap<String, PriceView>,
}

/// The price table in force now (any credential of an account): what each model's tokens
/// and each agent operation cost in credits, and the version of each price.
#[utoipa::path(tag = "billing", security(("bearer" = []), ("api_key" = [])), responses(
    (status = 200, body = PricesView),
))]
#[get("/prices")]
async fn get_prices(state: Data<ApiState>, _auth: Auth) -> ApiResult<HttpResponse> {
    let table = state.app.billing.usage.prices();
    let now = state.app.clock.now();
    let models = table
        .models()
        .into_iter()
        .filter_map(|model| Some((model.to_owned(), table.model(model, now)?.into())))
        .collect();
    let operations = table
        .operations()
        .into_iter()
        .filter_map(|op| Some((op.to_owned(), table.operation(op, now)?.into())))
        .collect();
    Ok(HttpResponse::Ok().json(PricesView { models, operations }))
}

/// What a caller asks before working: usage it is about to cause, or an agent to hire.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AskBody {
    /// A model's tokens: their cost against the balance, and against the plan's model
    /// tokens a month.
    Model {
        model: String,
        #[serde(default)]
        input_tokens: u64,
        #[serde(default)]
        output_tokens: u64,
    },
    /// An agent's invocations: their cost against the balance; a new agent needs a slot.
    Agent {
        agent: String,
        operation: String,
        invocations: u64,
    },
    /// Whether the agent may work for the account: one it used this month, or a free slot
    /// of the plan's `max_agents`.
    Hire { agent: String },
}

impl From<AskBody> for Ask {
    fn from(body: AskBody) -> Self {
        match body {
            AskBody::Model {
                model,
                input_tokens,
                output_tokens,
            } => Ask::Usage(Meter::Model {
                model,
                input_tokens,
                output_tokens,
            }),
            AskBody::Agent {
                agent,
                operation,
                invocations,
            } => Ask::Usage(Meter::Agent {
                agent,
                operation,
                invocations,
            }),
            AskBody::Hire { agent } => Ask::Hire { agent },
        }
    }
}

/// The work may be done.
#[derive(Debug, Serialize, ToSchema)]
pub struct AllowedView {
    pub allowed: bool,
    /// What it will cost at the prices in force.
    pub cost: u64,
    /// The credits that may be spent, as of `as_of`.
    pub balance: u64,
    /// When this replica read the account's standing (at most
    /// `billing.eligibility_cache.ttl_seconds` ago while checks keep coming, twice that
    /// after a quiet spell).
    pub as_of: DateTime<Utc>,
}

impl From<Allowed> for AllowedView {
    fn from(allowed: Allowed) -> Self {
        Self {
            allowed: true,
            cost: allowed.cost,
            balance: allowed.balance,
            as_of: allowed.as_of,
        }
    }
}

/// May the account do this work now (scope `usage.report`)? Answered from memory: **200**
/// with its cost, or 402 `not_eligible` naming the `limit` (`locked`, `credits`,
/// `agent_slots`, `model_tokens`), what it `allowed`, what is `used` of it this month, what
/// was `requested`, and the `upgrades` (plans whose quota would allow it, with theirs).
/// Nothing is spent: the work's usage report pays for it.
#[utoipa::path(tag = "billing", security(("bearer" = []), ("api_key" = [])),
    request_body = AskBody, responses(
    (status = 200, body = AllowedView),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 402, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[post("/eligibility")]
async fn check_eligibility(
    state: Data<ApiState>,
    auth: Auth,
    body: Json<AskBody>,
) -> ApiResult<HttpResponse> {
    let ask = Ask::from(body.0);
    let allowed = state.app.billing.eligibility.check(&auth, &ask).await?;
    Ok(HttpResponse::Ok().json(AllowedView::from(allowed)))
}

/// One day's credits.
#[derive(Debug, Serialize, ToSchema)]
pub struct DayView {
    pub day: DateTime<Utc>,
    pub credits: u64,
}

/// The account's credits this period and where they are heading.
#[derive(Debug, Serialize, ToSchema)]
pub struct ForecastView {
    /// The credits that may be spent now.
    pub balance: u64,
    /// The calendar month (UTC).
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    /// Credits used since the period started.
    pub used_in_period: u64,
    /// Credits a day at the current pace (the linearly weighted average of the last
    /// seven complete days), rounded up.
    pub daily_rate: u64,
    /// The period's usage by its end at that pace.
    pub projected_period_usage: u64,
    /// When the balance runs out at that pace; `null` when nothing is being used.
    pub runs_out_at: Option<DateTime<Utc>>,
    /// The last seven complete days, oldest first.
    pub daily: Vec<DayView>,
}

impl From<CreditForecast> for ForecastView {
    fn from(forecast: CreditForecast) -> Self {
        Self {
            balance: forecast.balance,
            period_start: forecast.period_start,
            period_end: forecast.period_end,
            used_in_period: forecast.used_in_period,
            daily_rate: forecast.forecast.daily_rate,
            projected_period_usage: forecast.forecast.projected_period_usage,
            runs_out_at: forecast.forecast.runs_out_at,
            daily: forecast
                .daily
                .into_iter()
                .map(|(day, credits)| DayView { day, credits })
                .collect(),
        }
    }
}

/// The account's credits this month and their forecast (admin): used so far, the daily
/// pace (a linearly weighted moving average of the last seven complete days: the latest
/// weighs 7, the oldest 1), the month's projected usage and when the balance runs out.
#[utoipa::path(tag = "billing", security(("bearer" = []), ("api_key" = [])), responses(
    (status = 200, body = ForecastView),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/forecast")]
async fn get_forecast(state: Data<ApiState>, auth: Auth) -> ApiResult<HttpResponse> {
    let forecast = state.app.billing.eligibility.forecast(&auth).await?;
    Ok(HttpResponse::Ok().json(ForecastView::from(forecast)))
}

/// What a model or an agent may cost in a month.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetBody {
    /// Whole credits a calendar month (UTC), 1 to 10^12.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_u64)]
    pub monthly_credits: u64,
}

/// A budget of the account.
#[derive(Debug, Serialize, ToSchema)]
pub struct BudgetView {
    /// `model` or `agent`.
    pub kind: String,
    /// The model, or the agent.
    pub subject: String,
    pub monthly_credits: u64,
    /// What the model or agent cost this month (as of the account's standing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spent_this_month: Option<u64>,
    pub updated_at: DateTime<Utc>,
}

impl BudgetView {
    fn of(budget: &Budget, spent: Option<u64>) -> Self {
        Self {
            kind: budget.kind.as_str().to_owned(),
            subject: budget.subject.clone(),
            monthly_credits: budget.monthly_credits,
            spent_this_month: spent,
            updated_at: budget.updated_at,
        }
    }
}

fn budget_kind(kind: &str) -> ApiResult<MeterKind> {
    kind.parse().map_err(|error: d2_billing::UnknownMeterKind| {
        ApiError::new(d2_kernel::Code::InvalidBudget, error.to_string())
    })
}

/// The account's budgets (admin), each with what its model or agent cost this month.
#[utoipa::path(tag = "billing", security(("bearer" = []), ("api_key" = [])), responses(
    (status = 200, body = Vec<BudgetView>),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[get("/budgets")]
async fn list_budgets(state: Data<ApiState>, auth: Auth) -> ApiResult<HttpResponse> {
    let budgets = state.app.billing.eligibility.budgets(&auth).await?;
    let views: Vec<BudgetView> = budgets
        .iter()
        .map(|(budget, spent)| BudgetView::of(budget, Some(*spent)))
        .collect();
    Ok(HttpResponse::Ok().json(views))
}

/// Set what a model or an agent may cost the account in a month (admin): made, or
/// replaced. Eligibility refuses work beyond it (402 `not_eligible`, `limit: budget`).
/// Audited as `billing.budget_set`.
#[utoipa::path(tag = "billing", security(("bearer" = []), ("api_key" = [])),
    params(("kind" = String, Path, pattern = "^(model|agent)$", description = "`model` or `agent`"), ("subject" = String, Path, min_length = 1, max_length = 128, pattern = "^[^\\s\\u0000-\\u001F\\u007F-\\u009F]+$", description = "The model, or the agent")),
    request_body = BudgetBody, responses(
    (status = 200, body = BudgetView),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[put("/budgets/{kind}/{subject}")]
async fn set_budget(
    state: Data<ApiState>,
    auth: Auth,
    path: Path<(String, String)>,
    body: Json<BudgetBody>,
) -> ApiResult<HttpResponse> {
    let (kind, subject) = path.into_inner();
    let budget = state
        .app
        .billing
        .eligibility
        .set_budget(&auth, budget_kind(&kind)?, subject, body.0.monthly_credits)
        .await?;
    Ok(HttpResponse::Ok().json(BudgetView::of(&budget, None)))
}

/// Remove a budget of the account (admin); 404 `budget_not_found` when there is none.
/// Audited as `billing.budget_delete`.
#[utoipa::path(tag = "billing", security(("bearer" = []), ("api_key" = [])),
    params(("kind" = String, Path, pattern = "^(model|agent)$", description = "`model` or `agent`"), ("subject" = String, Path, min_length = 1, max_length = 128, pattern = "^[^\\s\\u0000-\\u001F\\u007F-\\u009F]+$", description = "The model, or the agent")),
    responses(
    (status = 204),
    (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
))]
#[delete("/budgets/{kind}/{subject}")]
async fn delete_budget(
    state: Data<ApiState>,
    auth: Auth,
    path: Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (kind, subject) = path.into_inner();
    state
        .app
        .billing
        .eligibility
        .delete_budget(&auth, budget_kind(&kind)?, &subject)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
