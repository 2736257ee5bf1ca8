//! Plans and their quotas, and the quotas of a locked account.
//!
//! The values of [`PlanCatalog::default`] are those of the original D2 service; every one of
//! them can be overridden by configuration (`plans.<tier>.<quota>`, `plans.locked.<quota>`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::lock::AccountLock;

/// A subscription tier. Being locked is not one: it is a state an account on any plan can
/// be in ([`AccountLock`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    /// A new account: the free quotas until the trial expires, when it becomes locked
    /// (still on `Trial`).
    Trial,
    Essentials,
    Pro,
    Enterprise,
}

impl Plan {
    pub const ALL: [Plan; 4] = [Plan::Trial, Plan::Essentials, Plan::Pro, Plan::Enterprise];

    pub const fn as_str(self) -> &'static str {
        match self {
            Plan::Trial => "trial",
            Plan::Essentials => "essentials",
            Plan::Pro => "pro",
            Plan::Enterprise => "enterprise",
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown plan `{0}`")]
pub struct UnknownPlan(pub String);

impl FromStr for Plan {
    type Err = UnknownPlan;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Plan::ALL
            .into_iter()
            .find(|plan| plan.as_str() == s)
            .ok_or_else(|| UnknownPlan(s.to_owned()))
    }
}

/// The limits of one plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Distinct tools a published policy may name.
    pub max_tools: u32,
    /// Distinct published apps.
    pub max_apps: u32,
    /// Users of the account.
    pub max_members: u32,
    /// API tokens of the account that work (neither revoked nor expired). Issuing one more
    /// is refused; a rotation replaces a token and is not counted.
    pub max_tokens: u32,
    /// Seconds between bundle polls the SDK is told to keep (`X-D2-Poll-Seconds`).
    pub poll_seconds: u32,
    /// Seconds between telemetry flushes the SDK is told to keep (advice, not a limit).
    pub ingest_interval_seconds: u32,
    /// Telemetry events the whole account may send per minute (every token and replica
    /// together), spent by the events of each accepted batch.
    pub ingest_events_per_minute: u32,
    /// Events per ingest request.
    pub event_batch: u32,
    /// Bytes per ingest request body.
    pub max_batch_bytes: u64,
    /// Bytes per signed bundle.
    pub max_bundle_bytes: u64,
    /// Agents the account may use in a month (the agents its usage reports name): its
    /// agent slots.
    pub max_agents: u32,
    /// Model tokens (input and output) the account may use in a month.
    pub monthly_model_tokens: u64,
    /// Credits granted with each paid billing period of the plan (source `plan`),
    /// spendable from the period's start and lapsing at its end.
    pub included_credits: u64,
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// The quotas of every plan and of a locked account, and the length of a trial.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanCatalog {
    /// The catalog's version (`plans.version`), recorded with every grant of included
    /// credits: a change of the plans is a new version, and what was granted under an
    /// earlier one stays as it was.
    pub version: u32,
    pub trial_days: u32,
    pub trial: Quotas,
    pub essentials: Quotas,
    pub pro: Quotas,
    pub enterprise: Quotas,
    /// The quotas of a locked account, whatever its plan (`plans.locked`).
    pub locked: Quotas,
}

impl PlanCatalog {
    /// The quotas of `plan`, for an account that is not locked.
    pub fn quotas(&self, plan: Plan) -> &Quotas {
        match plan {
            Plan::Trial => &self.trial,
            Plan::Essentials => &self.essentials,
            Plan::Pro => &self.pro,
            Plan::Enterprise => &self.enterprise,
        }
    }

    /// The quotas in force for an account on `plan`: its plan's, or `locked`'s while a lock
    /// holds it.
    pub fn quotas_in_force(&self, plan: Plan, lock: Option<&AccountLock>) -> &Quotas {
        match lock {
            Some(_) => &self.locked,
            None => self.quotas(plan),
        }
    }

    /// Every set of quotas with the key that configures it (`plans.<key>`): each plan's,
    /// then the locked state's.
    pub fn every_quotas(&self) -> [(&'static str, &Quotas); 5] {
        [
            (Plan::Trial.as_str(), &self.trial),
            (Plan::Essentials.as_str(), &self.essentials),
            (Plan::Pro.as_str(), &self.pro),
            (Plan::Enterprise.as_str(), &self.enterprise),
            (AccountLock::NAME, &self.locked),
        ]
    }
}

impl Default for PlanCatalog {
    fn default() -> Self {
        Self {
            version: 1,
            trial_days: 14,
            trial: Quotas {
                max_tools: 5,
                max_apps: 1,
                max_members: 2,
                max_tokens: 10,
                poll_seconds: 300,
                ingest_interval_seconds: 60,
                ingest_events_per_minute: 10_000,
                event_batch: 1000,
                max_batch_bytes: 32 * KIB,
                max_bundle_bytes: MIB / 2,
                max_agents: 1,
                monthly_model_tokens: 1_000_000,
                included_credits: 0,
            },
            essentials: Quotas {
                max_tools: 25,
                max_apps: 5,
                max_members: 5,
                max_tokens: 25,
                poll_seconds: 60,
                ingest_interval_seconds: 60,
                ingest_events_per_minute: 60_000,
                event_batch: 1000,
                max_batch_bytes: 128 * KIB,
                max_bundle_bytes: 2 * MIB,
                max_agents: 3,
                monthly_model_tokens: 10_000_000,
                included_credits: 10_000,
            },
            pro: Quotas {
                max_tools: 250,
                max_apps: 25,
                max_members: 15,
                max_tokens: 100,
                poll_seconds: 30,
                ingest_interval_seconds: 30,
                ingest_events_per_minute: 300_000,
                event_batch: 1000,
                max_batch_bytes: 512 * KIB,
                max_bundle_bytes: 5 * MIB,
                max_agents: 5,
                monthly_model_tokens: 100_000_000,
                included_credits: 100_000,
            },
            enterprise: Quotas {
                max_tools: 1000,
                max_apps: 100,
                max_members: 100,
                max_tokens: 1000,
                poll_seconds: 10,
                ingest_interval_seconds: 10,
                ingest_events_per_minute: 1_200_000,
                event_batch: 1000,
                max_batch_bytes: MIB,
                max_bundle_bytes: 20 * MIB,
                max_agents: 1000,
                monthly_model_tokens: 10_000_000_000,
                included_credits: 1_000_000,
            },
            locked: Quotas {
                max_tools: 5,
                max_apps: 1,
                max_members: 1,
                max_tokens: 10,
                poll_seconds: 300,
                ingest_interval_seconds: 60,
                ingest_events_per_minute: 10_000,
                event_batch: 1000,
                max_batch_bytes: 32 * KIB,
                max_bundle_bytes: MIB / 2,
                max_agents: 0,
                monthly_model_tokens: 0,
                included_credits: 0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_names_round_trip() {
        for plan in Plan::ALL {
            assert_eq!(plan.as_str().parse::<Plan>().unwrap(), plan);
        }
        assert!("free".parse::<Plan>().is_err());
        assert!("locked".parse::<Plan>().is_err(), "a state, not a plan");
    }

    #[test]
    fn every_plan_admits_a_full_batch_and_a_trial_ten_thousand_events_a_minute() {
        let catalog = PlanCatalog::default();
        assert!(catalog.trial.ingest_events_per_minute >= 10_000);
        for (_, quotas) in catalog.every_quotas() {
            assert!(quotas.ingest_events_per_minute >= quotas.event_batch);
        }
    }

    #[test]
    fn a_lock_puts_any_plan_on_the_locked_quotas() {
        let catalog = PlanCatalog::default();
        let lock = AccountLock {
            since: chrono::DateTime::UNIX_EPOCH,
            reason: crate::lock::LockReason::TrialEnded,
        };
        for plan in Plan::ALL {
            assert_eq!(catalog.quotas_in_force(plan, None), catalog.quotas(plan));
            assert_eq!(catalog.quotas_in_force(plan, Some(&lock)), &catalog.locked);
        }
        let keys: Vec<&str> = catalog.every_quotas().iter().map(|(key, _)| *key).collect();
        assert_eq!(keys, ["trial", "essentials", "pro", "enterprise", "locked"]);
    }

    #[test]
    fn higher_tiers_never_have_lower_limits() {
        let catalog = PlanCatalog::default();
        let tiers = [
            &catalog.trial,
            &catalog.essentials,
            &catalog.pro,
            &catalog.enterprise,
        ];
        for pair in tiers.windows(2) {
            let [lower, higher] = pair else {
                unreachable!()
            };
            assert!(higher.max_tools >= lower.max_tools);
            assert!(higher.max_apps >= lower.max_apps);
            assert!(higher.max_members >= lower.max_members);
            assert!(higher.max_tokens >= lower.max_tokens);
            assert!(higher.poll_seconds <= lower.poll_seconds);
            assert!(higher.max_batch_bytes >= lower.max_batch_bytes);
            assert!(higher.max_bundle_bytes >= lower.max_bundle_bytes);
            assert!(higher.ingest_events_per_minute >= lower.ingest_events_per_minute);
        }
    }
}
