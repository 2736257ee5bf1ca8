//! What the agents domain refuses, each with its stable code.

use d2_kernel::secret::{MalformedSecret, RandomnessUnavailable};
use d2_kernel::{Code, ErrorCode, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The credential may not manage agents, or not this one.
    #[error(transparent)]
    Forbidden(#[from] d2_kernel::AccessError),
    #[error("{0}")]
    Invalid(String),
    #[error("no agent has this client id in this account")]
    NotFound,
    /// Unknown, already used or expired: one answer, so a guess learns nothing.
    #[error("no pending registration has this token (it may have been used or have expired)")]
    RegistrationNotFound,
    #[error("the agent is {0}: only an active agent's secret rotates")]
    NotActive(crate::AgentState),
    #[error("no secret can be made now")]
    Randomness(#[from] RandomnessUnavailable),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AgentError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
}

impl From<MalformedSecret> for AgentError {
    fn from(_: MalformedSecret) -> Self {
        Self::RegistrationNotFound
    }
}

impl ErrorCode for AgentError {
    fn code(&self) -> Code {
        match self {
            AgentError::Forbidden(error) => error.code(),
            AgentError::Invalid(_) => Code::InvalidAgent,
            AgentError::NotFound => Code::AgentNotFound,
            AgentError::RegistrationNotFound => Code::RegistrationNotFound,
            AgentError::NotActive(_) => Code::AgentNotActive,
            AgentError::Randomness(_) => Code::Internal,
            AgentError::Store(error) => error.code(),
        }
    }
}

/// Why a client was not authenticated. One code for every reason (RFC 6749 §5.2
/// `invalid_client`): the reason is logged, never answered.
#[derive(Debug, thiserror::Error)]
pub enum ClientAuthError {
    #[error("client authentication failed")]
    InvalidClient(ClientRefusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the log says of a refused client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientRefusal {
    UnknownClient,
    NotActive,
    WrongSecret,
    /// The agent authenticates another way (its registered `auth_method`).
    WrongMethod,
}

impl ErrorCode for ClientAuthError {
    fn code(&self) -> Code {
        match self {
            ClientAuthError::InvalidClient(_) => Code::InvalidClient,
            ClientAuthError::Store(error) => error.code(),
        }
    }
}
