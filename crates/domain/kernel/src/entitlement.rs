//! What an account may do now: the port through which every domain asks the plan rules
//! (locked, tool and app limits, quotas). The accounts domain answers it from the account's
//! plan and lock today; billing can answer it later without any domain that asks changing.

use crate::error::{Code, ErrorCode, StoreError};
use crate::ids::AccountId;
use crate::lock::AccountLock;
use crate::plan::{Plan, Quotas};

/// An account's plan, its lock and the quotas in force, as of now, and whether its events
/// and metrics may be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entitlement {
    /// The account's plan, kept while it is locked.
    pub plan: Plan,
    /// The lock in force now, if any (an expired trial is locked from its end, recorded or
    /// not).
    pub lock: Option<AccountLock>,
    /// The plan's quotas, or those of `plans.locked` while locked.
    pub quotas: Quotas,
    /// The owner's switch (`metrics_enabled`): off, the account's telemetry is still
    /// taken but cannot be read.
    pub metrics_enabled: bool,
}

impl Entitlement {
    /// A locked account (an expired trial, later an unpaid plan) keeps its data and its
    /// reads, and is served nothing new: no bundle, no publish, no ingest.
    pub fn is_locked(&self) -> bool {
        self.lock.is_some()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EntitlementError {
    #[error("the account does not exist")]
    UnknownAccount,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for EntitlementError {
    fn code(&self) -> Code {
        match self {
            EntitlementError::UnknownAccount => Code::AccountNotFound,
            EntitlementError::Store(error) => error.code(),
        }
    }
}

/// The plan rules of an account. Called on hot paths (every poll, every ingest batch):
/// implementations answer from memory once warm.
#[async_trait::async_trait]
pub trait Entitlements: Send + Sync + std::fmt::Debug + 'static {
    async fn entitlement(&self, account: AccountId) -> Result<Entitlement, EntitlementError>;
}
