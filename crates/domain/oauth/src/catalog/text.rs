//! The text rules tools and scopes share.

/// Bounds of what the catalog holds.
pub mod limits {
    /// Characters of a tool's name.
    pub const TOOL_NAME_CHARS: usize = 100;
    /// Characters of a scope's name (an RFC 6749 scope token).
    pub const SCOPE_NAME_CHARS: usize = 128;
    /// Characters of a description.
    pub const DESCRIPTION_CHARS: usize = 1_000;
    /// Characters of a category.
    pub const CATEGORY_CHARS: usize = 50;
    /// Scopes one tool requires, or one scope implies.
    pub const SCOPE_LIST: usize = 50;
    /// Bytes of a tool's parameters schema, as compact JSON.
    pub const PARAMETERS_BYTES: usize = 64 * 1024;
    /// Scopes of one account: the whole catalog is held in memory per account.
    pub const SCOPES: usize = 500;
}

/// A tool's name as agents call it: 1 to 100 of `A-Z a-z 0-9 . _ : / -`.
pub fn is_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= limits::TOOL_NAME_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b))
}

/// A category: 1 to 50 of `A-Z a-z 0-9 . _ : -`.
pub fn is_category(category: &str) -> bool {
    !category.is_empty()
        && category.len() <= limits::CATEGORY_CHARS
        && category
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// A scope's name: an RFC 6749 §3.3 scope token of at most 128 characters.
pub fn is_scope_name(name: &str) -> bool {
    name.len() <= limits::SCOPE_NAME_CHARS && crate::agent::is_scope_token(name)
}

/// A trimmed description, `None` when blank; refused (with the reason) when too long or
/// holding control characters.
pub(crate) fn description(text: Option<String>) -> Result<Option<String>, String> {
    let text = text.map(|d| d.trim().to_owned()).filter(|d| !d.is_empty());
    if let Some(text) = &text {
        if text.chars().count() > limits::DESCRIPTION_CHARS {
            return Err(format!(
                "`description` must be at most {} characters",
                limits::DESCRIPTION_CHARS
            ));
        }
        if text.chars().any(char::is_control) {
            return Err("`description` must not hold control characters".to_owned());
        }
    }
    Ok(text)
}

/// A category, `None` when blank; refused (with the reason) when not a category.
pub(crate) fn category(text: Option<String>) -> Result<Option<String>, String> {
    let text = text.map(|c| c.trim().to_owned()).filter(|c| !c.is_empty());
    match text {
        Some(c) if !is_category(&c) => Err(format!(
            "`category` must be 1 to {} of A-Z a-z 0-9 . _ : -",
            limits::CATEGORY_CHARS
        )),
        other => Ok(other),
    }
}

/// A list of scope names, sorted and without repeats; refused (with the reason) when too
/// long or holding a name that is not a scope.
pub(crate) fn scope_list(field: &str, mut names: Vec<String>) -> Result<Vec<String>, String> {
    if names.len() > limits::SCOPE_LIST {
        return Err(format!(
            "`{field}` holds at most {} scopes",
            limits::SCOPE_LIST
        ));
    }
    if let Some(bad) = names.iter().find(|n| !is_scope_name(n)) {
        return Err(format!(
            "`{field}`: `{}` is not a scope name (printable ASCII without spaces, quotes or backslashes, at most {} characters)",
            bad.escape_debug(),
            limits::SCOPE_NAME_CHARS
        ));
    }
    names.sort();
    names.dedup();
    Ok(names)
}
