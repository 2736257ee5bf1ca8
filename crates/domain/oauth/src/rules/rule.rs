//! A rule document: read from JSON or YAML, checked member by member, and written back as
//! the canonical JSON the stores keep.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use d2_kernel::AccountId;
use serde_json::{Map, Value};

use super::RuleError;
use super::condition::{Condition, Pointer};

d2_kernel::typed_id!(
    /// An access rule.
    RuleId
);

/// The bounds of a rule (those of its condition are in [`super::condition::limits`]).
pub mod limits {
    /// Bytes of a rule document as sent.
    pub const DOCUMENT_BYTES: usize = 64 * 1024;
    /// Characters of a name.
    pub const NAME_CHARS: usize = 100;
    /// Characters of a description.
    pub const DESCRIPTION_CHARS: usize = 1_000;
    /// Priorities run from `-PRIORITY` to `PRIORITY`.
    pub const PRIORITY: i64 = 1_000_000;
    /// Scopes a `narrow` rule keeps.
    pub const SCOPES: usize = 100;
    /// Characters of a scope.
    pub const SCOPE_CHARS: usize = 128;
    /// Rules of one account.
    pub const RULES: usize = 200;
}

d2_kernel::named_values! {
    /// What a matching rule does.
    pub enum Effect (unknown: UnknownEffect) {
        /// Grant the request (with the scopes narrowed so far); later rules are not read.
        Allow = "allow",
        /// Refuse the request; later rules are not read.
        Deny = "deny",
        /// Keep only the rule's `scopes` of those granted so far, and read on.
        Narrow = "narrow",
    }
}

/// An `effect` that is none of the three.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown effect `{0}`: use allow, deny or narrow")]
pub struct UnknownEffect(pub String);

/// How a rule document is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

/// A checked rule, as an admin writes it.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleSpec {
    /// Unique in the account; ties of priority are evaluated in name order.
    pub name: String,
    pub description: Option<String>,
    /// Lower first.
    pub priority: i32,
    /// Disabled rules are kept but never evaluated.
    pub enabled: bool,
    pub effect: Effect,
    /// For `narrow`: the scopes to keep (others are removed). Empty for the other effects.
    pub scopes: BTreeSet<String>,
    /// When the rule applies; `None` applies it to every request.
    pub when: Option<Condition>,
}

const MEMBERS: [&str; 7] = [
    "name",
    "description",
    "priority",
    "enabled",
    "effect",
    "scopes",
    "when",
];

impl RuleSpec {
    /// Reads and checks a rule document.
    pub fn parse(bytes: &[u8], format: Format) -> Result<Self, RuleError> {
        let root = Pointer::root("");
        if bytes.len() > limits::DOCUMENT_BYTES {
            return Err(root.error(format!(
                "a rule document is at most {} bytes",
                limits::DOCUMENT_BYTES
            )));
        }
        let value: Value = match format {
            Format::Json => serde_json::from_slice(bytes)
                .map_err(|e| root.error(format!("the document is not valid JSON: {e}")))?,
            Format::Yaml => {
                let text = std::str::from_utf8(bytes)
                    .map_err(|_| root.error("the document is not UTF-8 text"))?;
                serde_saphyr::from_str(text).map_err(|e| {
                    let first = e.to_string();
                    let first = first.lines().next().unwrap_or_default().to_owned();
                    root.error(format!("the document is not valid YAML: {first}"))
                })?
            }
        };
        Self::from_value(&value)
    }

    /// Checks a rule document already read as JSON.
    pub fn from_value(value: &Value) -> Result<Self, RuleError> {
        let root = Pointer::root("");
        if let Some(at) = nul_in(value, &root) {
            return Err(at.error("text must not hold the NUL character (U+0000)"));
        }
        let Value::Object(object) = value else {
            return Err(root.error(
                "a rule is an object: {name, description?, priority?, enabled?, effect, scopes?, when?}",
            ));
        };
        if let Some(other) = object.keys().find(|key| !MEMBERS.contains(&key.as_str())) {
            return Err(root.member(other).error(format!(
                "unknown member `{}`: a rule has {}",
                other.escape_debug(),
                MEMBERS.join(", ")
            )));
        }
        let name = match object.get("name") {
            Some(Value::String(name)) => name.trim().to_owned(),
            Some(_) => return Err(root.member("name").error("`name` is a text")),
            None => return Err(root.error("a rule needs a `name`")),
        };
        let description = match object.get("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text.trim().to_owned()).filter(|t| !t.is_empty()),
            Some(_) => {
                return Err(root.member("description").error("`description` is a text"));
            }
        };
        let priority = match object.get("priority") {
            None => 0,
            Some(value) => value
                .as_i64()
                .filter(|p| (-limits::PRIORITY..=limits::PRIORITY).contains(p))
                .and_then(|p| i32::try_from(p).ok())
                .ok_or_else(|| {
                    root.member("priority").error(format!(
                        "`priority` is a whole number from {} to {} (lower first)",
                        -limits::PRIORITY,
                        limits::PRIORITY
                    ))
                })?,
        };
        let enabled = match object.get("enabled") {
            None => true,
            Some(Value::Bool(enabled)) => *enabled,
            Some(_) => return Err(root.member("enabled").error("`enabled` is true or false")),
        };
        let effect = match object.get("effect") {
            Some(Value::String(effect)) => effect
                .parse::<Effect>()
                .map_err(|e| root.member("effect").error(e.to_string()))?,
            Some(_) => {
                return Err(root
                    .member("effect")
                    .error("`effect` is allow, deny or narrow"));
            }
            None => return Err(root.error("a rule needs an `effect`: allow, deny or narrow")),
        };
        let scopes = scopes(object, effect, &root)?;
        let when = match object.get("when") {
            None | Some(Value::Null) => None,
            Some(value) => Some(Condition::parse(value, "/when")?),
        };
        let spec = Self {
            name,
            description,
            priority,
            enabled,
            effect,
            scopes,
            when,
        };
        spec.check()?;
        Ok(spec)
    }

    /// The bounds of the members that are not the condition (which only parsing builds):
    /// a spec made in code is held to them too.
    pub fn check(&self) -> Result<(), RuleError> {
        let root = Pointer::root("");
        let chars = self.name.chars().count();
        if chars == 0 || chars > limits::NAME_CHARS || self.name.chars().any(char::is_control) {
            return Err(root.member("name").error(format!(
                "`name` must be 1 to {} characters, without control characters",
                limits::NAME_CHARS
            )));
        }
        if self
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > limits::DESCRIPTION_CHARS)
        {
            return Err(root.member("description").error(format!(
                "`description` must be at most {} characters",
                limits::DESCRIPTION_CHARS
            )));
        }
        if i64::from(self.priority).abs() > limits::PRIORITY {
            return Err(root.member("priority").error("`priority` is out of range"));
        }
        match (self.effect, self.scopes.is_empty()) {
            (Effect::Narrow, true) => Err(root.member("scopes").error(
                "a `narrow` rule needs `scopes`: the scopes to keep (to keep none, use `deny`)",
            )),
            (Effect::Allow | Effect::Deny, false) => Err(root
                .member("scopes")
                .error("`scopes` belongs to `narrow` rules only")),
            _ => Ok(()),
        }
    }

    /// The canonical JSON of the rule, as the stores keep it and [`RuleSpec::from_value`]
    /// reads it back.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("name".into(), Value::String(self.name.clone()));
        if let Some(description) = &self.description {
            object.insert("description".into(), Value::String(description.clone()));
        }
        object.insert("priority".into(), Value::from(self.priority));
        object.insert("enabled".into(), Value::Bool(self.enabled));
        object.insert(
            "effect".into(),
            Value::String(self.effect.as_str().to_owned()),
        );
        if !self.scopes.is_empty() {
            object.insert(
                "scopes".into(),
                Value::from(self.scopes.iter().cloned().collect::<Vec<_>>()),
            );
        }
        if let Some(when) = &self.when {
            object.insert("when".into(), when.to_json());
        }
        Value::Object(object)
    }
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope.len() <= limits::SCOPE_CHARS
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

fn scopes(
    object: &Map<String, Value>,
    effect: Effect,
    root: &Pointer,
) -> Result<BTreeSet<String>, RuleError> {
    let at = root.member("scopes");
    let items = match object.get("scopes") {
        None | Some(Value::Null) => return Ok(BTreeSet::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(at.error("`scopes` is a list of scopes")),
    };
    if effect != Effect::Narrow {
        return Err(at.error("`scopes` belongs to `narrow` rules only"));
    }
    if items.len() > limits::SCOPES {
        return Err(at.error(format!("at most {} scopes", limits::SCOPES)));
    }
    let mut scopes = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        match item.as_str() {
            Some(scope) if is_scope_token(scope) => {
                scopes.insert(scope.to_owned());
            }
            _ => {
                return Err(at.index(i).error(format!(
                    "not a scope: printable ASCII without spaces, quotes or backslashes, 1 to {} characters",
                    limits::SCOPE_CHARS
                )));
            }
        }
    }
    Ok(scopes)
}

/// Where `value` holds a NUL character (no store keeps one in text).
fn nul_in(value: &Value, at: &Pointer) -> Option<Pointer> {
    match value {
        Value::String(text) => text.contains('\0').then(|| at.clone()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_in(item, &at.index(i))),
        Value::Object(members) => members.iter().find_map(|(name, item)| {
            if name.contains('\0') {
                Some(at.clone())
            } else {
                nul_in(item, &at.member(name))
            }
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

/// A stored rule of an account.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessRule {
    pub id: RuleId,
    pub account_id: AccountId,
    pub spec: RuleSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl AccessRule {
    pub fn new(account_id: AccountId, spec: RuleSpec, now: DateTime<Utc>) -> Self {
        Self {
            id: RuleId::random(),
            account_id,
            spec,
            created_at: now,
            updated_at: now,
        }
    }
}
