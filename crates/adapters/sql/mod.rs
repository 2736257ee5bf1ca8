//! The repository code both SQL adapters share, compiled into each against its own schema,
//! connection and helpers (see README.md): each adapter includes this file once.

pub(crate) mod access_rules;
pub(crate) mod accounts;
pub(crate) mod agents;
pub(crate) mod analytics;
pub(crate) mod audit;
pub(crate) mod authorization_codes;
pub(crate) mod billing;
pub(crate) mod catalog;
pub(crate) mod client_policies;
pub(crate) mod credits;
pub(crate) mod delegations;
pub(crate) mod errors;
pub(crate) mod events;
pub(crate) mod id;
pub(crate) mod invitations;
pub(crate) mod issuances;
pub(crate) mod jwks;
pub(crate) mod members;
pub(crate) mod notices;
pub(crate) mod oauth_tokens;
pub(crate) mod policies;
pub(crate) mod position;
pub(crate) mod principals;
pub(crate) mod tasks;
pub(crate) mod tokens;
pub(crate) mod transfer;
pub(crate) mod usage;
