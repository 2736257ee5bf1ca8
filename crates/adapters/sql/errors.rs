//! Errors both SQL adapters map the same way; `crate::error::from_diesel` is each one's own.

use bb8::RunError;
use d2_kernel::StoreError;
use diesel::result::Error as DieselError;
use diesel_async::pooled_connection::PoolError;

use crate::error::from_diesel;

/// A stored value that does not convert to its domain value: a corrupt record.
pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::corrupt(format!("stored {what} is not valid"))
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
