use d2_kernel::StoreError;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// The pool could not be set up or the database could not be reached at start.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the database URL is not valid: {0}")]
    InvalidUrl(String),
    #[error("cannot reach PostgreSQL at {target}")]
    Unreachable {
        target: String,
        #[source]
        source: StoreError,
    },
}

/// Failures that a retry may cure are `Unavailable` (answered 503 with `Retry-After`);
/// unique violations are `Conflict`; everything else is `Internal`.
pub(crate) fn from_diesel(error: DieselError) -> StoreError {
    match &error {
        DieselError::DatabaseError(kind, _) => match kind {
            DatabaseErrorKind::UniqueViolation => StoreError::Conflict(Box::new(error)),
            DatabaseErrorKind::ClosedConnection
            | DatabaseErrorKind::UnableToSendCommand
            | DatabaseErrorKind::SerializationFailure
            | DatabaseErrorKind::ReadOnlyTransaction => StoreError::Unavailable(Box::new(error)),
            _ => StoreError::Internal(Box::new(error)),
        },
        DieselError::BrokenTransactionManager => StoreError::Unavailable(Box::new(error)),
        _ => StoreError::Internal(Box::new(error)),
    }
}

pub(crate) use crate::errors::{TxError, from_pool};
