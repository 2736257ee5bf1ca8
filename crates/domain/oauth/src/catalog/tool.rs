//! Tools (seed 003): what agents call, each with the JSON Schema of its parameters and the
//! scopes a token must carry to call it.

use chrono::{DateTime, Utc};
use d2_kernel::AccountId;
use serde_json::Value;

use super::error::CatalogError;
use super::text::{self, limits};

d2_kernel::typed_id!(
    /// A tool of an account's catalog.
    ToolId
);

/// What an admin defines or replaces.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolSpec {
    /// The name agents call it by, unique in the account (`search.web`).
    pub name: String,
    pub description: Option<String>,
    pub category: Option<String>,
    /// The JSON Schema of the tool's parameters (draft 2020-12 unless its `$schema` names
    /// another draft).
    pub parameters: Value,
    /// The scopes a token must carry to call the tool, sorted, without repeats.
    pub required_scopes: Vec<String>,
}

impl ToolSpec {
    /// The parameters of a tool that takes none in particular.
    pub fn any_parameters() -> Value {
        serde_json::json!({"type": "object"})
    }

    /// The spec with its text trimmed and its list sorted, or the first rule it breaks.
    /// Whether the required scopes exist is the catalog's question.
    pub fn validate(mut self) -> Result<Self, CatalogError> {
        self.name = self.name.trim().to_owned();
        if !text::is_tool_name(&self.name) {
            return Err(CatalogError::InvalidTool(format!(
                "`name` must be 1 to {} of A-Z a-z 0-9 . _ : / - (got `{}`)",
                limits::TOOL_NAME_CHARS,
                self.name.escape_debug()
            )));
        }
        self.description =
            text::description(self.description).map_err(CatalogError::InvalidTool)?;
        self.category = text::category(self.category).map_err(CatalogError::InvalidTool)?;
        self.required_scopes = text::scope_list("required_scopes", self.required_scopes)
            .map_err(CatalogError::InvalidTool)?;
        check_parameters(&self.parameters)?;
        Ok(self)
    }
}

/// The longest part of a schema validator's message kept in ours.
const MESSAGE_CHARS: usize = 300;

fn shortened(message: &str) -> String {
    if message.chars().count() <= MESSAGE_CHARS {
        return message.to_owned();
    }
    let mut short: String = message.chars().take(MESSAGE_CHARS).collect();
    short.push('…');
    short
}

/// `parameters` is a JSON Schema object of at most 64 KiB that is valid against its
/// meta-schema (draft 2020-12 unless `$schema` names another draft the server knows) and
/// compiles: every pattern is a regular expression and every `$ref` resolves inside the
/// document (nothing is ever fetched).
pub fn check_parameters(parameters: &Value) -> Result<(), CatalogError> {
    let size = serde_json::to_vec(parameters)
        .map_err(|_| CatalogError::InvalidToolSchema("`parameters` is not JSON".to_owned()))?
        .len();
    if size > limits::PARAMETERS_BYTES {
        return Err(CatalogError::ToolSchemaTooLarge {
            size,
            limit: limits::PARAMETERS_BYTES,
        });
    }
    if !parameters.is_object() {
        return Err(CatalogError::InvalidToolSchema(
            "`parameters` must be a JSON Schema object (`{\"type\": \"object\", ...}`)".to_owned(),
        ));
    }
    if let Some(declared) = parameters.get("$schema")
        && !declared.as_str().is_some_and(is_known_draft)
    {
        return Err(CatalogError::InvalidToolSchema(
            "`parameters.$schema` must name a JSON Schema draft: 2020-12, 2019-09, 7, 6 or 4 (or be left out for 2020-12)"
                .to_owned(),
        ));
    }
    if let Err(error) = jsonschema::meta::validate(parameters) {
        return Err(CatalogError::InvalidToolSchema(format!(
            "`parameters` is not a valid JSON Schema at `{}`: {}",
            error.instance_path(),
            shortened(&error.to_string())
        )));
    }
    if let Err(error) = jsonschema::options().build(parameters) {
        return Err(CatalogError::InvalidToolSchema(format!(
            "`parameters` cannot be used as a JSON Schema: {}",
            shortened(&error.to_string())
        )));
    }
    Ok(())
}

fn is_known_draft(uri: &str) -> bool {
    let uri = uri.trim_end_matches('#');
    [
        "https://json-schema.org/draft/2020-12/schema",
        "https://json-schema.org/draft/2019-09/schema",
        "http://json-schema.org/draft-07/schema",
        "http://json-schema.org/draft-06/schema",
        "http://json-schema.org/draft-04/schema",
    ]
    .contains(&uri)
}

/// A tool of an account's catalog.
#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    pub id: ToolId,
    pub account_id: AccountId,
    pub spec: ToolSpec,
    /// An inactive tool stays defined and bound, but is not granted.
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Tool {
    pub fn new(account_id: AccountId, spec: ToolSpec, active: bool, now: DateTime<Utc>) -> Self {
        Self {
            id: ToolId::random(),
            account_id,
            spec,
            active,
            created_at: now,
            updated_at: now,
        }
    }
}

/// Which tools a list holds: each field set narrows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolFilter {
    pub category: Option<String>,
    pub active: Option<bool>,
}

impl ToolFilter {
    pub fn matches(&self, tool: &Tool) -> bool {
        self.category
            .as_ref()
            .is_none_or(|c| tool.spec.category.as_ref() == Some(c))
            && self.active.is_none_or(|a| tool.active == a)
    }
}
