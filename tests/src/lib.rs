//! The end-to-end suite (see README.md). Everything here is test code.
#![cfg(test)]

mod harness;
mod invitations;
pub mod oidc;

mod accounts;
mod audit;
mod authorize;
mod bad_input;
mod billing;
mod bootstrap;
mod client_documents;
mod delegations;
mod dpop;
mod events;
mod fleet;
mod key_maintenance;
mod migrate_store;
mod oauth;
mod oauth_admin;
mod oauth_assertions;
mod oauth_catalog;
mod oauth_grants;
mod oauth_rules;
mod observability;
mod openapi;
mod people;
mod policy;
mod publisher_keys;
mod replicas;
mod rollback;
mod smtp;
mod tasks;
mod tenancy;
mod token_exchange;
mod token_people;
mod tokens;
mod worker;
