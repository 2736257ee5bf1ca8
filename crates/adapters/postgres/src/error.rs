use bb8::RunError;
use d2_kernel::StoreError;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::pooled_connection::PoolError;

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

pub(crate) fn from_pool(error: RunError<PoolError>) -> StoreError {
    match error {
        RunError::TimedOut => {
            StoreError::Unavailable("timed out waiting for a database connection".into())
        }
        RunError::User(PoolError::ConnectionError(error)) => {
            StoreError::Unavailable(Box::new(error))
        }
        RunError::User(PoolError::QueryError(error)) => from_diesel(error),
    }
}

/// The error type of transaction bodies: diesel's own errors, or a domain-level storage
/// error (a corrupt row) raised inside the transaction. Either rolls it back.
#[derive(Debug)]
pub(crate) enum TxError {
    Diesel(DieselError),
    Store(StoreError),
    /// Roll back: what the transaction was based on changed; the caller retries.
    Retry,
}

impl From<DieselError> for TxError {
    fn from(error: DieselError) -> Self {
        Self::Diesel(error)
    }
}

impl From<StoreError> for TxError {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

impl From<TxError> for StoreError {
    fn from(error: TxError) -> Self {
        match error {
            TxError::Diesel(error) => from_diesel(error),
            TxError::Store(error) => error,
            TxError::Retry => StoreError::Conflict("the transaction's premises changed".into()),
        }
    }
}
