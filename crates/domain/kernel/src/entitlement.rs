//! What an account may do now: the port through which every domain asks the plan rules
//! (locked, tool and app limits, quotas). The accounts domain answers it from the account's
//! plan today; billing can answer it later without any domain that asks changing.

use crate::error::{Code, ErrorCode, StoreError};
use crate::ids::AccountId;
use crate::plan::{Plan, Quotas};

/// An account's effective plan and that plan's quotas, as of now, and whether its
/// events and metrics may be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entitlement {
    pub plan: Plan,
    pub quotas: Quotas,
    /// The owner's switch (`metrics_enabled`): off, the account's telemetry is still
    /// taken but cannot be read.
    pub metrics_enabled: bool,
}

impl Entitlement {
    /// A locked account (an expired trial, an unpaid plan) keeps its data and its reads,
    /// and is served nothing new: no bundle, no publish, no ingest.
    pub fn is_locked(&self) -> bool {
        self.plan == Plan::Locked
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
