//! The adapter against a provider made of `wiremock` and keys generated here, and against
//! a real OpenID provider.

#![expect(clippy::panic, reason = "tests fail loudly, with the case at hand")]

mod agent_keys;
mod client_documents;
mod fetching;
mod real_provider;
pub(crate) mod support;
mod verify;
