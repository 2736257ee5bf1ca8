//! Threshold notices: when an account's usage reaches 80, 90 and 100 % of the credits its
//! plan includes for the period, or of a budget it set for a model or an agent, it is told
//! once per period and threshold, by a signed webhook to the endpoint it configured.
//!
//! A scheduled job (`billing-thresholds`) measures the accounts that spent credits since
//! its last pass and have something to measure (a plan grant in effect, a budget). A
//! threshold reached raises its notice; the store records it at most once per (account,
//! subject, period, threshold), whatever the replicas or passes that see it, and in the
//! same transaction writes its audit record and enqueues its delivery. The delivery task
//! posts the notice as JSON to the endpoint the account has when it runs, signed with the
//! account's signing key (the keys of its policy bundles, published in its JWKS) as a JWS
//! with a detached payload; a failed delivery is retried with backoff by the task queue.
//! A notice raised while the account has no endpoint is recorded and audited, not posted.

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::{
    AccessError, AccountId, AuthContext, Clock, Code, ErrorCode, JobFailure, JobReport, NewTask,
    ScheduledJob, Scope, StoreError, Task, TaskFailure, TaskHandler,
};
use serde_json::json;

use crate::credits::{CreditGrant, GrantSource};
use crate::eligibility::{Eligibility, EligibilityError, Standing};
use crate::ledger::CreditRepo;

/// The shares of a limit, in percent, that raise a notice.
pub const THRESHOLDS: [u8; 3] = [80, 90, 100];

/// The kind of the task that delivers a notice.
pub const NOTICE_TASK: &str = "billing.notice";

/// The subject of the credits a plan includes for a period.
pub const INCLUDED_CREDITS: &str = "included_credits";

/// The longest endpoint URL kept.
pub const MAX_ENDPOINT_BYTES: usize = 2048;

/// How far before its last pass the job looks for spending again (a spend committed while
/// a pass ran is seen by the next), and how far back its first pass looks.
const OVERLAP: Duration = Duration::minutes(1);
const FIRST_LOOKBACK: Duration = Duration::hours(1);

d2_kernel::typed_id!(
    /// A threshold notice.
    NoticeId
);

/// Where an account's notices are posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeEndpoint {
    pub url: String,
    pub updated_at: DateTime<Utc>,
}

/// Usage reached a threshold of a limit in a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub id: NoticeId,
    pub account_id: AccountId,
    /// `included_credits`, or the budget's `budget:model:<model>` / `budget:agent:<agent>`.
    pub subject: String,
    /// The start of the period: the included credits' period, or the budget's month.
    pub period_start: DateTime<Utc>,
    /// 80, 90 or 100.
    pub threshold: u8,
    /// What was used of the limit when the notice was raised.
    pub used: u64,
    pub limit: u64,
    pub created_at: DateTime<Utc>,
}

impl Notice {
    /// The body a notice is posted with.
    pub fn body(&self) -> serde_json::Value {
        json!({
            "id": self.id,
            "type": "billing.threshold_reached",
            "account_id": self.account_id,
            "subject": self.subject,
            "threshold": self.threshold,
            "used": self.used,
            "limit": self.limit,
            "period_start": self.period_start,
            "created_at": self.created_at,
        })
    }
}

/// A notice to record, with its audit record and its delivery task.
#[derive(Debug, Clone)]
pub struct RaisedNotice {
    pub notice: Notice,
    pub audit: AuditEntry,
    pub task: NewTask,
}

/// Storage of notice endpoints and notices.
#[async_trait]
pub trait NoticeRepo: Send + Sync + 'static {
    async fn notice_endpoint(
        &self,
        account: AccountId,
    ) -> Result<Option<NoticeEndpoint>, StoreError>;

    /// Sets (or replaces) the account's endpoint, with its audit record.
    async fn set_notice_endpoint(
        &self,
        account: AccountId,
        endpoint: &NoticeEndpoint,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;

    /// Removes the account's endpoint, with its audit record; false when it had none.
    async fn delete_notice_endpoint(
        &self,
        account: AccountId,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError>;

    /// The accounts that spent credits (a spend, usage or a reservation) since `since` and
    /// have a budget or a plan grant in effect at `now`.
    async fn notice_candidates(
        &self,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<AccountId>, StoreError>;

    /// In one transaction, each notice not recorded before for its account, subject,
    /// period and threshold: records it, writes its audit record and enqueues its task.
    /// Answers how many were recorded.
    async fn raise_notices(&self, notices: &[RaisedNotice]) -> Result<u64, StoreError>;

    /// The account's notices, newest first, at most `limit`.
    async fn notices(&self, account: AccountId, limit: u32) -> Result<Vec<Notice>, StoreError>;

    async fn notice(&self, account: AccountId, id: NoticeId) -> Result<Option<Notice>, StoreError>;
}

/// Signs a notice's body for its account: a compact JWS with a detached payload
/// (`header..signature`, RFC 7515 appendix F), verifiable against the account's JWKS.
#[async_trait]
pub trait NoticeSigner: Send + Sync + 'static {
    async fn sign_detached(&self, account: AccountId, body: &[u8]) -> Result<String, String>;
}

/// Why a post did not reach its endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    /// The URL may not be fetched (an address inside the server's network): no retry helps.
    #[error("the endpoint may not be reached: {0}")]
    Refused(String),
    /// The connection failed or timed out: worth another try.
    #[error("the endpoint could not be reached: {0}")]
    Failed(String),
}

/// Posts a body to a URL an account chose, answering the response's status.
#[async_trait]
pub trait WebhookPoster: Send + Sync + 'static {
    async fn post(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: Vec<u8>,
    ) -> Result<u16, PostError>;
}

#[derive(Debug, thiserror::Error)]
pub enum NoticeError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("{0}")]
    InvalidEndpoint(&'static str),
    #[error("the account has no notice endpoint")]
    EndpointNotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for NoticeError {
    fn code(&self) -> Code {
        match self {
            NoticeError::Access(error) => error.code(),
            NoticeError::InvalidEndpoint(_) => Code::InvalidNoticeEndpoint,
            NoticeError::EndpointNotFound => Code::NoticeEndpointNotFound,
            NoticeError::Store(error) => error.code(),
        }
    }
}

/// An endpoint URL: absolute `https` (`http` only to a loopback host, for a local
/// receiver), no credentials, no fragment, at most [`MAX_ENDPOINT_BYTES`].
fn checked_endpoint(url: &str) -> Result<String, NoticeError> {
    let invalid = NoticeError::InvalidEndpoint;
    if url.len() > MAX_ENDPOINT_BYTES {
        return Err(invalid("url: at most 2048 bytes"));
    }
    let parsed = url::Url::parse(url).map_err(|_| invalid("url: not an absolute URL"))?;
    let loopback = match parsed.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(invalid("url: no host")),
    };
    match parsed.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => return Err(invalid("url: https (http only to a loopback host)")),
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid("url: no credentials in the URL"));
    }
    if parsed.fragment().is_some() {
        return Err(invalid("url: no fragment"));
    }
    Ok(parsed.to_string())
}

/// A limit and what is used of it in a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measure {
    pub subject: String,
    pub period_start: DateTime<Utc>,
    pub used: u64,
    pub limit: u64,
}

impl Measure {
    /// The thresholds reached: each whose share of the limit is used.
    pub fn reached(&self) -> impl Iterator<Item = u8> + '_ {
        THRESHOLDS.into_iter().filter(|threshold| {
            u128::from(self.used).saturating_mul(100)
                >= u128::from(self.limit).saturating_mul(u128::from(*threshold))
        })
    }
}

/// What an account's usage is measured against at `now`: each plan grant in effect (its
/// credits spent or held, of its amount, in the period it starts) and each budget (what its
/// model or agent cost this month).
pub fn measures(grants: &[CreditGrant], standing: &Standing, now: DateTime<Utc>) -> Vec<Measure> {
    let included = grants
        .iter()
        .filter(|grant| grant.source == GrantSource::Plan)
        .filter(|grant| grant.effective_at <= now && grant.expires_at.is_none_or(|end| now < end))
        .map(|grant| Measure {
            subject: INCLUDED_CREDITS.to_owned(),
            period_start: grant.effective_at,
            used: grant.amount.saturating_sub(grant.remaining),
            limit: grant.amount,
        });
    let budgets = standing.budgets.iter().map(|(key, limit)| Measure {
        subject: format!("budget:{}:{}", key.0, key.1),
        period_start: standing.month_start,
        used: standing.spent.get(key).copied().unwrap_or(0),
        limit: *limit,
    });
    included.chain(budgets).filter(|m| m.limit > 0).collect()
}

/// The account's notice endpoint and its notices; the measuring of usage against limits;
/// the delivery of notices.
pub struct Notices {
    repo: Arc<dyn NoticeRepo>,
    credits: Arc<dyn CreditRepo>,
    eligibility: Arc<Eligibility>,
    signer: Arc<dyn NoticeSigner>,
    poster: Arc<dyn WebhookPoster>,
    clock: Arc<dyn Clock>,
    /// When the last pass of the job started.
    last_pass: Mutex<Option<DateTime<Utc>>>,
}

impl std::fmt::Debug for Notices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notices").finish_non_exhaustive()
    }
}

impl Notices {
    pub fn new(
        repo: Arc<dyn NoticeRepo>,
        credits: Arc<dyn CreditRepo>,
        eligibility: Arc<Eligibility>,
        signer: Arc<dyn NoticeSigner>,
        poster: Arc<dyn WebhookPoster>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            repo,
            credits,
            eligibility,
            signer,
            poster,
            clock,
            last_pass: Mutex::new(None),
        }
    }

    /// The caller's account's endpoint (admin).
    pub async fn endpoint(&self, ctx: &AuthContext) -> Result<NoticeEndpoint, NoticeError> {
        ctx.require(Scope::Admin)?;
        self.repo
            .notice_endpoint(ctx.account_id)
            .await?
            .ok_or(NoticeError::EndpointNotFound)
    }

    /// Sets where the caller's account's notices are posted (admin). Audited
    /// `billing.notice_endpoint_set`.
    pub async fn set_endpoint(
        &self,
        ctx: &AuthContext,
        url: &str,
    ) -> Result<NoticeEndpoint, NoticeError> {
        ctx.require(Scope::Admin)?;
        let url = checked_endpoint(url)?;
        let now = self.clock.now();
        let endpoint = NoticeEndpoint {
            url,
            updated_at: now,
        };
        let audit = AuditEntry::by(ctx, AuditAction::BillingNoticeEndpointSet, now)
            .target("notice_endpoint", ctx.account_id)
            .metadata(json!({ "url": endpoint.url }));
        self.repo
            .set_notice_endpoint(ctx.account_id, &endpoint, &audit)
            .await?;
        Ok(endpoint)
    }

    /// Removes the caller's account's endpoint (admin). Audited
    /// `billing.notice_endpoint_delete`.
    pub async fn delete_endpoint(&self, ctx: &AuthContext) -> Result<(), NoticeError> {
        ctx.require(Scope::Admin)?;
        let audit = AuditEntry::by(
            ctx,
            AuditAction::BillingNoticeEndpointDelete,
            self.clock.now(),
        )
        .target("notice_endpoint", ctx.account_id);
        if self
            .repo
            .delete_notice_endpoint(ctx.account_id, &audit)
            .await?
        {
            Ok(())
        } else {
            Err(NoticeError::EndpointNotFound)
        }
    }

    /// The caller's account's notices, newest first (admin).
    pub async fn list(&self, ctx: &AuthContext, limit: u32) -> Result<Vec<Notice>, NoticeError> {
        ctx.require(Scope::Admin)?;
        Ok(self.repo.notices(ctx.account_id, limit).await?)
    }

    /// Measures `account` now and raises the notices its thresholds call for; answers how
    /// many were new.
    pub async fn measure(&self, account: AccountId) -> Result<u64, EligibilityError> {
        let now = self.clock.now();
        let grants = self.credits.credit_grants(account).await?;
        let standing = self.eligibility.standing_of(account, &grants).await?;
        let raised: Vec<RaisedNotice> = measures(&grants, &standing, now)
            .into_iter()
            .flat_map(|measure| {
                measure
                    .reached()
                    .map(|threshold| raise(account, &measure, threshold, now))
                    .collect::<Vec<_>>()
            })
            .collect();
        if raised.is_empty() {
            return Ok(0);
        }
        Ok(self.repo.raise_notices(&raised).await?)
    }

    /// One pass of the job: measures every account that spent credits since the last
    /// pass (with an overlap) and has a limit to measure against.
    pub async fn pass(
        &self,
        keep_going: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<u64, StoreError> {
        let now = self.clock.now();
        let since = self
            .last_pass
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map_or(d2_kernel::earlier(now, FIRST_LOOKBACK), |last| {
                d2_kernel::earlier(last, OVERLAP)
            });
        let mut raised = 0_u64;
        for account in self.repo.notice_candidates(since, now).await? {
            if !keep_going() {
                return Ok(raised);
            }
            match self.measure(account).await {
                Ok(count) => raised = raised.saturating_add(count),
                Err(EligibilityError::Store(error)) => return Err(error),
                Err(error) => {
                    tracing::warn!(account.id = %account, error = %error, "an account's usage could not be measured");
                }
            }
        }
        *self
            .last_pass
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(now);
        Ok(raised)
    }

    /// Posts a notice to its account's endpoint, signed.
    async fn deliver(&self, task: &Task) -> Result<(), TaskFailure> {
        let (Some(account), Some(id)) = (
            task.account_id,
            task.payload
                .get("notice_id")
                .and_then(|id| id.as_str())
                .and_then(|id| id.parse::<NoticeId>().ok()),
        ) else {
            return Err(TaskFailure::Permanent("the task names no notice".into()));
        };
        let retry = |e: StoreError| TaskFailure::Retry(e.to_string());
        let Some(notice) = self.repo.notice(account, id).await.map_err(retry)? else {
            return Err(TaskFailure::Permanent("the notice is gone".into()));
        };
        let Some(endpoint) = self.repo.notice_endpoint(account).await.map_err(retry)? else {
            tracing::info!(account.id = %account, notice.id = %id, "no notice endpoint: the notice is not posted");
            return Ok(());
        };
        let body = serde_json::to_vec(&notice.body())
            .map_err(|e| TaskFailure::Permanent(e.to_string()))?;
        let signature = self
            .signer
            .sign_detached(account, &body)
            .await
            .map_err(TaskFailure::Retry)?;
        let headers = [
            ("content-type", "application/json".to_owned()),
            ("d2-notice-id", id.to_string()),
            ("d2-signature", signature),
        ];
        match self.poster.post(&endpoint.url, &headers, body).await {
            Ok(status) if (200..300).contains(&status) => {
                tracing::info!(account.id = %account, notice.id = %id, status, "notice delivered");
                Ok(())
            }
            Ok(status) => Err(TaskFailure::Retry(format!(
                "the endpoint answered {status}"
            ))),
            Err(PostError::Refused(reason)) => Err(TaskFailure::Permanent(reason)),
            Err(PostError::Failed(reason)) => Err(TaskFailure::Retry(reason)),
        }
    }
}

/// The notice that `measure` reached `threshold`, its audit record and its task.
fn raise(account: AccountId, measure: &Measure, threshold: u8, now: DateTime<Utc>) -> RaisedNotice {
    let notice = Notice {
        id: NoticeId::random(),
        account_id: account,
        subject: measure.subject.clone(),
        period_start: measure.period_start,
        threshold,
        used: measure.used,
        limit: measure.limit,
        created_at: now,
    };
    let audit = AuditEntry::system(account, AuditAction::BillingThresholdNotice, now)
        .target("notice", notice.id)
        .metadata(json!({
            "subject": notice.subject,
            "threshold": threshold,
            "used": notice.used,
            "limit": notice.limit,
            "period_start": notice.period_start,
        }));
    let task = NewTask {
        kind: NOTICE_TASK.to_owned(),
        account_id: Some(account),
        payload: json!({ "notice_id": notice.id }),
        run_at: now,
    };
    RaisedNotice {
        notice,
        audit,
        task,
    }
}

/// Measures the accounts that spent credits since its last pass against their included
/// credits and budgets, raising the notices they reach.
#[derive(Debug)]
pub struct ThresholdScan(pub Arc<Notices>);

#[async_trait]
impl ScheduledJob for ThresholdScan {
    fn name(&self) -> &'static str {
        "billing-thresholds"
    }

    async fn run(
        &self,
        keep_going: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<JobReport, JobFailure> {
        Ok(JobReport::items(self.0.pass(keep_going).await?))
    }
}

/// Posts each raised notice to its account's endpoint.
#[derive(Debug)]
pub struct NoticeDelivery(pub Arc<Notices>);

#[async_trait]
impl TaskHandler for NoticeDelivery {
    fn kind(&self) -> &'static str {
        NOTICE_TASK
    }

    async fn handle(&self, task: &Task) -> Result<(), TaskFailure> {
        self.0.deliver(task).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use chrono::TimeZone;
    use d2_kernel::{Plan, PlanCatalog};

    use super::*;
    use crate::credits::GrantId;

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, day, 0, 0, 0)
            .single()
            .unwrap()
    }

    fn measure(used: u64, limit: u64) -> Measure {
        Measure {
            subject: INCLUDED_CREDITS.to_owned(),
            period_start: at(1),
            used,
            limit,
        }
    }

    #[test]
    fn a_threshold_is_reached_when_its_share_is_used_exactly_or_more() {
        let reached = |used, limit| measure(used, limit).reached().collect::<Vec<_>>();
        assert!(reached(799, 1_000).is_empty());
        assert_eq!(reached(800, 1_000), [80]);
        assert_eq!(reached(999, 1_000), [80, 90]);
        assert_eq!(reached(1_000, 1_000), [80, 90, 100]);
        assert_eq!(
            reached(5_000, 1_000),
            [80, 90, 100],
            "overdrawn budgets too"
        );
        assert_eq!(reached(1, 1), [80, 90, 100]);
        assert_eq!(reached(u64::MAX, u64::MAX), [80, 90, 100], "no overflow");
        assert!(reached(u64::MAX / 2, u64::MAX).is_empty());
    }

    fn grant(source: GrantSource, amount: u64, remaining: u64, from: u32, to: u32) -> CreditGrant {
        CreditGrant {
            id: GrantId::random(),
            source,
            amount,
            remaining,
            priority: 10,
            effective_at: at(from),
            expires_at: Some(at(to)),
        }
    }

    #[test]
    fn plan_grants_in_effect_and_budgets_are_measured() {
        let plans = PlanCatalog::default();
        let standing = Standing {
            plan: Plan::Pro,
            locked: false,
            quotas: plans.quotas(Plan::Pro).clone(),
            balance: 0,
            month_start: at(1),
            model_tokens: 0,
            spent: BTreeMap::from([(("model".to_owned(), "gpt-4o".to_owned()), 450)]),
            agents: BTreeSet::new(),
            budgets: BTreeMap::from([
                (("model".to_owned(), "gpt-4o".to_owned()), 500),
                (("agent".to_owned(), "researcher".to_owned()), 40),
            ]),
            read_at: at(10),
        };
        let grants = [
            grant(GrantSource::Plan, 10_000, 1_500, 1, 31),
            // Lapsed, not yet in effect, or not included in a plan: not measured.
            grant(GrantSource::Plan, 10_000, 0, 1, 5),
            grant(GrantSource::Plan, 10_000, 10_000, 20, 31),
            grant(GrantSource::Purchase, 10_000, 0, 1, 31),
        ];
        let measured = measures(&grants, &standing, at(10));
        assert_eq!(
            measured,
            [
                Measure {
                    subject: INCLUDED_CREDITS.to_owned(),
                    period_start: at(1),
                    used: 8_500,
                    limit: 10_000,
                },
                Measure {
                    subject: "budget:agent:researcher".to_owned(),
                    period_start: at(1),
                    used: 0,
                    limit: 40,
                },
                Measure {
                    subject: "budget:model:gpt-4o".to_owned(),
                    period_start: at(1),
                    used: 450,
                    limit: 500,
                },
            ]
        );
    }

    #[test]
    fn an_endpoint_is_https_or_a_loopback_http_url_without_credentials() {
        for good in [
            "https://hooks.example.com/d2",
            "https://hooks.example.com:8443/d2?channel=billing",
            "http://127.0.0.1:9000/hook",
            "http://localhost/hook",
            "http://[::1]:8080/",
        ] {
            assert!(checked_endpoint(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "hooks.example.com/d2",
            "/relative",
            "ftp://hooks.example.com/",
            "http://hooks.example.com/d2",
            "http://10.0.0.1/",
            "https://user:pass@hooks.example.com/",
            "https://hooks.example.com/#top",
            "javascript:alert(1)",
        ] {
            assert!(
                matches!(checked_endpoint(bad), Err(NoticeError::InvalidEndpoint(_))),
                "{bad}"
            );
        }
        let long = format!(
            "https://hooks.example.com/{}",
            "a".repeat(MAX_ENDPOINT_BYTES)
        );
        assert!(checked_endpoint(&long).is_err());
    }
}
