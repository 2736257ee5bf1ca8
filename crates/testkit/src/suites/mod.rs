//! The contract suites, one module per port (or group of ports one store keeps together).
//! Each public `async fn` is one suite, run on a store by [`contract_suites!`] (see its
//! list); the few run elsewhere say where.
//!
//! [`contract_suites!`]: crate::contract_suites

pub mod access_rules;
pub mod accounts;
pub mod agents;
pub mod audit;
pub mod authorization_codes;
pub mod billing;
pub mod catalog;
pub mod delegations;
pub mod events;
pub mod invitations;
pub mod members;
pub mod oauth_tokens;
pub mod policies;
pub mod principals;
pub mod quotas;
pub mod signing_keys;
pub mod tasks;
pub mod tokens;
