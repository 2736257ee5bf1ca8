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
            _ if is_server_going_away(&error) => StoreError::Unavailable(Box::new(error)),
            _ => StoreError::Internal(Box::new(error)),
        },
        DieselError::BrokenTransactionManager => StoreError::Unavailable(Box::new(error)),
        _ => StoreError::Internal(Box::new(error)),
    }
}

/// The server ended the session or cannot serve one (SQLSTATE 57P01 to 57P03: terminated
/// by an administrator or a failover, shutting down, starting up, in recovery). The driver
/// reports these by their message only, the first query on a terminated session meets one
/// (the next meets a closed connection), and a retry on a new session may succeed.
fn is_server_going_away(error: &DieselError) -> bool {
    let DieselError::DatabaseError(_, info) = error else {
        return false;
    };
    let message = info.message();
    message.starts_with("terminating connection") || message.starts_with("the database system is")
}

pub(crate) use crate::errors::{TxError, from_pool};

#[cfg(test)]
mod tests {
    use diesel::result::{DatabaseErrorKind, Error as DieselError};

    use super::from_diesel;

    fn unknown(message: &str) -> DieselError {
        DieselError::DatabaseError(DatabaseErrorKind::Unknown, Box::new(message.to_owned()))
    }

    #[test]
    fn a_server_going_away_is_unavailable_and_other_errors_are_not() {
        for message in [
            "terminating connection due to administrator command",
            "terminating connection due to unexpected postmaster exit",
            "the database system is shutting down",
            "the database system is starting up",
        ] {
            assert!(
                matches!(
                    from_diesel(unknown(message)),
                    d2_kernel::StoreError::Unavailable(_)
                ),
                "{message}"
            );
        }
        assert!(matches!(
            from_diesel(unknown("syntax error at or near \"SELEC\"")),
            d2_kernel::StoreError::Internal(_)
        ));
    }
}
