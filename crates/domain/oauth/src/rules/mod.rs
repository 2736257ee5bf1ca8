//! Access rules (seed 003's "policies", named apart from D2's policy bundles): what an
//! account's authorization server decides when an agent asks for a token.
//!
//! A rule is a small typed document (JSON or YAML): a name, a priority, an effect
//! (`allow`, `deny` or `narrow` to a list of scopes) and a condition tree over the
//! request ([`condition`]). Rules are parsed and checked once, when they are written; an
//! account's enabled rules are then held compiled in memory as a [`RuleSet`], which decides
//! a request in microseconds and explains every decision rule by rule ([`decision`]).

pub mod condition;
pub mod decision;
pub mod rule;

/// What is wrong with a rule document, and where: a JSON pointer (RFC 6901) into it, such
/// as `/when/all/1/op` (empty for the document itself).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", location(pointer))]
pub struct RuleError {
    pub pointer: String,
    pub message: String,
}

fn location(pointer: &str) -> String {
    if pointer.is_empty() {
        String::new()
    } else {
        format!("at `{pointer}`: ")
    }
}

#[cfg(test)]
mod tests;
