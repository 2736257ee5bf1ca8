//! Policy documents: parsing (JSON or YAML), validation, tool counting, deny detection.
//!
//! The document is kept as JSON exactly as given (so what is signed is what was sent);
//! this module reads it through accessors. Two rule shapes are accepted:
//!
//! - the SDK's: `role` (a string or a list) or `roles`, `permissions` (tool ids, `*`, or
//!   objects `{tool|id, allow, conditions}`), optional `sequence` (a list of rules, or
//!   `{mode, rules}`), with `metadata.tool_groups` and `metadata.data_flow`;
//! - resource rules: `{resource, action, effect: allow|deny, conditions}`.

use std::collections::BTreeSet;

use d2_kernel::AppName;
use serde_json::{Map, Value};

/// Top-level members the signed payload reserves for its claims.
pub const RESERVED_KEYS: [&str; 7] = ["iat", "exp", "iss", "aud", "nbf", "jti", "sub"];

/// A policy document that parses and is an object with a named app.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyDocument {
    root: Map<String, Value>,
}

/// The roles of a document, its permissions, and what each role grants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RolesAndPermissions {
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    pub mappings: Vec<(String, Vec<String>)>,
}

/// What validation found: errors make a document unusable, warnings do not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    fn error(&mut self, message: impl Into<String>) {
        self.errors.push(message.into());
    }

    fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(message.into());
    }
}

/// The body could not be read as a document at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unparseable {
    #[error("the policy is neither JSON nor YAML: {0}")]
    Syntax(String),
    /// No store keeps U+0000 in text (PostgreSQL refuses it). JSON bodies are refused at
    /// the HTTP edge; YAML spells it in escapes (`\0`, `\x00`, `\u0000`, `\U00000000`)
    /// whose meaning depends on the quoting, so it is found here, after parsing.
    #[error("the policy contains a NUL character (U+0000), which no text may contain")]
    NulCharacter,
}

/// Documents larger than this are refused before parsing, whatever the plan.
pub const MAX_DOCUMENT_BYTES: usize = 32 * 1024 * 1024;

/// Reads a document from the bytes of a policy file: JSON, else YAML.
pub fn parse_value(bytes: &[u8]) -> Result<Value, Unparseable> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(Unparseable::Syntax("the document is too large".into()));
    }
    let value = match serde_json::from_slice::<Value>(bytes) {
        Ok(value) => value,
        Err(_) => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| Unparseable::Syntax("not UTF-8 text".into()))?;
            serde_saphyr::from_str::<Value>(text)
                .map_err(|e| Unparseable::Syntax(first_line(&e.to_string())))?
        }
    };
    if has_nul(&value) {
        return Err(Unparseable::NulCharacter);
    }
    Ok(value)
}

/// Whether any string or member name of `value` holds U+0000.
fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(members) => members
            .iter()
            .any(|(name, value)| name.contains('\0') || has_nul(value)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// The identity of a document's content, which tells whether a publish repeats an earlier
/// version: the hex SHA-256 of its canonical JSON (members sorted by name at every level,
/// no whitespace) without `metadata.expires`, which the server sets at every publish. The
/// same policy sent as YAML or as JSON, with its members in any order, has one digest.
pub fn content_digest(document: &Value) -> String {
    let mut document = document.clone();
    if let Some(Value::Object(metadata)) = document.get_mut("metadata") {
        metadata.remove("expires");
    }
    let canonical = serde_json::to_vec(&sorted(&document)).unwrap_or_default();
    crate::service::hex_sha256(&canonical)
}

/// `value` with the members of every object in name order (serde_json keeps insertion
/// order here, as the workspace enables `preserve_order`).
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(members) => {
            let mut names: Vec<&String> = members.keys().collect();
            names.sort_unstable();
            Value::Object(
                names
                    .into_iter()
                    .filter_map(|name| Some((name.clone(), sorted(members.get(name)?))))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect()
}

fn is_group_reference(name: &str) -> bool {
    name.starts_with('@')
}

impl PolicyDocument {
    /// Validates `value`; the document is returned only when there are no errors, with
    /// the warnings either way.
    pub fn check(value: Value) -> (Option<Self>, Report) {
        let mut report = Report::default();
        let Value::Object(root) = value else {
            report.error("the policy must be an object");
            return (None, report);
        };
        for reserved in RESERVED_KEYS {
            if root.contains_key(reserved) {
                report.error(format!(
                    "`{reserved}` is reserved for the signed bundle's claims"
                ));
            }
        }
        let groups = check_metadata(root.get("metadata"), &mut report);
        match root.get("policies") {
            Some(Value::Array(policies)) if !policies.is_empty() => {
                for (index, policy) in policies.iter().enumerate() {
                    check_policy(index, policy, &groups, &mut report);
                }
            }
            Some(Value::Array(_)) => report.error("`policies` must not be empty"),
            Some(_) => report.error("`policies` must be a list"),
            None => report.error("`policies` is required"),
        }
        if report.is_valid() {
            (Some(Self { root }), report)
        } else {
            (None, report)
        }
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.root
    }

    pub fn into_value(self) -> Value {
        Value::Object(self.root)
    }

    pub fn to_value(&self) -> Value {
        Value::Object(self.root.clone())
    }

    fn metadata(&self) -> Option<&Map<String, Value>> {
        self.root.get("metadata").and_then(Value::as_object)
    }

    /// The app the document is for: `metadata.name`, normalised.
    pub fn app_name(&self) -> AppName {
        AppName::normalise(
            self.metadata()
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default(),
        )
    }

    pub fn description(&self) -> Option<&str> {
        self.metadata()
            .and_then(|m| m.get("description"))
            .and_then(Value::as_str)
    }

    /// Sets `metadata.expires` (the server decides a published bundle's expiry).
    pub fn set_expires(&mut self, expires: &str) {
        if let Some(Value::Object(metadata)) = self.root.get_mut("metadata") {
            metadata.insert("expires".into(), Value::String(expires.to_owned()));
        }
    }

    fn policies(&self) -> impl Iterator<Item = &Map<String, Value>> {
        self.root
            .get("policies")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
    }

    /// The distinct tools the permissions name, as the SDK counts them for `max_tools`:
    /// string permissions (but `*`), object permissions by `tool` or `id` (even with
    /// `allow: false`), and resource rules by `resource` (but `*`).
    pub fn tools(&self) -> BTreeSet<String> {
        let mut tools = BTreeSet::new();
        for policy in self.policies() {
            for permission in policy
                .get("permissions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let tool = match permission {
                    Value::String(tool) => Some(tool.as_str()),
                    Value::Object(object) => object
                        .get("tool")
                        .or_else(|| object.get("id"))
                        .and_then(Value::as_str),
                    _ => None,
                };
                if let Some(tool) = tool.filter(|t| *t != "*") {
                    tools.insert(tool.to_owned());
                }
            }
            if let Some(resource) = policy
                .get("resource")
                .and_then(Value::as_str)
                .filter(|r| *r != "*")
            {
                tools.insert(resource.to_owned());
            }
        }
        tools
    }

    /// Whether the document denies anything: an `allow: false` permission, a `!`-prefixed
    /// permission, an `effect: deny` rule, or a deny sequence.
    pub fn has_deny_rules(&self) -> bool {
        self.policies().any(|policy| {
            let permissions = policy
                .get("permissions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten();
            let denying_permission = permissions.into_iter().any(|permission| match permission {
                Value::String(tool) => tool.starts_with('!'),
                Value::Object(object) => object.get("allow") == Some(&Value::Bool(false)),
                _ => false,
            });
            let denying_effect = policy.get("effect").and_then(Value::as_str) == Some("deny");
            let denying_sequence = match policy.get("sequence") {
                Some(Value::Array(rules)) => rules.iter().any(|r| r.get("deny").is_some()),
                Some(Value::Object(sequence)) => {
                    sequence.get("mode").and_then(Value::as_str) == Some("deny")
                        || sequence
                            .get("rules")
                            .and_then(Value::as_array)
                            .is_some_and(|rules| rules.iter().any(|r| r.get("deny").is_some()))
                }
                _ => false,
            };
            denying_permission || denying_effect || denying_sequence
        })
    }

    /// Roles, permissions and which role grants what.
    pub fn roles_and_permissions(&self) -> RolesAndPermissions {
        let mut roles = BTreeSet::new();
        let mut permissions = BTreeSet::new();
        let mut mappings = Vec::new();
        for policy in self.policies() {
            let granted: Vec<String> = policy
                .get("permissions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| match p {
                    Value::String(tool) => Some(tool.clone()),
                    Value::Object(o) => o
                        .get("tool")
                        .or_else(|| o.get("id"))
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    _ => None,
                })
                .collect();
            permissions.extend(granted.iter().cloned());
            for role in role_names(policy) {
                roles.insert(role.clone());
                mappings.push((role, granted.clone()));
            }
        }
        RolesAndPermissions {
            roles: roles.into_iter().collect(),
            permissions: permissions.into_iter().collect(),
            mappings,
        }
    }
}

fn role_names(policy: &Map<String, Value>) -> Vec<String> {
    let strings = |value: Option<&Value>| -> Vec<String> {
        match value {
            Some(Value::String(role)) if !role.trim().is_empty() => vec![role.clone()],
            Some(Value::Array(roles)) => roles
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        }
    };
    let roles = strings(policy.get("role"));
    if roles.is_empty() {
        strings(policy.get("roles"))
    } else {
        roles
    }
}

/// Checks `metadata`; returns the names of its tool groups.
fn check_metadata(metadata: Option<&Value>, report: &mut Report) -> BTreeSet<String> {
    let mut groups = BTreeSet::new();
    let Some(metadata) = metadata else {
        report.error("`metadata` is required");
        return groups;
    };
    let Value::Object(metadata) = metadata else {
        report.error("`metadata` must be an object");
        return groups;
    };
    match metadata.get("name") {
        Some(Value::String(name)) if !name.trim().is_empty() => {}
        Some(Value::String(_)) | None => report.error("`metadata.name` (the app name) is required"),
        Some(_) => report.error("`metadata.name` must be a string"),
    }
    match metadata.get("description") {
        None => report.warn("`metadata.description` is missing"),
        Some(Value::String(_)) => {}
        Some(_) => report.error("`metadata.description` must be a string"),
    }
    match metadata.get("expires") {
        None => {}
        Some(Value::String(expires)) if chrono::DateTime::parse_from_rfc3339(expires).is_ok() => {}
        Some(Value::String(expires))
            if chrono::NaiveDateTime::parse_from_str(expires, "%Y-%m-%dT%H:%M:%S%.f").is_ok() => {}
        Some(_) => report.error("`metadata.expires` must be an ISO-8601 date-time"),
    }
    match metadata.get("tool_groups") {
        None => {}
        Some(Value::Object(map)) => {
            for (group, tools) in map {
                let valid = tools.as_array().is_some_and(|list| {
                    list.iter()
                        .all(|t| t.as_str().is_some_and(|t| !t.trim().is_empty()))
                });
                if !valid {
                    report.error(format!(
                        "`metadata.tool_groups.{group}` must be a list of tool ids"
                    ));
                }
                groups.insert(format!("@{group}"));
            }
        }
        Some(_) => report.error("`metadata.tool_groups` must map group names to lists of tool ids"),
    }
    if let Some(flow) = metadata.get("data_flow") {
        check_data_flow(flow, &groups, report);
    }
    groups
}

fn names_of(value: &Value) -> Option<Vec<&str>> {
    match value {
        Value::String(name) => Some(vec![name.as_str()]),
        Value::Array(names) => names.iter().map(Value::as_str).collect(),
        _ => None,
    }
}

fn check_references<'a>(
    names: impl IntoIterator<Item = &'a str>,
    groups: &BTreeSet<String>,
    at: &str,
    report: &mut Report,
) {
    for name in names {
        if is_group_reference(name) && !groups.contains(name) {
            report.error(format!(
                "{at} names `{name}`, which is not in `metadata.tool_groups`"
            ));
        }
    }
}

fn check_data_flow(flow: &Value, groups: &BTreeSet<String>, report: &mut Report) {
    let Value::Object(flow) = flow else {
        report.error("`metadata.data_flow` must be an object");
        return;
    };
    for part in ["labels", "blocks"] {
        match flow.get(part) {
            None => {}
            Some(Value::Object(entries)) => {
                for (key, value) in entries {
                    let at = format!("`metadata.data_flow.{part}.{key}`");
                    match names_of(value) {
                        Some(names) => {
                            if part == "labels" {
                                check_references([key.as_str()], groups, &at, report);
                            } else {
                                check_references(names, groups, &at, report);
                            }
                        }
                        None => report.error(format!("{at} must be a string or a list of strings")),
                    }
                }
            }
            Some(_) => report.error(format!("`metadata.data_flow.{part}` must be an object")),
        }
    }
}

fn check_policy(index: usize, policy: &Value, groups: &BTreeSet<String>, report: &mut Report) {
    let at = format!("policies[{index}]");
    let Value::Object(policy) = policy else {
        report.error(format!("{at} must be an object"));
        return;
    };
    if policy.contains_key("resource") || policy.contains_key("effect") {
        check_resource_rule(&at, policy, report);
    } else {
        check_role_rule(&at, policy, groups, report);
    }
}

fn check_resource_rule(at: &str, policy: &Map<String, Value>, report: &mut Report) {
    match policy.get("resource") {
        Some(Value::String(resource)) if !resource.trim().is_empty() => {}
        _ => report.error(format!("{at}.resource must be a non-empty string")),
    }
    match policy.get("action") {
        None => {}
        Some(action) if names_of(action).is_some_and(|a| !a.is_empty()) => {}
        Some(_) => report.error(format!("{at}.action must be a string or a list of strings")),
    }
    match policy.get("effect").and_then(Value::as_str) {
        Some("allow" | "deny") => {}
        _ => report.error(format!("{at}.effect must be `allow` or `deny`")),
    }
    if policy.get("conditions").is_some_and(|c| !c.is_object()) {
        report.error(format!("{at}.conditions must be an object"));
    }
}

fn check_role_rule(
    at: &str,
    policy: &Map<String, Value>,
    groups: &BTreeSet<String>,
    report: &mut Report,
) {
    let role_ok = |value: Option<&Value>| match value {
        Some(Value::String(role)) => !role.trim().is_empty(),
        Some(Value::Array(roles)) => {
            !roles.is_empty()
                && roles
                    .iter()
                    .all(|r| r.as_str().is_some_and(|r| !r.trim().is_empty()))
        }
        _ => false,
    };
    if !role_ok(policy.get("role")) && !role_ok(policy.get("roles")) {
        report.error(format!(
            "{at} needs `role` (a name or a list of names) or `roles`"
        ));
    }
    match policy.get("permissions") {
        Some(Value::Array(permissions)) => {
            if permissions.is_empty() {
                report.warn(format!(
                    "{at}.permissions is empty: the role can call nothing"
                ));
            }
            let mut wildcard = false;
            let mut denies = false;
            for (j, permission) in permissions.iter().enumerate() {
                match permission {
                    Value::String(tool) if !tool.trim().is_empty() => {
                        wildcard |= tool == "*";
                        denies |= tool.starts_with('!');
                    }
                    Value::Object(object) => {
                        let tool = object.get("tool").or_else(|| object.get("id"));
                        if tool
                            .and_then(Value::as_str)
                            .is_none_or(|t| t.trim().is_empty())
                        {
                            report.error(format!("{at}.permissions[{j}] needs a `tool` (or `id`)"));
                        }
                        if object.get("allow").is_some_and(|a| !a.is_boolean()) {
                            report.error(format!(
                                "{at}.permissions[{j}].allow must be true or false"
                            ));
                        }
                        denies |= object.get("allow") == Some(&Value::Bool(false));
                        if object.get("conditions").is_some_and(|c| !c.is_object()) {
                            report.error(format!(
                                "{at}.permissions[{j}].conditions must be an object"
                            ));
                        }
                    }
                    _ => report.error(format!(
                        "{at}.permissions[{j}] must be a tool id or an object"
                    )),
                }
            }
            if wildcard && !denies {
                report.warn(format!("{at} grants `*` with no exception"));
            }
        }
        Some(_) => report.error(format!("{at}.permissions must be a list")),
        None => report.error(format!("{at}.permissions is required")),
    }
    if let Some(sequence) = policy.get("sequence") {
        let rules = match sequence {
            Value::Array(rules) => Some(rules),
            Value::Object(object) => {
                if !matches!(
                    object.get("mode").and_then(Value::as_str),
                    None | Some("allow" | "deny")
                ) {
                    report.error(format!("{at}.sequence.mode must be `allow` or `deny`"));
                }
                object.get("rules").and_then(Value::as_array)
            }
            _ => None,
        };
        let Some(rules) = rules else {
            report.error(format!(
                "{at}.sequence must be a list of rules or {{mode, rules}}"
            ));
            return;
        };
        for (j, rule) in rules.iter().enumerate() {
            let rule_at = format!("{at}.sequence rule {j}");
            let pattern = rule.get("deny").or_else(|| rule.get("allow"));
            match pattern.and_then(names_of) {
                Some(names) if !names.is_empty() => {
                    check_references(names, groups, &rule_at, report);
                }
                _ => report.error(format!(
                    "{rule_at} needs `deny` or `allow`: a list of tools or @groups"
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_content_digest_ignores_format_member_order_and_expiry_only() {
        let yaml = b"metadata:\n  name: app\n  expires: 2026-01-01T00:00:00Z\npolicies:\n  - role: r\n    permissions: [a, b]\n";
        let json = br#"{"policies": [{"permissions": ["a", "b"], "role": "r"}], "metadata": {"name": "app"}}"#;
        let from_yaml = content_digest(&parse_value(yaml).unwrap());
        assert_eq!(from_yaml, content_digest(&parse_value(json).unwrap()));
        assert_eq!(from_yaml.len(), 64);
        for different in [
            json!({ "metadata": { "name": "app" }, "policies": [{ "role": "r", "permissions": ["b", "a"] }] }),
            json!({ "metadata": { "name": "app", "description": "x" }, "policies": [{ "role": "r", "permissions": ["a", "b"] }] }),
            json!({ "metadata": { "name": "other" }, "policies": [{ "role": "r", "permissions": ["a", "b"] }] }),
        ] {
            assert_ne!(content_digest(&different), from_yaml, "{different}");
        }
    }

    fn sdk_policy() -> Value {
        json!({
            "version": 1,
            "metadata": {
                "name": "billing agent",
                "description": "billing",
                "expires": "2026-12-01T00:00:00+00:00",
                "tool_groups": { "egress": ["http.request", "email.send"] },
                "data_flow": { "labels": { "secrets.get": "SECRET" }, "blocks": { "SECRET": ["@egress"] } }
            },
            "policies": [
                { "role": ["analyst", "viewer"], "permissions": ["reports.read", { "tool": "reports.export", "allow": true, "conditions": { "input": { "limit": { "max": 10 } } } }] },
                { "roles": ["admin"], "permissions": ["*", "!secrets.get"],
                  "sequence": { "mode": "deny", "rules": [{ "deny": ["secrets.get", "@egress"], "reason": "exfiltration" }] } },
                { "resource": "database.users", "action": "*", "effect": "allow", "conditions": { "user.role": "admin" } }
            ]
        })
    }

    #[test]
    fn the_sdk_format_and_resource_rules_are_accepted() {
        let (document, report) = PolicyDocument::check(sdk_policy());
        assert!(report.is_valid(), "{report:?}");
        let document = document.unwrap();
        assert_eq!(document.app_name().as_str(), "billing_agent");
        let tools: Vec<String> = document.tools().into_iter().collect();
        assert_eq!(
            tools,
            [
                "!secrets.get",
                "database.users",
                "reports.export",
                "reports.read"
            ]
        );
        assert!(document.has_deny_rules());
        let roles = document.roles_and_permissions().roles;
        assert_eq!(roles, ["admin", "analyst", "viewer"]);
    }

    #[test]
    fn broken_documents_get_one_clear_error_each() {
        let cases = [
            (json!([]), "must be an object"),
            (
                json!({ "policies": [{ "role": "a", "permissions": [] }] }),
                "`metadata` is required",
            ),
            (
                json!({ "metadata": {}, "policies": [{ "role": "a", "permissions": [] }] }),
                "`metadata.name`",
            ),
            (
                json!({ "metadata": { "name": "x" }, "policies": [] }),
                "must not be empty",
            ),
            (
                json!({ "metadata": { "name": "x" } }),
                "`policies` is required",
            ),
            (
                json!({ "metadata": { "name": "x" }, "policies": [{ "permissions": ["a"] }] }),
                "needs `role`",
            ),
            (
                json!({ "metadata": { "name": "x" }, "policies": [{ "role": "r", "permissions": [42] }] }),
                "must be a tool id",
            ),
            (
                json!({ "metadata": { "name": "x" }, "policies": [{ "role": "r", "permissions": [{ "allow": true }] }] }),
                "needs a `tool`",
            ),
            (
                json!({ "metadata": { "name": "x", "expires": "soon" }, "policies": [{ "role": "r", "permissions": [] }] }),
                "ISO-8601",
            ),
            (
                json!({ "metadata": { "name": "x" }, "exp": 1, "policies": [{ "role": "r", "permissions": [] }] }),
                "reserved",
            ),
            (
                json!({ "metadata": { "name": "x" }, "policies": [{ "role": "r", "permissions": [], "sequence": [{ "deny": ["@nope", "a"] }] }] }),
                "not in `metadata.tool_groups`",
            ),
            (
                json!({ "metadata": { "name": "x" }, "policies": [{ "resource": "r", "effect": "maybe" }] }),
                "effect must be",
            ),
        ];
        for (value, expected) in cases {
            let (document, report) = PolicyDocument::check(value.clone());
            assert!(document.is_none(), "{value}");
            assert!(
                report.errors.iter().any(|e| e.contains(expected)),
                "{value}: {report:?}"
            );
        }
    }

    #[test]
    fn deny_rules_are_found_in_every_form() {
        let base = |policy: Value| json!({ "metadata": { "name": "x" }, "policies": [policy] });
        let allowing = base(json!({ "role": "r", "permissions": ["a", { "tool": "b" }] }));
        assert!(!PolicyDocument::check(allowing).0.unwrap().has_deny_rules());
        for denying in [
            json!({ "role": "r", "permissions": ["!a"] }),
            json!({ "role": "r", "permissions": [{ "tool": "b", "allow": false }] }),
            json!({ "role": "r", "permissions": ["a"], "sequence": [{ "deny": ["a", "b"] }] }),
            json!({ "role": "r", "permissions": ["a"], "sequence": { "mode": "deny", "rules": [{ "allow": ["a", "b"] }] } }),
            json!({ "resource": "db", "effect": "deny" }),
        ] {
            assert!(
                PolicyDocument::check(base(denying.clone()))
                    .0
                    .unwrap()
                    .has_deny_rules(),
                "{denying}"
            );
        }
    }

    #[test]
    fn a_nul_character_in_any_text_is_refused_however_it_is_spelled() {
        for body in [
            "metadata:\n  name: \"my\\0app\"\n",
            "metadata:\n  name: \"my\\x00app\"\n",
            "metadata:\n  name: \"my\\u0000app\"\n",
            "metadata:\n  \"na\\U00000000me\": app\n",
            "policies:\n  - permissions: [\"a\\0\"]\n",
            "{\"metadata\": {\"name\": \"my\\u0000app\"}}",
        ] {
            assert_eq!(
                parse_value(body.as_bytes()),
                Err(Unparseable::NulCharacter),
                "{body}"
            );
        }
        // A backslash and a zero are plain text outside double quotes.
        assert!(parse_value(b"metadata:\n  name: my\\0app\n").is_ok());
    }

    #[test]
    fn yaml_and_json_files_parse_to_the_same_document() {
        let yaml = "metadata:\n  name: my-app\npolicies:\n  - role: analyst\n    permissions: [reports.read]\n";
        let json = br#"{"metadata":{"name":"my-app"},"policies":[{"role":"analyst","permissions":["reports.read"]}]}"#;
        assert_eq!(
            parse_value(yaml.as_bytes()).unwrap(),
            parse_value(json).unwrap()
        );
        assert!(parse_value(&[0xff, 0xfe]).is_err());
        assert!(parse_value(b"key: [unclosed").is_err());
    }
}
