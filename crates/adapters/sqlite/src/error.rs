use d2_kernel::StoreError;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// The database could not be opened or used at start.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the database URL is not valid: {0} (expected sqlite://PATH or sqlite::memory:)")]
    InvalidUrl(String),
    #[error("cannot use the SQLite database {target}: {reason}")]
    Unusable { target: String, reason: String },
}

/// Busy and locked databases are `Unavailable` (answered 503 with `Retry-After`): they
/// only happen when another process held the write lock past the busy timeout. Unique
/// violations are `Conflict`; everything else is `Internal`.
pub(crate) fn from_diesel(error: DieselError) -> StoreError {
    match &error {
        DieselError::DatabaseError(kind, info) => match kind {
            DatabaseErrorKind::UniqueViolation => StoreError::Conflict(Box::new(error)),
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand => {
                StoreError::Unavailable(Box::new(error))
            }
            _ if is_busy(info.message()) => StoreError::Unavailable(Box::new(error)),
            _ => StoreError::Internal(Box::new(error)),
        },
        DieselError::BrokenTransactionManager => StoreError::Unavailable(Box::new(error)),
        _ => StoreError::Internal(Box::new(error)),
    }
}

fn is_busy(message: &str) -> bool {
    message.contains("database is locked") || message.contains("database is busy")
}

pub(crate) use crate::errors::{TxError, from_pool};
