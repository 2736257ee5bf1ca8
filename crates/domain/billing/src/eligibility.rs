//! Eligibility before work: may this account use N tokens of model M, run an agent's
//! operation, hire agent A; and the forecast of its credits.
//!
//! Each answer comes from the account's standing this month, kept in memory: its balance,
//! its plan's quotas (agent slots, model tokens a month), what each model and agent cost
//! this month, which agents it used. A standing is read from the stores at most once per
//! `billing.eligibility_cache.ttl_seconds` on each replica, in the background once the
//! account's first check has read it, so every replica answers from memory, without
//! waiting for a store, and agrees with the stores within that time (twice that after a
//! quiet spell: a standing unasked for that long is dropped). The check is advice for the caller
//! before it works: the report of the work itself is paid exactly, from the ledger, and
//! never overdraws.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::{
    AccessError, AccountId, AuthContext, CacheSettings, Clock, Code, CoherentCache,
    EntitlementError, Entitlements, ErrorCode, Plan, PlanCatalog, Quotas, Scope, StoreError,
};
use serde_json::{Map, Value, json};

use crate::budgets::{Budget, checked_subject};
use crate::credits::{CreditGrant, balance};
use crate::forecast::{Forecast, WINDOW_DAYS, forecast};
use crate::ledger::CreditRepo;
use crate::ledger::MAX_CREDITS;
use crate::usage::MeterKind;
use crate::usage::{Meter, UsageError, UsageMeter, UsageRepo, Window};

/// What a caller asks before working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// Usage it is about to cause: its cost against the balance; a model's tokens against
    /// the plan's monthly tokens.
    Usage(Meter),
    /// Whether the agent may work for the account: one it used this month, or a free slot.
    Hire { agent: String },
}

/// The limit a refusal names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The account is locked (an ended trial, a lapsed payment): nothing new is served.
    Locked,
    /// The credits that may be spent.
    Credits,
    /// The plan's agents a month (`max_agents`).
    AgentSlots,
    /// The plan's model tokens a month (`monthly_model_tokens`).
    ModelTokens,
    /// The account's own budget of the model or agent (`subject` names it).
    Budget,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Locked => "locked",
            Limit::Credits => "credits",
            Limit::AgentSlots => "agent_slots",
            Limit::ModelTokens => "model_tokens",
            Limit::Budget => "budget",
        }
    }
}

/// Why the work may not be done, and what would allow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ineligible {
    pub limit: Limit,
    /// The limit's value (credits: the balance).
    pub allowed: u64,
    /// What is used of it this month (credits: nothing; the balance is what is left).
    pub used: u64,
    /// What the work asks.
    pub requested: u64,
    /// The plans whose quota would allow it, cheapest first (none for credits: buy more;
    /// none for a budget: the account sets it).
    pub upgrades: Vec<(Plan, u64)>,
    /// The budget's model or agent, `model:<id>` or `agent:<id>`.
    pub subject: Option<String>,
}

/// The work may be done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// What it will cost at the prices in force.
    pub cost: u64,
    /// The credits that may be spent, as of the standing's reading.
    pub balance: u64,
    pub as_of: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum EligibilityError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Usage(#[from] UsageError),
    #[error("not eligible: {} (allowed {}, used {}, requested {})", .0.limit.as_str(), .0.allowed, .0.used, .0.requested)]
    Refused(Ineligible),
    #[error("{0}")]
    InvalidBudget(&'static str),
    #[error("no such budget")]
    BudgetNotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for EligibilityError {
    fn code(&self) -> Code {
        match self {
            EligibilityError::Access(error) => error.code(),
            EligibilityError::Usage(error) => error.code(),
            EligibilityError::Refused(_) => Code::NotEligible,
            EligibilityError::InvalidBudget(_) => Code::InvalidBudget,
            EligibilityError::BudgetNotFound => Code::BudgetNotFound,
            EligibilityError::Store(error) => error.code(),
        }
    }

    fn details(&self) -> Option<Map<String, Value>> {
        let EligibilityError::Refused(refusal) = self else {
            return None;
        };
        let upgrades: Vec<Value> = refusal
            .upgrades
            .iter()
            .map(|(plan, allowed)| json!({"plan": plan.as_str(), "allowed": allowed}))
            .collect();
        let mut details = Map::new();
        details.insert("limit".to_owned(), json!(refusal.limit.as_str()));
        details.insert("allowed".to_owned(), json!(refusal.allowed));
        details.insert("used".to_owned(), json!(refusal.used));
        details.insert("requested".to_owned(), json!(refusal.requested));
        details.insert("upgrades".to_owned(), Value::Array(upgrades));
        if let Some(subject) = &refusal.subject {
            details.insert("subject".to_owned(), json!(subject));
        }
        Some(details)
    }
}

impl From<EntitlementError> for EligibilityError {
    fn from(error: EntitlementError) -> Self {
        match error {
            EntitlementError::UnknownAccount => {
                EligibilityError::Store(StoreError::corrupt("standing of an unknown account"))
            }
            EntitlementError::Store(error) => EligibilityError::Store(error),
        }
    }
}

/// An account's standing this month, as one reading of the stores found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub plan: Plan,
    pub locked: bool,
    pub quotas: Quotas,
    pub balance: u64,
    pub month_start: DateTime<Utc>,
    /// Input and output tokens of every model this month.
    pub model_tokens: u64,
    /// Credits each model or agent cost this month, by (`model` or `agent`, its name).
    pub spent: BTreeMap<(String, String), u64>,
    /// The agents used this month.
    pub agents: BTreeSet<String>,
    /// The account's budgets, by (`model` or `agent`, its name).
    pub budgets: BTreeMap<(String, String), u64>,
    pub read_at: DateTime<Utc>,
}

/// The start of the month `at` is in (UTC).
fn month_of(at: DateTime<Utc>) -> DateTime<Utc> {
    Window::Month.start_of(at)
}

/// The start of the month after the one `at` is in.
fn next_month(at: DateTime<Utc>) -> DateTime<Utc> {
    let (year, month) = if at.month() == 12 {
        (at.year().saturating_add(1), 1)
    } else {
        (at.year(), at.month().saturating_add(1))
    };
    Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .unwrap_or(at)
}

pub struct Eligibility {
    reader: StandingReader,
    plans: Arc<PlanCatalog>,
    meter: Arc<UsageMeter>,
    standings: Arc<CoherentCache<AccountId, Arc<Standing>>>,
    /// How long a standing answers before it is read again.
    fresh_for: Duration,
    /// The accounts whose standing a background task is reading again.
    refreshing: Arc<Mutex<HashSet<AccountId>>>,
}

/// Reads an account's standing from the stores.
#[derive(Clone)]
struct StandingReader {
    usage: Arc<dyn UsageRepo>,
    credits: Arc<dyn CreditRepo>,
    entitlements: Arc<dyn Entitlements>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Eligibility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Eligibility")
            .field("standings", &self.standings)
            .finish_non_exhaustive()
    }
}

/// The usage of an account's credits to date, and where it is heading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditForecast {
    pub balance: u64,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    /// Credits used since the period started.
    pub used_in_period: u64,
    /// Credits used on each of the last complete days, oldest first.
    pub daily: Vec<(DateTime<Utc>, u64)>,
    pub forecast: Forecast,
}

impl Eligibility {
    pub fn new(
        usage: Arc<dyn UsageRepo>,
        credits: Arc<dyn CreditRepo>,
        entitlements: Arc<dyn Entitlements>,
        plans: Arc<PlanCatalog>,
        meter: Arc<UsageMeter>,
        clock: Arc<dyn Clock>,
        cache: CacheSettings,
    ) -> Self {
        // A standing read `cache.ttl` ago is read again in the background while it still
        // answers; one not asked for in twice that long is dropped (and read before the
        // next answer). A lifetime of 0 reads the stores on every check.
        let kept = CacheSettings {
            ttl: cache.ttl.saturating_mul(2),
            ..cache
        };
        Self {
            reader: StandingReader {
                usage,
                credits,
                entitlements,
                clock,
            },
            plans,
            meter,
            standings: Arc::new(CoherentCache::new(kept)),
            fresh_for: Duration::from_std(cache.ttl).unwrap_or(Duration::MAX),
            refreshing: Arc::default(),
        }
    }

    /// The account's standing, from memory. One read more than the cache's lifetime ago
    /// still answers while a task reads it again, so a check never waits for the stores
    /// once the account's standing is in memory: with checks coming, each replica's
    /// standing is at most a lifetime (and the time of a reading) old.
    pub async fn standing(&self, account: AccountId) -> Result<Arc<Standing>, EligibilityError> {
        let reader = &self.reader;
        let standing = self
            .standings
            .get_or_load(&account, || reader.read(account))
            .await?;
        // (A lifetime of 0 keeps nothing: the standing was just read.)
        if !self.fresh_for.is_zero()
            && d2_kernel::later(standing.read_at, self.fresh_for) <= reader.clock.now()
        {
            self.refresh_in_background(account);
        }
        Ok(standing)
    }

    /// Reads the account's standing again in a task of its own (one at a time per
    /// account), unless no tokio runtime runs this code: then the next check after the
    /// entry expires reads it.
    fn refresh_in_background(&self, account: AccountId) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !locked(&self.refreshing).insert(account) {
            return;
        }
        let reader = self.reader.clone();
        let standings = self.standings.clone();
        let refreshing = self.refreshing.clone();
        runtime.spawn(async move {
            if let Err(error) = standings.reload(&account, || reader.read(account)).await {
                tracing::warn!(error.cause = %error, %account, "an account's standing was not read again");
            }
            locked(&refreshing).remove(&account);
        });
    }

    /// The account's standing with these grants, the rest read from the stores now,
    /// bypassing the cache.
    pub(crate) async fn standing_of(
        &self,
        account: AccountId,
        grants: &[CreditGrant],
    ) -> Result<Standing, EligibilityError> {
        self.reader.read_with(account, grants).await
    }

    /// The plans whose quota (`quota` of their quotas) is at least `needed`, and theirs.
    fn upgrades(&self, needed: u64, quota: impl Fn(&Quotas) -> u64) -> Vec<(Plan, u64)> {
        Plan::ALL
            .into_iter()
            .map(|plan| (plan, quota(self.plans.quotas(plan))))
            .filter(|(_, allowed)| *allowed >= needed)
            .collect()
    }

    /// Whether the caller's account may do the work it asks (scope `usage.report`).
    pub async fn check(&self, ctx: &AuthContext, ask: &Ask) -> Result<Allowed, EligibilityError> {
        ctx.require(Scope::UsageReport)?;
        let standing = self.standing(ctx.account_id).await?;
        let refuse = |limit, allowed, used, requested, upgrades| {
            Err(EligibilityError::Refused(Ineligible {
                limit,
                allowed,
                used,
                requested,
                upgrades,
                subject: None,
            }))
        };
        if standing.locked {
            return refuse(Limit::Locked, 0, 0, 0, Vec::new());
        }
        let cost = match ask {
            Ask::Hire { agent } => {
                crate::usage::checked_name("agent", agent)?;
                let slots = u64::from(standing.quotas.max_agents);
                let used = u64::try_from(standing.agents.len()).unwrap_or(u64::MAX);
                if !standing.agents.contains(agent) && used >= slots {
                    let needed = used.saturating_add(1);
                    let upgrades = self.upgrades(needed, |q| u64::from(q.max_agents));
                    return refuse(Limit::AgentSlots, slots, used, 1, upgrades);
                }
                0
            }
            Ask::Usage(meter) => {
                let (cost, _) = self.meter.quote(meter, self.reader.clock.now())?;
                if let Meter::Model {
                    input_tokens,
                    output_tokens,
                    ..
                } = meter
                {
                    let requested = input_tokens.saturating_add(*output_tokens);
                    let cap = standing.quotas.monthly_model_tokens;
                    if standing.model_tokens.saturating_add(requested) > cap {
                        let needed = standing.model_tokens.saturating_add(requested);
                        let upgrades = self.upgrades(needed, |q| q.monthly_model_tokens);
                        return refuse(
                            Limit::ModelTokens,
                            cap,
                            standing.model_tokens,
                            requested,
                            upgrades,
                        );
                    }
                }
                if let Meter::Agent { agent, .. } = meter
                    && !standing.agents.contains(agent)
                    && u64::try_from(standing.agents.len()).unwrap_or(u64::MAX)
                        >= u64::from(standing.quotas.max_agents)
                {
                    let used = u64::try_from(standing.agents.len()).unwrap_or(u64::MAX);
                    let upgrades =
                        self.upgrades(used.saturating_add(1), |q| u64::from(q.max_agents));
                    return refuse(
                        Limit::AgentSlots,
                        u64::from(standing.quotas.max_agents),
                        used,
                        1,
                        upgrades,
                    );
                }
                let key = (meter.kind().as_str().to_owned(), meter.subject().to_owned());
                if let Some(budget) = standing.budgets.get(&key) {
                    let spent = standing.spent.get(&key).copied().unwrap_or(0);
                    if spent.saturating_add(cost) > *budget {
                        return Err(EligibilityError::Refused(Ineligible {
                            limit: Limit::Budget,
                            allowed: *budget,
                            used: spent,
                            requested: cost,
                            upgrades: Vec::new(),
                            subject: Some(format!("{}:{}", key.0, key.1)),
                        }));
                    }
                }
                cost
            }
        };
        if cost > standing.balance {
            return refuse(Limit::Credits, standing.balance, 0, cost, Vec::new());
        }
        Ok(Allowed {
            cost,
            balance: standing.balance,
            as_of: standing.read_at,
        })
    }

    /// Sets what a model or an agent may cost the caller's account in a month (admin);
    /// eligibility refuses work beyond it. Audited `billing.budget_set`.
    pub async fn set_budget(
        &self,
        ctx: &AuthContext,
        kind: MeterKind,
        subject: String,
        monthly_credits: u64,
    ) -> Result<Budget, EligibilityError> {
        ctx.require(Scope::Admin)?;
        checked_subject(&subject)?;
        if !(1..=MAX_CREDITS).contains(&monthly_credits) {
            return Err(EligibilityError::InvalidBudget(
                "monthly_credits: 1 to 10^12 credits",
            ));
        }
        let now = self.reader.clock.now();
        let budget = Budget {
            kind,
            subject,
            monthly_credits,
            updated_at: now,
        };
        let audit = AuditEntry::by(ctx, AuditAction::BillingBudgetSet, now)
            .target("budget", format!("{}:{}", kind.as_str(), budget.subject))
            .metadata(json!({
                "kind": kind.as_str(),
                "subject": budget.subject,
                "monthly_credits": monthly_credits,
            }));
        self.reader
            .usage
            .set_budget(ctx.account_id, &budget, &audit)
            .await?;
        self.standings.invalidate(&ctx.account_id).await;
        Ok(budget)
    }

    /// Removes a budget of the caller's account (admin). Audited `billing.budget_delete`.
    pub async fn delete_budget(
        &self,
        ctx: &AuthContext,
        kind: MeterKind,
        subject: &str,
    ) -> Result<(), EligibilityError> {
        ctx.require(Scope::Admin)?;
        let now = self.reader.clock.now();
        let audit = AuditEntry::by(ctx, AuditAction::BillingBudgetDelete, now)
            .target("budget", format!("{}:{subject}", kind.as_str()))
            .metadata(json!({"kind": kind.as_str(), "subject": subject}));
        let deleted = self
            .reader
            .usage
            .delete_budget(ctx.account_id, kind, subject, &audit)
            .await?;
        self.standings.invalidate(&ctx.account_id).await;
        if deleted {
            Ok(())
        } else {
            Err(EligibilityError::BudgetNotFound)
        }
    }

    /// The caller's account's budgets (admin), each with what its model or agent cost this
    /// month (as of the standing's reading).
    pub async fn budgets(&self, ctx: &AuthContext) -> Result<Vec<(Budget, u64)>, EligibilityError> {
        ctx.require(Scope::Admin)?;
        let budgets = self.reader.usage.budgets(ctx.account_id).await?;
        let standing = self.standing(ctx.account_id).await?;
        Ok(budgets
            .into_iter()
            .map(|budget| {
                let key = (budget.kind.as_str().to_owned(), budget.subject.clone());
                let spent = standing.spent.get(&key).copied().unwrap_or(0);
                (budget, spent)
            })
            .collect())
    }

    /// The caller's account's credits this month and their forecast (admin): the period is
    /// the calendar month (UTC); the pace is the linearly weighted average of the last
    /// seven complete days (see `forecast`).
    pub async fn forecast(&self, ctx: &AuthContext) -> Result<CreditForecast, EligibilityError> {
        ctx.require(Scope::Admin)?;
        let now = self.reader.clock.now();
        let account = ctx.account_id;
        let today = Window::Day.start_of(now);
        let days = i64::try_from(WINDOW_DAYS).unwrap_or(7);
        let first_day = d2_kernel::earlier(today, Duration::days(days));
        let period_start = month_of(now);
        let period_end = next_month(now);
        let from = first_day.min(period_start);
        let hours = self.reader.usage.usage_hours(account, from, now).await?;
        let mut daily: BTreeMap<DateTime<Utc>, u64> = (0..days)
            .map(|n| (d2_kernel::later(first_day, Duration::days(n)), 0))
            .collect();
        let mut used_in_period = 0_u64;
        for hour in &hours {
            if hour.hour >= period_start {
                used_in_period = used_in_period.saturating_add(hour.totals.credits);
            }
            if let Some(day) = daily.get_mut(&Window::Day.start_of(hour.hour)) {
                *day = day.saturating_add(hour.totals.credits);
            }
        }
        let grants = self.reader.credits.credit_grants(account).await?;
        let balance = balance(&grants, now);
        let series: Vec<u64> = daily.values().copied().collect();
        Ok(CreditForecast {
            balance,
            period_start,
            period_end,
            used_in_period,
            forecast: forecast(&series, used_in_period, now, period_end, balance),
            daily: daily.into_iter().collect(),
        })
    }
}

impl StandingReader {
    async fn read(&self, account: AccountId) -> Result<Arc<Standing>, EligibilityError> {
        let grants = self.credits.credit_grants(account).await?;
        Ok(Arc::new(self.read_with(account, &grants).await?))
    }

    /// The account's standing with these grants, the rest read from the stores now.
    async fn read_with(
        &self,
        account: AccountId,
        grants: &[CreditGrant],
    ) -> Result<Standing, EligibilityError> {
        let now = self.clock.now();
        let entitlement = self.entitlements.entitlement(account).await?;
        let month_start = month_of(now);
        let hours = self
            .usage
            .usage_hours(account, month_start, next_month(now))
            .await?;
        let mut standing = Standing {
            plan: entitlement.plan,
            locked: entitlement.is_locked(),
            quotas: entitlement.quotas,
            balance: balance(grants, now),
            month_start,
            model_tokens: 0,
            spent: BTreeMap::new(),
            agents: BTreeSet::new(),
            budgets: self
                .usage
                .budgets(account)
                .await?
                .into_iter()
                .map(|budget| {
                    let key = (budget.kind.as_str().to_owned(), budget.subject);
                    (key, budget.monthly_credits)
                })
                .collect(),
            read_at: now,
        };
        for hour in &hours {
            let dimension = &hour.dimension;
            let spent = standing
                .spent
                .entry((dimension.kind.clone(), dimension.subject.clone()))
                .or_default();
            *spent = spent.saturating_add(hour.totals.credits);
            if dimension.kind == "agent" {
                standing.agents.insert(dimension.subject.clone());
            } else {
                standing.model_tokens = standing
                    .model_tokens
                    .saturating_add(hour.totals.input_tokens)
                    .saturating_add(hour.totals.output_tokens);
            }
        }
        Ok(standing)
    }
}

/// The set, even if a task panicked holding it (its content is still right: each
/// insertion and removal is one call).
fn locked(set: &Mutex<HashSet<AccountId>>) -> std::sync::MutexGuard<'_, HashSet<AccountId>> {
    set.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
