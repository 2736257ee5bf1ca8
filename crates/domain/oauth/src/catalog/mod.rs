//! The catalog of each account's authorization server (seed 003): its tools, its scopes
//! with the narrower scopes each implies, and the tools bound to its agents.

pub mod defaults;
pub mod error;
pub mod graph;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
pub mod ports;
pub mod scope;
pub mod scopes;
#[cfg(test)]
mod tests;
pub mod text;
pub mod tool;
pub mod tools;
