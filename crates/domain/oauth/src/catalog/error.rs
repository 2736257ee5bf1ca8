//! What the catalog refuses, each with its stable code.

use d2_kernel::{Code, ErrorCode, StoreError};

/// Names, for messages: `a`, `b` and `c` as "`a`, `b`, `c`".
pub(crate) fn listed(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{}`", n.escape_debug()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The credential may not manage the catalog.
    #[error(transparent)]
    Forbidden(#[from] d2_kernel::AccessError),
    #[error("{0}")]
    InvalidTool(String),
    #[error("{0}")]
    InvalidToolSchema(String),
    #[error("`parameters` is {size} bytes of JSON; a tool's parameters schema is at most {limit}")]
    ToolSchemaTooLarge { size: usize, limit: usize },
    #[error("no tool has this id in this account")]
    ToolNotFound,
    #[error("the account already has a tool named `{0}`")]
    ToolNameTaken(String),
    #[error("no agent has this client id in this account")]
    AgentNotFound,
    #[error("the tool is not bound to the agent")]
    ToolNotBound,
    #[error("{0}")]
    InvalidScope(String),
    #[error("the account has no scope named `{0}`")]
    ScopeNotFound(String),
    #[error("the account already has a scope named `{0}`")]
    ScopeNameTaken(String),
    /// Names the catalog does not hold, sorted.
    #[error("unknown scopes: {}", listed(.0))]
    UnknownScopes(Vec<String>),
    /// The scopes along the cycle, the first repeated at the end.
    #[error("implied scopes would form a cycle: {}", .0.join(" -> "))]
    ScopeCycle(Vec<String>),
    /// The scope, and the scopes that imply it.
    #[error("`{scope}` is implied by {}: change them first", listed(.implied_by))]
    ScopeImplied {
        scope: String,
        implied_by: Vec<String>,
    },
    #[error("an account holds at most {0} scopes")]
    ScopeLimit(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for CatalogError {
    fn code(&self) -> Code {
        match self {
            CatalogError::Forbidden(error) => error.code(),
            CatalogError::InvalidTool(_) => Code::InvalidTool,
            CatalogError::InvalidToolSchema(_) => Code::InvalidToolSchema,
            CatalogError::ToolSchemaTooLarge { .. } => Code::ToolSchemaTooLarge,
            CatalogError::ToolNotFound => Code::ToolNotFound,
            CatalogError::ToolNameTaken(_) => Code::ToolNameTaken,
            CatalogError::AgentNotFound => Code::AgentNotFound,
            CatalogError::ToolNotBound => Code::ToolNotBound,
            CatalogError::InvalidScope(_) => Code::InvalidScopeDefinition,
            CatalogError::ScopeNotFound(_) => Code::ScopeNotFound,
            CatalogError::ScopeNameTaken(_) => Code::ScopeNameTaken,
            CatalogError::UnknownScopes(_) => Code::UnknownScopes,
            CatalogError::ScopeCycle(_) => Code::ScopeCycle,
            CatalogError::ScopeImplied { .. } => Code::ScopeImplied,
            CatalogError::ScopeLimit(_) => Code::ScopeLimit,
            CatalogError::Store(error) => error.code(),
        }
    }
}
