#![doc = include_str!("../README.md")]
#![deny(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

// The exported macros name this crate by its name, as other crates see it.
extern crate self as d2_kernel;

pub mod app_name;
pub mod auth;
pub mod blocking;
pub mod cache;
pub mod change;
pub mod clock;
mod entitlement;
pub mod error;
pub mod ids;
pub mod job;
pub mod limit;
pub mod lock;
pub mod mail;
mod named;
pub mod page;
pub mod plan;
pub mod role;
pub mod scope;
pub mod secret;
pub mod task;
pub mod text;

pub use app_name::AppName;
pub use auth::{AccessError, ActingFor, AuthContext, Credential};
pub use blocking::{Blocking, run_blocking};
pub use cache::{CacheSettings, CacheStats, CoherentCache};
pub use change::{Change, ChangeSubscriber};
pub use clock::{Clock, ManualClock, SystemClock, earlier, later};
pub use entitlement::{Entitlement, EntitlementError, Entitlements};
pub use error::{Code, ErrorChain, ErrorCode, ErrorKind, StoreError};
pub use ids::{AccountId, PolicyId, TokenId, UserId};
pub use job::{JobFailure, JobReport, ScheduledJob};
pub use lock::{AccountLock, LockReason, UnknownLockReason};
pub use mail::{Email, MailError, Mailer};
pub use page::{Cursor, Page, PageError, PageRequest};
pub use plan::{Plan, PlanCatalog, Quotas};
pub use role::{Role, UnknownRole};
pub use scope::{Grant, Scope, ScopeSet};
pub use secret::{Pepper, Secret, SecretDigest, SecretFormat};
pub use task::{
    NewTask, RetryPolicy, Task, TaskCounts, TaskFailure, TaskHandler, TaskId, TaskPass, TaskQueue,
    TaskRunner, TaskState,
};

/// What the exported macros expand to, so their users need no dependencies of their own.
#[doc(hidden)]
pub mod __private {
    pub use serde;
    pub use uuid;
}
